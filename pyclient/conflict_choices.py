"""The side-by-side conflict screen: what it lists, and the record a person's per-field choices make.

Wording on screen is the clinician's: *mine* is this device's edit (the merge's ``theirs``), *theirs* is
the server's version (the merge's ``ours``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyclient.chart import cc_text, patient_summary, ref_patient
from pyclient.conflict_paths import set_path
from pyclient.errors import ValidationFailed
from pyclient.merge import merge
from pyclient.sync import ConflictView
from pyclient.views import conflicts as vc

__all__ = ["conflict_list", "resolved_resource"]


def _title(resource_type: str, res: Mapping[str, Any]) -> str:
    if resource_type == "AllergyIntolerance":
        return f"Allergy: {cc_text(res.get('code'))}"
    if resource_type == "MedicationRequest":
        return f"Medication: {cc_text(res.get('medicationCodeableConcept'))}"
    if resource_type == "Patient":
        return f"Patient: {patient_summary(res)['display']}"
    return resource_type


def conflict_list(views: Sequence[ConflictView]) -> list[dict[str, Any]]:
    """Parked conflicts with base / mine / theirs per field, for the side-by-side screen."""
    out = []
    for c in views:
        fields = vc.field_views(c.conflicts)  # issue 18: values in words, the Edit kind per field
        res = c.local or c.server or {}
        out.append({"entryId": c.entry_id, "resourceType": c.resource_type, "id": c.id,
                    "title": _title(c.resource_type, res),
                    "serverVersion": c.server_version, "serverDeleted": c.server is None,
                    "patientId": c.id if c.resource_type == "Patient" else ref_patient(res),
                    "fields": fields, "otherChange": vc.other_change(c.server, c.conflicts)})
    return out


def _edited(f: Mapping[str, Any], path: str, value: Any, today: str) -> Any:
    """A typed-in value, checked as the entry form would (issue 18: refused here, never later by the server,
    so the clinician's own value is not lost); it keeps the field's JSON type (a number stays a number)."""
    checked, problem = vc.edit_value(path, value, f.get("theirs"), f.get("ours"), today=today)
    if problem:
        # A structured Edit (a dosage) also names each form field that is wrong, for the screen to mark.
        sub = vc.edit_problems(path, value, f.get("theirs"))
        if sub:  # said once, next to each form field that is wrong
            raise ValidationFailed("Please correct the highlighted fields of the dosage.", fields=sub)
        raise ValidationFailed(problem, fields={path: problem})
    return checked


def resolved_resource(view: ConflictView, choices: Mapping[str, Mapping[str, Any]], *, today: str) -> Any:
    """The record a person's choices make (``None`` = deleted), to be pushed based on the server's version.

    ``choices``: path -> {"pick": "mine"|"theirs"|"edit", "value": <for edit>}. Fields not in conflict
    keep the automatic merge of both sides; every conflicted field needs a choice (nothing is chosen for the
    person). ``today`` (``YYYY-MM-DD``, from the caller's clock) bounds an edited birth date.
    """
    chosen: Any
    if view.server is None or view.local is None:
        pick = next(iter(choices.values()), {}).get("pick", "theirs") if choices else "theirs"
        return view.local if pick == "mine" else view.server
    result = merge(view.base, view.server, view.local)
    chosen = json.loads(json.dumps(result.merged))
    for f in view.conflicts:
        path = str(f.get("path", ""))
        choice = choices.get(path) or {}
        pick = choice.get("pick")
        if pick == "theirs":
            value = f.get("ours")
        elif pick == "mine":
            value = f.get("theirs")
        elif pick == "edit":
            value = _edited(f, path, choice.get("value"), today)
        else:
            raise ValidationFailed("Choose keep mine, keep theirs or edit for every field.",
                                   fields={path: "Choose one."})
        if path == "":
            chosen = value
        elif isinstance(chosen, dict) and not set_path(chosen, path, value):
            # Not addressable (a choice element, an item gone on one side): take the whole top element.
            top = path.split(".")[0].split("[")[0]
            src = view.local if pick == "mine" else view.server
            if top in src:
                chosen[top] = json.loads(json.dumps(src[top]))
            else:
                chosen.pop(top, None)
    if isinstance(chosen, dict):
        chosen.setdefault("resourceType", view.resource_type)
        chosen["id"] = view.id
        if "meta" in view.server:
            chosen["meta"] = view.server["meta"]
    return chosen
