"""The tab's integrity caches stay within a fixed size whatever the scope, and never answer wrongly (issue 13)."""

from __future__ import annotations

import pytest

from pyclient.integrity import Manifest
from pyclient.integrity_cache import ManifestCache, SeenRows


def test_seen_rows_never_forgets_a_row_and_stays_fixed_in_size() -> None:
    seen = SeenRows(bits=1 << 16)
    for n in range(20_000):  # far more rows than the filter has room for without false positives
        seen.add("Observation", f"obs-{n}")
    assert all(seen.may_hold("Observation", f"obs-{n}") for n in range(20_000))  # a "no" is always true
    assert seen.size_bytes() == (1 << 16) // 8


def test_seen_rows_says_no_for_rows_never_written_at_the_default_size() -> None:
    seen = SeenRows()
    for n in range(200_000):
        seen.add("Observation", f"obs-{n}")
    false = sum(seen.may_hold("Observation", f"other-{n}") for n in range(20_000))
    # Each "maybe" costs one row read: at 200,000 rows they must stay rare (expected ~0.1 %).
    assert false < 100
    assert not seen.may_hold("Patient", "obs-1")  # the type is part of the key


def test_seen_rows_rejects_a_size_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        SeenRows(bits=1000)


def _manifest(rows: int, tag: str = "p") -> Manifest:
    return Manifest({("Observation", f"{tag}-{k}"): 1 for k in range(rows)}, 1)


def test_manifest_cache_is_bounded_by_rows_listed_least_recently_used_out() -> None:
    cache = ManifestCache(max_rows=100, max_manifests=50)
    for n in range(30):
        cache.put(f"r:{n}", _manifest(10, str(n)), f"mac{n}")
        cache.get("r:0")  # the first patient stays in use
        cache.trim()
    assert cache.rows <= 100 and len(cache) == 10
    assert "r:0" in cache and "r:29" in cache and "r:1" not in cache
    assert cache.get("r:29") == (_manifest(10, "29"), "mac29")


def test_manifest_cache_keeps_a_manifest_larger_than_the_bound_and_counts_replacements() -> None:
    cache = ManifestCache(max_rows=100)
    cache.put("r:big", _manifest(500), "m1")
    cache.trim()
    assert "r:big" in cache  # the newest is always kept: the next page of that patient needs it
    cache.put("r:big", _manifest(5), "m2")
    cache.put("r:none", None, None)  # a patient with no manifest row yet
    cache.trim()
    assert cache.rows == 5 and len(cache) == 2
    with pytest.raises(KeyError):
        ManifestCache().get("r:absent")


def test_manifest_cache_bounded_by_count_and_cleared() -> None:
    cache = ManifestCache(max_rows=10_000, max_manifests=3)
    for n in range(5):
        cache.put(f"r:{n}", None, None)
    cache.trim()
    assert len(cache) == 3 and "r:4" in cache and "r:0" not in cache
    cache.clear()
    assert len(cache) == 0 and cache.rows == 0
