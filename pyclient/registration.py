"""Registering a patient (issue 18 item 1): the local MRN rule, the form's checks and the duplicate match.

One rule, one place: the device validates the registration form with :func:`patient_new` and the server
(``omnicare.fhir.registration``) applies :func:`local_mrn_problem` and :func:`patient_problems` to every
Patient it is sent, so a record the device accepted is never refused for a reason the form did not show.

Local MRN: a walk-in registered offline needs an MRN at once, and two tablets may register at the same time
without seeing each other. The MRN is built from the device id (a random UUID, unique per device) and a
counter kept on that device (``L-<8 characters from the device id>-<counter>-<check character>``,
e.g. ``L-7ZQ4K1MX-00001-R``): two devices never share the device part, one device never repeats a counter. The
check character catches a mistyped character and most swapped pairs when the MRN is read out or typed.

Pure: the adapter passes the device id, the counter, the record's id and today's date.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pyclient import blindindex as bi
from pyclient import choices as ch
from pyclient.chart import DateOrder, normalize_query, patient_summary
from pyclient.errors import ValidationFailed

__all__ = [
    "LOCAL_MRN_SYSTEM",
    "MR_TYPE",
    "clinician_choices",
    "duplicate_matches",
    "duplicate_queries",
    "local_mrn",
    "local_mrn_device_part",
    "local_mrn_problem",
    "mrn_device_problem",
    "parse_birth_date",
    "patient_new",
    "patient_problems",
]

LOCAL_MRN_SYSTEM: Final = "urn:omnicare:local-mrn"
OTHER_ID_SYSTEM: Final = "urn:omnicare:other-id"
MR_TYPE: Final = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                               "display": "Medical record number"}], "text": "Medical record number"}
GENDERS: Final = ch.codes(ch.GENDER)
FIX: Final = "Please correct the highlighted fields."
_B32: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U (read aloud without doubt)
_MRN_RE: Final = re.compile(r"L-([0-9A-HJKMNP-TV-Z]{8})-(\d{5,9})-([0-9A-HJKMNP-TV-Z])")
_PHONE_RE: Final = re.compile(r"[+0-9 ()./-]{5,30}")
EARLIEST_BIRTH: Final = "1880-01-01"


# -- the local MRN ------------------------------------------------------------------------------------


def _check_char(body: str) -> str:
    """Weighted sum mod 31 (prime) over the base32 values: every single-character change and every swap of
    two neighbouring characters changes it."""
    total = sum((i + 1) * _B32.index(ch) for i, ch in enumerate(body))
    return _B32[total % 31]


def _device_part(device_id: str) -> str:
    """40 bits of SHA-256 of the whole device id (8 base32 characters): ids that differ anywhere differ here
    (two devices share a part with probability 2^-40 per pair; the server refuses a reused MRN all the same)."""
    hexdigits = "".join(ch for ch in device_id.lower() if ch in "0123456789abcdef")
    if len(hexdigits) < 32:
        raise ValueError("a device id is a UUID")
    n = int.from_bytes(hashlib.sha256(hexdigits.encode("ascii")).digest()[:5], "big")
    return "".join(_B32[(n >> (5 * (7 - i))) & 31] for i in range(8))


def local_mrn(device_id: str, counter: int) -> str:
    """The MRN of the ``counter``-th patient registered on this device (counter starts at 1)."""
    if not 1 <= counter < 10**9:
        raise ValueError("the registration counter is 1 to 999,999,999")
    dev = _device_part(device_id)
    num = f"{counter:05d}"
    return f"L-{dev}-{num}-{_check_char(dev + num)}"


def local_mrn_problem(value: str) -> str | None:
    """A sentence saying why ``value`` is not a local MRN this rule made, or None when it is one."""
    m = _MRN_RE.fullmatch(value or "")
    if not m:
        return "A local MRN looks like L-7ZQ4K1MX-00001-R."
    dev, num, check = m.groups()
    if _check_char(dev + num) != check:
        return "This local MRN has a wrong check character: it was mistyped or changed."
    return None


def local_mrn_device_part(value: str) -> str | None:
    """The device part of a well-formed local MRN (the server compares it with the device that sent it)."""
    m = _MRN_RE.fullmatch(value or "")
    return m.group(1) if m else None


def device_part_of(device_id: str) -> str | None:
    """The device part a device with this id puts in its MRNs (None for an id that is not a UUID)."""
    try:
        return _device_part(device_id)
    except ValueError:
        return None


def mrn_device_problem(patient: Mapping[str, Any], device_id: str) -> str | None:
    """The server's check on a Patient a device creates: its local MRN must carry that device's own part, so no
    device can take numbers from another's range. Devices whose id is not a UUID (tests, scripts) are not judged."""
    mine = device_part_of(device_id)
    if mine is None:
        return None
    for ident in patient.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == LOCAL_MRN_SYSTEM:
            part = local_mrn_device_part(str(ident.get("value") or ""))
            if part is not None and part != mine:
                return "This local MRN was made on another device: each device gives MRNs from its own range."
    return None


