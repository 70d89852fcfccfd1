"""Calendar arithmetic for the chart without the ``datetime`` module (the pyclient core imports no clock module:
tests/pyclient/test_no_io.py). Days are counted from 1970-01-01 (proleptic Gregorian, H. Hinnant's algorithm).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["Ymd", "civil", "days", "parse_date", "parse_instant", "valid_date"]

Ymd = tuple[int, int, int]
_DATE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_INSTANT: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
                             r"(Z|[+-]\d{2}:\d{2})?)?")


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def valid_date(y: int, m: int, d: int) -> bool:
    days_in = [31, 29 if _leap(y) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return y >= 1 and 1 <= m <= 12 and 1 <= d <= days_in[m - 1]


def parse_date(text: object) -> Ymd | None:
    """The date at the start of an ISO date or dateTime string, if it is a real calendar date."""
    m = _DATE.match(str(text or ""))
    if not m:
        return None
    y, mo, d = (int(g) for g in m.groups())
    return (y, mo, d) if valid_date(y, mo, d) else None


def days(ymd: Ymd) -> int:
    """Days since 1970-01-01."""
    y, m, d = ymd
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil(n: int) -> Ymd:
    """The date ``n`` days after 1970-01-01."""
    z = n + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def iso(ymd: Ymd) -> str:
    return f"{ymd[0]:04d}-{ymd[1]:02d}-{ymd[2]:02d}"


def parse_instant(text: object, default_offset_min: int = 0) -> float | None:
    """Seconds since 1970-01-01T00:00Z of an ISO date/dateTime (a date alone is its midnight; no offset:
    ``default_offset_min`` east of UTC). None when it is not a real date and time."""
    m = _INSTANT.fullmatch(str(text or "").strip())
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hh, mm, ss = (int(m.group(k)) if m.group(k) else 0 for k in (4, 5, 6))
    if not valid_date(y, mo, d) or hh > 23 or mm > 59 or ss > 60:
        return None
    tz = m.group(7)
    if tz is None:
        off = default_offset_min
    elif tz == "Z":
        off = 0
    else:
        sign = 1 if tz[0] == "+" else -1
        off = sign * (int(tz[1:3]) * 60 + int(tz[4:6]))
    return days((y, mo, d)) * 86400 + hh * 3600 + mm * 60 + ss - off * 60
