"""Compression: canonical JSON, FHIR dictionary, versioned dictionary ids, bounds."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient import compress
from pyclient.compress import Codec, CompressionError

EV: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "envelope_v1.json").read_text(encoding="utf-8")
)
PATIENT = EV["records"]["patient"]
OBS = EV["records"]["observation"]


def test_canonical_json_is_independent_of_key_order_and_compact() -> None:
    a = compress.canonical_json({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b = compress.canonical_json({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a == b == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()
    with pytest.raises(ValueError):
        compress.canonical_json({"x": float("nan")})


def test_records_roundtrip_and_carry_the_dictionary_id() -> None:
    blob = compress.encode_record(PATIENT)
    assert blob[0] == compress.CODEC_DEFLATE_DICT and blob[1] == compress.CURRENT_DICTIONARY_ID
    assert compress.decode_record(blob) == PATIENT


def test_dictionary_beats_plain_zlib_substantially_on_fhir_records() -> None:
    for res in (PATIENT, OBS):
        raw = compress.canonical_json(res)
        plain = len(zlib.compress(raw, 9))
        ours = len(compress.encode_record(res))
        assert ours < 0.75 * plain, (res["resourceType"], len(raw), plain, ours)
        assert ours < 0.40 * len(raw)


def test_records_from_an_older_dictionary_still_decode_after_a_new_one_ships() -> None:
    v1 = compress.default_codec()
    old_blob = v1.encode_record(OBS)
    v2_dict = compress.canonical_json(OBS) * 3  # a different dictionary with a new id
    v2 = Codec({1: compress.shipped_dictionary(1), 2: v2_dict}, current=2)
    new_blob = v2.encode_record(OBS)
    assert new_blob[1] == 2 and new_blob != old_blob
    assert v2.decode_record(old_blob) == OBS == v2.decode_record(new_blob)
    # a codec that only knows v1 falls back to the shipped files for ids it has not loaded
    assert v1.decode_record(old_blob) == OBS
    with pytest.raises(CompressionError, match="unknown compression dictionary"):
        v1.decode_record(new_blob)


def test_incompressible_payload_is_stored_not_expanded() -> None:
    codec = Codec({}, current=None)
    data = bytes(range(7))
    blob = codec.compress(data)
    assert blob == b"\x00" + data
    assert codec.decompress(blob) == data


@pytest.mark.parametrize(
    "blob", [b"", b"\x07abc", b"\x02", b"\x02\x01\xff\xff\xff", b"\x01" + zlib.compress(b"x")[2:-4][:-1]]
)
def test_corrupt_records_raise_compression_error(blob: bytes) -> None:
    with pytest.raises(CompressionError):
        compress.default_codec().decompress(blob)


def test_trailing_bytes_after_the_stream_are_refused() -> None:
    codec = compress.default_codec()
    with pytest.raises(CompressionError, match="trailing"):
        codec.decompress(codec.encode_record(OBS) + b"junk")


def test_decompression_is_bounded() -> None:
    codec = Codec({}, current=None)
    bomb = codec.compress(b"\x00" * 1_000_000)
    assert len(bomb) < 2000
    with pytest.raises(CompressionError, match="inflates past"):
        codec.decompress(bomb, max_size=100_000)


def test_decoded_value_must_be_a_json_object() -> None:
    codec = compress.default_codec()
    with pytest.raises(CompressionError):
        codec.decode_record(codec.compress(b"[1,2]"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_any_json_object_roundtrips(obj: dict[str, Any]) -> None:
    assert compress.decode_record(compress.encode_record(obj)) == obj
