"""The knowledge base: versioned data (``pyclient/data/cds-kb.json``), parsed and indexed for the engine.

The base is data, not code: the server publishes it as a signed bundle, a device caches it and hands the
parsed JSON to :meth:`KnowledgeBase.from_json`. The shipped copy is only the fallback a fresh device uses
before its first fetch. ``KnowledgeBase.digest`` (SHA-256 of the canonical JSON) names exactly which base
produced a card, so the server can re-check an order with the base the device used.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

FORMAT = "omnicare-cds-kb"
FORMAT_VERSION = 1
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

DDI_SEVERITIES = ("contraindicated", "major", "moderate")
LEVELS = ("info", "warning", "critical")


class KnowledgeBaseError(ValueError):
    """The JSON is not a knowledge base this engine can use (the message names the offending part)."""


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> tuple[str, ...]:
    """Lower-case ASCII words of ``text`` (accents dropped): the unit of the name fallback."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return tuple(_WORD.findall(folded))


@dataclass(frozen=True)
class Source:
    key: str
    label: str
    citation: str
    url: str


@dataclass(frozen=True)
class Interaction:
    id: str
    a: frozenset[str]
    b: frozenset[str]
    severity: str
    mechanism: str
    effect: str
    management: str
    alternative: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class AllergyRule:
    id: str
    allergen: frozenset[str]
    drug: frozenset[str]
    level: str
    text: str
    management: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Band:
    level: str
    label: str
    min: float | None
    max: float | None

    def hit(self, value: float) -> bool:
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value >= self.max)


@dataclass(frozen=True)
class Lab:
    key: str
    name: str
    loinc: frozenset[str]
    units: frozenset[str]
    unit: str


