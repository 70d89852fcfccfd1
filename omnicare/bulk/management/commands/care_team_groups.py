"""``manage.py care_team_groups``: a Group ``care-team-<practitioner>`` for every Practitioner on a CareTeam,
so a clinic exports its panel with ``GET /fhir/R4/Group/care-team-<id>/$export`` (members are recomputed
from the CareTeams at export time)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from omnicare.bulk.services import care_team_group
from omnicare.fhir.models import SearchReference


class Command(BaseCommand):
    help = "Write a care-team Group for every practitioner on a CareTeam"

    def handle(self, *args: Any, **opts: Any) -> None:
        ids = sorted(set(SearchReference.objects.filter(resource_type="CareTeam", param="participant",
                                                        target_type="Practitioner")
                         .values_list("target_id", flat=True)))
        for pid in ids:
            group = care_team_group(practitioner_id=pid)
            self.stdout.write(f"Group/{group['id']}: {group['quantity']} patients")
