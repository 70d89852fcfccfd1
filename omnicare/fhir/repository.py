"""The FHIR store façade: one object per request context, in the spirit of Medplum's ``Repository``.

A :class:`FhirStore` is made once per request from the authenticated principal (the user, whose roles and
active break-the-glass grants the authenticator preloaded in the same query as the token, the device and the
purpose of use). Each of its methods does, exactly once and in this order:

1. the access check (``access.services.access_check``, run by the store service the method calls, with the
   patients only the stored data can tell: the current body, the version's compartment, the search's
   visible set);
2. the work (a read, a search, or the write through the one write path, ``services.resources_apply``'s
   engine), whose ``versions_written`` signal queues the sync hints for after COMMIT;
3. the fail-closed audit record (``fhir.trail.audited``): writes append their event as the last statement
   of their transaction (no write without its record), reads as one autocommitted INSERT before any data
   leaves (``atomic=False``: a read is 3 round trips, 5 for a care-team user), and a denial is recorded
   outside the rolled-back transaction before the 403 leaves.

So the REST router (``fhir.api``) only translates HTTP: status codes, headers, Prefer, If-Match parsing and
the OperationOutcome pipeline.

Batch writers (transaction and batch Bundles, the sync push, bulk import, HL7, CDS, the online-only vitals
form) write through :meth:`FhirStore.apply` (all or nothing) or :meth:`FhirStore.apply_each` (one outcome per
write: its result or its refusal, so a bulk import reports each refused line alone). Those two leave the audit event to the caller,
who records ONE per batch in the same transaction (a push batch, an import batch, an HL7 message, a Bundle
with its per-entry events); the access check stays the store's: the engine puts every write to the store's
``policy``. That policy is ``access_check`` for a person; the sync push hands the store its per-batch memo of
``access_check`` (so the check its decision already made is answered from the memo, not run twice); a system
actor (HL7 interface, CDS re-check, an administrator's trusted import) gets :meth:`FhirStore.system`, trusted
for every patient like Medplum's system repository. Bodies arrive valid (``services.Write.valid``): each
caller validates once, where it can still answer per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omnicare.audit.services import append_events
from omnicare.core.errors import ApiError, BadRequest

from . import hooks
from . import services as svc
from .bundles import bundle_process  # bundles builds on services; services never imports it back
from .models import Resource, ResourceVersion
from .search import compartment_patients
from .trail import AuditNote, audited, bundle_entry_events, compartment_of

#: The actions whose body writes nothing: their audit event is one autocommitted INSERT (see the module doc).
_READ_ONLY = frozenset({"read", "vread", "search", "history"})


@dataclass(frozen=True)
class FhirStore:
    """The FHIR store as one principal sees it (see the module docstring)."""

    user: svc.User
    device_id: str | None = None
    purpose: str = "TREAT"
    #: Asked about every write (see the module docstring); None: the person's ``access.services.access_check``.
    policy: svc.AccessPolicy | None = None

    @classmethod
    def for_request(cls, request: Any) -> FhirStore:
        """The store for an authenticated request (``request.user`` is set by ``access.auth``)."""
        return cls(user=request.user)

    @classmethod
    def system(cls, *, user: svc.User = None, purpose: str = "HOPERAT") -> FhirStore:
        """The store of a system actor, trusted for every patient: the HL7 interface and the CDS re-check
        (``user`` None: no person; versions carry no author) and an administrator's trusted bulk import (``user``
        the administrator, named as the versions' writer)."""
        return cls(user=user, purpose=purpose, policy=svc.system_trusted)

    def _audited(
        self, action: str, resource_type: str = "", resource_id: str = "", *,
        detail: dict[str, Any] | None = None, denied: Callable[[], list[str]] | None = None,
    ) -> Any:
        return audited(
            user=self.user, action=action, resource_type=resource_type, resource_id=resource_id,
            device_id=self.device_id, purpose=self.purpose, detail=detail, denied_patients=denied,
            atomic=action not in _READ_ONLY,
        )

    @staticmethod
    def _denied(resource_type: str, resource_id: str, submitted: Any = None) -> Callable[[], list[str]]:
        """The patients a denial event names (the refused body never learnt them): the stored compartment, and
        for a write the compartment of what was sent (whose chart someone tried to write into)."""

        def patients() -> list[str]:
            found = compartment_of(resource_type, resource_id) if resource_id else []
            if isinstance(submitted, dict):
                found += compartment_patients(resource_type, resource_id or str(submitted.get("id") or ""), submitted)
            return [p for p in found if p]  # a refused Patient create has no id yet

        return patients

    # ---- reads ---------------------------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> Resource:
        """Current state; 404 never existed, 410 deleted, 403 outside the caller's scope (audited as denied)."""
        with self._audited("read", resource_type, resource_id, denied=self._denied(resource_type, resource_id)) as note:
            row = svc.resource_read(user=self.user, resource_type=resource_type, resource_id=resource_id)
            note.patients.update(compartment_patients(resource_type, resource_id, row.body))
        return row

    def vread(self, resource_type: str, resource_id: str, version_id: int) -> ResourceVersion:
        with self._audited("vread", resource_type, resource_id, detail={"version": version_id},
                           denied=self._denied(resource_type, resource_id)) as note:
            v = svc.resource_vread(user=self.user, resource_type=resource_type, resource_id=resource_id,
                                   version_id=version_id)
            note.patients.update(v.patient_ids or [])
        return v

    def search(
        self, resource_type: str, params: list[tuple[str, str]], *, base_url: str, strict: bool = False
    ) -> dict[str, Any]:
        """A ``searchset`` Bundle; ONE audit event for the page, naming every patient on it."""
        with self._audited("search", resource_type) as note:
            bundle = svc.resource_search(user=self.user, resource_type=resource_type, params=params,
                                         base_url=base_url, strict=strict)
            _note_entries(note, bundle)
        return bundle

    def history(
        self, resource_type: str | None = None, resource_id: str | None = None, *, count: int = 20,
        since: str | None = None, before_seq: int | None = None,
    ) -> svc.HistoryPage:
        """Instance, type or system history; one event for the page, listing every patient on it."""
        denied = self._denied(resource_type, resource_id) if resource_type and resource_id else None
        with self._audited("history", resource_type or "", resource_id or "", denied=denied) as note:
            page = svc.resource_history(user=self.user, resource_type=resource_type, resource_id=resource_id,
                                        count=count, since=since, before_seq=before_seq)
            for v in page.versions:
                note.touch(resource_type=v.resource_type, resource_id=v.resource_id, patient_ids=v.patient_ids or [])
        return page

    # ---- writes --------------------------------------------------------------------------------------------

    def create(self, resource_type: str, resource: Any) -> svc.WriteResult:
        """Create with a server-assigned id (201). The body's resourceType must be the one addressed."""
        if isinstance(resource, dict) and resource.get("resourceType") != resource_type:
            raise BadRequest(f"resourceType does not match the URL ({resource_type})", expression=["resourceType"])
        with self._audited("create", resource_type, denied=self._denied(resource_type, "", resource)) as note:
            result = svc.resource_create(user=self.user, resource=resource)
            self._written(note, result)
        return result

    def update(
        self, resource_type: str, resource_id: str, resource: Any, *, if_match: int | None = None
    ) -> svc.WriteResult:
        """Update, or create with the client's id (201); ``if_match`` stale → 412, nothing written."""
        with self._audited("update", resource_type, resource_id,
                           denied=self._denied(resource_type, resource_id, resource)) as note:
            result = svc.resource_update(user=self.user, resource_type=resource_type, resource_id=resource_id,
                                         resource=resource, if_match=if_match)
            self._written(note, result)
        return result

    def delete(self, resource_type: str, resource_id: str, *, if_match: int | None = None) -> svc.WriteResult:
        """Tombstone; deleting what is absent or already deleted is an audited no-op."""
        with self._audited("delete", resource_type, resource_id,
                           denied=self._denied(resource_type, resource_id)) as note:
            result = svc.resource_delete(user=self.user, resource_type=resource_type, resource_id=resource_id,
                                         if_match=if_match)
            self._written(note, result)
        return result

    def bundle(self, bundle: Any, *, base_url: str) -> dict[str, Any]:
        """A transaction or batch Bundle: one event for the Bundle, and one per entry like the single request it
        stands for (patients, denials), all in the Bundle's transaction."""
        kind = str(bundle.get("type") or "") if isinstance(bundle, dict) else ""
        with self._audited(kind if kind in ("transaction", "batch") else "transaction", "Bundle") as note:
            result = bundle_process(store=self, bundle=bundle, base_url=base_url)
            _note_entries(note, result)
            note.detail["entries"] = len(result.get("entry") or [])
            append_events(bundle_entry_events(user=self.user, bundle=bundle, response=result, kind=kind))
        return result

    # ---- batch writes (the caller records the batch's audit event in the same transaction) -----------------

    def apply(
        self, writes: Sequence[svc.Write], *, fresh: frozenset[tuple[str, str]] = frozenset(),
        join_care_team: bool = False, savepoint: bool = True,
    ) -> list[svc.WriteResult]:
        """All of ``writes`` or none (``services.resources_apply``): a refusal raises its ApiError.
        ``savepoint=False``: a refusal fails the caller's whole transaction (the sync push's first attempt)."""
        return svc.resources_apply(user=self.user, writes=writes, check=self.policy, fresh=fresh,
                                   join_care_team=join_care_team, savepoint=savepoint)

    def apply_each(
        self, writes: Sequence[svc.Write], *, join_care_team: bool = False
    ) -> list[svc.WriteResult | ApiError]:
        """One outcome per write, in order: its result, or the ApiError that refused it alone
        (``services.resources_apply_each``)."""
        return svc.resources_apply_each(user=self.user, writes=writes, check=self.policy,
                                        join_care_team=join_care_team)

    def _written(self, note: AuditNote, result: svc.WriteResult) -> None:
        """What a single write adds to its event, and the write hooks of its type (inside the write's transaction:
        ``hooks.write_hook_register``)."""
        note.resource_id = result.resource_id
        if result.version is None:
            note.detail["noop"] = True
            return
        note.patients.update(result.version.patient_ids or [])
        note.detail["version"] = result.version.version_id
        if not result.version.deleted:
            # E.g. a Subscription written through REST belongs to its author (whose scope filters its
            # notifications); an unusable one (criteria, channel) is a 400 and, inside this transaction, is not
            # written (omnicare.subscriptions registers that hook).
            for hook in hooks.write_hooks(result.resource_type):
                hook(user=self.user, resource=result.version.body)


def _note_entries(note: AuditNote, bundle: dict[str, Any]) -> None:
    """Record every patient (and resource) a response Bundle carries in the page's audit event."""
    for entry in bundle.get("entry") or []:
        res = (entry or {}).get("resource")
        if isinstance(res, dict) and res.get("resourceType") and res.get("id"):
            rt, rid = str(res["resourceType"]), str(res["id"])
            if rt == "OperationOutcome":
                continue
            note.touch(resource_type=rt, resource_id=rid, patient_ids=compartment_patients(rt, rid, res))