@dataclass(frozen=True)
class LabRule:
    id: str
    drug: frozenset[str]
    lab: str
    max_age_days: float | None
    bands: tuple[Band, ...]
    text: str
    management: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class KnowledgeBase:
    version: str
    digest: str
    licence: str
    sources: Mapping[str, Source]
    class_names: Mapping[str, str]
    allergy_groups: frozenset[str]
    ingredient_tags: Mapping[str, frozenset[str]]  # ingredient -> {"ing:x", "class:c", parents...}
    rxcui: Mapping[str, tuple[str, ...]]  # RxNorm code (ingredient or product) -> ingredients
    substances: Mapping[str, frozenset[str]]  # "system|code" -> allergen tags
    substance_names: Mapping[str, str]
    names: Mapping[tuple[str, ...], frozenset[str]]  # word sequence -> tags (ingredient or class names)
    max_name_words: int
    interactions: tuple[Interaction, ...]
    allergy_rules: tuple[AllergyRule, ...]
    duplicate_classes: Mapping[str, str]  # class -> level
    labs: Mapping[str, Lab]
    lab_rules: tuple[LabRule, ...]
    override_reasons: tuple[Mapping[str, str], ...]
    raw_size: int = 0
    by_tag: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # tag -> indexes into interactions
    duplicate_tags: frozenset[str] = frozenset()  # "class:<c>" of every duplicate-therapy class
    # Pure memo of code/name resolution (same concept -> same answer for this base); bounded by MEMO_MAX.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_json(cls, data: Any) -> KnowledgeBase:
        """Parse and index a knowledge base; :class:`KnowledgeBaseError` if it is not one."""
        try:
            return cls._parse(data)
        except KnowledgeBaseError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KnowledgeBaseError(f"malformed knowledge base: {exc!r}") from exc

    @classmethod
    def from_bytes(cls, raw: bytes) -> KnowledgeBase:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KnowledgeBaseError("knowledge base is not JSON") from exc
        return cls.from_json(data)

    @classmethod
    def _parse(cls, data: Any) -> KnowledgeBase:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KnowledgeBaseError("not an OmniCare CDS knowledge base (format)")
        if data.get("formatVersion") != FORMAT_VERSION:
            raise KnowledgeBaseError(f"unsupported knowledge base formatVersion {data.get('formatVersion')!r}")
        version = data["version"]
        if not isinstance(version, str) or not version:
            raise KnowledgeBaseError("knowledge base version missing")
        raw = canonical(data)
        sources = {
            k: Source(k, str(v["label"]), str(v["citation"]), str(v.get("url", ""))) for k, v in data["sources"].items()
        }
        classes: dict[str, Any] = data["classes"]
        parents: dict[str, tuple[str, ...]] = {k: tuple(v.get("parents", ())) for k, v in classes.items()}

        def closure(cls_id: str, seen: frozenset[str] = frozenset()) -> set[str]:
            if cls_id not in classes:
                raise KnowledgeBaseError(f"unknown class {cls_id!r}")
            out = {cls_id}
            for p in parents[cls_id]:
                if p not in seen:
                    out |= closure(p, seen | {cls_id})
            return out

        names: dict[tuple[str, ...], set[str]] = {}

        def name(text: str, tag: str) -> None:
            w = words(text)
            if w:
                names.setdefault(w, set()).add(tag)

        ingredient_tags: dict[str, frozenset[str]] = {}
        rxcui: dict[str, tuple[str, ...]] = {}
        for ing, spec in data["ingredients"].items():
            tags = {f"ing:{ing}"}
            for c in spec.get("classes", ()):
                tags |= {f"class:{x}" for x in closure(c)}
            ingredient_tags[ing] = frozenset(tags)
            if spec.get("rxcui"):
                rxcui[str(spec["rxcui"])] = (ing,)
            name(ing, f"ing:{ing}")
            for syn in spec.get("synonyms", ()):
                name(syn, f"ing:{ing}")
        for cls_id, spec in classes.items():
            closure(cls_id)
            name(spec["name"], f"class:{cls_id}")
            for syn in spec.get("synonyms", ()):
                name(syn, f"class:{cls_id}")
        for code, ings in data["products"].items():
            for ing in ings:
                if ing not in ingredient_tags:
                    raise KnowledgeBaseError(f"product {code} names unknown ingredient {ing!r}")
            rxcui[str(code)] = tuple(ings)

        def selector(value: Any, where: str) -> frozenset[str]:
            items = [value] if isinstance(value, str) else list(value)
            for tag in items:
                kind, _, key = str(tag).partition(":")
                if (kind == "ing" and key not in ingredient_tags) or (kind == "class" and key not in classes) or (
                    kind not in ("ing", "class")
                ):
                    raise KnowledgeBaseError(f"{where}: unknown selector {tag!r}")
            return frozenset(str(t) for t in items)

        def cite(keys: Sequence[str], where: str) -> tuple[str, ...]:
            if not keys:
                raise KnowledgeBaseError(f"{where}: every rule needs a source")
            for k in keys:
                if k not in sources:
                    raise KnowledgeBaseError(f"{where}: unknown source {k!r}")
            return tuple(keys)

        substances: dict[str, frozenset[str]] = {}
        for key, spec in data.get("substances", {}).items():
            tags = {f"ing:{i}" for i in spec.get("ingredients", ())} | {f"class:{c}" for c in spec.get("classes", ())}
            substances[key] = selector(sorted(tags), f"substance {key}")

        interactions = []
        seen_ids: set[str] = set()
        for r in data["interactions"]:
            rid = str(r["id"])
            if rid in seen_ids:
                raise KnowledgeBaseError(f"duplicate rule id {rid}")
            seen_ids.add(rid)
            if r["severity"] not in DDI_SEVERITIES:
                raise KnowledgeBaseError(f"{rid}: severity must be one of {DDI_SEVERITIES}")
            interactions.append(Interaction(
                rid, selector(r["a"], rid), selector(r["b"], rid), r["severity"], str(r["mechanism"]),
                str(r["effect"]), str(r["management"]), str(r.get("alternative", "")), cite(r["sources"], rid),
            ))
        by_tag: dict[str, list[int]] = {}
        for i, rule in enumerate(interactions):
            for tag in rule.a | rule.b:
                by_tag.setdefault(tag, []).append(i)

        allergy_rules = []
        for r in data.get("allergyRules", ()):
            rid = str(r["id"])
            if r["level"] not in LEVELS:
                raise KnowledgeBaseError(f"{rid}: level must be one of {LEVELS}")
            allergy_rules.append(AllergyRule(rid, selector(r["allergen"], rid), selector(r["drug"], rid), r["level"],
                                             str(r["text"]), str(r["management"]), cite(r["sources"], rid)))
        duplicates = {}
        for d in data.get("duplicateClasses", ()):
            if d["class"] not in classes or d["level"] not in LEVELS:
                raise KnowledgeBaseError(f"duplicate class {d!r}")
            duplicates[str(d["class"])] = str(d["level"])
        labs = {
            k: Lab(k, str(v["name"]), frozenset(v["loinc"]), frozenset(_unit(u) for u in v["units"]), str(v["unit"]))
            for k, v in data.get("labs", {}).items()
        }
        lab_rules = []
        for r in data.get("labRules", ()):
            rid = str(r["id"])
            if r["lab"] not in labs:
                raise KnowledgeBaseError(f"{rid}: unknown lab {r['lab']!r}")
            bands = tuple(Band(b["level"], str(b["label"]), b.get("min"), b.get("max")) for b in r["bands"])
            if not bands or any(b.level not in LEVELS for b in bands):
                raise KnowledgeBaseError(f"{rid}: bad bands")
            age = r.get("maxAgeDays")
            lab_rules.append(LabRule(rid, selector(r["drug"], rid), str(r["lab"]), float(age) if age is not None else None,
                                     bands, str(r["text"]), str(r["management"]), cite(r["sources"], rid)))
        reasons = tuple(
            {"system": str(c["system"]), "code": str(c["code"]), "display": str(c["display"])}
            for c in data.get("overrideReasons", ())
        )
        licence = data.get("licence") or {}
        if not licence.get("id"):
            raise KnowledgeBaseError("knowledge base licence missing")
        return cls(
            version=version, digest=hashlib.sha256(raw).hexdigest(), licence=str(licence["id"]), sources=sources,
            class_names={k: str(v["name"]) for k, v in classes.items()},
            allergy_groups=frozenset(k for k, v in classes.items() if v.get("allergyGroup")),
            ingredient_tags=ingredient_tags, rxcui=rxcui, substances=substances,
            substance_names={k: str(v.get("display", k)) for k, v in data.get("substances", {}).items()},
            names={k: frozenset(v) for k, v in names.items()}, max_name_words=max((len(k) for k in names), default=1),
            interactions=tuple(interactions), allergy_rules=tuple(allergy_rules), duplicate_classes=duplicates,
            labs=labs, lab_rules=tuple(lab_rules), override_reasons=reasons, raw_size=len(raw),
            by_tag={k: tuple(v) for k, v in by_tag.items()},
            duplicate_tags=frozenset(f"class:{c}" for c in duplicates),
        )

    # ------------------------------------------------------------------ lookups

    def interaction_candidates(self, tags: frozenset[str]) -> tuple[tuple[Interaction, ...], frozenset[str]]:
        """The interaction rules one side of which matches ``tags`` (in base order), and every tag that can
        be on the other side of them: a drug pair whose other drug has none of those tags is skipped with
        one set test. Memoised per tag set (a drug's tags), like code resolution."""
        key = ("ddi", tags)
        hit: tuple[tuple[Interaction, ...], frozenset[str]] | None = self.memo.get(key)
        if hit is None:
            idx: set[int] = set()
            for tag in tags:
                idx.update(self.by_tag.get(tag, ()))
            rules = tuple(self.interactions[i] for i in sorted(idx))
            partners: set[str] = set()
            for rule in rules:
                if rule.a & tags:
                    partners |= rule.b
                if rule.b & tags:
                    partners |= rule.a
            hit = (rules, frozenset(partners))
            if len(self.memo) >= MEMO_MAX:
                self.memo.clear()
            self.memo[key] = hit
        return hit

    def label(self, tag: str) -> str:
        kind, _, key = tag.partition(":")
        return self.class_names.get(key, key) if kind == "class" else key

    def tags_of(self, ingredients: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for ing in ingredients:
            out |= self.ingredient_tags.get(ing, frozenset())
        return frozenset(out)

    def match_names(self, text: str) -> tuple[frozenset[str], frozenset[str]]:
        """Ingredients and classes named in free text, longest phrase first (``"penicillin v potassium"`` is
        penicillin V, not potassium). Returns (ingredient names, class ids)."""
        w = words(text)
        ings: set[str] = set()
        classes: set[str] = set()
        i = 0
        while i < len(w):
            for n in range(min(self.max_name_words, len(w) - i), 0, -1):
                tags = self.names.get(w[i:i + n])
                if tags:
                    for t in tags:
                        kind, _, key = t.partition(":")
                        (ings if kind == "ing" else classes).add(key)
                    i += n
                    break
            else:
                i += 1
        return frozenset(ings), frozenset(classes)


MEMO_MAX = 20_000


def _unit(text: str) -> str:
    return text.replace(" ", "").casefold()


def unit_key(text: str) -> str:
    return _unit(text)


@lru_cache(maxsize=1)
def shipped_bytes() -> bytes:
    """The knowledge base shipped inside the package (a device's fallback before its first fetch)."""
    return resources.files("pyclient").joinpath("data", "cds-kb.json").read_bytes()


@lru_cache(maxsize=1)
def default_kb() -> KnowledgeBase:
    return KnowledgeBase.from_bytes(shipped_bytes())
