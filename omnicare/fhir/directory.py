"""The clinical record as access reads it: the fhir app's implementation of ``access.directory.ClinicalRecord``
(issue 11 item 9). Installed by ``FhirConfig.ready()``.

These are the statements ``access.services`` used to run itself, moved here unchanged (so a request runs the
same queries, as many as before); the rules that read their rows stay in access.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from . import r4
from .models import Resource, ResourcePatient, SearchDate, SearchReference, SearchToken
from .search import build_query


class FhirDirectory:
    """``access.directory.ClinicalRecord`` over the FHIR store's tables and search index."""

    def is_resource_type(self, name: str) -> bool:
        return r4.is_resource_type(name)

    def practitioner_ids(self, *, system: str, code: str) -> set[str]:
        return set(SearchToken.objects.filter(
            resource_type="Practitioner", param="identifier", system=system,
            code=code, resource__deleted=False,
        ).values_list("resource__resource_id", flat=True))

    def practitioner_ids_by_code(self, *, system: str, codes: Sequence[str]) -> list[tuple[str, str]]:
        return list(SearchToken.objects.filter(
            resource_type="Practitioner", param="identifier", system=system,
            code__in=codes, resource__deleted=False).values_list("code", "resource__resource_id"))

    def practitioner_body(self, practitioner_id: str) -> Any:
        return Resource.objects.filter(resource_type="Practitioner", resource_id=practitioner_id).values_list(
            "body", flat=True).first()

    def practitioner_bodies(self, practitioner_ids: Sequence[str]) -> dict[str, Any]:
        return dict(Resource.objects.filter(resource_type="Practitioner", resource_id__in=practitioner_ids)
                    .values_list("resource_id", "body"))

    def care_team_bodies(self, practitioner_ids: Sequence[str]) -> list[Any]:
        team_pks = SearchReference.objects.filter(
            resource_type="CareTeam", param="participant", target_type="Practitioner",
            target_id__in=practitioner_ids, resource__deleted=False,
        ).values_list("resource_id", flat=True)
        return list(Resource.objects.filter(pk__in=list(team_pks), deleted=False).values_list("body", flat=True))

    def referencing(
        self, resource_type: str, param: str, target_type: str, ids: Iterable[str], *,
        codes: tuple[str, Iterable[str]] | None = None, ends_after: tuple[Iterable[str], datetime] | None = None,
        starts_within: tuple[str, datetime, datetime] | None = None,
    ) -> list[dict[str, Any]]:
        q = Resource.objects.filter(deleted=False, pk__in=SearchReference.objects.filter(
            resource_type=resource_type, param=param, target_type=target_type, target_id__in=sorted(ids),
        ).values("resource_id"))
        if codes is not None:
            q = q.filter(pk__in=SearchToken.objects.filter(
                resource_type=resource_type, param=codes[0], code__in=sorted(codes[1])).values("resource_id"))
        if ends_after is not None:
            q = q.filter(pk__in=SearchDate.objects.filter(
                resource_type=resource_type, param__in=sorted(ends_after[0]), end__gt=ends_after[1],
            ).values("resource_id"))
        if starts_within is not None:
            name, lo, hi = starts_within
            q = q.filter(pk__in=SearchDate.objects.filter(
                resource_type=resource_type, param=name, start__gte=lo, start__lt=hi).values("resource_id"))
        return list(q.values_list("body", flat=True))

    def location_names(self, location_ids: Sequence[str]) -> dict[str, Any]:
        return dict(Resource.objects.filter(resource_type="Location", resource_id__in=location_ids, deleted=False)
                    .values_list("resource_id", "body__name"))

    def patients_ever_existed(self, patient_ids: Sequence[str]) -> bool:
        if Resource.objects.filter(resource_type="Patient", resource_id__in=patient_ids).exists():
            return True
        return ResourcePatient.objects.filter(patient_id__in=patient_ids).exists()

    def patient_exists(self, patient_id: str) -> bool:
        return Resource.objects.filter(resource_type="Patient", resource_id=patient_id, deleted=False).exists()

    def patient_search_ids(self, params: list[tuple[str, str]], limit: int) -> list[str]:
        return list(build_query("Patient", params).queryset.values_list("resource_id", flat=True)[:limit])
