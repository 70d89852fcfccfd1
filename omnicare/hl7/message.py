"""HL7 v2 messages: decoding, parsing into plain values, checking, and building acknowledgements.

Parsing and framing use the PyPI package ``hl7`` (python-hl7): it reads the encoding characters from
MSH-1/MSH-2 of each message, splits fields / repetitions / components / subcomponents, decodes escape
sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\X..\\``, formatting ``\\.br\\``) and ships asyncio MLLP
streams (``hl7.mllp``). It accepts any v2.x version and local Z-segments, which real feeds need.
``hl7apy`` was the alternative: it validates structure against the per-version message profiles, which
rejects the quirks real senders produce (missing optional groups, local codes, v2.3 messages labelled
v2.5), and it has no asyncio MLLP server (a thread per connection). We check what we need ourselves
(MSH, version, message type, the segments and fields each mapping requires) and answer AR/AE with ERR.

A parsed message becomes :class:`Parsed`: every segment is a list of fields, every field a list of
repetitions, every repetition a list of components, every component a list of subcomponents (strings,
already unescaped). Accessors (:meth:`Seg.get`, :meth:`Seg.reps`) make the mapping code read like the
v2-to-FHIR IG tables.
"""

from __future__ import annotations

import codecs
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hl7

type Rep = list[list[str]]  # components -> subcomponents

#: MSH-12 versions this interface accepts.
VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"})

