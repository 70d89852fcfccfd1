"""BrowserApp's reading: the patient list, blind-index search and the chart, through the sealed manifests.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``). Rows carry no shared
patient token (store v2, PROTOCOL.md 4.5): a chart is read through the patient's sealed manifest, and every
row is checked (``browser_integrity``) before it is shown; what does not verify is quarantined. The view
models are :mod:`pyclient.chart`, the search rules :mod:`pyclient.blindindex`; reads are audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyclient import blindindex as bi
from pyclient import chart as cv
from pyclient import integrity as ig
from pyclient import storage_mode as sm
from pyclient.errors import AppError, ValidationFailed

from .browser_base import AppParts

_LIST_BATCH = 200  # patients decrypted at a time for a list or a search (see _patient_page)


class ReadMixin(AppParts):
    """Relies on BrowserApp's ``store``, ``machine``, ``_index``, ``_open``, the integrity mixin's row checks
    and quarantine, the audit mixin's ``_audit_later`` and the chart mixin's hooks."""

    async def _resources(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        rows = [r for r in await self.store.get_records(keys) if r is not None]
        return await self._verified_rows(rows)

    async def _patient_page(self, ids: Sequence[str], limit: int | None,
                            keep: Callable[[list[dict[str, Any]]], Sequence[Mapping[str, Any]]] | None = None
                            ) -> cv.PatientPage:
        """The first ``limit`` (None: all) of the patients ``ids`` that verify (and pass ``keep``), in name
        order, with their count. Decrypted _LIST_BATCH at a time and only the page kept: a device holding
        9,090 patients opened them all at once for every list drawn (issue 13, memory flat in the scope)."""
        page = cv.PatientPage(len(ids) if limit is None else limit)
        for k in range(0, len(ids), _LIST_BATCH):
            batch = await self._resources([("Patient", i) for i in ids[k:k + _LIST_BATCH]])
            opened = batch if keep is None else keep(batch)
            page.add([self._with_pending(cv.patient_summary(p), "Patient") for p in opened])
        return page

    async def patients(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The local patients that verify, sorted by name: the first ``limit`` of them (None: every one)."""
        self._require_unlocked()
        return (await self._patient_page(await self.store.list_ids("Patient"), limit)).results

    def _with_pending(self, summary: dict[str, Any], resource_type: str) -> dict[str, Any]:
        assert self.machine is not None
        summary["pending"] = self.machine.has_pending_edit(resource_type, str(summary["id"]))
        return summary

    async def search(self, text: str, date_order: str = "mdy", limit: int = cv.PATIENT_PAGE) -> dict[str, Any]:
        """Search by name prefix, MRN or birth date over the blind index; candidates decrypted and re-checked.

        ``date_order`` is how the device's locale writes a date ('dmy', 'mdy', 'ymd'; routes.js asks Intl).
        Every patient held is searched (or listed, for no text); the first ``limit`` in name order are returned
        with ``total`` (all of them) and ``more`` (some left out: the screen's "Show more" asks a larger limit)."""
        self._require_unlocked()
        assert self._index is not None
        started = time.perf_counter()
        text = (text or "").strip()
        limit = max(1, int(limit))
        if not text:
            page = await self._patient_page(await self.store.list_ids("Patient"), limit)
            self._audit_later("search", "Patient", "", [], detail={"kind": "list", "results": page.total})
            storage: sm.StorageMode | None = getattr(self, "_storage_mode", None)  # online only keeps nothing
            return {"kind": None, "results": page.results, "ms": 0.0, "total": page.total, "more": page.more,
                    "moreLabel": cv.SHOW_MORE,
                    "summary": sm.patients_summary(page.total, storage.mode if storage else "device",
                                                   shown=len(page.results))}
        kind = cv.search_kind(text)
        try:
            text = cv.normalize_query(kind, text, "dmy" if date_order == "dmy" else "mdy")
            tokens = bi.tokens_for_query(self._index, kind, text)
        except bi.InvalidQuery as exc:
            raise ValidationFailed(str(exc), fields={"q": str(exc)}) from None
        if not tokens:
            return {"kind": kind, "results": [], "ms": 0.0}
        candidates: set[tuple[str, str]] | None = None
        for tok in tokens:
            found = set(await self.store.lookup_token(tok, "Patient"))
            candidates = found if candidates is None else candidates & found
            if not candidates:
                break
        ids = sorted(i for t, i in candidates or () if t == "Patient")
        page = await self._patient_page(ids, limit, keep=lambda ps: bi.filter_candidates(ps, kind, text))
        out = page.results
        # The query text itself stays on the device (it may be a name); the kind and the hits shown are audited.
        self._audit_later("search", "Patient", "", [str(p["id"]) for p in out],
                          detail={"kind": kind, "results": len(out), "matches": page.total})
        return {"kind": kind, "results": out, "total": page.total, "more": page.more, "moreLabel": cv.SHOW_MORE,
                "ms": round((time.perf_counter() - started) * 1000, 2)}

    async def chart(self, patient_id: str) -> dict[str, Any]:
        """Everything the chart screen shows for one patient (decrypted in one batch)."""
        machine = self._require_unlocked()
        resources = await self._chart_resources(patient_id)
        patient = next((r for r in resources if r.get("resourceType") == "Patient" and r.get("id") == patient_id),
                       None)
        if patient is None:
            if self._integrity_notice(patient_id):
                raise AppError("This patient's record could not be verified on this device, so it is not shown. "
                               "It is being downloaded again from the server.", kind="integrity")
            raise AppError("This patient is not on this device.", kind="not_found")
        self._audit_later("read", "Patient", patient_id, [patient_id], detail={"view": "chart"})

        def pending(r: Mapping[str, Any]) -> bool:
            return machine.has_pending_edit(str(r.get("resourceType")), str(r.get("id")))

        return {**cv.chart_view(patient, resources, pending), "integrity": self._integrity_notice(patient_id),
                # issue 18 hooks (browser_chart): the role's controls, refused changes, "conflict" marks
                "actions": self._chart_actions(), "rejected": self.rejected(patient_id),
                "conflictIds": sorted({v.id for v in machine.conflicts()}),
                **self._full_chart(patient, resources, pending)}  # issue 18 item 5 (browser_chart)

    async def _patient_index(self, patient_id: str) -> tuple[list[tuple[str, str]], ig.Manifest | None]:
        """(the rows of one patient, sorted; the patient's verified manifest or None), read through the manifest.

        Rows carry no shared patient token (store v2, PROTOCOL.md 4.5): the patient's sealed manifest is the
        index, one more read and decrypt per chart (none when this tab last wrote or read that very row: same
        row MAC). Without a manifest that opens and verifies (deleted, tampered, or checks off for a bench),
        every row's owner token is opened instead: a scan of the store's row metadata, the rare repair path.
        """
        tok = self._ref_token(patient_id)
        row = await self.store.get_record(ig.MANIFEST_TYPE, tok)
        cached = self._mcache.get(tok) if tok in self._mcache else None
        manifest: ig.Manifest | None = None
        if row is not None and cached is not None and cached[0] is not None and row.mac and cached[1] == row.mac:
            manifest = cached[0]
        elif row is not None:
            (o,) = await self._open([(row.resource_type, row.id, row.version, row.blob)])
            if o is not None and self._row_ok(row):
                try:
                    manifest = ig.Manifest.from_json(o, row.version)
                    self._mcache.put(tok, manifest, row.mac or "")  # the next chart open or write skips the decrypt
                    self._mcache.trim()
                except (ValueError, TypeError):
                    manifest = None
        if manifest is not None:
            return manifest.keys(), manifest
        return await self._owner_scan(tok), None

    async def _owner_scan(self, ref: str) -> list[tuple[str, str]]:
        """Every row whose owner token opens to the patient token ``ref`` (no manifest to read them through)."""
        keys = [(t, i) for t, i, _v in await self.store.list_held()]
        metas = await self.store.row_meta(keys)
        return sorted(k for k, m in zip(keys, metas, strict=True) if m is not None and ref in self._owner_refs(m[1]))

    async def _patient_keys(self, patient_id: str) -> list[tuple[str, str]]:
        """The (type, id) of one patient's records on this device (CDS context, purge); rows are checked on read."""
        return (await self._patient_index(patient_id))[0]

    async def _chart_resources(self, patient_id: str) -> list[dict[str, Any]]:
        """The records of one chart that verify (pyclient.integrity.check_chart); the others are quarantined."""
        keys, manifest = await self._patient_index(patient_id)
        data = [r for r in await self.store.get_records([k for k in keys if k not in self._quarantine])
                if r is not None]
        opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in data])
        views = [ig.RowView(r.resource_type, r.id, r.version, self._row_ok(r), o)
                 for r, o in zip(data, opened, strict=True)]
        if manifest is not None:  # already-quarantined records are not "missing" again
            manifest = ig.Manifest({k: v for k, v in manifest.entries.items() if k not in self._quarantine},
                                   manifest.generation)
        good, failures = ig.check_chart(patient_id=patient_id, rows=views, manifest=manifest)
        if any(f.reason == "manifest" for f in failures):  # nothing of this chart verifies: re-download it all
            failures = [ig.Failure(ig.MANIFEST_TYPE, patient_id, "manifest"),
                        *(ig.Failure(v.resource_type, v.id, "manifest") for v in views),
                        *(f for f in failures if f.reason != "manifest")]
        if failures:
            await self._quarantine_records(patient_id, failures)
        return [g for g in good if isinstance(g, dict)]

    async def bench_search(self, queries: Sequence[str], rounds: int = 3) -> dict[str, Any]:
        """p50 / p95 / max of :meth:`search` over ``queries`` (ms, wall clock inside Python)."""
        times: list[float] = []
        hits = 0
        for _ in range(rounds):
            for q in queries:
                t0 = time.perf_counter()
                r = await self.search(q)
                times.append((time.perf_counter() - t0) * 1000)
                hits += len(r["results"])
        times.sort()
        return {"n": len(times), "p50": round(times[len(times) // 2], 2),
                "p95": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2), "max": round(times[-1], 2),
                "avgHits": round(hits / max(1, len(times)), 1)}
