"""Code-system URIs the client writes and reads: one spelling, one place (a typo in one copy would make that
screen's codes unmatchable by every other)."""

from __future__ import annotations

from typing import Final

__all__ = ["LOINC", "SNOMED", "UCUM"]

SNOMED: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
