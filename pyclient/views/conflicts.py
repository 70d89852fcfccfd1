"""The conflict screen's view model and its Edit validation (issue 18, item 2).

Each conflicted field is shown the way the chart shows it (a dosage as its instruction text, a code by its
display, a date as a date: never JSON), with who made the other change and when, and no choice made for the
user. An edited value is validated here before the resolution is accepted, so a value the server would refuse
(``not-a-date``) is explained on the spot and the clinician's own value is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pyclient import choices as ch
from pyclient import dosage as dz
from pyclient.chart import cc_text, quantity_text
from pyclient.errors import ValidationFailed

from .rejected import parse_iso_date

NOT_SET: Final = "(not set)"

_OPTIONS: Final[Mapping[str, list[list[str]]]] = {  # the forms' own lists (pyclient.choices)
    "criticality": [list(c) for c in ch.ALLERGY_CRITICALITY],
    "gender": [list(c) for c in ch.GENDER],
    "clinicalStatus": [list(c) for c in ch.ALLERGY_STATUS],
    "status": [list(c) for c in ch.MEDICATION_STATUS],
}
_LABELS: Final[Mapping[str, str]] = {
    "criticality": "Criticality", "gender": "Gender", "birthDate": "Birth date", "telecom": "Phone",
    "dosageInstruction": "Dosage", "clinicalStatus": "Status", "verificationStatus": "Verification",
    "status": "Status", "statusReason": "Reason", "note": "Note", "name": "Name", "address": "Address",
    "valueQuantity": "Value", "effectiveDateTime": "Taken at", "code": "What", "reaction": "Reaction",
    "medicationCodeableConcept": "Medication", "description": "Title", "content": "Note text",
    "": "The whole record",
}
_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})")


def _top(path: str) -> str:
    return path.split(".")[0].split("[")[0]


def _leaf(path: str) -> str:
    return re.sub(r"\[[^\]]*\]", "", path.split(".")[-1])


def label(path: str) -> str:
    """A field's name in words ("dosageInstruction[0].text" -> "Dosage")."""
    top = _top(path)
    if top in _LABELS:
        return _LABELS[top]
    words = re.sub(r"(?<!^)([A-Z])", r" \1", top).lower()
    return words[:1].upper() + words[1:]


def _word(options: Sequence[Sequence[str]], code: str) -> str:
    return next((o[1] for o in options if o[0] == code), code)


def render(path: str, value: Any) -> str:
    """A value the way the chart shows it: never JSON, never "null"."""
    top, leaf = _top(path), _leaf(path)
    if value is None:
        return NOT_SET
    if top == "dosageInstruction" and isinstance(value, (Mapping, list)):  # issue 18 item 4: the chart's words
        return dz.dosage_list_text(value) or NOT_SET
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, str):
        opts = _OPTIONS.get(top) or _OPTIONS.get(leaf)
        if opts:
            return _word(opts, value)
        m = _DATETIME.match(value)
        if m:
            return f"{m.group(1)} {m.group(2)}"
        return value if value.strip() else NOT_SET
    if isinstance(value, Sequence):
        parts = [render(path, v) for v in value]
        return "; ".join(p for p in parts if p != NOT_SET) or NOT_SET
    if isinstance(value, Mapping):
        if top == "telecom" or "system" in value and "value" in value:
            return str(value.get("value") or NOT_SET)
        if "text" in value and isinstance(value["text"], str) and value["text"].strip():
            return value["text"]
        if "coding" in value:
            opts = _OPTIONS.get(top)
            codes = [str(c["code"]) for c in value.get("coding") or [] if isinstance(c, Mapping) and c.get("code")]
            if opts and codes and not any(isinstance(c, Mapping) and c.get("display") for c in value["coding"]):
                return _word(opts, codes[0])
            return cc_text(value) or NOT_SET  # a code by its display, as the chart says it
        if "value" in value and isinstance(value.get("value"), (int, float)):
            return quantity_text(value)  # with its unit, as the chart says it
        if "family" in value or "given" in value:
            return " ".join([*(str(g) for g in value.get("given") or []), str(value.get("family") or "")]).strip()
        if "line" in value or "city" in value:
            return ", ".join(x for x in [*(str(v) for v in value.get("line") or []), str(value.get("city") or "")] if x)
        if "display" in value:
            return str(value["display"])
        parts = [f"{label(k)}: {render(k, v)}" for k, v in value.items() if k not in ("id", "extension", "meta")]
        return "; ".join(parts) or NOT_SET
    return str(value)


def edit_spec(path: str, mine: Any, theirs: Any) -> dict[str, Any] | None:
    """How the person may type their own value for this field (None: choose mine or theirs only)."""
    top, leaf = _top(path), _leaf(path)
    sample = theirs if theirs is not None else mine
    opts = _OPTIONS.get(top) if isinstance(sample, str) or top == "clinicalStatus" else None
    if opts:
        code = mine if isinstance(mine, str) else render(path, mine)
        return {"kind": "select", "options": opts, "value": code if any(o[0] == code for o in opts) else ""}
    if top == "dosageInstruction" and not isinstance(sample, str):
        # The form the dosage was entered with, prefilled with this device's value (a dosage stays structured).
        return {"kind": "dosage", "form": dz.form_spec(mine if mine is not None else theirs)}
    if top == "telecom" or isinstance(sample, str):
        kind = "date" if leaf.endswith("Date") or top == "birthDate" else "text"
        return {"kind": kind, "value": render(path, mine) if mine is not None else ""}
    if isinstance(sample, (int, float)) and not isinstance(sample, bool):
        return {"kind": "number", "value": render(path, mine) if mine is not None else ""}
    return None


