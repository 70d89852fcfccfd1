"""What access needs from the clinical record, as an interface access owns (issue 11 item 9).

Access sits below fhir (``core <- access <- fhir``): the FHIR store calls ``access_check`` on every path, so
access cannot import the store. Yet deciding a user's scope reads a few facts the record holds: the user's
Practitioner, their care teams, the wards of their PractitionerRoles, whether a patient exists. Access states
those queries here, as :class:`ClinicalRecord`; the fhir app implements them (``omnicare.fhir.directory``)
and installs its implementation with :func:`directory_register` from ``FhirConfig.ready()``, so every process
that sets Django up (server, Celery worker, management commands, tests) has it before a request is served.

The interface returns rows, never decisions: the rules (which CareTeam counts, which role is active, who may
see whom) stay in ``access.services``. No Django import here: the fhir app imports this module in ``ready()``
even where access is not installed (the bulk import's validation pool).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol


class ClinicalRecord(Protocol):
    """The queries of the clinical record that access uses (each one statement unless it says otherwise)."""

    def is_resource_type(self, name: str) -> bool:
        """Whether ``name`` is an R4 resource type (no query: the R4 definitions)."""
        ...

    def practitioner_ids(self, *, system: str, code: str) -> set[str]:
        """Ids of the live Practitioners with the identifier ``system|code``."""
        ...

    def practitioner_ids_by_code(self, *, system: str, codes: Sequence[str]) -> list[tuple[str, str]]:
        """(code, id) of the live Practitioners with an identifier ``system|<one of codes>``."""
        ...

    def practitioner_body(self, practitioner_id: str) -> Any:
        """The body of Practitioner ``practitioner_id`` (None when there is none)."""
        ...

    def practitioner_bodies(self, practitioner_ids: Sequence[str]) -> dict[str, Any]:
        """Practitioner id -> body, for those of ``practitioner_ids`` that exist."""
        ...

    def care_team_bodies(self, practitioner_ids: Sequence[str]) -> list[Any]:
        """Bodies of the live CareTeams whose ``participant`` index names one of the Practitioners (two
        statements: the index, then the bodies)."""
        ...

    def referencing(
        self, resource_type: str, param: str, target_type: str, ids: Iterable[str], *,
        codes: tuple[str, Iterable[str]] | None = None, ends_after: tuple[Iterable[str], datetime] | None = None,
        starts_within: tuple[str, datetime, datetime] | None = None,
    ) -> list[dict[str, Any]]:
        """Live bodies of ``resource_type`` whose ``param`` references one of ``target_type``/``ids``, narrowed
        in the search index: ``codes`` (param, codes) a token; ``ends_after`` (params, instant) a date/period
        of one of the params ending after the instant (an open end is unbounded); ``starts_within`` (param,
        lo, hi) a date starting in [lo, hi). A superset: the caller still checks each body."""
        ...

    def location_names(self, location_ids: Sequence[str]) -> dict[str, Any]:
        """Location id -> ``name``, for the live Locations among ``location_ids``."""
        ...

    def patients_ever_existed(self, patient_ids: Sequence[str]) -> bool:
        """Whether any of ``patient_ids`` has a Patient row (live or deleted) or a record in its compartment
        (one statement, a second only when there is no Patient row)."""
        ...

    def patient_exists(self, patient_id: str) -> bool:
        """Whether Patient ``patient_id`` exists and is not deleted."""
        ...

    def patient_search_ids(self, params: list[tuple[str, str]], limit: int) -> list[str]:
        """Ids of the Patients a FHIR search with ``params`` finds, at most ``limit``."""
        ...


_directory: ClinicalRecord | None = None


def directory_register(impl: ClinicalRecord | None) -> None:
    """Install the clinical record access reads (the fhir app does it once, in ``FhirConfig.ready()``)."""
    global _directory  # noqa: PLW0603 - one process-wide implementation, set once at start-up
    _directory = impl


def directory() -> ClinicalRecord:
    """The installed clinical record; raises if none is (``omnicare.fhir`` missing from INSTALLED_APPS, or
    Django not set up yet)."""
    if _directory is None:
        raise RuntimeError("access needs the clinical record, and none is registered: omnicare.fhir must be in "
                           "INSTALLED_APPS and django.setup() must have run (FhirConfig.ready registers it)")
    return _directory
