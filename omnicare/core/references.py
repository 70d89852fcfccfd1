"""The syntax of a FHIR reference, read by every layer (access reads care teams and wards through it; the FHIR
search index and the bulk import too). Pure: no Django, no query."""

from __future__ import annotations


def parse_reference(ref: str) -> tuple[str, str] | None:
    """``"Patient/123"`` or ``"https://x/fhir/Patient/123[/_history/2]"`` → ("Patient", "123")."""
    if not ref or ref.startswith(("#", "urn:")) or "?" in ref:  # contained, bundle-local or conditional
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return None
    return parts[-2], parts[-1]
