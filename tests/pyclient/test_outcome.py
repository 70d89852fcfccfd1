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
