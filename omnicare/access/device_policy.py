"""What a device of a user may keep (issue 13 item 4), shipped with every sign-in and /api/auth/me.

``offlineData`` false = a shared workstation: the app runs online only, nothing at rest (roles listed in
``OMNICARE_NO_OFFLINE_DATA_ROLES``, or accounts in the group ``no-offline-data``, which the admin sets);
``requirePersistence`` = keep offline data only where the browser grants persistent storage.
The decision which mode follows is pyclient.storage_mode's, not this module's.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .roles import user_roles

NO_OFFLINE_GROUP = "no-offline-data"


def device_policy(*, user: Any) -> dict[str, bool]:
    roles = set(user_roles(user))
    no_offline = bool(roles & set(getattr(settings, "OMNICARE_NO_OFFLINE_DATA_ROLES", ())))
    if not no_offline and getattr(user, "is_authenticated", False):
        no_offline = user.groups.filter(name=NO_OFFLINE_GROUP).exists()
    return {"offlineData": not no_offline,
            "requirePersistence": bool(getattr(settings, "OMNICARE_REQUIRE_PERSISTENCE", False))}