def edit_value(path: str, raw: Any, mine: Any, theirs: Any, *, today: str) -> tuple[Any, str | None]:
    """(value to store at ``path``, None) or (None, the reason in words). ``today``: ``YYYY-MM-DD``."""
    spec = edit_spec(path, mine, theirs)
    if spec is None:
        return None, "This field cannot be typed in here: keep mine or keep theirs."
    top, leaf = _top(path), _leaf(path)
    if spec["kind"] == "dosage":
        return _dosage_value(raw, mine)
    text = str(raw if raw is not None else "").strip()
    sample = theirs if theirs is not None else mine
    if spec["kind"] == "select":
        if not any(o[0] == text for o in spec["options"]):
            return None, "Choose one of the listed values."
        if isinstance(sample, Mapping):  # a CodeableConcept: keep its coding system
            coding = next((c for c in sample.get("coding") or [] if isinstance(c, Mapping)), {})
            return {"coding": [{**coding, "code": text, "display": _word(spec["options"], text)}]}, None
        return text, None
    if not text:
        return None, "Enter a value, or choose keep mine or keep theirs."
    if spec["kind"] == "date":
        day = parse_iso_date(text)
        if day is None:
            return None, "Enter the date as year-month-day, e.g. 2002-04-18."
        if top == "birthDate" and day > today:
            return None, "Birth date cannot be in the future."
        return day, None
    if spec["kind"] == "number":
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            return None, "Enter a number."
        return (int(number) if isinstance(sample, int) and number.is_integer() else number), None
    if top == "telecom" and not isinstance(sample, str):
        if not re.fullmatch(r"[+0-9 ()./-]{5,30}", text):
            return None, "Use digits, spaces and + ( ) - only."
        return [{"system": "phone", "value": text}], None
    if leaf in ("value",) and top == "telecom" and not re.fullmatch(r"[+0-9 ()./-]{5,30}", text):
        return None, "Use digits, spaces and + ( ) - only."
    return text[:2000], None


#: Field-level errors of a structured Edit are keyed ``<path>:<form field>`` (the screen puts each by its field).
SUB: Final = ":"


def _dosage_value(raw: Any, mine: Any) -> tuple[Any, str | None]:
    if not isinstance(raw, Mapping):
        return None, "Fill in the dosage form, or choose keep mine or keep theirs."
    try:
        return [dz.dosage_from_values(raw, mine)], None
    except ValidationFailed as exc:
        return None, "; ".join(dict.fromkeys(exc.fields.values())) or exc.message


def edit_problems(path: str, raw: Any, mine: Any) -> dict[str, str]:
    """Per form field, what is wrong with a structured Edit (``{"<path>:dose_value": "..."}``); {} when fine."""
    if _top(path) != "dosageInstruction" or not isinstance(raw, Mapping):
        return {}
    try:
        dz.dosage_from_values(raw, mine)
    except ValidationFailed as exc:
        return {f"{path}{SUB}{k}": v for k, v in exc.fields.items()}
    return {}


def _ref_name(v: Any) -> str:
    """A name from a Reference (its display) or a user name; never a bare id when a display exists."""
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, Mapping):
        return str(v.get("display") or v.get("reference") or "")
    return str(v or "").strip()


def other_change(server: Mapping[str, Any] | None, conflicts: Sequence[Mapping[str, Any]] = ()) -> str:
    """Who made the other change and when. The server ships who wrote the version that won and when it was
    written with each conflict (``oursAuthor``, ``oursAt``: PROTOCOL.md §5); the record's own meta gives the
    time otherwise. The record's recorder/requester is who *first* wrote it, not who changed it: not used."""
    if server is None:
        return "Someone else deleted this record on the server."
    shipped = next((c for c in conflicts if c.get("oursAuthor") or c.get("oursAt")), {})
    who = _ref_name(shipped.get("oursAuthor"))
    when = str(shipped.get("oursAt") or (server.get("meta") or {}).get("lastUpdated") or "")
    m = _DATETIME.match(when)
    when_text = f" on {m.group(1)} at {m.group(2)} (UTC)" if m else ""
    return f"The other change was saved by {who or 'another user'}{when_text}."


def field_views(conflicts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One view per conflicted field. Conflict dicts use the server's names: ``ours`` is the server's value
    (theirs, to this user) and ``theirs`` is this device's (mine)."""
    out = []
    for f in conflicts:
        path = str(f.get("path", ""))
        base, mine, theirs = f.get("base"), f.get("theirs"), f.get("ours")
        out.append({"path": path, "label": label(path), "base": render(path, base), "mine": render(path, mine),
                    "theirs": render(path, theirs), "edit": edit_spec(path, mine, theirs) if path else None})
    return out