#: message type -> trigger events handled (anything else is refused with AR / 200 or 201).
SUPPORTED: dict[str, frozenset[str]] = {
    "ADT": frozenset({"A01", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40"}),
    "ORU": frozenset({"R01"}),
    "SIU": frozenset({"S12", "S13", "S14", "S15"}),
    "RDS": frozenset({"O13"}),
}
#: segments a message must carry to be accepted (else AE / 100).
REQUIRED_SEGMENTS: dict[str, tuple[str, ...]] = {
    "ADT^A40": ("PID", "MRG"),
    "ORU": ("PID", "OBR"),
    "SIU": ("SCH", "PID"),
    "RDS": ("PID", "ORC"),
    "ADT": ("PID",),
}

# MSH-18 character set names (HL7 table 0211) -> Python codecs.
CHARSETS = {
    "": "utf-8",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "ISO IR100": "latin-1",
    "CP1252": "cp1252",
}


class MessageError(Exception):
    """A message that cannot be accepted. ``ack`` is AR (reject) or AE (error); ``code`` from HL7 table 0357."""

    def __init__(self, text: str, *, code: str = "207", ack: str = "AE", location: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.ack = ack
        self.location = location


@dataclass
class Seg:
    name: str
    fields: list[list[Rep]]  # fields[n] is field n (for MSH, n is the MSH-n number; fields[0] unused)

    def reps(self, n: int) -> list[Rep]:
        """All repetitions of field ``n`` that are not empty."""
        if n >= len(self.fields):
            return []
        return [r for r in self.fields[n] if any(any(s for s in c) for c in r)]

    def get(self, n: int, c: int = 1, s: int = 1, r: int = 1) -> str:
        """Field ``n``, repetition ``r``, component ``c``, subcomponent ``s`` (1-based; '' when absent)."""
        try:
            return self.fields[n][r - 1][c - 1][s - 1]
        except IndexError:
            return ""


def rep_get(rep: Rep, c: int = 1, s: int = 1) -> str:
    try:
        return rep[c - 1][s - 1]
    except IndexError:
        return ""


@dataclass
class Parsed:
    text: str
    segments: list[Seg]
    separators: str
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    control_id: str
    message_code: str
    trigger: str
    version: str
    processing_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sender(self) -> str:
        """Who sent it, for idempotency and audit: the sending facility (MSH-4), else the application."""
        return self.sending_facility or self.sending_app

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger}"

    def first(self, name: str) -> Seg | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Seg]:
        return [s for s in self.segments if s.name == name]


def charset_of(raw: bytes) -> str:
    """The Python codec for MSH-18 (UTF-8 when absent; unknown names are an AR)."""
    head = raw.lstrip().split(b"\r", 1)[0].split(b"\n", 1)[0]
    parts = head.split(head[3:4]) if head.startswith(b"MSH") and len(head) > 4 else []
    value = parts[17].decode("ascii", "replace") if len(parts) > 17 else ""
    comp = chr(parts[1][0]) if len(parts) > 1 and parts[1] else "^"
    name = value.split("~")[0].split(comp)[0].strip().upper()
    if name not in CHARSETS:
        raise MessageError(f"Unsupported character set in MSH-18: {name[:20]!r}", code="204", ack="AR",
                           location="MSH^1^18")
    return CHARSETS[name]


def decode(raw: bytes) -> str:
    codec = charset_of(raw)
    try:
        return codecs.decode(raw, codec)
    except UnicodeDecodeError as exc:
        raise MessageError(f"Message is not valid {codec}", code="102", ack="AR") from exc


def _leaves(node: Any, depth: int) -> list[Any]:
    """Normalise a python-hl7 container (whose depth varies with the separators present) to fixed depth."""
    if isinstance(node, str):
        value: Any = node
        for _ in range(depth):
            value = [value]
        return value  # type: ignore[no-any-return]
    if depth == 0:
        return str(node)  # type: ignore[return-value]
    return [_leaves(child, depth - 1) for child in node]


def _unescape(msg: Any, value: str) -> str:
    out = msg.unescape(value)
    if "\\X" in value.upper():  # \X..\ hex: python-hl7 yields one char per byte; re-read UTF-8 sequences
        try:
            out = out.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return str(out)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\r").replace("\n", "\r").strip()


def parse_for_ack(text: str) -> Parsed:
    """What the listener needs before it stores and ACKs a message, at a fraction of :func:`parse`'s cost.

    The same parser (python-hl7) reads MSH whole and PID whole (the checks need PID-3), but of every other
    segment only its name (the checks need which segments are present). The full parse runs later in the
    worker. ``text`` of the result is the whole message, exactly as :func:`parse` would keep it. Why: the
    parse was most of the listener's CPU per message, and a sender that waits for each AA waits for it.
    python-hl7 rejects nothing in the rest of a message (segments are split, never validated), so this
    accepts and refuses exactly what :func:`parse` + :func:`check` do.
    """
    text = _normalise(text)
    fs = text[3:4] if text.startswith("MSH") and len(text) > 3 else "|"
    lines = text.split("\r")
    reduced = [lines[0], *(line if line.startswith("PID") else line.split(fs, 1)[0] for line in lines[1:])]
    p = parse("\r".join(reduced))
    p.text = text
    return p


def parse(text: str) -> Parsed:
    """Parse one message (already decoded). Raises :class:`MessageError` (AR) for anything that is not HL7."""
    text = _normalise(text)
    if not text.startswith("MSH") or len(text) < 8:
        raise MessageError("Not an HL7 v2 message (no MSH segment)", code="100", ack="AR", location="MSH")
    try:
        msg = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises assorted errors on malformed input
        raise MessageError("Unparseable HL7 message", code="102", ack="AR") from exc
    segments: list[Seg] = []
    for raw_seg in msg:
        name = str(raw_seg[0])[:3] if len(raw_seg) else ""
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise MessageError("Malformed segment name", code="100", ack="AR")
        fields: list[list[Rep]] = [[]]
        start = 1
        if name == "MSH":
            fields.append([[[str(raw_seg[1])]]])  # MSH-1, MSH-2 are the separators themselves
            fields.append([[[str(raw_seg[2])]]])
            start = 3
        for f in list(raw_seg)[start:]:
            reps = _leaves(f, 3)
            fields.append([[[_unescape(msg, s) for s in comp] for comp in rep] for rep in reps])
        segments.append(Seg(name, fields))
    msh = segments[0]
    p = Parsed(
        text=text,
        segments=segments,
        separators=str(msh.get(1)) + str(msh.get(2)),
        sending_app=msh.get(3),
        sending_facility=msh.get(4),
        receiving_app=msh.get(5),
        receiving_facility=msh.get(6),
        control_id=msh.get(10),
        message_code=msh.get(9, 1).upper(),
        trigger=msh.get(9, 2).upper(),
        version=msh.get(12),
        processing_id=msh.get(11),
    )
    return p


def check(p: Parsed) -> None:
    """Raise :class:`MessageError` unless this interface can accept the message."""
    if not p.control_id:
        raise MessageError("MSH-10 message control id is required", code="101", ack="AR", location="MSH^1^10")
    if len(p.control_id) > 199 or len(p.sender) > 180:
        raise MessageError("MSH-10 or MSH-4 is too long", code="102", ack="AR", location="MSH^1^10")
    if not p.sender:
        raise MessageError("MSH-4 sending facility (or MSH-3) is required", code="101", ack="AR",
                           location="MSH^1^4")
    if p.version not in VERSIONS:
        raise MessageError(f"Unsupported version {p.version[:10]!r} (2.3 to 2.8)", code="203", ack="AR",
                           location="MSH^1^12")
    if p.processing_id and p.processing_id[:1] not in ("P", "T", "D"):
        raise MessageError("Unsupported processing id", code="202", ack="AR", location="MSH^1^11")
    if p.message_code not in SUPPORTED:
        raise MessageError(f"Unsupported message type {p.message_code[:10]!r}", code="200", ack="AR",
                           location="MSH^1^9")
    if p.trigger not in SUPPORTED[p.message_code]:
        raise MessageError(f"Unsupported event {p.message_type[:12]!r}", code="201", ack="AR",
                           location="MSH^1^9^1^2")
    needed = REQUIRED_SEGMENTS.get(p.message_type) or REQUIRED_SEGMENTS.get(p.message_code, ())
    for seg in needed:
        if p.first(seg) is None:
            raise MessageError(f"Required segment {seg} is missing", code="100", ack="AE", location=seg)
    pid = p.first("PID")
    if pid is not None and not pid.reps(3):
        raise MessageError("PID-3 patient identifier is required", code="101", ack="AE", location="PID^1^3")


def _esc(value: str, seps: str) -> str:
    """Escape a value we put into an ACK (the sender's own separators)."""
    if len(seps) < 5:
        seps = "|^~\\&"
    fs, cs, rs, esc, ss = seps[0], seps[1], seps[2], seps[3], seps[4]
    out = value.replace(esc, f"{esc}E{esc}")
    for ch, code in ((fs, "F"), (cs, "S"), (rs, "R"), (ss, "T")):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def new_control_id() -> str:
    return uuid.uuid4().hex[:20].upper()


def ack_bytes(
    p: Parsed | None,
    code: str,
    *,
    error: MessageError | None = None,
    now: datetime | None = None,
    app: str = "OMNICARE",
    facility: str = "OMNICARE",
) -> bytes:
    """An original-mode ACK: MSA-1 ``code``, MSA-2 the message's MSH-10, and ERR when ``error``."""
    now = now or datetime.now(UTC)
    seps = p.separators if p is not None and len(p.separators) >= 5 else "|^~\\&"
    fs, cs = seps[0], seps[1]
    version = p.version if p is not None and p.version in VERSIONS else "2.5.1"
    trigger = p.trigger if p is not None else ""

    def e(v: str) -> str:
        return _esc(v, seps)

    msh = fs.join([
        "MSH", seps[1:5], app, facility,
        e(p.sending_app) if p else "", e(p.sending_facility) if p else "",
        now.strftime("%Y%m%d%H%M%S"), "", f"ACK{cs}{e(trigger)}{cs}ACK", new_control_id(),
        e(p.processing_id) if p and p.processing_id else "P", version,
    ])
    msa = fs.join(["MSA", code, e(p.control_id) if p else "", e(error.text[:80]) if error else ""])
    segs = [msh, msa]
    if error is not None:
        sub = seps[4]
        if version in ("2.3", "2.3.1", "2.4"):
            loc = error.location.replace("^", cs) if error.location else ""
            segs.append(fs.join(["ERR", f"{loc}{cs}{error.code}{sub}{e(error.text[:80])}{sub}HL70357"]))
        else:
            loc = error.location.replace("^", cs) if error.location else ""
            severity = "E"
            segs.append(fs.join(["ERR", "", loc, f"{error.code}{cs}{e(error.text[:80])}{cs}HL70357", severity]))
    return ("\r".join(segs) + "\r").encode("utf-8")


def ack_code_of(raw: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK we received (('', '') when it is not one)."""
    try:
        p = parse(raw.decode("utf-8", "replace"))
    except MessageError:
        return "", ""
    msa = p.first("MSA")
    if msa is None:
        return "", ""
    return msa.get(1).upper(), msa.get(2)
