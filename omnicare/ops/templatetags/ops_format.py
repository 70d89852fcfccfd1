"""Plain-language formatting for the dashboard: sizes, durations, percentages, milliseconds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def nbytes(value: Any) -> str:
    if value is None or value == "":
        return "—"
    n = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f}\u00a0{unit}" if unit == "B" else f"{n:.1f}\u00a0{unit}"  # (never split "451.7 | KB")
        n /= 1024
    return f"{n:.1f}\u00a0TB"


@register.filter
def duration(seconds: Any) -> str:
    if seconds is None or seconds == "":
        return "—"
    s = float(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


@register.filter
def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    return duration((timezone.now() - value).total_seconds()) + " ago"


@register.filter
def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):g} %"


@register.filter
def ms(value: Any) -> str:
    return "—" if value is None else f"{float(value):g}\u00a0ms"


@register.filter
def get(mapping: Any, key: Any) -> Any:
    try:
        return mapping[key]
    except (KeyError, TypeError, IndexError):
        return None
