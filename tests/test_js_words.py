"""The browser renders the words and lists Python owns; it never spells its own copy (issue 11 item 6).

pyclient owns the forms' pick lists (pyclient.choices), the unlock-secret rule (pyclient.keys), the status line
(pyclient.views.status), the lab flag words (pyclient.chart) and the sign-in outcomes' sentences
(pyclient.outcome, written by the server). A copy of any of them in pwa/app/ would drift from the rule the
validator applies: this test fails as soon as one appears.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyclient import choices as ch
from pyclient import keys as kh
from pyclient import outcome
from pyclient import storage_mode as sm
from pyclient.chart import APPOINTMENT_STATUS_WORDS, EVENT_STATUS_WORDS, FLAG_WORDS
from pyclient.views.status import status_view

ROOT = Path(__file__).resolve().parent.parent
JS = sorted((ROOT / "pwa" / "app").rglob("*.js"))
_COMMENT = re.compile(r"/\*.*?\*/|(?<![:\"'`\\])//[^\n]*", re.S)
_STRING = re.compile(r"\"((?:[^\"\\\n]|\\.)*)\"|'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\]|\\.)*)`")
_ARRAY = re.compile(r"\[[^\[\]]*\]")
LISTS = {"criticality": ch.ALLERGY_CRITICALITY, "allergy status": ch.ALLERGY_STATUS, "gender": ch.GENDER}


def _code(path: Path) -> str:
    return _COMMENT.sub("", path.read_text(encoding="utf-8"))


def _strings(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in _STRING.finditer(text)]


def test_the_scan_sees_the_app() -> None:
    assert len(JS) > 10 and any(p.name == "ui.js" for p in JS)
    code = _COMMENT.sub("", 'h("x", "Female", `a ${b} c`); // "Male"\nconst u = "https://x"; /* "Low" */')
    assert _strings(code) == ["x", "Female", "a ${b} c", "https://x"]


@pytest.mark.parametrize("path", JS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pick_list_is_spelled_in_js(path: Path) -> None:
    text = _code(path)
    words = set(_strings(text))
    for name, choices in LISTS.items():
        labels = {w for _c, w in choices} - {"Other"}  # "Other" is too common a word to tell
        assert not labels & words, f"{path.name} spells the {name} list's words {labels & words}: use c.choices"
        for array in _ARRAY.findall(text):
            codes = set(_strings(array)) & set(ch.codes(choices))
            assert len(codes) < 2, f"{path.name} lists {name} codes {sorted(codes)} itself: use c.choices"
    flags = [f'{k}: "{v}"' for k, v in FLAG_WORDS.items() if k.isalpha()]
    assert not [f for f in flags if f in text], f"{path.name} spells the lab flag words: use flagWords"
    # The chart's status words (immunizations, procedures, appointments): a map code -> word in JS is a copy.
    pairs = [(k, v) for k, v in (*EVENT_STATUS_WORDS.items(), *APPOINTMENT_STATUS_WORDS.items()) if k != v]
    spelt = [f"{k}: {v}" for k, v in pairs
             if re.search(rf"[\"']?{re.escape(k)}[\"']?\s*:\s*[\"']{re.escape(v)}[\"']", text)]
    assert not spelt, f"{path.name} spells the chart's status words {spelt}: show statusText"


def _owned_sentences() -> list[str]:
    status = [status_view(s, online=on)["text"] for on in (True, False) for s in (
        {"locked": True}, {"locked": True, "signedOut": True})]
    status += [status_view({"pending": 2, "conflicted": 2, "rejected": 2, "lastError": outcome.OFFLINE},
                           online=True)["text"].split(" · ", 1)[0]]
    status += ["changes waiting to be sent", "conflicts to review", "not synced yet", "Signed out of the server"]
    status += [sm.PILL_ONLINE, sm.PILL_SIGNED_OUT]
    return [kh.PIN_RULE, kh.PIN_TOO_WEAK, "6 digits", outcome.sign_in_paused(30).split(".")[0], *status]


@pytest.mark.parametrize("path", JS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_rule_sentence_python_owns_is_spelled_in_js(path: Path) -> None:
    text = _code(path)
    found = [s for s in _owned_sentences() if s in text]
    for s in ("Online", "Offline"):  # the pill's "Online · locked" built from pieces
        found += [f"{s} · locked/signed out"] if re.search(rf"{s}.{{0,40}}· (locked|signed out)", text) else []
    # The online-only pill was built from pieces around Python's label: its words are Python's whole.
    found += [f"pill word {w!r}" for w in ("Online", "signed out") if re.search(rf"[\"'`]{w}[\"'`]", text)]
    assert not found, f"{path.name} spells {found}: ask Python (py.call) or show the server's sentence"
