"""The status line tells offline, server unreachable, signed out and synced apart (issue 18, item 8)."""

from __future__ import annotations

from typing import Any

from pyclient.views.status import status_view, status_views


def s(**kw: Any) -> dict[str, Any]:
    return {"pending": 0, "conflicted": 0, "rejected": 0, "lastSuccess": 1.0, "lastError": None, "synced": True,
            "needsLogin": False, "syncing": False, **kw}


def test_synced_only_when_everything_is_on_the_server_and_the_server_answers() -> None:
    assert status_view(s(), online=True) == {"state": "ok", "text": "Online", "timeLabel": "synced", "review": None}
    v = status_view(s(pending=2, synced=False), online=True)
    assert (v["state"], v["text"], v["timeLabel"]) == ("pending", "Online · 2 changes waiting to be sent", "last sync")


def test_four_connection_states_never_contradict_each_other() -> None:
    off = status_view(s(pending=1, synced=False), online=False)
    assert off["text"].startswith("Offline") and off["state"] == "offline" and off["timeLabel"] == "last sync"
    down = status_view(s(lastError="offline"), online=True)
    assert down["text"].startswith("Server unreachable") and down["timeLabel"] == "last sync" and down["state"] == "warn"
    assert status_view(s(lastError="server error 502"), online=True)["text"].startswith("Server unreachable")
    out = status_view(s(needsLogin=True), online=True)
    assert out["text"].startswith("Signed out of the server: sign in to sync")
    assert out["timeLabel"] != "synced"  # never "sign in to sync · synced"
    for v in (off, down, out):
        assert "Online" not in v["text"] and "null" not in v["text"] and "persistent" not in v["text"]


def test_problems_are_counted_in_words_with_a_review_link() -> None:
    v = status_view(s(conflicted=1, rejected=2, synced=False), online=True)
    assert v["text"] == "Online · 1 conflict to review · 2 changes refused"
    assert v["review"] == "#/conflicts" and v["state"] == "warn"
    assert status_view(s(rejected=1, synced=False), online=True)["review"] == "#/rejected"
    assert status_view(s(lastSuccess=None, synced=False), online=True)["text"] == "Online · not synced yet"
    assert set(status_views(s())) == {"online", "offline"}


def test_locked_and_signed_out_are_worded_here_too() -> None:
    # The pill shows these as they are (pwa/app/ui.js renderStatus): no status words are spelled in JS.
    assert status_view({"locked": True}, online=True) == {"state": "idle", "text": "Online · locked", "timeLabel": None,
                                                          "review": None}
    assert status_view({"locked": True}, online=False)["text"] == "Offline · locked"
    out = status_view({"locked": True, "signedOut": True}, online=False)
    assert (out["state"], out["text"]) == ("offline", "Offline · signed out")
    assert status_view({"locked": True, "signedOut": True}, online=True)["text"] == "Online · signed out"
