"""Blind indexes: search encrypted patients by name prefix, identifier and birth date.

A token is ``kind ":" hex(truncate(HMAC-SHA256(index_key, normalized)))``. All
tokens of a patient go into one IndexedDB *multi-entry* index; a query turns
into tokens that must ALL be present, the matching ids are candidates, and the
candidates are decrypted and re-checked exactly with :func:`matches` (truncation
makes false positives on purpose). Per-index keys come from the user's
blind-index root key via HKDF-SHA256 (RFC 5869), so the three indexes cannot be
correlated with each other. Pure stdlib (hmac/hashlib/unicodedata).

What leaks to someone holding the device storage but not the PIN: which patients
share a token (equal name prefixes, identifiers, birth years/months/dates, up to
truncation collisions) and how many tokens a patient has (roughly, name length
up to the prefix cap). They cannot test guesses without the index key. See
PROTOCOL.md "Blind indexes" for the truncation arithmetic.

Which rows belong to one patient is not in the index: the patient-reference token names the patient's
sealed manifest only, and each row carries its own sealed owner token (:func:`owner_token`), unlinkable to
the patient's other rows (PROTOCOL.md 4.4/4.5, store v2).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["name", "identifier", "birthdate"]
KINDS: tuple[Kind, ...] = ("name", "identifier", "birthdate")

#: Token width in bits per index (CipherSweet rule for R = 50,000; see PROTOCOL.md).
TOKEN_BITS: dict[Kind, int] = {"name": 12, "identifier": 14, "birthdate": 12}
_TAG: dict[Kind, str] = {"name": "n", "identifier": "i", "birthdate": "b"}
MIN_PREFIX = 3
MAX_PREFIX = 8
HKDF_SALT = b"omnicare blind index v1"
#: Identifiers never indexed: search does not need them and equality of SSNs is too revealing.
EXCLUDED_IDENTIFIER_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/us-ssn"})
EXCLUDED_IDENTIFIER_TYPES = frozenset({"SS", "SB"})


class InvalidQuery(ValueError):
    """The query text cannot be turned into tokens (e.g. a malformed date)."""


# -- HKDF (RFC 5869) ------------------------------------------------------------


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract with HMAC-SHA256."""
    return hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with HMAC-SHA256."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF length must be 1..8160 bytes")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


@dataclass(frozen=True)
class IndexKeys:
    """One HMAC key per index, derived from the blind-index root key."""

    name: bytes = field(repr=False)
    identifier: bytes = field(repr=False)
    birthdate: bytes = field(repr=False)

    @classmethod
    def derive(cls, root_key: bytes) -> IndexKeys:
        """Per-index keys: HKDF-SHA256(root, salt=HKDF_SALT, info=b"omnicare/bi/v1/" + kind)."""
        if len(root_key) < 32:
            raise ValueError("blind-index root key must be >= 32 bytes")
        k = {
            kind: hkdf_sha256(root_key, salt=HKDF_SALT, info=b"omnicare/bi/v1/" + kind.encode())
            for kind in KINDS
        }
        return cls(k["name"], k["identifier"], k["birthdate"])

    def for_kind(self, kind: Kind) -> bytes:
        """Key of one index."""
        return {"name": self.name, "identifier": self.identifier, "birthdate": self.birthdate}[kind]


def token(keys: IndexKeys, kind: Kind, normalized: str) -> str:
    """One truncated HMAC-SHA256 token, e.g. ``"n:3fa"``."""
    bits = TOKEN_BITS[kind]
    mac = hmac.digest(keys.for_kind(kind), normalized.encode("utf-8"), "sha256")
    value = int.from_bytes(mac[:4], "big") >> (32 - bits)
    return f"{_TAG[kind]}:{value:0{(bits + 3) // 4}x}"


#: HKDF ``info`` of the patient-reference key (PROTOCOL.md §4.5), beside the three search indexes.
PATIENT_REF_INFO = b"omnicare/bi/v1/patient-ref"
REF_PREFIX = "p:"


