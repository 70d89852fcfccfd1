"""Three-way merge of FHIR resources (JSON dicts), shared by server and browser.

``merge(base, ours, theirs)``: *ours* is the server's current version, *theirs*
the client's edit, *base* the version the client edited from (``None`` when
both sides created the resource independently: treated as an empty base).
The policy (what identifies array items, which fields are one clinical value,
stop/retraction precedence, server-owned and derived fields) is data in
:mod:`pyclient.merge_rules`, documented there for clinical review.

Conflict paths: element names joined by ``.``; an array item is written with its
identity, e.g. ``name[use=official].family``, ``note[time=2024-01-02,author=Dr A]``;
a choice element whose type differs between the sides is written ``value[x]``
and its values are then ``{"valueQuantity": ...}`` dicts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyclient.merge_rules import (
    CHOICE_PREFIXES,
    CHOICE_TYPE_SUFFIXES,
    FIELD_RULES,
    IDENTITY,
    STOP_RULES,
    Identity,
    Policy,
    field_rules_for,
)

__all__ = ["Conflict", "MergeResult", "merge"]


class _Missing:
    """An absent element (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


@dataclass(frozen=True)
class Conflict:
    """One place where both sides changed the same thing differently.

    ``base``/``ours``/``theirs`` are JSON values, ``None`` when absent (FHIR
    JSON has no null elements, so None is unambiguous for valid resources).
    """

    path: str
    base: Any
    ours: Any
    theirs: Any

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"path", "base", "ours", "theirs"}``."""
        return {"path": self.path, "base": self.base, "ours": self.ours, "theirs": self.theirs}


@dataclass(frozen=True)
class MergeResult:
    """Outcome of :func:`merge`.

    ``merged`` holds ours' value at every conflicting path, so it is always a
    valid resource; it is a fresh copy, safe to mutate.
    """

    merged: dict[str, Any]
    conflicts: tuple[Conflict, ...]

    @property
    def clean(self) -> bool:
        """True when nothing needs a human decision."""
        return not self.conflicts


def merge(base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any]) -> MergeResult:
    """Three-way merge ``theirs`` (client edit) into ``ours`` (server current) from ``base``."""
    b: dict[str, Any] = {} if base is None else base
    rtype = ours.get("resourceType", theirs.get("resourceType"))
    m = _Merger(rtype if isinstance(rtype, str) else None)
    if _same(ours, theirs):
        merged: Any = ours
    elif _same(b, ours):
        merged = theirs
    elif _same(b, theirs):
        merged = ours
    else:
        merged = m.merge_object("", "", b, ours, theirs, m.stop_guards(b, ours, theirs))
    return MergeResult(merged=_copy(merged), conflicts=tuple(m.conflicts))


# --- helpers ------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Exact JSON equality: Python's == says True == 1 == 1.0, JSON does not."""
    if a is b:
        return True
    t = type(a)
    if t is not type(b) or a != b:  # C-speed rejection first
        return False
    if t is dict or t is list:
        # repr tells True/1/1.0 apart at C speed; it also sees key order, so a
        # mismatch there (rare: re-serialised JSON) is settled by the slow walk
        return repr(a) == repr(b) or _strict(a, b)
    return True


def _strict(a: Any, b: Any) -> bool:
    # only reached for values already equal under ==: same keys, same lengths
    t = type(a)
    if t is not type(b):
        return False
    if t is dict:
        for k, v in a.items():
            if not _strict(v, b[k]):
                return False
    elif t is list:
        for v, w in zip(a, b, strict=True):
            if not _strict(v, w):
                return False
    return True


def _copy(v: Any) -> Any:
    t = type(v)
    if t is dict:
        return {k: _copy(x) if type(x) in _CONTAINERS else x for k, x in v.items()}
    if t is list:
        return [_copy(x) if type(x) in _CONTAINERS else x for x in v]
    return v


_CONTAINERS: Final = (dict, list)


def _json_or_none(v: Any) -> Any:
    return None if v is _MISSING else _copy(v)


def _canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_choice_cache: dict[str, str | None] = {}


def choice_unit(key: str) -> str | None:
    """``"valueQuantity"`` -> ``"value[x]"``; ``None`` for a non-choice key."""
    try:
        return _choice_cache[key]
    except KeyError:
        pass
    unit = None
    for suffix in CHOICE_TYPE_SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in CHOICE_PREFIXES:
            unit = key[: -len(suffix)] + "[x]"
            break
    if len(_choice_cache) < 4096:  # bounded: keys come from untrusted input
        _choice_cache[key] = unit
    return unit


