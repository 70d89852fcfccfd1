"""The HL7 queues in the Django admin: depth, age of the oldest waiting message, failure reasons, replay/discard.

Lists show identifiers, states, counts and our own error texts, never message content. The raw message
(PHI) is shown on a message's page only to a user who holds ``hl7.view_raw_message`` explicitly (through a
group or their own permissions: being a superuser is not enough), and every display is an audit event; if
the audit trail cannot record it, the body is not shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import Permission
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from omnicare.audit.services import AuditUnavailable, audit_record

from .models import InboundMessage, OutboundMessage
from .outbound import outbound_enqueue
from .services import inbound_discard, inbound_replay, queue_stats

RAW_PERMISSION = ("hl7", "view_raw_message")


def may_see_raw(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    app, codename = RAW_PERMISSION
    return Permission.objects.filter(
        Q(user=user) | Q(group__user=user), content_type__app_label=app, codename=codename
    ).exists()


class QueueAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    change_list_template = "admin/hl7/queue_change_list.html"
    queue_name = "inbound"
    list_filter = ("state", "message_type")
    search_fields = ("control_id",)
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name != "raw"] + ["raw_message"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = [f.name for f in self.model._meta.fields if f.name not in ("raw", "id")]
        return fields + (["raw_message"] if obj is not None and self._raw_allowed(request) else [])

    def _raw_allowed(self, request: HttpRequest) -> bool:
        return not getattr(request, "_hl7_hide_raw", False) and may_see_raw(request.user)

    @admin.display(description="raw message (PHI)")
    def raw_message(self, obj: Any) -> str:
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", obj.raw.replace("\r", "\n"))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "GET" and self._raw_allowed(request):
            try:
                audit_record(user=request.user, action="read", resource_type="HL7Message",
                             resource_id=f"{self.queue_name}/{object_id}"[:64], purpose="HOPERAT",
                             category="security", detail={"what": "raw HL7 message body"})
            except AuditUnavailable:
                messages.error(request, "The audit trail is unavailable: the raw message is not shown.")
                request._hl7_hide_raw = True  # type: ignore[attr-defined]
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        stats = queue_stats()[self.queue_name]
        ctx = {**(extra_context or {}), "queue": stats, "queue_name": self.queue_name}
        return super().changelist_view(request, extra_context=ctx)


@admin.register(InboundMessage)
class InboundMessageAdmin(QueueAdmin):
    queue_name = "inbound"
    list_display = ("id", "message_type", "sender", "control_id", "state", "attempts", "next_attempt_at",
                    "last_error", "received_at", "repeats")
    actions = ("replay", "discard")

    @admin.action(description="Replay selected failed / dead messages", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        n = inbound_replay(message_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} message(s) queued again.")

    @admin.action(description="Discard selected messages (dead letter)", permissions=["change"])
    def discard(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        n = inbound_discard(message_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} message(s) discarded.")


@admin.register(OutboundMessage)
class OutboundMessageAdmin(QueueAdmin):
    queue_name = "outbound"
    list_display = ("id", "message_type", "endpoint", "control_id", "state", "attempts", "next_attempt_at",
                    "last_error", "ack_code", "created_at")
    actions = ("replay", "discard")

    @admin.action(description="Send selected failed / dead messages again", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[OutboundMessage]) -> None:
        from django.db import transaction

        ids = list(queryset.filter(state__in=["failed", "dead"]).values_list("id", flat=True))
        OutboundMessage.objects.filter(pk__in=ids).update(state="queued", attempts=0, next_attempt_at=None)
        transaction.on_commit(lambda: outbound_enqueue(message_ids=ids))
        self.message_user(request, f"{len(ids)} message(s) queued again.")

    @admin.action(description="Discard selected messages (dead letter)", permissions=["change"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboundMessage]) -> None:
        n = queryset.exclude(state="processed").update(state="dead", next_attempt_at=None,
                                                      last_error="discarded by an administrator")
        self.message_user(request, f"{n} message(s) discarded.")