def patient_ref_key(root_key: bytes) -> bytes:
    """The key of the patient-reference tokens: HKDF-SHA256(root, salt=HKDF_SALT, info=PATIENT_REF_INFO)."""
    if len(root_key) < 32:
        raise ValueError("blind-index root key must be >= 32 bytes")
    return hkdf_sha256(root_key, salt=HKDF_SALT, info=PATIENT_REF_INFO)


def patient_ref_token(ref_key: bytes, patient_id: str) -> str:
    """``"p:" + first 24 hex digits of HMAC-SHA256(ref_key, "Patient/" + id)``: the id of the patient's sealed
    manifest (``StoreManifest/<token>``), which lists the patient's records; rows carry it only sealed
    (:func:`owner_token`). Not truncated like the search tokens: it must not collide (96 bits). What a copied
    store shows: PROTOCOL.md §4.4."""
    mac = hmac.digest(ref_key, ("Patient/" + patient_id).encode("utf-8"), "sha256").hex()
    return REF_PREFIX + mac[:24]


#: HKDF ``info`` of the owner key: the per-row sealed pointer to a row's patient (PROTOCOL.md §4.5, store v2).
PATIENT_OWNER_INFO = b"omnicare/bi/v1/patient-owner"
OWNER_PREFIX = "o:"
#: Random per write, so two rows of one patient never carry equal owner tokens (96 bits: no birthday repeats).
OWNER_NONCE_LEN = 12
_REF_LEN = 12  # bytes of a reference token (24 hex digits)


def patient_owner_key(root_key: bytes) -> bytes:
    """The key of the owner tokens: HKDF-SHA256(root, salt=HKDF_SALT, info=PATIENT_OWNER_INFO)."""
    if len(root_key) < 32:
        raise ValueError("blind-index root key must be >= 32 bytes")
    return hkdf_sha256(root_key, salt=HKDF_SALT, info=PATIENT_OWNER_INFO)


def _owner_pad(owner_key: bytes, nonce: bytes) -> bytes:
    return hmac.digest(owner_key, b"omnicare owner v1" + nonce, "sha256")[:_REF_LEN]


def owner_token(owner_key: bytes, ref: str, nonce: bytes) -> str:
    """``"o:" + hex(nonce) + hex(ref XOR HMAC-SHA256(owner_key, "omnicare owner v1" || nonce)[:12])``.

    The row's own, unlinkable pointer to its patient's reference token (and so to the patient's sealed
    manifest): rows of one patient carry unrelated values, so a copied IndexedDB no longer shows which
    records belong together. Only the device opens it (:func:`owner_ref`); the row MAC covers it, so it
    cannot be moved to another row. ``nonce`` is fresh randomness from the adapter (pyclient draws none).
    """
    if len(nonce) != OWNER_NONCE_LEN or not ref.startswith(REF_PREFIX) or len(ref) != 2 + 2 * _REF_LEN:
        raise ValueError("owner token needs a 12-byte nonce and a patient reference token")
    ct = int(ref[2:], 16) ^ int.from_bytes(_owner_pad(owner_key, nonce), "big")
    return f"{OWNER_PREFIX}{nonce.hex()}{ct:0{2 * _REF_LEN}x}"


def owner_ref(owner_key: bytes, tok: str) -> str | None:
    """The patient reference token inside an owner token (None for any other token or a malformed one)."""
    if not tok.startswith(OWNER_PREFIX) or len(tok) != 2 + 2 * (OWNER_NONCE_LEN + _REF_LEN):
        return None
    try:
        nonce = bytes.fromhex(tok[2:2 + 2 * OWNER_NONCE_LEN])
        ct = int(tok[2 + 2 * OWNER_NONCE_LEN:], 16)
    except ValueError:
        return None
    return f"{REF_PREFIX}{ct ^ int.from_bytes(_owner_pad(owner_key, nonce), 'big'):0{2 * _REF_LEN}x}"


