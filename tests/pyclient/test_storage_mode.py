"""The online-only decision table (issue 13 item 4): which condition gives which mode, and what the app does."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from pyclient import storage_mode as sm

ALLOWED = {"policy": {"offlineData": True}}  # /api/auth/me read at the accept: offline data allowed


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


def test_quota_hit_mid_session_switches_and_clearing_offers_to_keep_data_again() -> None:
    m = sm.StorageMode()
    assert m.start([]).mode == "device"
    d = m.hit("quota-exhausted")
    assert (d.mode, d.action) == ("online-only", "go-online-only")
    assert m.hit("policy-no-offline").action == "none"  # already online only
    assert m.clear("quota-exhausted").action == "none"  # the policy still holds
    d = m.clear("policy-no-offline")
    assert (d.mode, d.action) == ("online-only", "offer-device")  # asked, never switched silently
    assert d.offer is not None and d.offer["text"] == "This device can keep patient data again. Set a PIN to work offline."
    d = m.start([])  # the next start: storage is usable again
    assert (d.mode, d.action) == ("device", "none")


def test_the_first_condition_in_table_order_is_the_one_said() -> None:
    d = sm.decide({"idb": False, "policy": {"offlineData": False}})
    assert d.conditions == ("idb-unavailable", "policy-no-offline")
    assert d.reason == sm.REASONS["idb-unavailable"]


def _reachable_never_misses_a_row() -> set[tuple[str, frozenset[str]]]:
    """Every state the machine can reach from any page start by any event the adapters send (each hit, each
    clear of a condition that can clear, checks with each fact, accept safe or not, decline, switched after a
    switch) — and none of them lacks a table row."""
    full, roomy = {"usage": 10**9, "quota": 10**9 + 10**6}, {"usage": 10**9, "quota": 10**10}
    facts = [{"estimate": full}, {"estimate": roomy}, {"policy": {"offlineData": True}},
             {"policy": {"offlineData": False}}, {"persisted": True}, {"persisted": False,
             "policy": {"requirePersistence": True}}, {}]
    accepts = [{"online": True}, {"online": True, **ALLOWED}, {"online": False}, {"online": True, "unsent": 1},
               {"online": True, "sending": True},
               {"online": True, "policy": {"offlineData": False}}, {"online": True, "estimate": full},
               {"online": False, "unsent": 1, "policy": {"offlineData": False}}]
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[sm.StorageMode] = []
    for n in range(len(sm.CONDITIONS) + 1):
        for start in itertools.combinations(sm.CONDITIONS, n):
            m = sm.StorageMode()
            m.start(start)
            todo.append(m)
    while todo:
        m = todo.pop()
        if (m.mode, m.active) in seen:
            continue
        seen.add((m.mode, m.active))
        steps: list[tuple[str, dict[str, Any], str]] = [("hit", {"estimate": full}, c) for c in sm.CONDITIONS]
        steps += [("clear", {}, c) for c in sm.CLEARABLE if c in m.active]
        steps += [("check", f, "") for f in facts] + [("accept", f, "") for f in accepts] + [("decline", {}, "")]
        for event, f, cond in steps:
            nxt = copy.deepcopy(m)
            d = nxt.on(event, f, cond)  # raises on a missing row
            assert d.action in sm.ACTIONS
            if d.action == "switch-to-device":
                after = copy.deepcopy(nxt)
                assert (after.on("switched").mode, after.mode) == ("device", "device")
                assert after.on("downloaded", {"done": True}).action == "none"
                todo.append(after)
            todo.append(nxt)
    return seen


def test_every_reachable_state_has_a_row_for_every_event() -> None:
    seen = _reachable_never_misses_a_row()
    assert {mode for mode, _ in seen} == set(sm.MODES)
    assert {a for _, a in sm.TRANSITIONS.values()} <= set(sm.ACTIONS)


def test_conditions_that_cannot_clear_in_a_session_wait_for_the_next_start() -> None:
    for cond in ("idb-unavailable", "runtime-failed"):
        m = sm.StorageMode()
        d = m.start([cond])
        assert (d.recheck_s, d.watch) == (0, ())  # nothing to watch: the next start decides again
        assert "next time it starts" in d.detail
        with pytest.raises(ValueError, match="cannot clear during a session"):
            m.clear(cond)
        d = m.check({"estimate": {"usage": 0, "quota": 10**11}, "persisted": True, "policy": {"offlineData": True}})
        assert (d.mode, d.action, d.conditions) == ("online-only", "none", (cond,))
    # A private window with a full disk: freeing space is not enough.
    m = sm.StorageMode()
    m.start(["idb-unavailable"])
    m.hit("quota-exhausted", estimate={"usage": 10, "quota": 10})
    d = m.check({"estimate": {"usage": 10, "quota": 10**10}})
    assert (d.action, d.conditions, d.offer) == ("none", ("idb-unavailable",), None)


GB = 10**9


@pytest.mark.parametrize(("at_hit", "now", "offered"), [
    ({"usage": 5 * GB, "quota": 5 * GB + 10**6}, {"usage": 5 * GB, "quota": 5 * GB + 10**6}, False),  # still full
    ({"usage": 5 * GB, "quota": 5 * GB + 10**6}, {"usage": 4 * GB, "quota": 5 * GB + 10**6}, True),  # 1 GB freed
    # just under the threshold beyond what was free when the write failed
    ({"usage": 5 * GB, "quota": 5 * GB}, {"usage": 5 * GB - sm.RESUME_FREE_BYTES + 1, "quota": 5 * GB}, False),
    ({"usage": 5 * GB, "quota": 5 * GB}, {"usage": 5 * GB - sm.RESUME_FREE_BYTES, "quota": 5 * GB}, True),
    # the estimate already looked roomy when the write failed: only growth counts, or the offer would loop
    ({"usage": GB, "quota": 60 * GB}, {"usage": GB, "quota": 60 * GB}, False),
    (None, {"usage": GB, "quota": 2 * GB}, True),  # no estimate then: free now must reach the threshold alone
])
def test_freed_space_offers_to_keep_data_only_past_the_threshold(at_hit: Any, now: Any, offered: bool) -> None:
    m = sm.StorageMode()
    m.start([])
    d = m.hit("quota-exhausted", estimate=at_hit)
    assert (d.recheck_s, d.watch) == (sm.RECHECK_S, ("estimate", "policy"))
    assert "Free up space on this device" in d.detail
    d = m.check({"estimate": now})
    assert (d.action == "offer-device") is offered
    assert d.mode == "online-only"  # an offer is not a switch


def test_a_check_without_the_facts_changes_nothing() -> None:
    m = sm.StorageMode()
    m.start([])
    m.hit("quota-exhausted", estimate={"usage": 1, "quota": 1})
    for facts in ({}, {"estimate": None}, {"estimate": {"usage": "lots", "quota": 5}}, {"policy": None}):
        assert m.check(facts).action == "none" and m.active == {"quota-exhausted"}


def test_the_administrator_lifting_the_policy_offers_and_reimposing_it_withdraws_the_offer() -> None:
    m = sm.StorageMode()
    m.start([])
    d = m.hit("policy-no-offline")
    assert d.watch == ("policy",) and "administrator turns offline data back on" in d.detail
    assert m.check({"policy": {"offlineData": False}}).action == "none"
    d = m.check({"policy": {"offlineData": True, "requirePersistence": False}})
    assert (d.action, d.text) == ("offer-device", sm.OFFERED_TEXT)
    assert m.check({"policy": {"offlineData": True}}).action == "none"  # the offer stands, said once
    d = m.check({"policy": {"offlineData": False}})
    assert (d.action, d.offer, d.conditions) == ("withdraw-offer", None, ("policy-no-offline",))
    assert "shared workstation" in d.text


def test_while_the_offer_stands_the_policy_is_still_watched_and_its_return_withdraws_the_offer() -> None:
    m = sm.StorageMode()
    m.start(["policy-no-offline"])
    d = m.check({"policy": {"offlineData": True}})
    assert d.action == "offer-device"
    # The app keeps checking at the same period: the administrator may turn offline data off again.
    assert (d.recheck_s, d.watch) == (sm.RECHECK_S, ("policy",))
    assert (m.check({}).recheck_s, m.check({"policy": {"offlineData": True}}).action) == (sm.RECHECK_S, "none")
    d = m.check({"policy": {"offlineData": False}})
    assert (d.mode, d.action, d.offer) == ("online-only", "withdraw-offer", None)
    assert d.note == sm.NOTES["withdrawn"] and "nothing was stored" in d.note
    assert "shared workstation" in d.text and "turns offline data back on" in d.detail
    assert (d.recheck_s, d.watch) == (sm.RECHECK_S, ("policy",))  # and lifted again: offered again
    assert m.check({"policy": {"offlineData": True}}).action == "offer-device"


def test_accepting_judges_the_facts_first_and_a_condition_back_refuses_it_in_words() -> None:
    m = sm.StorageMode()
    m.start(["policy-no-offline"])
    assert m.check({"policy": {"offlineData": True}}).action == "offer-device"
    # Re-imposed between two checks, then "Set PIN": the device must not start keeping data.
    d = m.accept({"online": True, "policy": {"offlineData": False}})
    assert (d.mode, d.action, d.conditions) == ("online-only", "withdraw-offer", ("policy-no-offline",))
    assert d.note == sm.NOTES["withdrawn"] and d.offer is None
    assert m.accept({"online": True, "policy": {"offlineData": False}}).action == "none"  # a second tap
    assert m.accept({"online": True}).action == "none"  # no fact says it cleared: still not offered
    # Lifted again, and the accept's own facts agree: the switch goes ahead.
    assert m.check({"policy": {"offlineData": True}}).action == "offer-device"
    assert m.accept({"online": True, "policy": {"offlineData": True}}).action == "switch-to-device"
    # Something waiting AND the policy back: the policy wins (waiting would not make storing allowed).
    m = sm.StorageMode()
    m.start(["policy-no-offline"])
    m.check({"policy": {"offlineData": True}})
    assert m.accept({"online": True, "unsent": 2, "policy": {"offlineData": False}}).action == "withdraw-offer"


@pytest.mark.parametrize(("free", "withdrawn"), [
    (3 * GB, False),  # still roomy
    (sm.RESUME_FREE_BYTES - 1, False),  # under the offer's threshold, above the margin: no flicker
    (sm.WITHDRAW_FREE_BYTES, False),
    (sm.WITHDRAW_FREE_BYTES - 1, True),  # filled again
    (0, True),
])
def test_while_the_offer_stands_a_disk_filling_again_withdraws_it(free: int, withdrawn: bool) -> None:
    m = _offered()  # full at 0 bytes free, then 10 GB free
    d = m.check({"estimate": {"usage": GB, "quota": GB + free}})
    assert (d.recheck_s, d.watch) == (sm.RECHECK_S, ("estimate", "policy"))
    assert (d.action == "withdraw-offer") is withdrawn and (d.offer is None) is withdrawn
    if withdrawn:
        assert "storage is full" in d.text and d.conditions == ("quota-exhausted",)
    m = _offered()
    d = m.accept({"online": True, "estimate": {"usage": GB, "quota": GB + free}, **ALLOWED})
    assert d.action == ("withdraw-offer" if withdrawn else "switch-to-device")


def test_the_patient_list_says_where_the_patients_are_read_from() -> None:
    assert sm.patients_summary(12, "device") == "12 patients on this device"
    assert sm.patients_summary(1, "device") == "1 patient on this device"
    for mode in ("online-only", "offered", "declined"):  # nothing is kept in any of them
        assert sm.patients_summary(12, mode) == "12 patients · read from the server, nothing kept on this device"
    m = _offered()
    assert sm.patients_summary(3, m.mode).endswith("nothing kept on this device")
    assert m.accept({"online": True, **ALLOWED}).action == "switch-to-device"
    m.on("switched")
    assert sm.patients_summary(3, m.mode) == "3 patients on this device"


def test_persistence_granted_later_or_no_longer_required_offers() -> None:
    for facts in ({"persisted": True}, {"persisted": False, "policy": {"requirePersistence": False}}):
        m = sm.StorageMode()
        m.start(sm.conditions_from_facts({"persisted": False, "policy": {"requirePersistence": True}}))
        assert m.check({"persisted": False, "policy": {"requirePersistence": True}}).action == "none"
        assert m.check(facts).action == "offer-device"


def _offered() -> sm.StorageMode:
    m = sm.StorageMode()
    m.start([])
    m.hit("quota-exhausted", estimate={"usage": 10, "quota": 10})
    assert m.check({"estimate": {"usage": 10, "quota": 10 * GB}}).action == "offer-device"
    return m


@pytest.mark.parametrize(("facts", "words"), [
    ({"online": True, "unsent": 1}, "still on its way"),
    ({"online": True, "audit": 3}, "still on its way"),  # access records of charts read are changes too
    ({"online": True, "sending": True}, "still on its way"),
    ({"online": True, "unresolved": 1}, "waits for your decision"),  # a conflict lives in memory only
    ({"online": False}, "You are offline"),
    ({}, "You are offline"),
    ({"online": False, "audit": 2}, "You are offline"),  # connecting is what to do first
    # the policy could not be read for this accept: the administrator may have turned offline data off since
    ({"online": True}, "cannot confirm"),
    ({"online": True, "policy": {"requirePersistence": False}}, "cannot confirm"),
])
def test_accepting_waits_while_anything_is_on_its_way_or_offline(facts: dict[str, Any], words: str) -> None:
    m = _offered()
    d = m.accept(facts)
    assert (d.mode, d.action) == ("online-only", "not-yet") and words in d.note
    d = m.accept({"online": True, "unsent": 0, "audit": 0, "sending": False, **ALLOWED})
    assert (d.mode, d.action) == ("online-only", "switch-to-device")
    d = m.on("switched")
    assert (d.mode, d.action, d.text) == ("device", "none", "")
    assert "work offline" in m.on("downloaded", {"done": True}).note
    assert "retry automatically" in m.on("downloaded", {"done": False}).note
    assert m.accept({"online": True, **ALLOWED}).action == "none"  # a second tap after the switch does nothing


def test_not_now_keeps_this_session_in_memory_until_the_next_start() -> None:
    m = _offered()
    d = m.on("decline")
    assert (d.mode, d.action, d.back_next_start) == ("online-only", "back-at-next-start", True)
    assert "next started" in d.text and d.offer is None
    assert m.check({"estimate": {"usage": 0, "quota": 10 * GB}}).action == "none"  # not asked again
    assert m.accept({"online": True}).action == "none"
    assert m.start([]).mode == "device"


def test_words_are_plain() -> None:
    m = _offered()
    texts = [m.accept({"online": True, "unsent": 2}).note, m.accept({}).note, m.accept({"online": True}).note, *sm.OFFER.values(),
             *sm.WHAT_CLEARS.values(), *sm.NOTES.values(), sm.OFFERED_TEXT, sm.DECLINED_TEXT]
    for t in texts:
        assert t and t[0].isupper() and "{" not in t and "None" not in t and "_" not in t


def test_unknown_conditions_and_bad_facts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown storage condition"):
        sm.StorageMode().hit("disk-on-fire")
    with pytest.raises(ValueError, match="policy"):
        sm.decide({"policy": "no"})


def test_wire_form() -> None:
    j = sm.decide({"runtime": False}).to_json()
    assert j == {"mode": "online-only", "action": "start-online-only", "conditions": ["runtime-failed"],
                 "decisions": "server", "text": sm.PREFIX + sm.REASONS["runtime-failed"],
                 "reason": sm.REASONS["runtime-failed"],
                 "detail": sm.CONSEQUENCE + " " + sm.WHAT_CLEARS["runtime-failed"], "backNextStart": False,
                 "offer": None, "note": "", "recheckS": 0, "watch": [],
                 "label": "Online only",
                 "pill": {"online": "Online only · Online", "signedOut": "Online only · signed out"}}
    j = _offered().check({}).to_json()
    assert j["offer"] == dict(sm.OFFER) and j["mode"] == "online-only" and j["conditions"] == []
    with pytest.raises(ValueError, match="unknown storage event"):
        sm.StorageMode().on("reboot")


@pytest.mark.parametrize("condition", sm.CONDITIONS)
def test_the_pill_says_online_only_in_two_words_and_the_sentence_stays_in_text(condition: str) -> None:
    """The status pill (header, one line at 1024 px) takes ``label``; the reason is in ``text`` (banner, tooltip)."""
    j = sm.StorageMode().start([condition]).to_json()
    assert j["label"] == "Online only" and j["text"].startswith(j["label"]) and len(j["text"]) > 40
    assert j["pill"]["online"].startswith(j["label"]) and j["pill"]["signedOut"].startswith(j["label"])
    assert sm.decide({}).to_json()["label"] == "" and sm.decide({}).to_json()["pill"] is None
