"""Bounded mixed load against a production-like deployment, one server killed mid-load, then an exactly-once audit.

Used by ``scripts/prod_smoke.sh`` (which starts the processes from the README's own commands). Three steps:

``setup``   (Django ORM on the same DATABASE_URL) a physician with a bearer token, 12 patients on their care
            team, 36 Observations; prints the token.
``load``    HTTP only, for ``--seconds``: 4 devices pushing sync batches (some from stale bases on the same
            fields: stored conflicts), 2 FHIR readers (read + search), 2 FHIR creators (POST, server ids),
            one 300-mutation push job through Celery, one WebSocket client on the surviving server that must
            get hints for writes made through the other process. At ``--kill-at`` seconds the first server is
            SIGKILLed; clients fail over to the second (a push whose answer was lost is re-sent: idempotent).
            Writes the acknowledgements to ``--out``.
``verify``  (ORM) every acknowledged write is stored exactly once; exits 1 otherwise.

All traffic goes to 127.0.0.1; every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

TAGS = "x_tags"
USERNAME = "smoke.physician"


def _django() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
    import django

    django.setup()


def observation(oid: str, pid: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "kg"},
        TAGS: {},
    }


def setup() -> None:
    _django()
    from django.contrib.auth import get_user_model

    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.access.services import token_create
    from omnicare.fhir.services import resources_import

    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    role_assign(user=user, role=PHYSICIAN)
    prac = {"resourceType": "Practitioner", "id": "pr-smoke", "name": [{"family": "Smoke"}],
            "identifier": [{"system": "urn:omnicare:user", "value": USERNAME}]}  # fmt: skip
    res: list[dict[str, Any]] = [prac]
    for p in range(12):
        pid = f"sp{p}"
        res.append({"resourceType": "Patient", "id": pid, "name": [{"family": f"Smoke{p}"}]})
        res.append({"resourceType": "CareTeam", "id": f"ct-{pid}", "status": "active",
                    "subject": {"reference": f"Patient/{pid}"},
                    "participant": [{"member": {"reference": "Practitioner/pr-smoke"}}]})  # fmt: skip
        res += [observation(f"so{p}-{k}", pid, 70.0) for k in range(3)]
    resources_import(resources=res)
    # One token per device (a token belongs to one device once it syncs), the first for everything else.
    print(",".join(token_create(user=user, name=f"prod-smoke-{i}") for i in range(9)))


class Load:
    def __init__(self, urls: list[str], token: str, kill_pid: int, kill_at: float, seconds: float) -> None:
        self.urls, self.kill_pid, self.kill_at, self.seconds = urls, kill_pid, kill_at, seconds
        self.tokens = token.split(",")
        self.headers = {"Authorization": f"Bearer {self.tokens[0]}", "Accept": "application/json"}
        self.start = time.monotonic()
        self.killed = threading.Event()
        self.lock = threading.Lock()
        self.acks: dict[str, Any] = {"mutations": {}, "creates": [], "job": None, "hints_from_a": 0,
                                     "statuses": {}, "errors": []}  # fmt: skip
        self.a_writes: set[tuple[str, int]] = set()  # (id, version) acknowledged by the first server
        self.hinted: set[tuple[str, int]] = set()  # (id, version) announced on the second server's socket

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _count(self, code: int | str) -> None:
        with self.lock:
            key = str(code)
            self.acks["statuses"][key] = self.acks["statuses"].get(key, 0) + 1

    def call(self, client: httpx.Client, method: str, path: str, *, prefer: int, retry: bool,
             body: Any = None, device: int | None = None) -> tuple[int, Any, int]:  # fmt: skip
        """Try the preferred server, fail over to the other on a transport error (only if ``retry``)."""
        order = [prefer % 2, (prefer + 1) % 2]
        last: Exception | None = None
        for attempt in range(6):
            i = order[min(attempt, 1)] if not self.killed.is_set() else 1
            try:
                headers = self.headers if device is None else {
                    **self.headers, "Authorization": f"Bearer {self.tokens[1 + device % 8]}"}
                r = client.request(method, self.urls[i] + path, json=body, headers=headers, timeout=30)
            except httpx.TransportError as exc:
                self._count(type(exc).__name__)
                last = exc
                if not retry:
                    return -1, None, i
                time.sleep(0.2)
                continue
            self._count(r.status_code)
            if r.status_code == 503 and retry:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            return r.status_code, (r.json() if r.content else None), i
        raise RuntimeError(f"{method} {path} failed on both servers: {last}")

    def killer(self) -> None:
        while self.elapsed() < self.kill_at:
            time.sleep(0.05)
        os.kill(self.kill_pid, signal.SIGKILL)
        self.killed.set()

    def device(self, d: int) -> None:
        rng = random.Random(d)
        with httpx.Client() as c:
            n = 0
            # Two edits of one value from the same base, one after the other: the second is a stored conflict.
            oid = f"so{d}-0"
            status, body, _ = self.call(c, "GET", f"/fhir/R4/Observation/{oid}", device=d, prefer=d, retry=True)
            base = int(body["meta"]["versionId"])
            for k, value in enumerate((81.5, 62.25)):
                mid = f"d{d}-clash{k}-{uuid.uuid4().hex[:6]}"
                edit = {**body, "valueQuantity": {"value": value, "unit": "kg"}}
                m = {"mutationId": mid, "op": "put", "resourceType": "Observation", "id": oid, "baseVersion": base,
                     "resource": edit}  # fmt: skip
                status, out, _ = self.call(c, "POST", "/api/sync/push", device=d, prefer=d + k, retry=True,
                                           body={"deviceId": f"smoke-{d}", "mutations": [m]})  # fmt: skip
                r = out["results"][0]
                with self.lock:
                    self.acks["mutations"][mid] = {"id": oid, "status": r["status"], "tagged": False,
                                                   "conflict": r.get("conflictId")}  # fmt: skip
            while self.elapsed() < self.seconds:
                pid = f"sp{rng.randrange(12)}"
                ids = [f"so{pid[2:]}-{k}" for k in range(3)]
                muts = []
                for oid in ids:
                    status, body, _ = self.call(
                        c, "GET", f"/fhir/R4/Observation/{oid}", device=d, prefer=d + n, retry=True
                    )
                    if status != 200:
                        continue
                    n += 1
                    mid = f"d{d}-{n}-{uuid.uuid4().hex[:6]}"
                    new = dict(body)
                    base = int(new["meta"]["versionId"])
                    if rng.random() < 0.3:  # same field from a stale base: a conflict when another device won
                        new["valueQuantity"] = {"value": round(rng.uniform(50, 90), 1), "unit": "kg"}
                        base = max(1, base - 1) if rng.random() < 0.5 else base
                    else:
                        new[TAGS] = {**(new.get(TAGS) or {}), mid: True}
                    muts.append({"mutationId": mid, "op": "put", "resourceType": "Observation", "id": oid,
                                 "baseVersion": base, "resource": new})  # fmt: skip
                if not muts:
                    continue
                status, body, server = self.call(
                    c,
                    "POST",
                    "/api/sync/push",
                    device=d, prefer=d + n,
                    retry=True,
                    body={"deviceId": f"smoke-{d}", "mutations": muts},
                )
                if status != 200:
                    with self.lock:
                        self.acks["errors"].append(f"push {status}")
                    continue
                with self.lock:
                    for m, r in zip(muts, body["results"], strict=True):
                        tagged = TAGS in m["resource"] and m["mutationId"] in m["resource"][TAGS]
                        self.acks["mutations"][m["mutationId"]] = {
                            "id": m["id"],
                            "status": r["status"],
                            "tagged": tagged,
                            "conflict": r.get("conflictId"),
                        }
                        if server == 0 and r["status"] in ("applied", "merged"):
                            self.a_writes.add((m["id"], r["versionId"]))

    def reader(self, k: int) -> None:
        rng = random.Random(100 + k)
        with httpx.Client() as c:
            while self.elapsed() < self.seconds:
                pid = f"sp{rng.randrange(12)}"
                self.call(c, "GET", f"/fhir/R4/Patient/{pid}", prefer=k, retry=True)
                self.call(c, "GET", f"/fhir/R4/Observation?patient={pid}&_count=20", prefer=k + 1, retry=True)

    def creator(self, k: int) -> None:
        rng = random.Random(200 + k)
        with httpx.Client() as c:
            while self.elapsed() < self.seconds:
                mark = uuid.uuid4().hex
                body = observation("x", f"sp{rng.randrange(12)}", 60.0)
                del body["id"]
                body["identifier"] = [{"system": "urn:smoke", "value": mark}]
                status, out, _ = self.call(
                    c, "POST", "/fhir/R4/Observation", prefer=k, retry=False, body=body
                )
                if status == 201:
                    with self.lock:
                        self.acks["creates"].append({"id": out["id"], "mark": mark})
                elif status != -1:
                    with self.lock:
                        self.acks["errors"].append(f"create {status}")

    def job(self) -> None:
        muts = [{"mutationId": f"job-{i}", "op": "put", "resourceType": "Observation", "id": f"sj{i}",
                 "baseVersion": None, "resource": observation(f"sj{i}", f"sp{i % 12}", 65.0)} for i in range(300)]  # fmt: skip
        with httpx.Client() as c:
            status, body, _ = self.call(c, "POST", "/api/sync/push/jobs", prefer=1, retry=True,
                                        body={"deviceId": "smoke-job", "mutations": muts})  # fmt: skip
            if status != 202:
                self.acks["errors"].append(f"job {status}")
                return
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                _, state, _ = self.call(c, "GET", f"/api/sync/jobs/{body['id']}", prefer=1, retry=True)
                if state["status"] in ("done", "failed"):
                    self.acks["job"] = {"id": body["id"], "status": state["status"],
                                        "applied": sum(r["status"] == "applied" for r in state["result"]["results"])
                                        if state["result"] else 0}  # fmt: skip
                    return
                time.sleep(0.5)
            self.acks["errors"].append("job did not finish in 90 s")

    def hints(self, token: str) -> None:
        from websockets.asyncio.client import connect

        async def listen() -> None:
            ws_url = self.urls[1].replace("http://", "ws://") + "/ws/sync"
            async with connect(ws_url, origin=self.urls[1], open_timeout=10) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "auth", "token": token}))
                while self.elapsed() < self.seconds + 2:
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=1))
                    except TimeoutError:
                        continue
                    if msg.get("type") in ("sync.hint", "sync.changed"):
                        with self.lock:
                            self.hinted |= {(c["id"], c["versionId"]) for c in msg.get("changes", [])}

        async def run() -> None:
            from websockets.exceptions import ConnectionClosed

            while self.elapsed() < self.seconds + 2:  # a dropped socket reconnects, as the app does
                try:
                    await listen()
                except (ConnectionClosed, OSError) as exc:
                    with self.lock:
                        self.acks["statuses"]["ws " + type(exc).__name__] = (
                            self.acks["statuses"].get("ws " + type(exc).__name__, 0) + 1
                        )
                    await asyncio.sleep(0.5)

        asyncio.run(run())

    def run(self, token: str) -> dict[str, Any]:
        threads = [threading.Thread(target=self.killer)]
        threads += [threading.Thread(target=self.device, args=(d,)) for d in range(4)]
        threads += [threading.Thread(target=self.reader, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=self.creator, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=self.job), threading.Thread(target=self.hints, args=(token.split(",")[0],))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.seconds + 120)
        self.acks["hints_from_a"] = len(self.a_writes & self.hinted)
        self.acks["writes_via_a"] = len(self.a_writes)
        return self.acks


def verify(acks: dict[str, Any]) -> list[str]:
    _django()
    from django.contrib.auth import get_user_model

    from omnicare.fhir.models import Resource
    from omnicare.sync.models import AppliedMutation, Conflict

    user = get_user_model().objects.get(username=USERNAME)
    problems: list[str] = list(acks["errors"])
    muts = acks["mutations"]
    logged = {}
    for a in AppliedMutation.objects.filter(user=user, mutation_id__in=list(muts)).values("mutation_id"):
        logged[a["mutation_id"]] = logged.get(a["mutation_id"], 0) + 1
    bodies = {r.resource_id: r.body for r in Resource.objects.filter(resource_type="Observation")}
    conflicts = {str(c) for c in Conflict.objects.values_list("id", flat=True)}
    for mid, a in muts.items():
        if logged.get(mid) != 1:
            problems.append(f"mutation {mid} logged {logged.get(mid, 0)} times")
        if (
            a["status"] in ("applied", "merged")
            and a["tagged"]
            and mid not in (bodies[a["id"]].get(TAGS) or {})
        ):
            problems.append(f"acknowledged tag {mid} lost on {a['id']}")
        if a["status"] == "conflict" and a["conflict"] not in conflicts:
            problems.append(f"conflict {a['conflict']} of {mid} not stored")
        if a["status"] not in ("applied", "merged", "conflict"):
            problems.append(f"mutation {mid}: {a['status']}")
    marks: dict[str, int] = {}
    for body in bodies.values():
        for ident in body.get("identifier") or []:
            if ident.get("system") == "urn:smoke":
                marks[ident["value"]] = marks.get(ident["value"], 0) + 1
    for c in acks["creates"]:
        n = marks.get(c["mark"], 0)
        if n != 1 or c["id"] not in bodies:
            problems.append(f"created Observation {c['id']} stored {n} times")
    if not any(a["status"] == "conflict" for a in muts.values()):
        problems.append("no push met a conflict")
    job = acks["job"]
    if not job or job["status"] != "done" or job["applied"] != 300:
        problems.append(f"push job: {job}")
    elif AppliedMutation.objects.filter(user=user, mutation_id__startswith="job-").count() != 300:
        problems.append("push job mutations not logged exactly once")
    if acks["hints_from_a"] < 1:
        problems.append("no WebSocket hint crossed from the first server to the second")
    if any(k.startswith("5") and k != "503" for k in acks["statuses"]):
        problems.append(f"server errors: {acks['statuses']}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["setup", "load", "verify"])
    ap.add_argument("--urls", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--kill-pid", type=int, default=0)
    ap.add_argument("--kill-at", type=float, default=12.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.step == "setup":
        setup()
        return 0
    if args.step == "load":
        acks = Load(args.urls.split(","), args.token, args.kill_pid, args.kill_at, args.seconds).run(
            args.token
        )
        Path(args.out).write_text(json.dumps(acks))
        n = len(acks["mutations"])
        kinds: dict[str, int] = {}
        for a in acks["mutations"].values():
            kinds[a["status"]] = kinds.get(a["status"], 0) + 1
        print(f"load: {n} push mutations {kinds}, {len(acks['creates'])} FHIR creates, job {acks['job']}, "
              f"{acks['hints_from_a']} cross-process hints, responses {acks['statuses']}")  # fmt: skip
        return 0
    problems = verify(json.loads(Path(args.out).read_text()))
    for p in problems[:30]:
        print("PROBLEM:", p)
    print(
        "verify:",
        "every acknowledged write stored exactly once" if not problems else f"{len(problems)} problems",
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