def owner_refs(owner_key: bytes, tokens: Sequence[str], known: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The patient tokens a row's owner tokens point to (one in practice), sorted and distinct; the other tokens
    are ignored. ``known``: owner tokens already opened (or just made) -> their patient token, not opened again."""
    known = known or {}
    refs = [known.get(t) or owner_ref(owner_key, t) for t in tokens if t.startswith(OWNER_PREFIX)]
    return tuple(sorted({r for r in refs if r is not None}))


# -- normalizers ------------------------------------------------------------------

_APOSTROPHES = str.maketrans("", "", "'\u2019\u02bc`\u00b4")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def name_words(text: str) -> list[str]:
    """Fold case and diacritics: 'Zoë  O'Brien-Núñez' -> ['zoe', 'obrien', 'nunez']."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    # casefold can re-introduce composed forms (e.g. U+0130); fold once more
    stripped = "".join(ch for ch in unicodedata.normalize("NFKD", stripped) if not unicodedata.combining(ch))
    return "".join(ch if ch.isalnum() else " " for ch in stripped).split()


def name_prefixes(word: str) -> list[str]:
    """Indexed forms of one name word: prefixes of length 3..8 (short words: the word itself)."""
    if len(word) < MIN_PREFIX:
        return [word]
    return [word[:n] for n in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1)]


def query_name_form(word: str) -> str:
    """The one indexed form a query word is looked up by."""
    return word[:MAX_PREFIX]


def _query_words_to_index(words: list[str]) -> list[str]:
    """Words a name query is looked up by.

    Short words (< MIN_PREFIX) are only indexed whole, so "nunez zo" looks up
    "nunez" alone and lets the exact re-check apply the "zo" prefix; a query
    made only of short words ("li") looks them up as whole words.
    """
    long_words = [w for w in words if len(w) >= MIN_PREFIX]
    return long_words or words


def normalize_identifier(value: str) -> str:
    """MRN-style identifiers: NFKC, drop whitespace and dashes, casefold."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and ch not in "-\u2010\u2011\u2012\u2013\u2014")


_MRN_STYLE = re.compile(r"[^\W\d_]*0*(\d+)")


def identifier_number(digits: str) -> str:
    """The number of an identifier ('000021' or '21' -> '#21'): what a clinician types when they know the MRN's digits.

    The '#' keeps numbers apart from whole identifiers in the same index (no MRN is the bare text "21").
    """
    return "#" + (digits.lstrip("0") or "0")


def _identifier_numbers(norm: str) -> str | None:
    """'mrn000021' -> '#21' for MRN-style identifiers (letters then digits); UUIDs and mixed codes get none."""
    m = _MRN_STYLE.fullmatch(norm)
    return identifier_number(m.group(1)) if m else None


def normalize_birthdate(text: str) -> str:
    """Validate an ISO ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (whitespace trimmed)."""
    t = text.strip()
    m = _DATE.match(t)
    if not m:
        raise InvalidQuery(f"birth date must be YYYY, YYYY-MM or YYYY-MM-DD: {text!r}")
    _, month, day = m.groups()
    if month is not None and not 1 <= int(month) <= 12:
        raise InvalidQuery(f"month out of range: {text!r}")
    if day is not None and not 1 <= int(day) <= 31:
        raise InvalidQuery(f"day out of range: {text!r}")
    return t


def birthdate_forms(date: str) -> list[str]:
    """'1980-05-17' -> ['1980', '1980-05', '1980-05-17'] (partial FHIR dates give fewer)."""
    d = normalize_birthdate(date)
    return [d[:n] for n in (4, 7, 10) if len(d) >= n]


# -- patient fields -----------------------------------------------------------------


def _patient_name_words(patient: Mapping[str, Any]) -> set[str]:
    words: set[str] = set()
    for name in patient.get("name") or []:
        parts = [name.get("family") or "", *(name.get("given") or [])]
        if not any(parts) and name.get("text"):
            parts = [name["text"]]
        for part in parts:
            words.update(name_words(str(part)))
    return words


def _identifier_searchable(ident: Mapping[str, Any]) -> bool:
    if ident.get("system") in EXCLUDED_IDENTIFIER_SYSTEMS:
        return False
    codes = {c.get("code") for c in ((ident.get("type") or {}).get("coding") or [])}
    return not (codes & EXCLUDED_IDENTIFIER_TYPES)


def _patient_identifiers(patient: Mapping[str, Any]) -> set[str]:
    out = set()
    for ident in patient.get("identifier") or []:
        if ident.get("value") and _identifier_searchable(ident):
            norm = normalize_identifier(str(ident["value"]))
            if norm:
                out.add(norm)
                number = _identifier_numbers(norm)  # issue 18 item 11: "000021" and "21" find MRN-000021
                if number:
                    out.add(number)
    return out


# -- public API -------------------------------------------------------------------------


def tokens_for_patient(keys: IndexKeys, patient: Mapping[str, Any]) -> list[str]:
    """Every token to store in the patient's multi-entry index entry (sorted, unique)."""
    tokens: set[str] = set()
    for word in _patient_name_words(patient):
        tokens.update(token(keys, "name", p) for p in name_prefixes(word))
    tokens.update(token(keys, "identifier", i) for i in _patient_identifiers(patient))
    birth = patient.get("birthDate")
    if isinstance(birth, str):
        try:
            tokens.update(token(keys, "birthdate", f) for f in birthdate_forms(birth[:10]))
        except InvalidQuery:
            pass  # a malformed birthDate is simply not searchable
    return sorted(tokens)


