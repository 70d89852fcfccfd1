"""``manage.py audit_pubkey``: print the ``OMNICARE_AUDIT_PUBKEY`` value to pin (outside the database)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from omnicare.keys.services import pubkey_pin_value


class Command(BaseCommand):
    help = ("Print OMNICARE_AUDIT_PUBKEY for the audit-signing keys (computed from the key material through the "
            "master key / HSM, not read from the database). Set it in the verifier's environment; re-run after "
            "a signing-key rotation and append the new entry.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(pubkey_pin_value())
