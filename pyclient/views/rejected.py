"""Changes the server refused: a list a clinician can act on, never a bare "1 rejected" (issue 18, item 3).

A refused change stays in the outbox (``pyclient.sync``: state ``rejected``) until the user acts. This module
turns each one into words: what the change was, why the server refused it (in plain words, never its raw
text when that text is technical), and what can be done: send it again (after fixing the fields that can be
fixed here), or discard it. Fix rules validate here, in Python, before anything is queued again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyclient import choices as ch
from pyclient import dosage as dz
from pyclient.chart import cc_text
from pyclient.dosage import dosage_list_text
from pyclient.errors import ValidationFailed

from .caldate import valid_date
from .permissions import Permissions, may, not_allowed_message

TITLES: Final[Mapping[str, str]] = {
    "MedicationRequest": "Medication order",
    "AllergyIntolerance": "Allergy",
    "Observation": "Measurement",
    "DocumentReference": "Note",
    "Patient": "Patient details",
    "Condition": "Problem",
}

_ROLE = re.compile(r"Your role does not allow (\w+) on (\w+)")
_TECHNICAL = re.compile(r"[{}\[\]<>]|Traceback|Error:|Exception|\bnull\b|\bNone\b|/\w+/\w+")


@dataclass(frozen=True)
class Rejected:
    """What the adapter knows about one refused change (from ``pyclient.sync.OutboxEntry``)."""

    entry_id: str
    op: str  # "put" | "delete"
    resource_type: str
    id: str
    resource: Mapping[str, Any] | None  # what the user wanted
    created: bool  # the change created the record (nothing of it is on the server)
    reason: str  # the server's text (OperationOutcome diagnostics)


def _dosage(res: Mapping[str, Any]) -> str:
    return dosage_list_text(res.get("dosageInstruction"))  # the chart's words (pyclient.dosage)


def _phone(res: Mapping[str, Any]) -> str:
    return next((str(t.get("value") or "") for t in res.get("telecom") or []
                 if isinstance(t, Mapping) and t.get("system") == "phone"), "")


def describe(r: Rejected) -> str:
    """One line saying what the change was, the way the chart says it."""
    res = r.resource or {}
    if r.op == "delete":
        return "Removal of a record"
    if r.resource_type == "MedicationRequest":
        name, dose = cc_text(res.get("medicationCodeableConcept")), _dosage(res)
        status = str(res.get("status") or "")
        what = f"{name} — {dose}" if dose else name
        return f"{what} (stopped)" if status == "stopped" else what
    if r.resource_type == "AllergyIntolerance":
        crit = {"high": "high criticality", "low": "low criticality"}.get(str(res.get("criticality") or ""), "")
        return ", ".join(x for x in (cc_text(res.get("code")), crit) if x)
    if r.resource_type == "Observation":
        q = res.get("valueQuantity") if isinstance(res.get("valueQuantity"), Mapping) else {}
        value = f"{q.get('value')} {q.get('unit') or ''}".strip() if q and q.get("value") is not None else ""
        return ": ".join(x for x in (cc_text(res.get("code")), value) if x)
    if r.resource_type == "DocumentReference":
        return str(res.get("description") or "Note")
    if r.resource_type == "Patient":
        parts = [f"birth date {res['birthDate']}" if res.get("birthDate") else "", f"phone {_phone(res)}" if _phone(res) else ""]
        return ", ".join(p for p in parts if p) or "Details"
    return TITLES.get(r.resource_type, "Record")


def plain_reason(text: str, *, resource_type: str, action: str) -> str:
    """The server's reason as a sentence a clinician understands."""
    m = _ROLE.search(text or "")
    if m:
        return not_allowed_message(m.group(2), m.group(1))
    low = (text or "").lower()
    if "outside your care team" in low:
        return ("This patient is not on your care team, so the server did not accept the change. "
                "Ask the patient's care team to enter it, or request emergency access first.")
    if "does not give access to patient data" in low:
        return "Your role does not give access to patient records, so the change was not accepted."
    if "was deleted and cannot be recreated" in low:
        return "This patient's record was deleted on the server, so the change cannot be saved. Ask the records team."
    if "baseversion" in low or "ahead" in low:
        return ("This device's copy of the record was out of step with the server. "
                "Send it again: it will be based on the server's latest version.")
    clean = (text or "").strip().rstrip(".")
    if not clean or clean == "rejected by the server" or _TECHNICAL.search(clean) or len(clean) > 200:
        return "The server could not accept this change as it was entered. Check the values and send it again, or discard it."
    return f"The server could not accept this change: {clean[0].lower() + clean[1:]}."


