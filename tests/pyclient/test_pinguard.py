"""PIN attempt policy (issue 10, item 16): free tries, escalating delay, wipe on the 10th, survives a reload."""

from __future__ import annotations

import pytest

from pyclient.pinguard import PinPolicy, PinState, pin_failed, pin_succeeded, pin_wait


def test_three_free_attempts_then_doubling_delays_then_a_wipe_on_the_tenth() -> None:
    policy, state, now = PinPolicy(), PinState(), 1000.0
    delays = []
    for attempt in range(1, 11):
        assert pin_wait(state, now=now) == 0.0
        verdict = pin_failed(state, policy, now=now)
        state = verdict.state
        if attempt < 10:
            assert not verdict.wipe and verdict.attempts_left == 10 - attempt
            delays.append(verdict.delay)
            assert pin_wait(state, now=now) == verdict.delay
            now += verdict.delay
        else:
            assert verdict.wipe
    assert delays == [0, 0, 0, 30, 60, 120, 240, 480, 960]


def test_the_count_survives_a_reload_and_a_damaged_counter_does_not_reset_it() -> None:
    policy = PinPolicy()
    state = PinState()
    for _ in range(5):
        state = pin_failed(state, policy, now=0.0).state
    reloaded = PinState.from_json(state.to_json())
    assert reloaded == state and pin_wait(reloaded, now=0.0) == 60.0
    assert PinState.from_json("{not json").failures == policy.wipe_after - 1
    fresh, to_report = pin_succeeded(reloaded)
    assert fresh == PinState() and to_report == 5


def test_the_policy_is_configurable_and_checked() -> None:
    policy = PinPolicy(free_attempts=1, wipe_after=3, base_delay=5, max_delay=7)
    v1 = pin_failed(PinState(), policy, now=0)
    v2 = pin_failed(v1.state, policy, now=0)
    v3 = pin_failed(v2.state, policy, now=0)
    assert (v1.delay, v2.delay, v3.wipe) == (0, 5, True)
    with pytest.raises(ValueError):
        PinPolicy(free_attempts=10, wipe_after=10)
