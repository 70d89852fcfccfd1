"""BrowserApp's writing: local edits queued in the outbox, the clinical forms and conflict resolutions.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``). Validation and FHIR
building are :mod:`pyclient.forms` (and :mod:`pyclient.dosage`), the per-field conflict choices
:mod:`pyclient.conflict_choices`; this file reads the current version, queues the edit through the sync
machine and writes it in one sealing crossing and one IndexedDB transaction (``_commit``), then audits it.
``bench_fill`` (benchmarks only) writes synthetic records through the same commit path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from pyclient import conflict_choices as cc
from pyclient import forms
from pyclient.chart import ref_patient as _ref_patient
from pyclient.dosage import form_spec as dosage_form_spec
from pyclient.errors import AppError
from pyclient.sync import Effect, RecordPut

from .browser_base import AppParts, _iso_now, _now
from .indexeddb_store import js_to_py


class EditsMixin(AppParts):
    """Relies on BrowserApp's ``store``, ``machine``, ``_require_writable``, ``_open``, ``_commit``, ``status``,
    ``_reload_machine``, the audit and telemetry mixins, and the chart/register mixins' hooks."""

    async def _edit(self, resource_type: str, rid: str, resource: dict[str, Any] | None,
                    *, create: bool) -> dict[str, Any]:
        return (await self._edits([(resource_type, rid, resource, create)]))[0]

    async def _edits(self, edits: Sequence[tuple[str, str, dict[str, Any] | None, bool]]) -> list[dict[str, Any]]:
        """Queue several local edits (type, id, resource or None to delete, create?) as ONE store batch.

        One form that creates several records (a vitals set: one Observation per measurement) is saved whole
        or not at all, in one sealing crossing and one IndexedDB transaction.
        """
        machine = self._require_writable()
        for resource_type, _rid, resource, create in edits:  # issue 18: refused before anything is queued
            self._check_may(resource_type, "create" if create else "delete" if resource is None else "update")
        bases: list[dict[str, Any] | None] = []
        effects: list[Effect] = []
        queued = False  # the machine's memory changed: a failure from here on must rebuild it from disk
        try:
            for resource_type, rid, resource, create in edits:
                base_version: int | None = None
                base: dict[str, Any] | None = None
                if not create:
                    row = await self.store.get_record(resource_type, rid)
                    if row is None:
                        raise AppError("That record is no longer on this device.", kind="not_found")
                    if not machine.has_pending_edit(resource_type, rid):
                        opened = (await self._open([(resource_type, rid, row.version, row.blob)]))[0]
                        base, base_version = opened, row.version
                bases.append(base)
                queued = True
                effects += machine.record_local_edit(now=_now(), mutation_id=str(uuid.uuid4()),
                                                     resource_type=resource_type, id=rid, resource=resource,
                                                     base_version=base_version, base_resource=base)
            effects += await self._telemetry_note_edit(machine)  # same transaction as the edits
            await self._commit(effects)
        except Exception:
            # Not saved: rebuild the machine from what IS durable so memory never claims more than disk.
            if queued:
                await self._reload_machine()
            raise
        events = []
        for (resource_type, rid, resource, create), base in zip(edits, bases, strict=True):
            source = resource if resource is not None else base or {}
            pid = rid if resource_type == "Patient" else _ref_patient(source)
            events.append(("create" if create else "delete" if resource is None else "update",
                           resource_type, rid, [pid] if pid else []))
        await self._quietly(self._audit_many(events))  # one audit transaction for the whole batch
        for resource_type, rid, _resource, _create in edits:
            self._emit({"type": "changed", "resourceType": resource_type, "id": rid})
        status = self.status()
        return [{"id": rid, "status": status} for _t, rid, _r, _c in edits]

    async def _current(self, resource_type: str, rid: str) -> dict[str, Any]:
        row = await self.store.get_record(resource_type, rid)
        if row is None:
            raise AppError("That record is no longer on this device.", kind="not_found")
        res = (await self._open([(resource_type, rid, row.version, row.blob)]))[0]
        if res is None:
            raise AppError("That record could not be decrypted.")
        return res

    def _author(self) -> dict[str, str]:
        return self._author_ref()  # issue 18 item 6: Practitioner reference + display (browser_register)

    async def record_vitals(self, patient_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and queue vital signs (one Observation per measurement, BP as a panel)."""
        self._require_writable()
        now = _iso_now()
        taken = self._vitals_time(values, now)  # issue 18 item 5: vitals taken earlier
        created = forms.vitals(patient_id, values, now=taken, author=self._author(), recorded=now)
        ids = [str(uuid.uuid4()) for _ in created]
        # One batch: five measurements are one transaction, so a full disk or a crash saves none, never three.
        await self._edits([("Observation", rid, {**res, "id": rid}, True) for rid, res in zip(ids, created, strict=True)])
        return {"ids": ids, "status": self.status()}

    async def add_allergy(self, patient_id: str, substance: str, criticality: str = "unable-to-assess",
                          reaction: str = "", status: str = "active") -> dict[str, Any]:
        """Queue a new AllergyIntolerance."""
        rid = str(uuid.uuid4())
        res = forms.allergy_new(patient_id, id=rid, substance=substance, criticality=criticality, reaction=reaction,
                                status=status, now=_iso_now(), author=self._author())
        return await self._edit("AllergyIntolerance", rid, res, create=True)

    async def update_allergy(self, allergy_id: str, criticality: str | None = None,
                             status: str | None = None) -> dict[str, Any]:
        """Change criticality and/or clinical status of an allergy (a new version, merged on the server)."""
        res = forms.allergy_update(await self._current("AllergyIntolerance", allergy_id),
                                   criticality=criticality, status=status)
        return await self._edit("AllergyIntolerance", allergy_id, res, create=False)

    async def dosage_form(self, medication_id: str | None = None) -> dict[str, Any]:
        """The structured dosage form's choices and values (issue 18 item 4), prefilled from an order's dosage."""
        self._require_unlocked()
        current = (await self._current("MedicationRequest", medication_id)).get("dosageInstruction") \
            if medication_id else None
        return dosage_form_spec(current)

    async def start_medication(self, patient_id: str, name: str, dosage: forms.DosageInput) -> dict[str, Any]:
        """Queue a new active MedicationRequest."""
        rid = str(uuid.uuid4())
        res = forms.medication_new(patient_id, id=rid, name=name, dosage=dosage, now=_iso_now(),
                                   author=self._author())
        return await self._edit("MedicationRequest", rid, res, create=True)

    async def change_medication(self, medication_id: str, dosage: forms.DosageInput) -> dict[str, Any]:
        """New dosage instruction for an active medication (structured fields, or one line of text)."""
        forms.check_new_dosage(dosage)
        current = await self._current("MedicationRequest", medication_id)
        forms.medication_order_check("", dosage, need_name=False, previous=current.get("dosageInstruction"))
        res = forms.medication_change(current, dosage)
        return await self._edit("MedicationRequest", medication_id, res, create=False)

    async def stop_medication(self, medication_id: str, reason: str = "") -> dict[str, Any]:
        """Stop a medication (status stopped, with the reason)."""
        res = forms.medication_stop(await self._current("MedicationRequest", medication_id), reason)
        return await self._edit("MedicationRequest", medication_id, res, create=False)

    async def add_note(self, patient_id: str, title: str, text: str) -> dict[str, Any]:
        """Queue a clinical note (DocumentReference with a text/plain attachment)."""
        rid = str(uuid.uuid4())
        res = forms.note_new(patient_id, id=rid, title=title, text=text, now=_iso_now(), author=self._author())
        return await self._edit("DocumentReference", rid, res, create=True)

    async def update_contact(self, patient_id: str, phone: str | None = None,
                             birth_date: str | None = None, gender: str | None = None) -> dict[str, Any]:
        """Edit demographics: phone, birth date, gender."""
        res = forms.contact_update(await self._current("Patient", patient_id), phone=phone, birth_date=birth_date,
                                   gender=gender, today=date.today().isoformat())
        return await self._edit("Patient", patient_id, res, create=False)

    def conflicts(self) -> list[dict[str, Any]]:
        """Parked conflicts with base / mine / theirs per field, for the side-by-side screen."""
        return cc.conflict_list(self._require_unlocked().conflicts())

    async def resolve_conflict(self, entry_id: str, choices: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a person's per-field decisions (:func:`pyclient.conflict_choices.resolved_resource`); the result
        is pushed as a new version based on the server's."""
        machine = self._require_writable()
        view = next((c for c in machine.conflicts() if c.entry_id == entry_id), None)
        if view is None:
            raise AppError("This conflict was already resolved.", kind="not_found")
        chosen = cc.resolved_resource(view, choices, today=date.today().isoformat())  # issue 18: Edit is validated
        effects = machine.resolve_conflict(now=_now(), entry_id=entry_id, resource=chosen,
                                           mutation_id=str(uuid.uuid4()))
        await self._commit(effects)
        res = chosen if isinstance(chosen, Mapping) else view.server or view.local or {}
        pid = view.id if view.resource_type == "Patient" else _ref_patient(res)
        await self._audit_quietly("update", view.resource_type, view.id, [pid] if pid else [],
                                  detail={"conflict": "resolved"})
        self._emit({"type": "changed", "resourceType": view.resource_type, "id": view.id})
        return {"status": self.status()}

    async def bench_fill(self, resources: int, start: int = 0, batch: int = 2000) -> dict[str, Any]:
        """Add ``resources`` synthetic sealed records (1 patient per 10) for search benchmarks.

        Goes through the real path (seal in batches, blind-index tokens, one IndexedDB transaction per batch).
        """
        self._require_writable()
        syll = ["ka", "lo", "mi", "ner", "sto", "va", "ri", "den", "bel", "tor", "shi", "ma", "ron", "el", "gu"]
        t0 = time.perf_counter()
        made = start
        while made < start + resources:
            effects: list[Effect] = []
            for n in range(made, min(start + resources, made + batch)):
                p = n // 10
                pid = f"bench-p{p}"
                if n % 10 == 0:
                    family = (syll[p % 15] + syll[(p // 15) % 15] + syll[(p // 225) % 15]).capitalize()
                    res: dict[str, Any] = {
                        "resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
                        "name": [{"use": "official", "family": family, "given": [syll[(p * 7) % 15].capitalize() + "na"]}],
                        "identifier": [{"system": "urn:bench", "value": f"BENCH-{p:06d}",
                                        "type": {"coding": [{"code": "MR"}]}}],
                        "birthDate": f"{1940 + p % 70}-{1 + p % 12:02d}-{1 + p % 28:02d}"}
                    effects.append(RecordPut("Patient", pid, 1, res))
                else:
                    oid = f"bench-o{n}"
                    res = {"resourceType": "Observation", "id": oid, "meta": {"versionId": "1"}, "status": "final",
                           "code": {"text": "Heart rate"}, "subject": {"reference": f"Patient/{pid}"},
                           "effectiveDateTime": "2026-01-01T10:00:00Z",
                           "valueQuantity": {"value": 60 + n % 40, "unit": "/min"}}
                    effects.append(RecordPut("Observation", oid, 1, res))
            await self._commit(effects)
            made += len(effects)
        return {"resources": made - start, "seconds": round(time.perf_counter() - t0, 2),
                "total": int(js_to_py(await self._idb.countRecords()))}
