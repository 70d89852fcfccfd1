"""Blind indexes: HKDF (RFC 5869), normalizers, tokens, exact re-check, vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyclient import blindindex as bi

BV: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "blindindex_v1.json").read_text(encoding="utf-8")
)
KEYS = bi.IndexKeys.derive(bytes.fromhex(BV["root_key"]))
PATIENT = BV["patient"]


# RFC 5869 Appendix A, test cases 1-3 (SHA-256)
@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [
        (
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            bytes(range(0x00, 0x50)).hex(),
            bytes(range(0x60, 0xB0)).hex(),
            bytes(range(0xB0, 0x100)).hex(),
            82,
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
            "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        (
            "0b" * 22,
            "",
            "",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_hkdf_matches_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    out = bi.hkdf_sha256(
        bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=length
    )
    assert out.hex() == okm


def test_vectors_index_keys_and_tokens() -> None:
    assert {k: KEYS.for_kind(k).hex() for k in bi.KINDS} == BV["index_keys"]
    assert bi.tokens_for_patient(KEYS, PATIENT) == BV["patient_tokens"]
    for q in BV["queries"]:
        assert bi.tokens_for_query(KEYS, q["kind"], q["text"]) == q["tokens"], q
        assert bi.matches(PATIENT, q["kind"], q["text"]) is q["matches"], q


def test_every_matching_query_finds_the_patient_through_its_tokens() -> None:
    stored = set(bi.tokens_for_patient(KEYS, PATIENT))
    for kind, text in [
        ("name", "zoe"),
        ("name", "ZOË"),
        ("name", "o’brien"),
        ("name", "obri"),
        ("name", "núñez"),
        ("name", "OBrien zoe"),
        ("name", "li"),
        ("identifier", "mrn48213-7"),
        ("identifier", " MRN 48213 7 "),
        ("birthdate", "1980"),
        ("birthdate", "1980-05"),
        ("birthdate", "1980-05-17"),
    ]:
        toks = bi.tokens_for_query(KEYS, kind, text)  # type: ignore[arg-type]
        assert toks and set(toks) <= stored, (kind, text)
        assert bi.matches(PATIENT, kind, text), (kind, text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("name", "smith"),
        ("name", "zoey"),
        ("name", "l"),
        ("identifier", "MRN-48213-8"),
        ("identifier", "123-45-6789"),  # SSNs are never indexed
        ("birthdate", "1981"),
        ("birthdate", "1980-06"),
        ("birthdate", "1980-05-18"),
    ],
)
def test_exact_recheck_rejects_non_matches(kind: bi.Kind, text: str) -> None:
    assert not bi.matches(PATIENT, kind, text)


def test_ssn_is_not_indexed_at_all() -> None:
    ssn_token = bi.tokens_for_query(KEYS, "identifier", "123-45-6789")[0]
    assert ssn_token not in bi.tokens_for_patient(KEYS, PATIENT)


def test_normalizers() -> None:
    assert bi.name_words("  Zoë  O'Brien-Núñez ") == ["zoe", "obrien", "nunez"]
    assert bi.name_words("STRASSE straße") == ["strasse", "strasse"]
    assert bi.normalize_identifier(" mrn 48 213–7 ") == "mrn482137"
    assert bi.name_prefixes("alexandria") == ["ale", "alex", "alexa", "alexan", "alexand", "alexandr"]
    assert bi.name_prefixes("wu") == ["wu"]
    for bad in ["1980-13", "1980-5", "80", "1980-05-32", "17/05/1980"]:
        with pytest.raises(bi.InvalidQuery):
            bi.tokens_for_query(KEYS, "birthdate", bad)


def test_empty_queries_produce_no_tokens_and_match_nothing() -> None:
    for kind in bi.KINDS:
        assert bi.tokens_for_query(KEYS, kind, "  ") == []
        assert not bi.matches(PATIENT, kind, "  ")


def test_indexes_are_separated_by_kind_and_by_key() -> None:
    # same text in two indexes -> unrelated tokens; another root key -> other tokens
    assert bi.tokens_for_query(KEYS, "name", "1980") != bi.tokens_for_query(KEYS, "birthdate", "1980")
    other = bi.IndexKeys.derive(bytes(32))
    assert bi.tokens_for_patient(other, PATIENT) != bi.tokens_for_patient(KEYS, PATIENT)


def test_token_width_follows_the_truncation_rule() -> None:
    r = 50_000
    for kind, bits in bi.TOKEN_BITS.items():
        coincidences = r / 2**bits
        assert 2 <= coincidences < r**0.5, kind
    tok = bi.tokens_for_query(KEYS, "identifier", "x")[0]
    assert tok.startswith("i:") and int(tok[2:], 16) < 2 ** bi.TOKEN_BITS["identifier"]


def _patient(family: str, given: str, mrn: str, birth: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": mrn,
        "name": [{"family": family, "given": [given]}],
        "identifier": [{"value": mrn}],
        "birthDate": birth,
    }


def test_search_flow_query_tokens_candidates_decrypt_recheck() -> None:
    people = [
        _patient("Smith", "Anna", "A1", "1970-01-02"),
        _patient("Smithers", "Bob", "A2", "1970-03-04"),
        _patient("Smyth", "Carl", "A3", "1985-01-02"),
        _patient("Jones", "Smitty", "A4", "1990-12-12"),
    ]
    index = {p["id"]: set(bi.tokens_for_patient(KEYS, p)) for p in people}

    def search(kind: bi.Kind, text: str) -> list[str]:
        toks = set(bi.tokens_for_query(KEYS, kind, text))
        candidates = [p for p in people if toks and toks <= index[p["id"]]]
        return [p["id"] for p in bi.filter_candidates(candidates, kind, text)]

    assert search("name", "smi") == ["A1", "A2", "A4"]
    assert search("name", "smith") == ["A1", "A2"]
    assert search("name", "smithers b") == ["A2"]
    assert search("birthdate", "1970") == ["A1", "A2"]
    assert search("identifier", "a3") == ["A3"]


@given(st.text(max_size=30))
def test_name_tokens_never_crash_and_prefix_queries_always_hit(name: str) -> None:
    p = _patient(name, "x", "m", "2000")
    stored = set(bi.tokens_for_patient(KEYS, p))
    for w in bi.name_words(name):
        q = w[: max(3, len(w) // 2)]
        assert set(bi.tokens_for_query(KEYS, "name", q)) <= stored
        assert bi.matches(p, "name", q)


def test_patient_reference_token_vector() -> None:
    """PROTOCOL.md §4.5: the token every record of a patient carries (a fixed vector: the stored indexes of
    every device depend on it, so it may never change silently)."""
    key = bi.patient_ref_key(bytes(range(32)))
    assert key.hex() == "8e06883a078efb4dfef5e167cf514a641783961f27a8a4aceff63ecf249daa1e"
    assert bi.patient_ref_token(key, "example-1") == "p:2b86867c771470643670dc30"
    assert bi.patient_ref_token(key, "example-2") != bi.patient_ref_token(key, "example-1")
    assert bi.patient_ref_key(bytes(range(1, 33))) != key


def test_owner_token_vector_and_round_trip() -> None:
    """PROTOCOL.md §4.5 (store v2): each row's sealed pointer to its patient. Rows of one patient carry
    unrelated values (a fresh nonce each), only the key holder opens them, anything else opens to None."""
    root = bytes(range(32))
    key = bi.patient_owner_key(root)
    assert key.hex() == "15035a45bb7f003c1b8ccc93bf1d7c110e3d86336b4c279a3d1ede328da45aed"
    ref = bi.patient_ref_token(bi.patient_ref_key(root), "example-1")
    tok = bi.owner_token(key, ref, bytes(range(12)))
    assert tok == "o:000102030405060708090a0b437abfa5723bc779bb924619"
    assert bi.owner_ref(key, tok) == ref
    other = bi.owner_token(key, ref, bytes(12))
    assert other != tok and bi.owner_ref(key, other) == ref  # same patient, unrelated token
    assert ref[2:] not in tok and ref[2:] not in other
    assert bi.owner_ref(bi.patient_owner_key(bytes(range(1, 33))), tok) != ref  # another device's key
    for junk in ("n:abc", ref, "o:zz", tok[:-1], "o:" + "g" * 48):
        assert bi.owner_ref(key, junk) is None
    with pytest.raises(ValueError):
        bi.owner_token(key, ref, bytes(8))
    with pytest.raises(ValueError):
        bi.owner_token(key, "n:abc", bytes(12))


def test_owner_refs_opens_a_rows_owner_tokens_to_its_patient_tokens() -> None:
    """A row's patient tokens (the manifest planner's and the repair scan's input): owner tokens opened,
    sorted and distinct, other tokens ignored; ``known`` (tokens this commit made) are not opened again."""
    root = bytes(range(32))
    key, rkey = bi.patient_owner_key(root), bi.patient_ref_key(root)
    ra, rb = bi.patient_ref_token(rkey, "example-1"), bi.patient_ref_token(rkey, "example-2")
    ta, ta2, tb = bi.owner_token(key, ra, bytes(12)), bi.owner_token(key, ra, bytes(range(12))), \
        bi.owner_token(key, rb, bytes(12))
    search = bi.tokens_for_patient(bi.IndexKeys.derive(root), {"name": [{"family": "Ng"}]})
    assert bi.owner_refs(key, [*search, tb, ta, ta2, ra]) == tuple(sorted((ra, rb)))  # a bare "p:" is not opened
    assert bi.owner_refs(key, search) == ()
    assert bi.owner_refs(key, [ta, "o:zz"]) == (ra,)  # a malformed owner token opens to nothing
    made = "o:" + "0" * 48  # not a token of this key: only ``known`` can say where it points
    assert bi.owner_refs(key, [made], {made: rb}) == (rb,)
    assert bi.owner_refs(key, [made]) != (rb,)
