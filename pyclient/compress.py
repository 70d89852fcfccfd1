"""Record compression: canonical JSON + raw DEFLATE with a FHIR preset dictionary.

Small FHIR records (1-3 KB) repeat the same keys, code systems and display
strings; plain zlib cannot exploit that because each record starts with an
empty window. A preset dictionary (``zdict``) trained on FHIR R4 JSON primes the
window. Compress-then-encrypt: the output of :func:`encode_record` is the
plaintext that :mod:`pyclient.envelope` seals.

Compressed record format (see PROTOCOL.md)::

    byte 0   codec: 0x00 stored, 0x01 raw DEFLATE, 0x02 raw DEFLATE + preset dictionary
    byte 1   dictionary id (codec 0x02 only)
    rest     payload (canonical JSON, or raw DEFLATE stream, RFC 1951)

The dictionary id travels with every record, so records written with
dictionary v1 stay readable after v2 ships (keep every shipped dictionary).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

CODEC_STORED = 0x00
CODEC_DEFLATE = 0x01
CODEC_DEFLATE_DICT = 0x02

#: Shipped dictionaries: id -> file in pyclient/data/. Never remove or edit one.
SHIPPED_DICTIONARIES: dict[int, str] = {1: "fhir-r4-v1.zdict"}
CURRENT_DICTIONARY_ID = 1
#: Refuse to inflate past this (a corrupt or hostile record must not eat memory).
MAX_RECORD_BYTES = 16 * 1024 * 1024
_LEVEL = 6  # level 9 saves 0.4 % more bytes for ~40 % more time on 1-2 KB records
_WBITS = -15  # raw DEFLATE: no zlib header/Adler-32; GCM already authenticates
# zlib's memLevel (hash table and pending buffer size; the decoder never sees it). Every record copies the
# primed state (deflateCopy): 8 (zlib's default) halves the state to copy, and under Pyodide makes a 1-2 KB
# record ~1.5x faster to compress at the same size (0.1934 of raw on the bench's data set at both).
_MEM_LEVEL = 8


class CompressionError(ValueError):
    """A compressed record is malformed, too large or names an unknown dictionary."""


def canonical_json(resource: Mapping[str, Any]) -> bytes:
    """Sorted keys, compact separators, UTF-8: equal resources give equal bytes."""
    return json.dumps(
        resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@cache
def shipped_dictionary(dict_id: int) -> bytes:
    """Bytes of a dictionary shipped as package data (read-only package resource)."""
    try:
        name = SHIPPED_DICTIONARIES[dict_id]
    except KeyError:
        raise CompressionError(f"unknown compression dictionary id {dict_id}") from None
    return resources.files("pyclient").joinpath("data", name).read_bytes()


@lru_cache(maxsize=8)
def _primed(zdict: bytes | None) -> Any:
    # Loading a 32 KB dictionary hashes it into the match finder; do that once and
    # copy the primed state per record (deflateCopy) - ~25 % faster on 2 KB records.
    if zdict:
        return zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, zdict=zdict)
    return zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)


def _deflate(data: bytes, zdict: bytes | None) -> bytes:
    c = _primed(zdict).copy()
    return bytes(c.compress(data) + c.flush())


def _inflate(data: bytes, zdict: bytes | None, max_size: int) -> bytes:
    d = zlib.decompressobj(_WBITS, **({"zdict": zdict} if zdict else {}))
    try:
        out = d.decompress(data, max_size)
        if d.unconsumed_tail:
            raise CompressionError(f"record inflates past {max_size} bytes")
        out += d.flush()
    except zlib.error as exc:
        raise CompressionError(f"corrupt compressed record: {exc}") from exc
    if not d.eof:
        raise CompressionError("truncated compressed record")
    if d.unused_data:
        raise CompressionError("trailing bytes after the compressed record")
    return out


@dataclass(frozen=True)
class Codec:
    """Compressor bound to a set of dictionaries (injectable for tests and new versions)."""

    dictionaries: Mapping[int, bytes]
    current: int | None

    def compress(self, data: bytes) -> bytes:
        """Smallest of: dictionary DEFLATE, plain DEFLATE (no dictionary configured), stored."""
        if self.current is not None:
            body = bytes((CODEC_DEFLATE_DICT, self.current)) + _deflate(data, self.dictionaries[self.current])
        else:
            body = bytes((CODEC_DEFLATE,)) + _deflate(data, None)
        return body if len(body) < len(data) + 1 else bytes((CODEC_STORED,)) + data

    def decompress(self, blob: bytes, *, max_size: int = MAX_RECORD_BYTES) -> bytes:
        """Inverse of :meth:`compress`; any shipped dictionary id is accepted."""
        if not blob:
            raise CompressionError("empty record")
        codec = blob[0]
        if codec == CODEC_STORED:
            if len(blob) - 1 > max_size:
                raise CompressionError(f"record larger than {max_size} bytes")
            return bytes(blob[1:])
        if codec == CODEC_DEFLATE:
            return _inflate(blob[1:], None, max_size)
        if codec == CODEC_DEFLATE_DICT:
            if len(blob) < 2:
                raise CompressionError("truncated record header")
            dict_id = blob[1]
            zdict = self.dictionaries.get(dict_id)
            if zdict is None:
                zdict = shipped_dictionary(dict_id)
            return _inflate(blob[2:], zdict, max_size)
        raise CompressionError(f"unknown codec byte {codec:#04x}")

    def encode_record(self, resource: Mapping[str, Any]) -> bytes:
        """Canonical JSON of ``resource``, compressed."""
        return self.compress(canonical_json(resource))

    def decode_record(self, blob: bytes) -> dict[str, Any]:
        """Inverse of :meth:`encode_record`."""
        try:
            value = json.loads(self.decompress(blob))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CompressionError(f"record is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise CompressionError("record is not a JSON object")
        return value


@lru_cache(maxsize=1)
def default_codec() -> Codec:
    """Codec with the current shipped dictionary."""
    return Codec({CURRENT_DICTIONARY_ID: shipped_dictionary(CURRENT_DICTIONARY_ID)}, CURRENT_DICTIONARY_ID)


def encode_record(resource: Mapping[str, Any]) -> bytes:
    """Canonicalise and compress a FHIR resource dict with the current dictionary."""
    return default_codec().encode_record(resource)


def decode_record(blob: bytes) -> dict[str, Any]:
    """Decompress a record written by any shipped dictionary version."""
    return default_codec().decode_record(blob)
