"""Where the data nobody on the team wrote lives (the Synthea sample), one place for every server-side test.

The sample sits beside the repository (``../shared/data/synthea-10``) on the team's machines; a clone elsewhere
(CI clones into /tmp) finds it at the machines' fixed place, or where ``OMNICARE_SYNTHEA_DIR`` says. Tests that
need it skip with the path they looked at when it is on none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def synthea_dir() -> Path:
    candidates = [
        os.environ.get("OMNICARE_SYNTHEA_DIR", ""),
        str(_REPO.parent / "shared" / "data" / "synthea-10"),
        "/work/shared/data/synthea-10",
    ]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


SYNTHEA = synthea_dir()
