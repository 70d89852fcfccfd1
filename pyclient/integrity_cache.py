"""What a tab remembers between store writes to plan the integrity manifests cheaply, in BOUNDED memory (pure).

The browser adapter (``pyclient.adapters.browser_app``) writes every pull page together with the manifests
it changes (:mod:`pyclient.integrity`). To plan them without reading rows back it used to keep, for the whole
session, every manifest it touched and a map of every row written since a pull reset: both grow with the
number of resources on the device (measured: about 0.3 kB of Python heap per resource, 60 MB at 200,000;
``bench/first_sync_budget_bench.py``). The two structures here are fixed in size whatever the scope:

* :class:`SeenRows` -- "was this row written since the store was reset?" as a Bloom filter of fixed size.
  A "no" is certain (the row does not exist: nothing to read), a "maybe" costs one row read, so a false
  positive only costs time, never correctness.
* :class:`ManifestCache` -- the most recently used manifests, up to a number of rows listed; a miss re-reads
  the manifest from the store (it is the row MAC in the cache that the write compare-and-swaps on).

Hashing is blake2b, not ``hash()``: the same answer in every process, so the tests are deterministic.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from pyclient.integrity import Manifest

__all__ = ["ManifestCache", "SeenRows"]

#: 2**22 bits = 512 KiB: at 200,000 rows one "maybe" in about 1,000 is false (a row read); at 2,000,000 rows
#: it is about one in seven, still correct and still fixed in memory.
SEEN_BITS = 1 << 22
SEEN_PROBES = 4

#: Rows listed across the cached manifests (an entry is ~0.2 kB of Python heap): ~1 MB at most. A pull page
#: (1,000 rows) fits; a miss is one manifest read, in the batch the page reads anyway.
CACHE_ROWS = 5_000
#: Manifests kept at most (a page of 1,000 rows of different patients still fits).
CACHE_MANIFESTS = 1_024


class SeenRows:
    """A fixed-size set of (type, id) that can answer "certainly not added" or "maybe added"."""

    __slots__ = ("_bits", "_mask", "_probes", "added")

    def __init__(self, bits: int = SEEN_BITS, probes: int = SEEN_PROBES) -> None:
        if bits < 8 or bits & (bits - 1):
            raise ValueError("bits must be a power of two >= 8")
        self._bits = bytearray(bits // 8)
        self._mask = bits - 1
        self._probes = probes
        self.added = 0

    def _where(self, resource_type: str, id: str) -> list[int]:
        # Called twice per row of a pull page (planned, then written): the probes by addition, not k * h2.
        d = hashlib.blake2b(f"{resource_type}\x00{id}".encode(), digest_size=16).digest()
        h, h2, mask = int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little") | 1, self._mask
        out = []
        for _ in range(self._probes):
            out.append(h & mask)
            h += h2
        return out

    def add(self, resource_type: str, id: str) -> None:
        bits = self._bits
        for b in self._where(resource_type, id):
            bits[b >> 3] |= 1 << (b & 7)
        self.added += 1

    def may_hold(self, resource_type: str, id: str) -> bool:
        """False: this row was never added. True: it may have been."""
        bits = self._bits
        for b in self._where(resource_type, id):
            if not bits[b >> 3] & (1 << (b & 7)):
                return False
        return True

    def size_bytes(self) -> int:
        return len(self._bits)


class ManifestCache:
    """Patient manifests as this tab last read or wrote them: token -> (manifest or None, row MAC or None).

    None as manifest = no manifest row; None as MAC = no row (a row without a MAC is ``""``). Least recently
    used first out once more than ``max_rows`` rows are listed or ``max_manifests`` are kept. Eviction happens
    only in :meth:`trim`, so a plan can put what it loaded and read it back in the same step.
    """

    __slots__ = ("_items", "_rows", "max_manifests", "max_rows")

    def __init__(self, max_rows: int = CACHE_ROWS, max_manifests: int = CACHE_MANIFESTS) -> None:
        self._items: OrderedDict[str, tuple[Manifest | None, str | None]] = OrderedDict()
        self._rows = 0
        self.max_rows = max_rows
        self.max_manifests = max_manifests

    def __contains__(self, token: object) -> bool:
        return token in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rows(self) -> int:
        """Rows listed across the cached manifests."""
        return self._rows

    def get(self, token: str) -> tuple[Manifest | None, str | None]:
        """The cached (manifest, MAC); KeyError when not cached. Marks it recently used."""
        item = self._items[token]
        self._items.move_to_end(token)
        return item

    def put(self, token: str, manifest: Manifest | None, mac: str | None) -> None:
        old = self._items.pop(token, None)
        if old is not None and old[0] is not None:
            self._rows -= len(old[0].entries)
        self._items[token] = (manifest, mac)
        if manifest is not None:
            self._rows += len(manifest.entries)

    def trim(self) -> None:
        """Drop the least recently used until within bounds (the newest is always kept)."""
        while len(self._items) > 1 and (self._rows > self.max_rows or len(self._items) > self.max_manifests):
            _tok, (man, _mac) = self._items.popitem(last=False)
            if man is not None:
                self._rows -= len(man.entries)

    def clear(self) -> None:
        self._items.clear()
        self._rows = 0