# -- the form -------------------------------------------------------------------------------------------


def parse_birth_date(text: str, *, today: str, date_order: DateOrder = "dmy") -> str:
    """A birth date typed as the search box accepts it (18/04/2002, 2002-04-18, ...) -> ISO; a sentence
    (``ValueError``) when it is not a whole date, is in the future or is implausibly old."""
    t = (text or "").strip()
    if not t:
        raise ValueError("Enter the birth date, for example 18/04/2002.")
    try:
        iso = normalize_query("birthdate", t, date_order)
    except bi.InvalidQuery as exc:
        raise ValueError(str(exc)) from None
    if len(iso) != 10:
        raise ValueError(f"“{t}” is not a whole date: enter the day, month and year, for example 18/04/2002.")
    if iso > today:
        raise ValueError("The birth date cannot be in the future.")
    if iso < EARLIEST_BIRTH:
        raise ValueError("Check the year of birth: it is more than 140 years ago.")
    return iso


def _text(values: Mapping[str, Any], key: str, limit: int = 200) -> str:
    return " ".join(str(values.get(key) or "").split())[:limit]


def clinician_choices(raw: Any) -> list[dict[str, str]] | None:
    """The sign-in answer's ``clinicians`` as ``[{"id", "display"}]`` (entries without an id dropped), or None
    when the answer has none (the user is a clinician, or an older server)."""
    if not isinstance(raw, (list, tuple)):
        return None
    return [{"id": str(c["id"]), "display": str(c.get("display") or c["id"])}
            for c in raw if isinstance(c, Mapping) and isinstance(c.get("id"), str) and c["id"]]


