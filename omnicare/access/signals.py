"""The access domain's signal receivers: a disabled account or a changed password ends its sessions and tokens;
a sign-in starts the absolute session clock.

Connected from ``AccessConfig.ready`` (imported there, once): kept out of ``models.py`` so the models never
import the services that use them (no access.models <-> access.services circle).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_save, pre_save

from .middleware import session_started
from .services import credentials_changed


def _user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Disabling an account ends its sessions and tokens at once (not at their natural expiry)."""
    if getattr(instance, "is_active", True) is False:
        credentials_changed(user=instance, why="account-disabled")


def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Start the absolute session clock at sign-in (see omnicare.access.middleware)."""
    if request is not None and hasattr(request, "session"):
        session_started(request)


post_save.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="omnicare.access.user_saved")
user_logged_in.connect(_logged_in, dispatch_uid="omnicare.access.logged_in")


def _user_presave(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """Remember whether this save changes the password hash (tokens and sessions end when it does)."""
    instance._omnicare_password_changed = False
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    old = type(instance).objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._omnicare_password_changed = old is not None and old != instance.password


def _user_password_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """A changed password ends every session and bearer token of the account (issue 10, item 13)."""
    if not created and getattr(instance, "_omnicare_password_changed", False):
        instance._omnicare_password_changed = False
        credentials_changed(user=instance, why="password-change")


pre_save.connect(_user_presave, sender=settings.AUTH_USER_MODEL, dispatch_uid="omnicare.access.user_presave")
post_save.connect(_user_password_saved, sender=settings.AUTH_USER_MODEL,
                  dispatch_uid="omnicare.access.user_password_saved")
