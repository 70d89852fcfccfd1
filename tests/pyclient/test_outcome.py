"""The one client-side reader of server outcomes (pyclient.outcome)."""

from __future__ import annotations

from pyclient import outcome

REVOKED = {"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "forbidden", "diagnostics": "This device was revoked",
     "details": {"coding": [{"system": "urn:omnicare:device", "code": "device-revoked", "display": "wipe local data"}]}}]}


def test_the_details_code_names_what_the_client_must_do() -> None:
    assert outcome.code(REVOKED) == outcome.DEVICE_REVOKED
    assert outcome.code({"issue": [{"code": "invalid"}]}) is None
    assert outcome.code(None) is None and outcome.code({"issue": "junk"}) is None


def test_the_words_shown_come_from_every_issue() -> None:
    two = {"issue": [{"diagnostics": "Bad date"}, {"details": {"text": "Unknown code"}}, {"code": "invalid"}]}
    assert outcome.text(two) == "Bad date; Unknown code; invalid"
    assert outcome.text(None) == "rejected by the server" and outcome.text({}, "Sign-in failed.") == "Sign-in failed."


def test_a_revoked_device_is_told_by_header_or_by_the_outcome_code() -> None:
    assert outcome.device_revoked(403, "", "revoked; wipe")
    assert outcome.device_revoked(403, '{"code": "device-revoked"}', None)  # a proxy dropped the header
    assert not outcome.device_revoked(403, "{}", None)
    assert not outcome.device_revoked(401, '{"code": "device-revoked"}', "revoked; wipe")


def test_a_sync_failure_is_worded_once_and_read_back_by_the_status_line() -> None:
    from pyclient.views.status import status_view

    assert [outcome.sync_failure(s) for s in (0, 401, 403, 502)] == [
        "offline", "sign in again to sync", "sign in again to sync", "server error 502"]
    for status in (0, 500, 503):  # no usable answer: never "Online", the changes wait
        assert outcome.unreachable(outcome.sync_failure(status))
        view = status_view({"lastError": outcome.sync_failure(status), "lastSuccess": 1.0}, online=True)
        assert view["text"].startswith("Server unreachable"), view
    assert outcome.unreachable(outcome.NO_RESULT)
    assert not outcome.unreachable(outcome.sync_failure(401)) and not outcome.unreachable(None)
    assert outcome.needs_sign_in(401) and outcome.needs_sign_in(403) and not outcome.needs_sign_in(500)


def test_a_paused_sign_in_names_the_wait_in_seconds_then_minutes() -> None:
    assert outcome.sign_in_paused(29) == ("Too many failed sign-ins. For your security, sign-in is paused: "
                                          "try again in 29 seconds.")
    assert outcome.sign_in_paused(91).endswith("try again in 2 minutes.")
    assert outcome.sign_in_paused(900).endswith("try again in 15 minutes.")
    assert outcome.sign_in_paused(None).endswith("try again later.")