def patient_new(values: Mapping[str, Any], *, id: str, mrn: str, today: str,
                date_order: DateOrder = "dmy",
                clinicians: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Validate the registration form and build the new Patient (raises :class:`ValidationFailed`).

    ``clinicians``: for a registrant who joins no care team (the front desk), the clinicians the sign-in answer
    offers; one must be chosen (``values["responsible"]``) and becomes ``generalPractitioner`` — the server puts
    that clinician's care team on the patient when it syncs (PROTOCOL.md, Registration). None: a clinician
    registering, who joins the team themselves."""
    errors: dict[str, str] = {}
    responsible: dict[str, str] | None = None
    if clinicians:
        chosen = str(values.get("responsible") or "")
        match = next((c for c in clinicians if str(c.get("id") or "") == chosen), None) if chosen else None
        if match is None:
            errors["responsible"] = "Choose the clinician responsible for this patient."
        else:
            responsible = {"reference": f"Practitioner/{chosen}", "display": str(match.get("display") or "")}
    given, family = _text(values, "given"), _text(values, "family")
    if not given:
        errors["given"] = "Enter the given name."
    if not family:
        errors["family"] = "Enter the family name."
    birth = ""
    try:
        birth = parse_birth_date(str(values.get("birth_date") or ""), today=today, date_order=date_order)
    except ValueError as exc:
        errors["birth_date"] = str(exc)
    gender = str(values.get("gender") or "")
    if gender not in GENDERS:
        errors["gender"] = ch.choose(ch.GENDER)
    phone, contact_name, contact_phone = (_text(values, k, 30 if "phone" in k else 200)
                                         for k in ("phone", "contact_name", "contact_phone"))
    for key, value in (("phone", phone), ("contact_phone", contact_phone)):
        if value and not _PHONE_RE.fullmatch(value):
            errors[key] = "Use digits, spaces and + ( ) - only."
    if contact_phone and not contact_name:
        errors["contact_name"] = "Enter the name of the person to call."
    problem = local_mrn_problem(mrn)
    if problem:
        errors["mrn"] = problem
    other_id = _text(values, "other_id", 64)
    if errors:
        raise ValidationFailed(FIX, fields=errors)
    identifiers: list[dict[str, Any]] = [{"use": "usual", "type": MR_TYPE, "system": LOCAL_MRN_SYSTEM, "value": mrn}]
    if other_id:
        identifiers.append({"use": "secondary", "system": OTHER_ID_SYSTEM, "value": other_id,
                            "type": {"text": "Other identifier"}})
    res: dict[str, Any] = {"resourceType": "Patient", "id": id, "active": True, "identifier": identifiers,
                           "name": [{"use": "official", "family": family, "given": given.split()}],
                           "gender": gender, "birthDate": birth}
    if responsible is not None:
        res["generalPractitioner"] = [responsible]
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    line, city, postal = _text(values, "address_line"), _text(values, "city", 100), _text(values, "postal_code", 20)
    if line or city or postal:
        addr: dict[str, Any] = {"use": "home"}
        if line:
            addr["line"] = [line]
        if city:
            addr["city"] = city
        if postal:
            addr["postalCode"] = postal
        res["address"] = [addr]
    if contact_name:
        contact: dict[str, Any] = {"relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C", "display": "Emergency Contact"}],
            "text": "Emergency contact"}], "name": {"text": contact_name}}
        if contact_phone:
            contact["telecom"] = [{"system": "phone", "value": contact_phone}]
        res["contact"] = [contact]
    return res


def patient_problems(patient: Mapping[str, Any], *, today: str) -> dict[str, str]:
    """What the server refuses in a Patient it is sent (field -> sentence; empty = fine): the same checks as the
    form, on the finished resource: a local MRN that this rule did not make, a birth date that is not a real
    past date. Other identifiers and partial records from other systems (imports, interfaces) are not judged."""
    errors: dict[str, str] = {}
    for ident in patient.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == LOCAL_MRN_SYSTEM:
            problem = local_mrn_problem(str(ident.get("value") or ""))
            if problem:
                errors["mrn"] = problem
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) == 10:
        try:
            parse_birth_date(birth, today=today, date_order="dmy")
        except ValueError as exc:
            errors["birth_date"] = str(exc)
    return errors


# -- duplicates -----------------------------------------------------------------------------------------


def duplicate_queries(patient: Mapping[str, Any]) -> list[tuple[bi.Kind, str]]:
    """Blind-index lookups that find possible duplicates of a new patient: (name AND birth date) is the first
    pair (the adapter intersects them), then each identifier on its own."""
    s = patient_summary(patient)
    out: list[tuple[bi.Kind, str]] = []
    if s["family"] and s["birthDate"]:
        first = (str(s["given"]).split() or [""])[0]  # middle names differ between records of one person
        out += [("name", f"{s['family']} {first}".strip()), ("birthdate", str(s["birthDate"]))]
    for ident in patient.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("value") and ident.get("system") != LOCAL_MRN_SYSTEM:
            out.append(("identifier", str(ident["value"])))
    return out


def _fold(text: str) -> str:
    return " ".join(bi.name_words(unicodedata.normalize("NFKC", text)))


def duplicate_matches(new: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Candidates that really look like the new patient, each with why, in words: same family name, first given
    name and birth date; or a shared identifier (the new local MRN never counts: nobody else can have it)."""
    n = patient_summary(new)
    fam, first = _fold(str(n["family"])), (_fold(str(n["given"])).split() or [""])[0]
    new_ids = {bi.normalize_identifier(str(i.get("value"))): i for i in new.get("identifier") or []
               if isinstance(i, Mapping) and i.get("value") and i.get("system") != LOCAL_MRN_SYSTEM}
    out: list[dict[str, Any]] = []
    for c in candidates:
        if c.get("id") == new.get("id"):
            continue
        s = patient_summary(c)
        reasons: list[str] = []
        c_given = _fold(str(s["given"])).split()
        if (fam and _fold(str(s["family"])) == fam and s["birthDate"] == n["birthDate"]
                and first and c_given and (c_given[0].startswith(first) or first.startswith(c_given[0]))):
            reasons.append("same name and birth date")
        for ident in c.get("identifier") or []:
            if isinstance(ident, Mapping) and bi.normalize_identifier(str(ident.get("value") or "")) in new_ids:
                reasons.append(f"same identifier {ident.get('value')}")
                break
        if reasons:
            out.append({"id": s["id"], "display": s["display"], "birthDate": s["birthDate"], "mrn": s["mrn"],
                        "gender": s["gender"], "why": " and ".join(reasons)})
    return sorted(out, key=lambda m: (str(m["display"]), str(m["id"])))
