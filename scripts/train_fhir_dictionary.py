#!/usr/bin/env python3
"""Train the zlib preset dictionary for pyclient.compress from FHIR R4 JSON.

Usage::

    python scripts/train_fhir_dictionary.py                 # report only
    python scripts/train_fhir_dictionary.py --write 2       # write pyclient/data/fhir-r4-v2.zdict

The corpus is the demo data generator, ``omnicare.fhir.demo.demo_resources`` (the one
``seed_demo`` uses): Patient, vital-sign and lab Observations with LOINC, Condition with
SNOMED CT + ICD-10-CM, AllergyIntolerance, MedicationRequest with RxNorm, Encounter,
CareTeam, Practitioner, DocumentReference notes. Training and held-out sets use
different seeds, so the reported figures are for unseen records. The report then
compares every shipped dictionary with the one just trained on the demo held-out set
and on data nobody on the team wrote (``--external``, by default the Synthea sample
in ``../shared/data/synthea-10/``, read in place).

Two methods are tried and the smaller held-out total wins:

* ``sampled``: whole training records, sampled at random, concatenated up to the
  size (keeps key order and whole code/display pairs together; wins here);
* ``ngram`` (a small cousin of zstd's COVER): runs of JSON tokens that start an
  object member, scored by ``docs containing it * (bytes - 3)`` (what a DEFLATE
  match saves), taken greedily unless already inside the dictionary; best last,
  because DEFLATE codes short distances cheaper and the dictionary start is the
  first to slide out of the 32 KB window.

The shipped ``fhir-r4-v1.zdict`` was NOT trained by this corpus: it was trained at
commit d0b7161 by this script's earlier corpus, 3,000 records of a second, script-local
generator (removed in issue 11 item 8) plus 3,000 of demo.py. It stays current because
it compresses real-shaped data better. Saved vs raw canonical JSON (compressed record
incl. 2-byte header, no envelope; ``sampled`` 32 KB)::

    dictionary             demo.py held-out (3,000)   Synthea sample (7,160)
    none (raw DEFLATE)     48.21 %                    45.86 %
    v1 (shipped)           79.81 %                    59.54 %
    demo.py only (now)     80.14 %                    57.61 %

(At rest with the AES-GCM envelope, bench ``compression()``: v1 75.24 % / 56.60 %.)
A demo-only dictionary gains 0.3 points on demo data and loses 1.9 on Synthea, so it
was not shipped as v2; train on de-identified production-shaped data before v2.

Once a dictionary id has shipped, never overwrite it: records name the id they
were compressed with. Add a new id instead and bump CURRENT_DICTIONARY_ID.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from omnicare.fhir.demo import demo_resources  # noqa: E402
from pyclient.compress import SHIPPED_DICTIONARIES, Codec, canonical_json, shipped_dictionary  # noqa: E402

TRAIN_SEED = 1
HELDOUT_SEED = 2
DEFAULT_EXTERNAL = ROOT.parent / "shared" / "data" / "synthea-10"

# -- corpus ----------------------------------------------------------------------


def demo_corpus(seed: int, n_records: int) -> list[bytes]:
    """The first ``n_records`` canonical JSON records of ``omnicare.fhir.demo.demo_resources`` for ``seed``.

    Enough patients for ``n_records`` (about 50 resources each); the first k patients do not depend on
    how many are generated, so a larger ``n_records`` extends the same corpus.
    """
    out: list[bytes] = []
    for res in demo_resources(patients=max(10, n_records // 30), seed=seed):
        out.append(canonical_json(res))
        if len(out) >= n_records:
            break
    return out


def ndjson_corpus(directory: Path) -> list[bytes]:
    """Canonical JSON of every resource in ``directory/*.ndjson`` (a FHIR Bulk Data export)."""
    out: list[bytes] = []
    for path in sorted(directory.glob("*.ndjson")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    res = json.loads(line)
                    if isinstance(res, dict) and "resourceType" in res:
                        out.append(canonical_json(res))
    return out


# -- training --------------------------------------------------------------------

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^{}\[\],:"]+')


def train_ngram(docs: list[bytes], size: int, max_ngram: int = 24) -> bytes:
    """Greedy document-frequency dictionary over runs of JSON tokens that start a member."""
    df: Counter[bytes] = Counter()
    for doc in docs:
        toks = _TOKEN.findall(doc)
        seen: set[bytes] = set()
        for i in range(len(toks)):
            if i and toks[i - 1] not in (b"{", b",", b"[", b":"):
                continue
            s = b""
            for j in range(i, min(i + max_ngram, len(toks))):
                s += toks[j]
                if len(s) > 300:
                    break
                if len(s) >= 5:
                    seen.add(s)
        df.update(seen)
    min_df = max(2, len(docs) // 100)
    cands = sorted(((c * (len(s) - 3), s) for s, c in df.items() if c >= min_df), reverse=True)[:60000]
    chosen: list[bytes] = []
    blob = b""
    for _, s in cands:
        if s in blob:
            continue
        chosen.append(s)
        blob += b"\x00" + s
        if len(blob) >= size:
            break
    return b"".join(reversed(chosen))[-size:]


def train_sampled(docs: list[bytes], size: int, seed: int = 0) -> bytes:
    """Whole training records sampled at random (type mix follows the corpus) until full."""
    pool = docs[:]
    random.Random(seed).shuffle(pool)
    out = b""
    for d in pool:
        if len(out) >= size:
            break
        out = d + out
    return out[-size:]


METHODS = {"sampled": train_sampled, "ngram": train_ngram}


def evaluate(docs: list[bytes], zdict: bytes | None) -> tuple[int, int, int]:
    """(raw bytes, plain zlib bytes, dictionary codec bytes) summed over ``docs``."""
    raw = sum(len(d) for d in docs)
    plain = sum(len(zlib.compress(d, 9)) for d in docs)
    if zdict is None:
        return raw, plain, plain
    codec = Codec({250: zdict}, 250)
    return raw, plain, sum(len(codec.compress(d)) for d in docs)


def reduction(docs: list[bytes], codec: Codec) -> float:
    """1 - compressed bytes / raw canonical JSON bytes (record header included, no envelope)."""
    return 1 - sum(len(codec.compress(d)) for d in docs) / sum(len(d) for d in docs)


def shipped_codecs() -> dict[str, Codec]:
    """One codec per dictionary in ``SHIPPED_DICTIONARIES``, labelled like the file."""
    return {
        f"v{dict_id} (shipped)": Codec({dict_id: shipped_dictionary(dict_id)}, dict_id)
        for dict_id in sorted(SHIPPED_DICTIONARIES)
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-records", type=int, default=6000)
    ap.add_argument("--heldout-records", type=int, default=3000)
    ap.add_argument("--size", type=int, default=0, help="dictionary bytes (0: try several, keep the best)")
    ap.add_argument(
        "--external",
        type=Path,
        default=DEFAULT_EXTERNAL,
        help="directory of FHIR Bulk NDJSON nobody on the team wrote, to compare dictionaries on "
        "(default: the Synthea sample beside the repository; read in place, never copy it in)",
    )
    ap.add_argument("--write", type=int, metavar="ID", help="write pyclient/data/fhir-r4-v<ID>.zdict")
    args = ap.parse_args()

    train_docs = demo_corpus(TRAIN_SEED, args.train_records)
    held = demo_corpus(HELDOUT_SEED, args.heldout_records)
    external = ndjson_corpus(args.external) if args.external.is_dir() else []
    print(
        f"training records: {len(train_docs)} (demo.py seed {TRAIN_SEED}); held-out: {len(held)} "
        f"(demo.py seed {HELDOUT_SEED}); external: {len(external)} ({args.external})"
    )
    sizes = [args.size] if args.size else [16384, 32768]
    best: tuple[int, bytes] | None = None
    for (method, fn), size in ((m, s) for m in METHODS.items() for s in sizes):
        zdict = fn(train_docs, size)
        raw, plain, withdict = evaluate(held, zdict)
        print(
            f"{method:8} dict {len(zdict):6d} B: held-out raw {raw} B, zlib {plain} B ({1 - plain / raw:.1%} saved), "
            f"zlib+dict {withdict} B ({1 - withdict / raw:.1%} saved, {1 - withdict / plain:.1%} smaller than zlib)"
        )
        if best is None or withdict < best[0]:
            best = (withdict, zdict)
    assert best is not None
    codec = Codec({250: best[1]}, 250)

    print("\nsaved vs raw canonical JSON (compressed record incl. header, no envelope):")
    sets = {"demo.py held-out": held, **({f"external ({len(external)})": external} if external else {})}
    print(f"{'dictionary':22}" + "".join(f"{label:>24}" for label in sets))
    plain_codec = Codec({}, None)
    for label, c in {"none (raw DEFLATE)": plain_codec, **shipped_codecs(), "trained now": codec}.items():
        print(f"{label:22}" + "".join(f"{reduction(docs, c):24.2%}" for docs in sets.values()))

    by_type: dict[str, list[bytes]] = {}
    for d in held:
        by_type.setdefault(json.loads(d)["resourceType"], []).append(d)
    per_rec = [len(codec.compress(d)) / len(d) for d in held]
    per_zlib = [len(zlib.compress(d, 9)) / len(d) for d in held]
    print(
        f"\nmean per-record saving vs raw JSON: zlib+dict {1 - sum(per_rec) / len(held):.1%}, "
        f"plain zlib {1 - sum(per_zlib) / len(held):.1%}"
    )
    print(f"\nper resource type (held-out, best dictionary {len(best[1])} B):")
    print(
        f"{'type':22} {'n':>5} {'raw/rec':>8} {'zlib/rec':>9} {'dict/rec':>9} {'saved vs raw':>13} {'vs zlib':>8}"
    )
    for rtype, docs in sorted(by_type.items()):
        n = len(docs)
        raw = sum(len(d) for d in docs)
        plain = sum(len(zlib.compress(d, 9)) for d in docs)
        wd = sum(len(codec.compress(d)) for d in docs)
        print(
            f"{rtype:22} {n:5d} {raw / n:8.0f} {plain / n:9.0f} {wd / n:9.0f} {1 - wd / raw:13.1%} {1 - wd / plain:8.1%}"
        )
    if args.write:
        path = ROOT / "pyclient" / "data" / f"fhir-r4-v{args.write}.zdict"
        if path.exists():
            print(f"refusing to overwrite shipped dictionary {path}", file=sys.stderr)
            return 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(best[1])
        print(f"wrote {path} ({len(best[1])} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
