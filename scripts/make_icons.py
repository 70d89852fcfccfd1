"""Generate the PWA icons (PNG, no dependencies): a white medical cross on teal.

Run: python scripts/make_icons.py  -> pwa/icons/icon-{192,512}.png, maskable-{192,512}.png
Maskable icons keep the cross inside the 80 % safe zone and fill the whole square.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "pwa" / "icons"
TEAL = (15, 118, 110)
WHITE = (255, 255, 255)


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _icon(size: int, *, maskable: bool) -> bytes:
    radius = 0 if maskable else size * 0.2  # rounded square for "any", full bleed for maskable
    arm = size * (0.16 if maskable else 0.2)  # half-length of the cross arms
    bar = size * (0.055 if maskable else 0.07)  # half-width of the bars
    c = (size - 1) / 2
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            # distance outside the rounded rectangle (antialiased edge)
            dx = max(abs(x - c) - (c - radius), 0)
            dy = max(abs(y - c) - (c - radius), 0)
            outside = (dx * dx + dy * dy) ** 0.5 - radius if radius else -1.0
            alpha = 255 if outside <= -0.5 else 0 if outside >= 0.5 else int(255 * (0.5 - outside))
            in_cross = (abs(x - c) <= bar and abs(y - c) <= arm) or (abs(y - c) <= bar and abs(x - c) <= arm)
            r, g, b = WHITE if in_cross else TEAL
            row += bytes((r, g, b, alpha))
        rows.append(bytes(row))
    return _png(size, size, rows)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(_icon(size, maskable=False))
        (OUT / f"maskable-{size}.png").write_bytes(_icon(size, maskable=True))
    print(f"icons written to {OUT}")


if __name__ == "__main__":
    main()
