"""(Historical: the access refactor of 02:30 UTC memoises grants; the script exits when ``_scope`` is gone.)

Before/after for the push finding: ``omnicare.access.services._scope`` re-queries break-the-glass grants
(``patient_ids_granted``) for every mutation although ``scope_patient_ids`` (memoised per push by
``scope_cache``) already includes them. Runs bench/sync_bench.py unchanged, with ``_scope`` patched to
return the memoised scope only when ``--patched`` is given.

    DATABASE_URL=postgres://... .venv/bin/python bench/experiments/push_scope_memo.py [--patched] -n 2000 --push 1000
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    patched = "--patched" in sys.argv
    sys.argv = [str(ROOT / "bench" / "sync_bench.py"), *[a for a in sys.argv[1:] if a != "--patched"]]
    if patched:
        import os

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
        os.environ.setdefault("OMNICARE_TESTING", "1")
        django.setup()
        from omnicare.access import services
        from omnicare.sync.scope import scope_patient_ids

        if not hasattr(services, "_scope"):
            raise SystemExit(
                "omnicare.access.services._scope is gone: the fix landed (grants are memoised in "
                "visible_patients_cache); nothing to patch"
            )
        services._scope = lambda user: set(scope_patient_ids(user=user))  # type: ignore[assignment]
    runpy.run_path(sys.argv[0], run_name="__main__")
