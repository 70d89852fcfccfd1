"""``warm(kb)``: the engine is exercised once when a base is loaded, so the first order is not the slow one;
it must not change any later answer."""

from __future__ import annotations

import json

from pyclient.cds import Context, KnowledgeBase, check, default_kb, shipped_bytes, warm
from tests.pyclient.test_cds import SCENARIOS


def test_warm_up_touches_every_kind_of_rule() -> None:
    kb = KnowledgeBase.from_bytes(shipped_bytes())
    drafts_cards = warm(kb)
    assert drafts_cards >= 4  # allergy, interaction, duplicate, lab, unchecked on the sample
    assert kb.memo, "the resolution memo holds the sample's answers"


def test_warm_up_changes_no_answer() -> None:
    cold = KnowledgeBase.from_bytes(shipped_bytes())
    hot = KnowledgeBase.from_bytes(shipped_bytes())
    warm(hot)
    for _name, drafts, chart, _expected in SCENARIOS:
        a = [c.to_json() for c in check(drafts, Context(chart, now="2026-12-01T10:00:00Z"), kb=cold)]
        b = [c.to_json() for c in check(drafts, Context(chart, now="2026-12-01T10:00:00Z"), kb=hot)]
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert warm(default_kb()) == warm(default_kb())
