"""Small server-side SVG charts (no JavaScript, no CDN, CSP-safe: presentation attributes, no style=)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#2f6f9f", "#d9822b", "#3a9d5d", "#b04a4a", "#7a5aa6", "#6b7b8c")


def bars(values: Sequence[float], *, labels: Sequence[str] = (), title: str, width: int = 720, height: int = 90,
         color: str = PALETTE[0], unit: str = "") -> SafeString:
    """A bar chart; each bar has a <title> (hover text) with its label and value."""
    n = max(1, len(values))
    top = max([float(v) for v in values] + [1.0])
    gap = 1 if n > 30 else 3
    bw = max(1.0, (width - gap * (n - 1)) / n)
    parts = [f'<svg class="ops-chart" viewBox="0 0 {width} {height + 14}" width="100%" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#9aa5b1" stroke-width="1"/>']
    for i, v in enumerate(values):
        h = 0 if not v else max(1.5, (height - 4) * float(v) / top)
        x = i * (bw + gap)
        label = labels[i] if i < len(labels) else str(i + 1)
        parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{color}">'
                     f'<title>{escape(label)}: {v:g}{escape(unit)}</title></rect>')
    parts.append(f'<text x="0" y="{height + 12}" font-size="12" fill="#5b6670">max {top:g}{escape(unit)}</text>')
    if labels:
        parts.append(f'<text x="{width}" y="{height + 12}" font-size="12" fill="#5b6670" text-anchor="end">'
                     f'{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


def stacked(parts_in: Sequence[tuple[str, float]], *, title: str, width: int = 720, height: int = 28) -> SafeString:
    """One horizontal bar split into coloured parts (e.g. devices by state), with a legend below."""
    total = sum(v for _, v in parts_in) or 1.0
    out = [f'<svg class="ops-chart" viewBox="0 0 {width} {height + 4}" width="100%" role="img" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    x = 0.0
    for i, (label, v) in enumerate(parts_in):
        w = width * v / total
        if w > 0:
            out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" '
                       f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {v:g}</title></rect>')
        x += w
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308


def legend_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]