def _action(r: Rejected) -> str:
    return "delete" if r.op == "delete" else "create" if r.created else "update"


_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def parse_iso_date(text: str) -> str | None:
    """``YYYY-MM-DD`` if ``text`` is a real calendar date, else None (no datetime: pyclient reads no clock)."""
    m = _ISO_DATE.fullmatch(text.strip())
    if not m:
        return None
    y, mo, d = (int(g) for g in m.groups())
    return m.group(0) if y >= 1800 and valid_date(y, mo, d) else None


def fix_fields(r: Rejected) -> list[dict[str, Any]]:
    """The fields that can be corrected here before sending again (same names as the entry forms)."""
    res = r.resource or {}
    if r.op == "delete":
        return []
    if r.resource_type == "MedicationRequest":
        # The same structured form as "Start medication" / "Change dosage" (issue 18 item 4): a fix never turns a
        # structured dosage into a line of text.
        return [{"name": "dosage", "label": "Dosage", "value": _dosage(res), "kind": "dosage",
                 "spec": dz.form_spec(res.get("dosageInstruction"))}]
    if r.resource_type == "AllergyIntolerance":
        return [{"name": "criticality", "label": "Criticality", "value": str(res.get("criticality") or ch.CRITICALITY_DEFAULT),
                 "kind": "select", "options": [list(c) for c in ch.ALLERGY_CRITICALITY]}]
    if r.resource_type == "Patient":
        return [{"name": "phone", "label": "Phone", "value": _phone(res), "kind": "tel"},
                {"name": "birth_date", "label": "Birth date (YYYY-MM-DD)", "value": str(res.get("birthDate") or ""), "kind": "text"}]
    return []


