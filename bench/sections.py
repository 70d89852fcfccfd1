"""One ``## `` section of BENCHMARKS.md rewritten in place (or appended), the rest of the file kept."""

from __future__ import annotations

from pathlib import Path


def section_write(report: Path, section: str, body: str) -> None:
    """Replace the section headed ``section`` (up to the next ``## ``) with ``body``, or append ``body``."""
    text = report.read_text() if report.exists() else ""
    if section in text:
        head, _, tail = text.partition(section)
        rest = tail.split("\n## ", 1)
        text = head + body + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + body
    report.write_text(text)
