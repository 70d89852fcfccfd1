"""The online-only decision table (issue 13 item 4): which condition gives which mode, and what the app does."""

from __future__ import annotations

import itertools

import pytest

from pyclient import storage_mode as sm


def test_a_device_that_can_keep_data_keeps_it() -> None:
    d = sm.decide({"idb": True, "persisted": False, "runtime": True, "policy": {"offlineData": True}})
    assert (d.mode, d.action, d.text) == ("device", "none", "")


@pytest.mark.parametrize(("facts", "condition", "words"), [
    ({"idb": False}, "idb-unavailable", "private window"),
    ({"persisted": False, "policy": {"requirePersistence": True}}, "persist-refused", "keep data permanently"),
    ({"quota": True}, "quota-exhausted", "storage is full"),
    ({"runtime": False}, "runtime-failed", "offline engine could not start"),
    ({"policy": {"offlineData": False}}, "policy-no-offline", "shared workstation"),
])
def test_each_condition_means_online_only_and_says_why(facts: dict[str, object], condition: str, words: str) -> None:
    d = sm.decide(facts)
    assert d.mode == "online-only" and d.action == "start-online-only"
    assert d.conditions == (condition,)
    assert d.text.startswith("Online only: this device keeps no patient data — ") and words in d.text
    assert "{" not in d.text and "None" not in d.text
    assert d.decisions == ("server" if condition == "runtime-failed" else "browser")


def test_refused_persistence_counts_only_when_the_policy_requires_it() -> None:
    assert sm.decide({"persisted": False}).mode == "device"
    assert sm.decide({"persisted": False, "policy": {"requirePersistence": False}}).mode == "device"


def test_quota_hit_mid_session_switches_and_clearing_waits_for_the_next_start() -> None:
    m = sm.StorageMode()
    assert m.start([]).mode == "device"
    d = m.hit("quota-exhausted")
    assert (d.mode, d.action) == ("online-only", "go-online-only")
    assert m.hit("policy-no-offline").action == "none"  # already online only
    assert m.clear("quota-exhausted").action == "none"  # the policy still holds
    d = m.clear("policy-no-offline")
    assert (d.mode, d.action, d.back_next_start) == ("online-only", "back-at-next-start", True)
    assert "next started" in d.text
    d = m.start([])  # the next start: storage is usable again
    assert (d.mode, d.action) == ("device", "none")


def test_the_first_condition_in_table_order_is_the_one_said() -> None:
    d = sm.decide({"idb": False, "policy": {"offlineData": False}})
    assert d.conditions == ("idb-unavailable", "policy-no-offline")
    assert d.reason == sm.REASONS["idb-unavailable"]


def test_the_table_is_complete_and_only_reaches_known_actions() -> None:
    # Every (mode, event, any-left) that can happen has a row; a hit always leaves a condition.
    for mode, event, left in itertools.product(("device", "online-only"), ("hit", "clear", "start"), (True, False)):
        if (event, left) == ("hit", False) or (mode, event, left) == ("device", "clear", True):
            continue  # impossible: a hit adds one; in device mode nothing is active to remain
        assert (mode, event, left) in sm.TRANSITIONS
    assert {a for _, a in sm.TRANSITIONS.values()} <= set(sm.ACTIONS)


def test_unknown_conditions_and_bad_facts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown storage condition"):
        sm.StorageMode().hit("disk-on-fire")
    with pytest.raises(ValueError, match="policy"):
        sm.decide({"policy": "no"})


def test_wire_form() -> None:
    j = sm.decide({"runtime": False}).to_json()
    assert j == {"mode": "online-only", "action": "start-online-only", "conditions": ["runtime-failed"],
                 "decisions": "server", "text": sm.PREFIX + sm.REASONS["runtime-failed"],
                 "reason": sm.REASONS["runtime-failed"], "detail": sm.CONSEQUENCE, "backNextStart": False,
                 "label": "Online only"}


@pytest.mark.parametrize("condition", sm.CONDITIONS)
def test_the_pill_says_online_only_in_two_words_and_the_sentence_stays_in_text(condition: str) -> None:
    """The status pill (header, one line at 1024 px) takes ``label``; the reason is in ``text`` (banner, tooltip)."""
    j = sm.StorageMode().start([condition]).to_json()
    assert j["label"] == "Online only" and j["text"].startswith(j["label"]) and len(j["text"]) > 40
    assert sm.decide({}).to_json()["label"] == ""
