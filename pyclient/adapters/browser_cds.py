"""The PWA's clinical decision support calls (Pyodide): order review before save, the override flow, and
the signed knowledge bundles cached on the device.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (kept in its own module so the app file only
gains one base class and one line in ``sync_once``). Every rule lives in :mod:`pyclient.cds`; this file
only gathers the chart from the encrypted store, calls the engine and records what was decided.

Bundles: fetched from ``/api/cds/bundles/{kb,guidelines}/latest`` when due, Ed25519 signature verified with
WebCrypto, digest and key pinning checked by :func:`pyclient.cds.bundles.accept`, the payload sealed with
the device data key (AES-GCM envelope, like a record) and kept in the meta store. The newest version held
is the one in force; with none yet, the knowledge base shipped in the wheel.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pyclient import forms
from pyclient.cds import Context, KnowledgeBase, KnowledgeBaseError, check, default_kb, warm
from pyclient.cds.bundles import BundleError, accept, newest, to_verify
from pyclient.cds.decisions import (
    DecisionError,
    annotate_order,
    decide,
    detected_issue,
    detected_issue_id,
    order_review,
)
from pyclient.errors import ValidationFailed

BUNDLE_TYPE = "CdsBundle"
M_BUNDLE = "cds.bundle."  # + kind
M_PINNED = "cds.pinnedKeys"
M_CHECKED = "cds.lastFetch"
REFRESH_SECONDS = 6 * 3600
RECORDED = ("critical", "warning")  # info cards are shown, not recorded


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class CdsMixin:
    """Order-time checks and bundle cache; relies on BrowserApp's store, sealing, audit and edit helpers."""

    _cds_kb_cache: tuple[str, KnowledgeBase] | None = None
    _cds_guides_cache: tuple[str, Any] | None = None

    # -- the knowledge base in force -------------------------------------------------------------

    async def _cds_bundle(self, kind: str) -> tuple[dict[str, Any], Any] | None:
        """(meta info, parsed payload) of the cached bundle of ``kind``, or None."""
        raw = await self.store.meta_get(M_BUNDLE + kind)  # type: ignore[attr-defined]
        if not raw:
            return None
        try:
            info = json.loads(raw)
            blob = base64.b64decode(info["blob"])
            opened = (await self._open([(BUNDLE_TYPE, kind, 0, blob)]))[0]  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError):
            return None
        if opened is None:  # key rotated away or tampered: fall back and fetch again
            return None
        return info, opened.get("payload")

    async def _cds_kb(self) -> KnowledgeBase:
        # Keyed by the stored meta text itself: an unchanged bundle is not unsealed, decompressed and parsed
        # again for every order check (that cost more than the check).
        raw = await self.store.meta_get(M_BUNDLE + "kb")  # type: ignore[attr-defined]
        shipped = default_kb()
        if not raw:
            return self._cds_warmed(shipped)
        if self._cds_kb_cache is not None and self._cds_kb_cache[0] == raw:
            kb = self._cds_kb_cache[1]
        else:
            held = await self._cds_bundle("kb")
            if held is None:
                return self._cds_warmed(shipped)
            try:
                kb = KnowledgeBase.from_json(held[1])
            except KnowledgeBaseError:
                return self._cds_warmed(shipped)
            self._cds_kb_cache = (str(raw), kb)
        return self._cds_warmed(kb if newest([kb.version, shipped.version]) == kb.version else shipped)

    def _cds_warmed(self, kb: KnowledgeBase) -> KnowledgeBase:
        """Run the engine once per base (the chart's status line asks first), so the first order is fast."""
        if kb.memo.get("cds-warm") is None:
            warm(kb)
            kb.memo["cds-warm"] = True
        return kb

    async def cds_status(self) -> dict[str, Any]:
        """What the chart shows: knowledge base and guideline versions in force, and when they were fetched."""
        self._require_unlocked()  # type: ignore[attr-defined]
        kb = await self._cds_kb()
        out: dict[str, Any] = {}
        for kind in ("kb", "guidelines"):
            raw = await self.store.meta_get(M_BUNDLE + kind)  # type: ignore[attr-defined]
            info = json.loads(raw) if raw else {}
            out[kind] = {"version": info.get("version"), "fetchedAt": info.get("fetchedAt"),
                         "publishedAt": info.get("publishedAt")}
        out["kb"]["inForce"] = kb.version
        out["kb"]["source"] = "server" if out["kb"]["version"] == kb.version else "built-in"
        out["kb"]["licence"] = kb.licence
        return out

    async def guidelines(self) -> dict[str, Any]:
        """The cached guideline library (sepsis, anticoagulation reversal, hyperkalaemia...)."""
        self._require_unlocked()  # type: ignore[attr-defined]
        held = await self._cds_bundle("guidelines")
        if held is None:
            return {"version": None, "fetchedAt": None, "guidelines": []}
        info, payload = held
        items = payload.get("guidelines", []) if isinstance(payload, Mapping) else []
        return {"version": info.get("version"), "fetchedAt": info.get("fetchedAt"), "guidelines": items}

    async def cds_alerts(self, patient_id: str) -> list[dict[str, Any]]:
        """This patient's recorded medication-safety findings (DetectedIssue), newest first, for the chart."""
        self._require_unlocked()  # type: ignore[attr-defined]
        keys = await self._patient_keys(patient_id)  # type: ignore[attr-defined]
        issues = [r for r in await self._resources([k for k in keys if k[0] == "DetectedIssue"])  # type: ignore[attr-defined]
                  if r.get("resourceType") == "DetectedIssue"]
        # Newest first to the second: sorting by the minute shown left two decisions of one minute in store order.
        issues.sort(key=lambda i: str(i.get("identifiedDateTime") or ""), reverse=True)
        out = []
        for i in issues[:20]:
            action = ((i.get("mitigation") or [{}])[0].get("action") or {}) if i.get("mitigation") else {}
            codes = [c.get("code") for c in action.get("coding") or [] if isinstance(c, Mapping)]
            out.append({"id": i.get("id"), "summary": (i.get("code") or {}).get("text") or "Medication alert",
                        "severity": i.get("severity") or "", "status": i.get("status") or "",
                        "decision": codes[0] if codes else "", "text": action.get("text") or "",
                        "when": str(i.get("identifiedDateTime") or "")[:16].replace("T", " "),
                        "at": str(i.get("identifiedDateTime") or "")})  # the order's key, for the list's data-at
        return out

    # -- fetching signed bundles ------------------------------------------------------------------

    async def _verify_ed25519(self, pub: bytes, sig: bytes, msg: bytes) -> bool:
        from js import Object, crypto  # type: ignore[import-not-found]  # noqa: PLC0415 - browser only
        from pyodide.ffi import to_js  # type: ignore[import-not-found]  # noqa: PLC0415

        alg = to_js({"name": "Ed25519"}, dict_converter=Object.fromEntries)
        try:
            key = await crypto.subtle.importKey("raw", to_js(pub), alg, False, to_js(["verify"]))
            return bool(await crypto.subtle.verify(alg, key, to_js(sig), to_js(msg)))
        except Exception:  # noqa: BLE001 - a browser without Ed25519 cannot verify: refuse the bundle
            return False

    async def cds_refresh(self, force: bool = False) -> dict[str, Any]:
        """Fetch, verify and cache the newest knowledge base and guideline bundles (when due, or ``force``)."""
        self._require_unlocked()  # type: ignore[attr-defined]
        now = time.time()
        last = await self.store.meta_get(M_CHECKED)  # type: ignore[attr-defined]
        if not force and last and now - float(last) < REFRESH_SECONDS:
            return {"fetched": [], "skipped": True}
        pinned_raw = await self.store.meta_get(M_PINNED)  # type: ignore[attr-defined]
        pinned = {k: base64.b64decode(v) for k, v in (json.loads(pinned_raw) if pinned_raw else {}).items()}
        fetched, errors = [], []
        for kind in ("kb", "guidelines"):
            try:
                res = await self._http("GET", f"/api/cds/bundles/{kind}/latest", "")  # type: ignore[attr-defined]
                status, text = int(res[0]), str(res[1] or "")
            except Exception:  # noqa: BLE001 - offline: keep what we hold
                errors.append(f"{kind}: offline")
                continue
            if status != 200:
                errors.append(f"{kind}: server answered {status}")
                continue
            try:
                bundle = json.loads(text)
                pub, sig, statement = to_verify(bundle)
                got = accept(bundle, signature_ok=await self._verify_ed25519(pub, sig, statement), pinned=pinned)
                data = got.data()
                if kind == "kb":
                    KnowledgeBase.from_json(data)
            except (BundleError, KnowledgeBaseError, ValueError) as exc:
                errors.append(f"{kind}: {exc}")
                await self._audit_quietly("read", detail={"cdsBundle": "rejected",  # type: ignore[attr-defined]
                                                          "kind": kind, "reason": str(exc)[:120]})
                continue
            pinned.setdefault(got.key_id, got.public_key)
            current = await self.store.meta_get(M_BUNDLE + kind)  # type: ignore[attr-defined]
            held = json.loads(current) if current else {}
            if held.get("version") and newest([held["version"], got.version]) != got.version:
                continue  # we already hold a newer one
            blob = (await self._seal([(BUNDLE_TYPE, kind, 0, {"payload": data})]))[0]  # type: ignore[attr-defined]
            info = {"version": got.version, "sha256": got.sha256, "publishedAt": got.published_at,
                    "fetchedAt": _iso(now), "keyId": got.key_id, "blob": base64.b64encode(blob).decode()}
            await self.store.meta_put(M_BUNDLE + kind, json.dumps(info))  # type: ignore[attr-defined]
            fetched.append({"kind": kind, "version": got.version})
        await self.store.meta_put(M_PINNED, json.dumps(  # type: ignore[attr-defined]
            {k: base64.b64encode(v).decode() for k, v in pinned.items()}))
        if not errors:
            await self.store.meta_put(M_CHECKED, str(now))  # type: ignore[attr-defined]
        return {"fetched": fetched, "errors": errors}

    async def cds_refresh_if_due(self) -> None:
        """Called at the end of a sync; never lets a bundle problem fail the sync."""
        try:
            await self.cds_refresh()
        except Exception:  # noqa: BLE001
            import traceback  # noqa: PLC0415

            traceback.print_exc()

    # -- order time -------------------------------------------------------------------------------

    async def _cds_draft(self, patient_id: str, name: str, dosage: forms.DosageInput, draft_id: str | None,
                         medication_id: str | None) -> dict[str, Any]:
        if medication_id:
            res: dict[str, Any] = await self._current("MedicationRequest", medication_id)  # type: ignore[attr-defined]
            # A structured change may keep the current timing: checked against the instruction it replaces.
            forms.medication_order_check(name, dosage, need_name=False, previous=res.get("dosageInstruction"))
            return forms.medication_change(res, dosage)
        forms.medication_order_check(name, dosage)
        # The same resource start_medication queues: the checks review exactly what will be saved.
        return forms.medication_new(patient_id, id=draft_id or str(uuid.uuid4()), name=name, dosage=dosage,
                                    now=_iso(time.time()), author=self._author())  # type: ignore[attr-defined]

    async def _cds_cards(self, patient_id: str, draft: Mapping[str, Any]) -> tuple[list[Any], KnowledgeBase]:
        # The patient's records as its sealed manifest lists them (the manifest itself is no FHIR record).
        chart = await self._resources(await self._patient_keys(patient_id))  # type: ignore[attr-defined]
        kb = await self._cds_kb()
        return check([draft], Context(chart, now=_iso(time.time())), kb=kb), kb

    async def cds_review(self, patient_id: str, name: str = "", dosage: forms.DosageInput = "", draft_id: str | None = None,
                         medication_id: str | None = None) -> dict[str, Any]:
        """Run the checks on the order about to be saved; nothing is written."""
        self._require_writable()  # type: ignore[attr-defined]
        draft = await self._cds_draft(patient_id, name, dosage, draft_id, medication_id)
        t0 = time.perf_counter()
        cards, kb = await self._cds_cards(patient_id, draft)
        ms = (time.perf_counter() - t0) * 1000
        self._audit_later("read", "Patient", patient_id, [patient_id],  # type: ignore[attr-defined]
                          detail={"view": "cds-check", "cards": len(cards)})
        return {"draftId": draft["id"], "review": order_review(cards), "kbVersion": kb.version,
                "ms": round(ms, 2)}

    async def cds_save(self, patient_id: str, decision: str, name: str = "", dosage: forms.DosageInput = "",
                       draft_id: str | None = None, medication_id: str | None = None,
                       reason_code: str | None = None) -> dict[str, Any]:
        """Save (or cancel) the reviewed order with the clinician's decision.

        Re-runs the same check (deterministic: the same cards), enforces the override rule, records one
        DetectedIssue per warning/critical card (accepted / overridden with reason / cancelled), annotates
        the order with the knowledge base version and the acknowledged cards, and audits the decision.
        All of it is queued in the outbox and syncs like any change.
        """
        self._require_writable()  # type: ignore[attr-defined]
        draft = await self._cds_draft(patient_id, name, dosage, draft_id, medication_id)
        cards, kb = await self._cds_cards(patient_id, draft)
        try:
            chosen = decide(cards, decision=decision, reason_code=reason_code)
        except DecisionError as exc:
            raise ValidationFailed(str(exc), fields={"override": str(exc)}) from None
        when = _iso(time.time())
        issues = []
        for card in cards:
            if card.indicator not in RECORDED:
                continue
            issue = detected_issue(card, decision=chosen.decision, reason=chosen.reason, patient_id=patient_id,
                                   kb=kb, when=when, author=self._author())  # type: ignore[attr-defined]
            exists = await self.store.get_record("DetectedIssue", issue["id"]) is not None  # type: ignore[attr-defined]
            await self._edit("DetectedIssue", issue["id"], issue, create=not exists)  # type: ignore[attr-defined]
            issues.append(issue["id"])
        saved_id = None
        if chosen.decision != "cancelled":
            order = annotate_order(draft, kb=kb, acknowledged=cards)
            await self._edit("MedicationRequest", order["id"], order,  # type: ignore[attr-defined]
                             create=medication_id is None)
            saved_id = order["id"]
        critical = sum(1 for c in cards if c.needs_override)
        # Device audit actions are read/search/create/update/delete: the decision is a "create" of its record.
        await self._audit_quietly("create", "DetectedIssue", issues[0] if issues else "",  # type: ignore[attr-defined]
                                  [patient_id], detail={"cdsDecision": chosen.decision, "order": str(draft["id"]),
                                                        "cards": len(cards), "critical": critical,
                                                        "reason": (chosen.reason or {}).get("code", ""),
                                                        "kbVersion": kb.version})
        return {"id": saved_id, "decision": chosen.decision, "issues": issues,
                "issueIds": [detected_issue_id(c.uuid) for c in cards if c.indicator in RECORDED],
                "status": self.status()}  # type: ignore[attr-defined]