def tokens_for_query(keys: IndexKeys, kind: Kind, text: str) -> list[str]:
    """Tokens that must ALL be present on a candidate. ``[]`` means: nothing to search for."""
    if kind == "name":
        return sorted(
            {token(keys, "name", query_name_form(w)) for w in _query_words_to_index(name_words(text))}
        )
    if kind == "identifier":
        norm = normalize_identifier(text)
        return [token(keys, "identifier", norm)] if norm else []
    if kind == "birthdate":
        return [token(keys, "birthdate", normalize_birthdate(text))] if text.strip() else []
    raise InvalidQuery(f"unknown index kind {kind!r}")


def matches(patient: Mapping[str, Any], kind: Kind, text: str) -> bool:
    """Exact re-check of a decrypted candidate (truncated tokens give false positives)."""
    if kind == "name":
        query = name_words(text)
        words = _patient_name_words(patient)
        if not query:
            return False
        if all(len(q) < MIN_PREFIX for q in query):  # "Li", "Wu": whole words only
            return all(q in words for q in query)
        return all(any(w.startswith(q) for w in words) for q in query)
    if kind == "identifier":
        norm = normalize_identifier(text)
        return bool(norm) and norm in _patient_identifiers(patient)
    if kind == "birthdate":
        if not text.strip():
            return False
        birth = patient.get("birthDate")
        return isinstance(birth, str) and birth.startswith(normalize_birthdate(text))
    raise InvalidQuery(f"unknown index kind {kind!r}")


def filter_candidates(
    candidates: Iterable[Mapping[str, Any]], kind: Kind, text: str
) -> list[Mapping[str, Any]]:
    """Keep the decrypted candidates that really match."""
    return [p for p in candidates if matches(p, kind, text)]


__all__ = [
    "KINDS",
    "TOKEN_BITS",
    "IndexKeys",
    "InvalidQuery",
    "Kind",
    "filter_candidates",
    "hkdf_sha256",
    "owner_ref",
    "owner_token",
    "patient_owner_key",
    "patient_ref_key",
    "patient_ref_token",
    "matches",
    "name_words",
    "normalize_birthdate",
    "identifier_number",
    "normalize_identifier",
    "tokens_for_patient",
    "tokens_for_query",
]
