"""The pick lists of the clinical forms: each choice's code and the words a screen shows for it.

One place for every list a form offers and a validator accepts (issue 11 item 6): the entry forms, the
chart's inline selects, registration, the conflict and refused-change screens all render these, and
``forms``/``registration`` accept exactly these codes. The browser never spells a list of its own: the chart
view model carries :func:`form_choices` (``choices``), so the online-only screens, served by the server from
the same functions, show the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

__all__ = ["ALLERGY_CRITICALITY", "ALLERGY_STATUS", "CRITICALITY_DEFAULT", "GENDER", "MEDICATION_STATUS", "choose", "codes",
           "form_choices", "word"]

Choices = Sequence[tuple[str, str]]

ALLERGY_CRITICALITY: Final[Choices] = (("low", "Low"), ("high", "High"), ("unable-to-assess", "Unable to assess"))
ALLERGY_STATUS: Final[Choices] = (("active", "Active"), ("inactive", "Inactive"), ("resolved", "Resolved"))
GENDER: Final[Choices] = (("female", "Female"), ("male", "Male"), ("other", "Other"), ("unknown", "Unknown"))
#: What "Add allergy" starts with, and a refused allergy without one is corrected from.
CRITICALITY_DEFAULT: Final = "unable-to-assess"
MEDICATION_STATUS: Final[Choices] = (
    ("active", "Active"), ("on-hold", "On hold"), ("stopped", "Stopped"), ("completed", "Completed"),
    ("cancelled", "Cancelled"), ("entered-in-error", "Entered in error"))


def codes(choices: Choices) -> tuple[str, ...]:
    """The codes a validator accepts."""
    return tuple(c for c, _w in choices)


def word(choices: Choices, code: str) -> str:
    """The words for ``code`` (the code itself when it is not in the list: shown, never hidden)."""
    return next((w for c, w in choices if c == code), code)


def choose(choices: Choices) -> str:
    """The error sentence naming every choice: "Choose low, high or unable to assess."."""
    words = [w.lower() for _c, w in choices]
    return f"Choose {', '.join(words[:-1])} or {words[-1]}." if len(words) > 1 else f"Choose {words[0]}."


def form_choices() -> dict[str, Any]:
    """The lists as the screens take them ([[code, words], ...]), keyed by the form field they fill, and the
    choice a new form starts with (``defaults``)."""
    return {"criticality": [list(c) for c in ALLERGY_CRITICALITY],
            "allergyStatus": [list(c) for c in ALLERGY_STATUS],
            "gender": [list(c) for c in GENDER],
            "defaults": {"criticality": CRITICALITY_DEFAULT}}
