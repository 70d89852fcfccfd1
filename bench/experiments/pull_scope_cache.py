"""Before/after for the pull finding: every pull page recomputes the user's care-team scope
(``omnicare.access.services.care_team_patient_ids``, formerly ``omnicare.sync.scope._compute_scope_patient_ids``:
reads and parses every CareTeam body of the user's teams). This
pulls the demo physician's whole scope in-process, pages of 200 (the PWA's size) and 1,000, as shipped and
with that computation cached per user (what an invalidate-on-CareTeam/grant-write cache would give).

    DATABASE_URL=postgres://.../omnicare_bench .venv/bin/python bench/experiments/pull_scope_cache.py
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
os.environ.setdefault("OMNICARE_SECRET_KEY", "bench")


def main() -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from omnicare.access import services as access
    from omnicare.sync import scope, services
    from pyclient.protocol import loads

    owner, name = (
        (access, "care_team_patient_ids")
        if hasattr(access, "care_team_patient_ids")
        else (scope, "_compute_scope_patient_ids")
    )

    user = get_user_model().objects.get(username="dr.adams")

    def pull_all(limit: int) -> float:
        cursor, n, t0 = None, 0, time.perf_counter()
        for _ in range(10_000):
            page = loads(services.pull_json(user=user, cursor=cursor, limit=limit))
            n += len(page["changes"])
            cursor = page["cursor"]
            if not page["hasMore"]:
                break
        return n / (time.perf_counter() - t0)

    original = getattr(owner, name)
    memo: dict[object, Any] = {}

    @functools.wraps(original)
    def cached(*, user: object) -> Any:
        key = getattr(user, "pk", None)
        if key not in memo:
            memo[key] = original(user=user)
        return memo[key]

    out = {}
    for label in ("as shipped", "scope cached"):
        if label == "scope cached":
            setattr(owner, name, cached)
        for limit in (200, 1000):
            pull_all(limit)  # warm-up
            rates = sorted(pull_all(limit) for _ in range(3))
            out[f"{label}, {limit}/page"] = round(rates[1])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
