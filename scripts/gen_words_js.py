"""Write pwa/app/words.js from pyclient.outcome.BROWSER_WORDS (tests/test_js_words.py checks it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyclient.outcome import words_js  # noqa: E402

if __name__ == "__main__":
    (ROOT / "pwa" / "app" / "words.js").write_text(words_js(), encoding="utf-8")
