"""Server-side measures of ``make bench`` (bench/fhir_rest.py and bench/sync_bench.py run as subprocesses on the
same PostgreSQL) and the bytes-at-rest figure over the data set."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import zlib
from typing import Any

from bench.suite.common import BENCH, OUT, REPO, base_env, log


def run_json(cmd: list[str], env: dict[str, str], timeout: float, name: str) -> tuple[Any, str]:
    log(f"  {name}: {' '.join(cmd[1:])}")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    (OUT / f"{name}.stdout").write_text(out.stdout)
    (OUT / f"{name}.stderr").write_text(out.stderr)
    text = out.stdout.strip()
    start = text.find("{")
    try:
        return (json.loads(text[start:]) if start >= 0 else None), out.stdout
    except json.JSONDecodeError:
        return None, out.stdout


def fhir_rest(db_url: str, patients: int, runs: int, smoke: bool) -> dict[str, Any]:
    script = BENCH / "fhir_rest.py"
    cmd = [
        sys.executable,
        str(script),
        "--patients",
        str(patients),
        "--seed",
        "1",
        "--runs",
        str(runs),
        "--requests",
        "60" if smoke else "400",
        "--warmup",
        "10" if smoke else "50",
    ]
    data, raw = run_json(cmd, base_env(db_url), 900, "fhir_rest")
    if not data:
        raise RuntimeError(f"bench/fhir_rest.py printed no JSON:\n{raw[-2000:]}")
    by = {r["scenario"].split()[0]: r for r in data["results"]}
    return {"create": by["create"], "search": by["search"], "raw": data}


def sync_bench(db_url: str, n: int, n_push: int, repeats: int) -> dict[str, Any]:
    """Pull resources/s and push-1,000 seconds from bench/sync_bench.py, run ``repeats`` times."""
    pull, push, raws = [], [], []
    env = base_env(db_url)
    env["OMNICARE_TESTING"] = "1"
    for _ in range(repeats):
        data, raw = run_json(
            [sys.executable, str(BENCH / "sync_bench.py"), "-n", str(n), "--push", str(n_push)],
            env,
            900,
            "sync_bench",
        )
        raws.append(data if data is not None else raw)
        p, s = parse_sync_bench(data, raw)
        if p is None or s is None:
            raise RuntimeError(f"could not read pull/push figures from bench/sync_bench.py:\n{raw[-2000:]}")
        pull.append(p)
        push.append(s)
    return {"pull_per_s": pull, "push_s": push, "raw": raws}


def parse_sync_bench(data: Any, raw: str) -> tuple[float | None, float | None]:
    if isinstance(data, dict):
        flat = json.dumps(data)
        m_pull = re.search(r'"pull_resources_per_s"\s*:\s*([\d.]+)', flat)
        m_push = re.search(r'"push_1000_s"\s*:\s*([\d.]+)', flat)
        if m_pull and m_push:
            return float(m_pull.group(1)), float(m_push.group(1))
    m_pull = re.search(r"pull first sync.*?=\s*([\d,]+) resources/s", raw)
    m_push = re.search(r"push \d+ fresh base.*?\s([\d.]+)s", raw)
    return (
        float(m_pull.group(1).replace(",", "")) if m_pull else None,
        float(m_push.group(1)) if m_push else None,
    )


def compression(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bytes at rest per record (the whole AES-GCM envelope) vs the record's compact JSON, and plain zlib."""
    sys.path.insert(0, str(REPO))
    from pyclient import envelope as env
    from pyclient.compress import canonical_json, encode_record

    raw = sealed = packed = zl = 0
    per: list[float] = []
    for d in docs:
        j = canonical_json(d)
        body = encode_record(d)
        job = env.seal_plan(
            key_id="dk-00000000",
            nonce=bytes(env.NONCE_LEN),
            resource_type=d["resourceType"],
            resource_id=d["id"],
            version=int((d.get("meta") or {}).get("versionId") or 1),
            plaintext=body,
        )
        blob = env.pack(job, bytes(len(body) + env.TAG_LEN))
        raw += len(j)
        packed += len(body)
        sealed += len(blob)
        zl += len(zlib.compress(j, 6))
        per.append(1 - len(blob) / len(j))
    return {
        "records": len(docs),
        "raw_json_bytes": raw,
        "compressed_bytes": packed,
        "sealed_bytes": sealed,
        "zlib_bytes": zl,
        "reduction_at_rest": 1 - sealed / raw,
        "reduction_compressed_only": 1 - packed / raw,
        "reduction_plain_zlib": 1 - zl / raw,
        "per_record_median": statistics.median(per),
        "mean_raw_json_bytes": raw / len(docs),
    }
