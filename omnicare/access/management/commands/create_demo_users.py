"""``manage.py create_demo_users``: demo logins, their Practitioners, and their place on demo CareTeams."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management.base import BaseCommand
from django.db import transaction

from omnicare.access.roles import role_assign
from omnicare.fhir.demo import (
    DEMO_USERS,
    MRN_SYSTEM,
    DemoUser,
    care_team_participant,
    user_on_care_team,
    user_practitioner,
    user_practitioner_id,
)
from omnicare.fhir.models import Resource
from omnicare.fhir.services import resources_import

# Fixed so the README and a presenter can quote them; they satisfy the validators (length 10, not common,
# not similar to the username). --random-passwords for a demo server others can reach.
DEMO_PASSWORDS = {
    "dr.adams": "stethoscope-maple-42",
    "nurse.baker": "vitals-harbor-1729",
    "dr.chen": "cardio-lantern-314",
    "admin": "dashboard-orbit-2718",
    "privacy.officer": "audit-trail-ledger-161",
}


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo users and print their passwords; create the Practitioner that stands for "
        "each clinical user (identifier urn:omnicare:user|<username>) and put it on the CareTeams of most demo "
        "patients. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--random-passwords",
            action="store_true",
            help="generate random passwords instead of the fixed demo ones",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        rows = []
        with transaction.atomic():
            for demo in DEMO_USERS:
                password = (
                    secrets.token_urlsafe(12)
                    if options["random_passwords"]
                    else DEMO_PASSWORDS[demo.username]
                )
                user, created = User.objects.get_or_create(username=demo.username)
                user.first_name, user.last_name = demo.given, demo.family
                user.email = f"{demo.username}@omnicare.example"
                user.is_active = True
                user.is_superuser = demo.superuser
                user.is_staff = demo.superuser
                validate_password(password, user)
                user.set_password(password)
                user.save()
                role_assign(user=user, role=demo.role)  # the Django group that access_check reads
                rows.append((demo, password, "created" if created else "reset"))
        practitioners = self._ensure_practitioners()
        added = self._ensure_care_teams()

        self.stdout.write(
            self.style.SUCCESS("Demo users (log in at /admin/ or in the app; role in brackets):")
        )
        for demo, password, what in rows:
            self.stdout.write(f"  {demo.username:<16} {password:<24} [{demo.role}] ({what})")
        self.stdout.write(f"  user Practitioners created: {practitioners}")
        for username, n in added.items():
            self.stdout.write(f"  {username}: added to {n} more CareTeam(s)")

    def _ensure_practitioners(self) -> int:
        wanted = [user_practitioner(d) for d in DEMO_USERS if d.is_clinical]
        present = set(
            Resource.objects.filter(
                resource_type="Practitioner", resource_id__in=[p["id"] for p in wanted], deleted=False
            ).values_list("resource_id", flat=True)
        )
        missing = [p for p in wanted if p["id"] not in present]
        if missing:
            resources_import(resources=missing)
        return len(missing)

    def _ensure_care_teams(self) -> dict[str, int]:
        """Add each clinical user to the CareTeams of the demo patients they should see (when not there yet)."""
        demo_patients = {
            row.resource_id
            for row in Resource.objects.filter(resource_type="Patient", deleted=False).only(
                "resource_id", "body"
            )
            if any(i.get("system") == MRN_SYSTEM for i in row.body.get("identifier", []))
        }
        clinical: list[DemoUser] = [d for d in DEMO_USERS if d.is_clinical]
        added = dict.fromkeys((d.username for d in clinical), 0)
        changed: list[dict[str, Any]] = []
        for row in Resource.objects.filter(resource_type="CareTeam", deleted=False).iterator(chunk_size=500):
            body = row.body
            subject = (body.get("subject") or {}).get("reference", "")
            patient_id = subject.removeprefix("Patient/")
            if not subject.startswith("Patient/") or patient_id not in demo_patients:
                continue
            members = {(p.get("member") or {}).get("reference") for p in body.get("participant", [])}
            new = [
                d for d in clinical
                if user_on_care_team(d, patient_id) and f"Practitioner/{user_practitioner_id(d.username)}" not in members
            ]  # fmt: skip
            if new:
                body = dict(body)
                body["participant"] = list(body.get("participant", [])) + [
                    care_team_participant(user_practitioner_id(d.username), d.role) for d in new
                ]
                changed.append(body)
                for d in new:
                    added[d.username] += 1
        for start in range(0, len(changed), 1000):
            resources_import(resources=changed[start : start + 1000])
        return added