def apply_fix(r: Rejected, values: Mapping[str, Any], *, today: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The corrected resource, or field errors (nothing is changed when there are errors).

    ``today`` is the device's date as ``YYYY-MM-DD`` (the caller reads the clock)."""
    res: dict[str, Any] = dict(r.resource or {})
    errors: dict[str, str] = {}
    if r.resource_type == "MedicationRequest" and isinstance(values.get("dosage"), Mapping):
        try:  # the structured form's fields (pyclient.dosage), errors keyed by its field names
            res["dosageInstruction"] = [dz.dosage_from_values(values["dosage"], res.get("dosageInstruction"))]
        except ValidationFailed as exc:
            errors.update(exc.fields)
    elif r.resource_type == "MedicationRequest" and "dosage" in values:  # a line of text (older callers)
        dosage = str(values.get("dosage") or "").strip()
        if not dosage:
            errors["dosage"] = "Enter the dose and frequency, e.g. 500 mg twice daily."
        else:
            res["dosageInstruction"] = [{"text": dosage[:500]}]
    if r.resource_type == "AllergyIntolerance" and "criticality" in values:
        crit = str(values.get("criticality") or "")
        if crit not in ch.codes(ch.ALLERGY_CRITICALITY):
            errors["criticality"] = ch.choose(ch.ALLERGY_CRITICALITY)
        else:
            res["criticality"] = crit
    if r.resource_type == "Patient":
        if "birth_date" in values:
            raw = str(values.get("birth_date") or "").strip()
            born = parse_iso_date(raw)
            if born is None:
                errors["birth_date"] = "Enter the birth date as year-month-day, e.g. 2002-04-18."
            elif born > today:
                errors["birth_date"] = "Birth date cannot be in the future."
            else:
                res["birthDate"] = born
        if "phone" in values:
            phone = str(values.get("phone") or "").strip()
            if phone and not re.fullmatch(r"[+0-9 ()./-]{5,30}", phone):
                errors["phone"] = "Use digits, spaces and + ( ) - only."
            else:
                telecom = [t for t in res.get("telecom") or [] if not (isinstance(t, Mapping) and t.get("system") == "phone")]
                if phone:
                    telecom.insert(0, {"system": "phone", "value": phone})
                res["telecom"] = telecom
    return (None, errors) if errors else (res, {})


def _advice(role_refused: bool, can_retry: bool) -> str | None:
    if not role_refused:
        return None
    if can_retry:
        return ("If an administrator has since corrected your role, send it again. Otherwise ask a colleague "
                "whose role allows it to enter it, then discard this copy.")
    return "Ask a colleague whose role allows it to enter it, then discard this copy so it stops counting as unsent."


def rejected_view(items: Sequence[Rejected], perms: Permissions | None,
                  patient_of: Mapping[str, str | None] | None = None) -> list[dict[str, Any]]:
    """What the "Refused changes" screen shows, one card per change, newest last (outbox order)."""
    out = []
    for r in items:
        action = _action(r)
        role_refused = bool(_ROLE.search(r.reason or ""))
        allowed_now = may(perms, r.resource_type, action)
        # A role refusal is final unless the role has changed since: then sending again can work.
        can_retry = r.op != "delete" and allowed_now and "cannot be recreated" not in (r.reason or "")
        fields = fix_fields(r) if can_retry else []
        out.append({
            "entryId": r.entry_id, "resourceType": r.resource_type, "id": r.id,
            "patientId": (patient_of or {}).get(r.entry_id),
            "title": f"{TITLES.get(r.resource_type, 'Change')}{' (new)' if action == 'create' else ''}",
            "what": describe(r),
            "reason": plain_reason(r.reason, resource_type=r.resource_type, action=action),
            "canRetry": can_retry, "fields": fields,
            "retryLabel": "Fix and send again" if fields else "Send again",
            "discardLabel": "Discard this change",
            "discardWarning": ("This change has not been saved on the server. Discarding it removes it from this "
                               "device for good; the discard is recorded in the audit trail."),
            "advice": _advice(role_refused, can_retry),
        })
    return out


def sign_out_warning(pending: int, rejected: int, conflicted: int) -> str | None:
    """The sign-out dialog's sentence: every change that has not reached the server, by kind (None: none)."""
    parts = []
    if pending:
        parts.append(f"{pending} change{'s' if pending != 1 else ''} waiting to be sent")
    if rejected:
        parts.append(f"{rejected} change{'s' if rejected != 1 else ''} the server refused")
    if conflicted:
        parts.append(f"{conflicted} conflict{'s' if conflicted != 1 else ''} waiting for your decision")
    if not parts:
        return None
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"These have not reached the server: {listed}. Signing out removes them from this device for good. "
            "Sync and review them first if you can.")


def sign_out_warning_sealed(count: int) -> str | None:
    """The same dialog on a locked device ("Forgot PIN"): the changes are sealed, so only their number is known."""
    if not count:
        return None
    one = count == 1
    return (f"{count} change{' has' if one else 's have'} not reached the server yet. Signing out removes "
            f"{'it' if one else 'them'} from this device for good. Sync first if you can.")


def rejected_banner(count: int) -> str:
    """The banner right after a sync in which the server refused changes."""
    one = count == 1
    return (f"The server refused {'a change' if one else f'{count} changes'}. "
            f"{'It is' if one else 'They are'} kept on this device until you fix and resend or discard "
            f"{'it' if one else 'them'}.")