def _unit_value(d: Any, unit: str) -> Any:
    """The value of a field or a whole choice group (dict of its keys) in ``d``."""
    if not isinstance(d, dict):
        return _MISSING
    if not unit.endswith("[x]"):
        return d.get(unit, _MISSING)
    prefix = unit[:-3]
    group = {k: v for k, v in d.items() if k.startswith(prefix) and choice_unit(k) == unit}
    return group or _MISSING


def _keystr(v: Any) -> str:
    """A short, order-insensitive identity string for an identity field's value."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        coding = v.get("coding")
        if isinstance(coding, list) and coding:
            codes = sorted(
                f"{c.get('system', '')}|{c.get('code', '')}" if isinstance(c, dict) else _canonical(c)
                for c in coding
            )
            return "+".join(codes)
        ref = v.get("reference")
        if isinstance(ref, str):
            return ref
        text = v.get("text")
        if isinstance(text, str) and set(v) <= {"text", "coding", "id", "extension"}:
            return text
        return _canonical(v)
    if isinstance(v, list):
        return "+".join(sorted(_keystr(x) for x in v))
    return _canonical(v)


def _field_value(e: dict[str, Any], field: str) -> Any:
    if field.endswith("[x]"):
        group = _unit_value(e, field)
        if isinstance(group, dict) and len(group) == 1:
            return next(iter(group.values()))  # authorString "Dr A" -> "Dr A"
        return group
    return e.get(field, _MISSING)


_Key = tuple[str, ...]


def _identity(spec: Identity, e: Any, repeated: frozenset[str]) -> tuple[_Key, str] | None:
    """(key, label) of one array item, or None when it has no identity."""
    if spec.fields == (".",):
        s = _keystr(e)
        return (s,), s
    if not isinstance(e, dict):
        return None
    if spec.content_when_repeated:
        url = e.get("url")
        if not isinstance(url, str):
            return None
        if url in repeated:
            c = _canonical(e)
            return ("url", url, c), f"url={url},content={c}"
        return ("url", url), f"url={url}"
    fields = spec.fields
    if spec.fallback and _field_value(e, fields[0]) is _MISSING:
        fields = spec.fallback
    parts: list[str] = []
    key: list[str] = []
    for f in fields:
        v = _field_value(e, f)
        if v is _MISSING:
            key.append("\x00")  # absent, distinct from any string value
        else:
            s = _keystr(v)
            key.append(s)
            parts.append(f"{f.removesuffix('[x]')}={s}")
    if not parts and not spec.allow_empty:
        return None
    if not parts:
        parts = [f"{fields[0]}="]
    return tuple(fields) + tuple(key), ",".join(parts)


def item_label(resource_type: str | None, spath: str, item: Any, siblings: Sequence[Any] = ()) -> str | None:
    """The label :func:`merge` writes in brackets for ``item`` of the list at schema path ``spath``.

    ``siblings``: the list ``item`` is in (an extension url that repeats there is labelled with its content).
    ``None`` when the list has no identity rule or the item has no identity. :mod:`pyclient.conflict_paths`
    matches a path back to an item with this, so the grammar has exactly one writer.
    """
    rule = (_RULES.get(resource_type or "*") or _RULES["*"]).get(spath)
    spec = rule if isinstance(rule, Identity) else IDENTITY.get(spath.rpartition(".")[2])
    if spec is None:
        return None
    repeated: frozenset[str] = frozenset()
    if spec.content_when_repeated:
        urls = [str(e["url"]) for e in siblings if isinstance(e, dict) and isinstance(e.get("url"), str)]
        repeated = frozenset(u for u in urls if urls.count(u) > 1)
    ident = _identity(spec, item, repeated)
    return None if ident is None else ident[1]


def _status_codes(v: Any) -> frozenset[str]:
    if isinstance(v, str):
        return frozenset({v})
    if isinstance(v, dict):
        coding = v.get("coding")
        if isinstance(coding, list):
            return frozenset(
                c["code"] for c in coding if isinstance(c, dict) and isinstance(c.get("code"), str)
            )
    return frozenset()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_RULES: Final = {rt: field_rules_for(None if rt == "*" else rt) for rt in FIELD_RULES}


class _Merger:
    __slots__ = ("_stop_rules", "conflicts", "rules")

    def __init__(self, resource_type: str | None) -> None:
        self.rules = _RULES.get(resource_type or "*") or _RULES["*"]
        self.conflicts: list[Conflict] = []
        self._stop_rules = STOP_RULES.get(resource_type or "", ())

    def conflict(self, path: str, b: Any, o: Any, t: Any) -> Any:
        self.conflicts.append(Conflict(path, _json_or_none(b), _json_or_none(o), _json_or_none(t)))
        return o

    def stop_guards(self, b: dict[str, Any], o: dict[str, Any], t: dict[str, Any]) -> frozenset[str]:
        """Top-level fields forced into conflict because the other side stopped the record."""
        forced: set[str] = set()
        for rule in self._stop_rules:
            bs = _status_codes(b.get(rule.status_field))
            os_ = _status_codes(o.get(rule.status_field))
            ts = _status_codes(t.get(rule.status_field))
            o_stop = bool(os_ & rule.stop_codes) and os_ != bs
            t_stop = bool(ts & rule.stop_codes) and ts != bs
            if o_stop == t_stop:
                continue  # nobody stopped it, or both did: ordinary rules apply
            stopper, other = (o, t) if o_stop else (t, o)
            for unit in rule.guarded:
                bu, su, ru = _unit_value(b, unit), _unit_value(stopper, unit), _unit_value(other, unit)
                if not _same(ru, bu) and not _same(ru, su):
                    forced.add(unit)
        return frozenset(forced)

    def merge_value(self, path: str, spath: str, b: Any, o: Any, t: Any) -> Any:
        if _same(o, t):
            return o
        if _same(b, o):
            return t
        if _same(b, t):
            return o
        rule = self.rules.get(spath)
        if rule is Policy.ATOMIC:
            return self.conflict(path, b, o, t)
        if rule is Policy.SERVER or rule is Policy.DERIVED:
            return o  # documented asymmetry: server-owned / derived, never a conflict
        if isinstance(o, dict) and isinstance(t, dict) and (b is _MISSING or isinstance(b, dict)):
            return self.merge_object(path, spath, b if isinstance(b, dict) else {}, o, t, frozenset())
        if isinstance(o, list) and isinstance(t, list) and (b is _MISSING or isinstance(b, list)):
            spec = rule if isinstance(rule, Identity) else IDENTITY.get(spath.rpartition(".")[2])
            if spec is not None:
                return self.merge_array(path, spath, spec, b if isinstance(b, list) else [], o, t)
        return self.conflict(path, b, o, t)

    def merge_object(
        self,
        path: str,
        spath: str,
        b: dict[str, Any],
        o: dict[str, Any],
        t: dict[str, Any],
        forced: frozenset[str],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        order: dict[str, None] = dict.fromkeys(o)
        order.update(dict.fromkeys(t))
        order.update(dict.fromkeys(b))
        groups: dict[str, list[str]] = {}
        for k in order:
            u = choice_unit(k)
            if u is not None:
                groups.setdefault(u, []).append(k)
        done: set[str] = set()
        for k in order:
            unit = choice_unit(k)
            if unit is None:
                bv, ov, tv = b.get(k, _MISSING), o.get(k, _MISSING), t.get(k, _MISSING)
                if k in forced:
                    self.forced_conflict(_join(path, k), bv, o, t, k, out)
                    continue
                if _same(ov, tv) or _same(bv, tv):  # fast path: no paths built
                    if ov is not _MISSING:
                        out[k] = ov
                    continue
                if _same(bv, ov):
                    if tv is not _MISSING:
                        out[k] = tv
                    continue
                v = self.merge_value(_join(path, k), _join(spath, k), bv, ov, tv)
                if v is not _MISSING:
                    out[k] = v
                continue
            if unit in done:
                continue
            done.add(unit)
            keys = groups[unit]
            if len(keys) == 1:  # every side uses the same type: an ordinary field
                if unit in forced:
                    self.forced_conflict(_join(path, k), b.get(k, _MISSING), o, t, k, out)
                    continue
                v = self.merge_value(
                    _join(path, k),
                    _join(spath, unit),
                    b.get(k, _MISSING),
                    o.get(k, _MISSING),
                    t.get(k, _MISSING),
                )
                if v is not _MISSING:
                    out[k] = v
                continue
            bg, og, tg = _unit_value(b, unit), _unit_value(o, unit), _unit_value(t, unit)
            upath = _join(path, unit)
            if unit in forced:
                self.conflict(upath, bg, og, tg)
                g = og
            elif _same(og, tg) or _same(bg, tg):
                g = og
            elif _same(bg, og):
                g = tg
            elif self.rules.get(_join(spath, unit)) in (Policy.SERVER, Policy.DERIVED):
                g = og
            else:  # different types on the two sides cannot be merged inside
                g = self.conflict(upath, bg, og, tg)
            if g is not _MISSING:
                out.update(g)
        return out

    def forced_conflict(
        self, path: str, bv: Any, o: dict[str, Any], t: dict[str, Any], k: str, out: dict[str, Any]
    ) -> None:
        ov = o.get(k, _MISSING)
        self.conflict(path, bv, ov, t.get(k, _MISSING))
        if ov is not _MISSING:
            out[k] = ov

    def merge_array(
        self, path: str, spath: str, spec: Identity, b: list[Any], o: list[Any], t: list[Any]
    ) -> Any:
        repeated: frozenset[str] = frozenset()
        if spec.content_when_repeated:
            rep: set[str] = set()
            for arr in (b, o, t):
                seen: set[str] = set()
                for e in arr:
                    url = e.get("url") if isinstance(e, dict) else None
                    if not isinstance(url, str):
                        continue
                    if url in seen:
                        rep.add(url)
                    seen.add(url)
            repeated = frozenset(rep)
        sides: list[dict[_Key, Any]] = []
        labels: dict[_Key, str] = {}
        for arr in (b, o, t):
            items: dict[_Key, Any] = {}
            for e in arr:
                ident = _identity(spec, e, repeated)
                if ident is None or ident[0] in items:
                    # no identity, or two items share one: the list is one value
                    return self.conflict(path, b, o, t)
                items[ident[0]] = e
                labels[ident[0]] = ident[1]
            sides.append(items)
        bm, om, tm = sides
        if spec.additive_only and any(k not in om or k not in tm for k in bm):
            return self.conflict(path, b, o, t)  # a replacement met another change
        if spec.replace_slot and _replaced_differently(spec.replace_slot, bm, om, tm):
            return self.conflict(path, b, o, t)
        merged: dict[_Key, Any] = {}
        for k in labels:
            v = self.merge_value(
                f"{path}[{labels[k]}]", spath, bm.get(k, _MISSING), om.get(k, _MISSING), tm.get(k, _MISSING)
            )
            if v is not _MISSING:
                merged[k] = v
        return [merged[k] for k in _order(bm, om, tm, merged)]


def _replaced_differently(
    slot: tuple[str, ...], bm: dict[_Key, Any], om: dict[_Key, Any], tm: dict[_Key, Any]
) -> bool:
    """Both sides removed one item and each added a different one in its slot."""
    gone = [k for k in bm if k not in om and k not in tm]
    if not gone:
        return False

    def slot_of(e: Any) -> tuple[str, ...]:
        return tuple(_keystr(e.get(f)) for f in slot)  # items here are dicts with identity

    o_new = {slot_of(e) for k, e in om.items() if k not in bm and k not in tm}
    t_new = {slot_of(e) for k, e in tm.items() if k not in bm and k not in om}
    return any(slot_of(bm[k]) in o_new and slot_of(bm[k]) in t_new for k in gone)


def _order(
    bm: dict[_Key, Any], om: dict[_Key, Any], tm: dict[_Key, Any], merged: dict[_Key, Any]
) -> list[_Key]:
    """Deterministic, ours/theirs-symmetric order of the merged array items.

    Surviving base items keep the order of the side that reordered them (base
    order if neither or both did, differently); additions go after the item that
    preceded them on their side; both sides adding at one spot: sorted by key.
    """
    skel = [k for k in bm if k in merged]
    o_seq = [k for k in om if k in bm and k in merged]
    t_seq = [k for k in tm if k in bm and k in merged]
    o_re = o_seq != [k for k in skel if k in om]
    t_re = t_seq != [k for k in skel if k in tm]
    if o_re and (not t_re or [k for k in o_seq if k in tm] == [k for k in t_seq if k in om]):
        skel = o_seq  # every surviving base item is in ours (see merge_value)
    elif t_re and not o_re:
        skel = t_seq + [k for k in skel if k not in tm]
    inserts: list[dict[_Key | None, list[_Key]]] = []
    for side in (om, tm):
        ins: dict[_Key | None, list[_Key]] = {}
        anchor: _Key | None = None
        for k in side:
            if k not in merged:
                continue
            if k in bm:
                anchor = k
            else:
                ins.setdefault(anchor, []).append(k)
        inserts.append(ins)
    out: list[_Key] = []
    placed: set[_Key] = set()

    def place(anchor: _Key | None) -> None:
        go = inserts[0].get(anchor, [])
        gt = inserts[1].get(anchor, [])
        group = go if (go == gt or not gt) else gt if not go else sorted(set(go) | set(gt))
        for k in group:
            if k not in placed:
                placed.add(k)
                out.append(k)

    place(None)
    for a in skel:
        placed.add(a)
        out.append(a)
        place(a)
    return out
