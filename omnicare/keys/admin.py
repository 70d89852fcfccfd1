from django.contrib import admin

from .models import KeyVersion, WrappedSecret


@admin.register(KeyVersion)
class KeyVersionAdmin(admin.ModelAdmin):
    list_display = ("purpose", "version", "backend", "status", "created", "rotated", "retired")
    list_filter = ("purpose", "status", "backend")
    exclude = ("handle",)  # wrapped material or token label: nothing an operator needs to see
    readonly_fields = ("purpose", "version", "backend", "public_key", "status", "created", "rotated", "retired", "reason")

    def has_add_permission(self, request: object) -> bool:
        return False  # keys are made by rotation (manage.py keys_rotate), never typed in

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(WrappedSecret)
class WrappedSecretAdmin(admin.ModelAdmin):
    list_display = ("name", "key_version", "updated")
    exclude = ("blob",)
    readonly_fields = ("name", "key_version", "updated")
