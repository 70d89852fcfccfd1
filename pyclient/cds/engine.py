"""``check(draft_orders, context) -> list[Card]``: the medication safety checks, sans-IO.

The same function runs in CPython (server re-check, CDS Hooks) and in Pyodide (the device, before an order
is saved). It reads only its arguments: no clock (``context["now"]`` says what "recent" means), no store, no
network. Everything it knows comes from the :class:`~pyclient.cds.kb.KnowledgeBase` it is handed.

Rules, in the order a card list is built:

* **unchecked** - a draft whose drug the base cannot identify (no known RxNorm code, no known name in
  ``coding.display`` / ``text``) gets one info card saying so; it never raises and never guesses.
* **drug-allergy** - the draft's ingredients and allergy-group classes against each *active*, not refuted
  and not entered-in-error AllergyIntolerance; then the base's cross-sensitivity rules (penicillin ->
  cephalosporin, aspirin -> NSAIDs, ...). Food and environment allergens never match a drug.
* **drug-drug** - interaction pairs at ingredient or class level between the draft and every *active*
  medication (MedicationRequest active/on-hold/draft, MedicationStatement active/intended/on-hold) and the
  other drafts. Stopped, cancelled, completed and entered-in-error medications never take part.
* **duplicate** - the same ingredient twice, or two drugs of one duplicate-therapy class.
* **lab** - a drug-lab rule against the newest final result of that lab (within ``maxAgeDays`` of
  ``context["now"]`` when given).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyclient.systems import LOINC
from pyclient.views.caldate import days  # the one calendar rule (no datetime: sans-IO)

from .cards import Card, Source, Suggestion, level_rank
from .kb import MEMO_MAX, RXNORM, KnowledgeBase, default_kb, unit_key

ACTIVE_REQUEST = frozenset({"active", "on-hold", "draft"})
ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})
INACTIVE_ALLERGY = frozenset({"inactive", "resolved"})
REFUTED_ALLERGY = frozenset({"refuted", "entered-in-error"})
FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})
#: ``isinstance(x, MAP)`` checks ``dict`` first: parsed JSON is always a dict, and the ``Mapping`` ABC check
#: (a Python-level ``__instancecheck__``) was a tenth of a ``check`` call.
MAP = (dict, Mapping)
SEVERITY_LEVEL = {"contraindicated": "critical", "major": "warning", "moderate": "info"}
SEVERITY_WORD = {"contraindicated": "Contraindicated", "major": "Major interaction", "moderate": "Moderate interaction"}


@dataclass(frozen=True)
class Drug:
    """A medication resource resolved against the knowledge base."""

    ref: str  # "MedicationRequest/<id>"
    name: str
    ingredients: frozenset[str]
    tags: frozenset[str]
    how: str  # rxnorm | name | unknown


@dataclass(frozen=True)
class Allergen:
    ref: str
    name: str
    tags: frozenset[str]
    level: str  # the level of a direct match: critical, or warning for an intolerance
    verified: bool
    high_risk: bool  # criticality high or a severe / anaphylactic reaction
    is_drug: bool


def _coding_code(cc: Any, system: str) -> list[str]:
    if not isinstance(cc, MAP):
        return []
    return [str(c.get("code")) for c in cc.get("coding") or () if isinstance(c, MAP) and c.get("system") == system
            and c.get("code")]


def _cc_texts(cc: Any) -> list[str]:
    if not isinstance(cc, MAP):
        return []
    out = [str(c["display"]) for c in cc.get("coding") or () if isinstance(c, MAP) and c.get("display")]
    if isinstance(cc.get("text"), str):
        out.insert(0, cc["text"])
    return out


def _status_code(cc: Any) -> str | None:
    codes = [str(c.get("code")) for c in (cc or {}).get("coding") or () if isinstance(c, MAP)] if isinstance(
        cc, MAP) else []
    return codes[0] if codes else None


def _med_concept(resource: Mapping[str, Any]) -> Any:
    cc = resource.get("medicationCodeableConcept")
    if cc is None and isinstance(resource.get("medicationReference"), MAP):
        cc = {"text": resource["medicationReference"].get("display")}
    return cc


def display_name(cc: Any) -> str:
    texts = _cc_texts(cc)
    return texts[0] if texts else "this medication"


def _concept_key(cc: Any) -> Any:
    """A hashable summary of a CodeableConcept (what resolution depends on), or None if it has none."""
    if not isinstance(cc, MAP):
        return None
    codings = tuple((c.get("system"), c.get("code"), c.get("display")) for c in cc.get("coding") or ()
                    if isinstance(c, MAP))
    text = cc.get("text")
    try:
        key = (codings, text if isinstance(text, str) else None)
        hash(key)
    except TypeError:  # a code or display that is not a string: resolve without the memo
        return None
    return key


def _remember(kb: KnowledgeBase, key: Any, value: Any) -> Any:
    if len(kb.memo) >= MEMO_MAX:
        kb.memo.clear()
    kb.memo[key] = value
    return value


def resolve_drug(kb: KnowledgeBase, resource: Mapping[str, Any]) -> Drug:
    """RxNorm product or ingredient code first; otherwise the ingredient names in the display/text."""
    cc = _med_concept(resource)
    ref = f"{resource.get('resourceType', 'MedicationRequest')}/{resource.get('id', '')}"
    key = _concept_key(cc)
    hit = kb.memo.get(("drug", key)) if key is not None else None
    if hit is None:
        hit = _resolve_concept(kb, cc)
        if key is not None:
            _remember(kb, ("drug", key), hit)
    name, ings, tags, how = hit
    return Drug(ref, name, ings, tags, how)


def _resolve_concept(kb: KnowledgeBase, cc: Any) -> tuple[str, frozenset[str], frozenset[str], str]:
    name = display_name(cc)
    ings: set[str] = set()
    for code in _coding_code(cc, RXNORM):
        ings.update(kb.rxcui.get(code, ()))
    how = "rxnorm" if ings else "unknown"
    if not ings:
        for text in _cc_texts(cc):
            found, _ = kb.match_names(text)
            ings.update(found)
        if ings:
            how = "name"
    fi = frozenset(ings)
    return name, fi, kb.tags_of(fi), how


def is_active_medication(resource: Mapping[str, Any]) -> bool:
    status = resource.get("status")
    if resource.get("resourceType") == "MedicationStatement":
        return status in ACTIVE_STATEMENT
    return status in ACTIVE_REQUEST


def resolve_allergen(kb: KnowledgeBase, allergy: Mapping[str, Any]) -> Allergen | None:
    """None when the allergy must not be used (inactive, resolved, refuted, entered in error)."""
    if _status_code(allergy.get("clinicalStatus")) in INACTIVE_ALLERGY:
        return None
    verification = _status_code(allergy.get("verificationStatus"))
    if verification in REFUTED_ALLERGY:
        return None
    cc = allergy.get("code")
    key = _concept_key(cc)
    categories = allergy.get("category") or []
    crit, kind, reactions = allergy.get("criticality"), allergy.get("type"), allergy.get("reaction")
    # Everything but the reference depends on these fields only; without reactions (the common case) the
    # whole answer is memoised, so a chart of ten allergies costs ten dict lookups on the next check.
    whole: Any = None
    if key is not None and not reactions and isinstance(categories, list):
        whole = ("allergen*", key, verification, tuple(categories), crit, kind)
        try:
            hash(whole)
        except TypeError:
            whole = None
    hit = kb.memo.get(whole) if whole is not None else None
    if hit is None:
        cached = kb.memo.get(("allergen", key)) if key is not None else None
        if cached is None:
            cached = _allergen_tags(kb, cc), _allergen_name(kb, cc)
            if key is not None:
                _remember(kb, ("allergen", key), cached)
        tags, name = cached
        non_drug = bool(categories) and "medication" not in categories and "biologic" not in categories
        severe = any(isinstance(r, MAP) and r.get("severity") == "severe" for r in reactions or ())
        anaphylaxis = any(
            "anaphyla" in " ".join(_cc_texts(m)).casefold() or "39579001" in _coding_code(m, "http://snomed.info/sct")
            for r in reactions or () if isinstance(r, MAP) for m in r.get("manifestation") or ()
        )
        hit = (name, frozenset() if non_drug else tags, "warning" if kind == "intolerance" else "critical",
               verification in (None, "confirmed"), crit == "high" or severe or anaphylaxis, not non_drug)
        if whole is not None:
            _remember(kb, whole, hit)
    name, tags, level, verified, high_risk, is_drug = hit
    return Allergen(ref=f"AllergyIntolerance/{allergy.get('id', '')}", name=name, tags=tags, level=level,
                    verified=verified, high_risk=high_risk, is_drug=is_drug)


def _allergen_tags(kb: KnowledgeBase, cc: Any) -> frozenset[str]:
    tags: set[str] = set()
    for c in (cc or {}).get("coding") or () if isinstance(cc, MAP) else ():
        if not isinstance(c, MAP):
            continue
        system, code = c.get("system"), str(c.get("code") or "")
        if system == RXNORM:
            tags |= kb.tags_of(kb.rxcui.get(code, ()))
        tags |= kb.substances.get(f"{system}|{code}", frozenset())
    if not tags:
        for text in _cc_texts(cc):
            ings, classes = kb.match_names(text)
            tags |= kb.tags_of(ings) | {f"class:{c}" for c in classes}
    tags |= kb.tags_of(t.partition(":")[2] for t in tags if t.startswith("ing:"))
    return frozenset(tags)


def _allergen_name(kb: KnowledgeBase, cc: Any) -> str:
    texts = _cc_texts(cc)
    if texts:
        return texts[0]
    for c in (cc or {}).get("coding") or () if isinstance(cc, MAP) else ():
        if isinstance(c, MAP):
            key = f"{c.get('system')}|{c.get('code')}"
            if key in kb.substance_names:
                return kb.substance_names[key]
            ings = kb.rxcui.get(str(c.get("code"))) if c.get("system") == RXNORM else None
            if ings:
                return " / ".join(ings)
    return "an unnamed substance"


_ISO = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_time(value: Any) -> float | None:
    """FHIR date/dateTime/instant -> Unix seconds (UTC; a partial date is its first moment); None if invalid."""
    if not isinstance(value, str):
        return None
    m = _ISO.match(value.strip())
    if m is None:
        return None
    y, mo, d, hh, mi, ss, tz = m.groups()
    month, day = int(mo or 1), int(d or 1)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    secs = days((int(y), month, day)) * 86400 + int(hh or 0) * 3600 + int(mi or 0) * 60 + int(ss or 0)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return float(secs)


def _obs_time(obs: Mapping[str, Any]) -> float | None:
    period = obs.get("effectivePeriod")
    return (parse_time(obs.get("effectiveDateTime")) or parse_time(obs.get("effectiveInstant"))
            or parse_time(period.get("end") if isinstance(period, MAP) else None) or parse_time(obs.get("issued")))


def _card_uuid(*parts: str) -> str:
    h = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def _sources(kb: KnowledgeBase, keys: Iterable[str]) -> tuple[Source, ...]:
    return tuple(Source(kb.sources[k].label, kb.sources[k].url, kb.sources[k].citation) for k in keys)


def _short(text: str, limit: int = 139) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class Context:
    """What the engine may know about the patient: sorted out of any list of FHIR resources."""

    def __init__(self, resources: Iterable[Mapping[str, Any]] = (), *, now: str | None = None,
                 patient: Mapping[str, Any] | None = None) -> None:
        self.medications: list[Mapping[str, Any]] = []
        self.allergies: list[Mapping[str, Any]] = []
        self.conditions: list[Mapping[str, Any]] = []
        self.observations: list[Mapping[str, Any]] = []
        self.patient = patient
        self.now = parse_time(now) if now else None
        for r in resources:
            self.add(r)

    def add(self, r: Mapping[str, Any]) -> None:
        rt = r.get("resourceType") if isinstance(r, MAP) else None
        if rt in ("MedicationRequest", "MedicationStatement"):
            self.medications.append(r)
        elif rt == "AllergyIntolerance":
            self.allergies.append(r)
        elif rt == "Condition":
            self.conditions.append(r)
        elif rt == "Observation":
            self.observations.append(r)
        elif rt == "Patient":
            self.patient = r

    @classmethod
    def of(cls, value: Context | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Context:
        """Accept a Context, a dict (``medications``, ``allergies``, ``conditions``, ``observations``, ``labs``,
        ``patient``, ``now``; each list may also be a FHIR searchset Bundle) or a plain list of resources."""
        if isinstance(value, Context):
            return value
        if isinstance(value, MAP):
            ctx = cls(now=value.get("now") if isinstance(value.get("now"), str) else None,
                      patient=value.get("patient") if isinstance(value.get("patient"), MAP) else None)
            for key in ("medications", "allergies", "conditions", "observations", "labs"):
                for r in _resources_in(value.get(key)):
                    ctx.add(r)
            return ctx
        return cls(value)


def _resources_in(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, list):  # first: a list is never a Mapping, and the ABC check of one is slow
        out: list[Mapping[str, Any]] = []
        for v in value:
            out.extend(_resources_in(v))
        return out
    if isinstance(value, MAP):
        if value.get("resourceType") == "Bundle":
            return [e["resource"] for e in value.get("entry") or () if isinstance(e, MAP)
                    and isinstance(e.get("resource"), MAP)]
        return [value]
    return []


def check(draft_orders: Sequence[Mapping[str, Any]] | Mapping[str, Any],
          context: Context | Mapping[str, Any] | Iterable[Mapping[str, Any]],
          *, kb: KnowledgeBase | None = None) -> list[Card]:
    """Cards for ``draft_orders`` (MedicationRequest dicts, or a Bundle of them) in ``context``.

    Critical cards first, then warning, then info; each (rule, draft, other record) at most once.
    """
    kb = kb or default_kb()
    ctx = Context.of(context)
    drafts = [d for d in _resources_in(draft_orders) if d.get("resourceType") in ("MedicationRequest",
              "MedicationStatement") and d.get("status") not in ("cancelled", "entered-in-error", "stopped",
                                                                  "completed")]
    draft_refs = {f"{d.get('resourceType')}/{d.get('id')}" for d in drafts}
    draft_drugs = [resolve_drug(kb, d) for d in drafts]
    active = [resolve_drug(kb, m) for m in ctx.medications if is_active_medication(m)
              and f"{m.get('resourceType')}/{m.get('id')}" not in draft_refs]
    allergens = [a for a in (resolve_allergen(kb, x) for x in ctx.allergies) if a is not None]
    labs = _latest_labs(kb, ctx)
    cards: dict[str, Card] = {}

    def add(card: Card) -> None:
        if card.uuid not in cards:
            cards[card.uuid] = card

    for i, drug in enumerate(draft_drugs):
        if not drug.ingredients:
            add(_unchecked(kb, drug))
            continue
        for allergen in allergens:
            for card in _allergy_cards(kb, drug, allergen):
                add(card)
        others = active + [d for j, d in enumerate(draft_drugs) if j != i]
        for other in others:
            if not other.ingredients:
                continue
            for card in _interaction_cards(kb, drug, other):
                add(card)
            if drug.ingredients.isdisjoint(other.ingredients) and kb.duplicate_tags.isdisjoint(
                    drug.tags & other.tags):
                continue  # neither the same ingredient nor a shared duplicate-therapy class
            dup = _duplicate_card(kb, drug, other)
            if dup is not None:
                add(dup)
        for card in _lab_cards(kb, drug, labs, ctx.now):
            add(card)
    return sorted(cards.values(), key=lambda c: (-level_rank(c.indicator), c.rule_id, c.order_ref, c.uuid))


# --------------------------------------------------------------------------------------------- the rules


def _unchecked(kb: KnowledgeBase, drug: Drug) -> Card:
    return Card(
        uuid=_card_uuid(kb.version, "unchecked", drug.ref, drug.name),
        kind="unchecked", indicator="info", rule_id="unchecked", order_ref=drug.ref,
        summary=_short(f"Could not check {drug.name}: not in the drug knowledge base"),
        detail=(f"{drug.name} has no RxNorm code or ingredient name the offline knowledge base (version "
                f"{kb.version}) knows, so no interaction, allergy or duplicate check was done. Check it yourself."),
        severity="unchecked", implicated=(), sources=(Source("OmniCare CDS", "", f"knowledge base {kb.version}"),),
        suggestions=(), override_reasons=(),
    )


def _allergy_cards(kb: KnowledgeBase, drug: Drug, allergen: Allergen) -> list[Card]:
    if not allergen.is_drug or not allergen.tags:
        return []
    out: list[Card] = []
    same = sorted({t for t in drug.tags & allergen.tags if t.startswith("ing:") or t[6:] in kb.allergy_groups})
    unconfirmed = "" if allergen.verified else " (unconfirmed)"
    if same:
        what = ", ".join(kb.label(t) for t in same)
        level = allergen.level
        out.append(Card(
            uuid=_card_uuid(kb.version, "allergy", drug.ref, allergen.ref),
            kind="drug-allergy", indicator=level, rule_id="allergy-direct", order_ref=drug.ref,
            severity="allergy" if level == "critical" else "intolerance",
            summary=_short(f"Allergy{unconfirmed}: {drug.name} — patient is allergic to {allergen.name}"),
            detail=(f"**{drug.name}** contains or belongs to **{what}**, and the chart records "
                    f"{'an intolerance' if level == 'warning' else 'an allergy'} to **{allergen.name}**"
                    f"{unconfirmed}.{' The recorded reaction was severe or high risk.' if allergen.high_risk else ''}"
                    "\n\n**What to do:** do not give unless the allergy has been ruled out; choose a drug of "
                    "another class."),
            implicated=(allergen.ref,),
            sources=_sources(kb, ("aaaai-2022",)) if "aaaai-2022" in kb.sources else (),
            suggestions=(Suggestion(f"Cancel {drug.name}", "delete", drug.ref, recommended=True),),
            override_reasons=tuple(kb.override_reasons),
        ))
        return out
    for rule in kb.allergy_rules:
        if not (rule.allergen & allergen.tags) or not (rule.drug & drug.tags):
            continue
        level = rule.level
        if allergen.high_risk and level == "info":
            level = "warning"
        out.append(Card(
            uuid=_card_uuid(kb.version, rule.id, drug.ref, allergen.ref),
            kind="drug-allergy", indicator=level, rule_id=rule.id, order_ref=drug.ref, severity="cross-sensitivity",
            summary=_short(f"Possible cross-sensitivity: {drug.name} with {allergen.name} allergy{unconfirmed}"),
            detail=f"{rule.text}\n\n**What to do:** {rule.management}",
            implicated=(allergen.ref,), sources=_sources(kb, rule.sources),
            suggestions=(Suggestion(f"Cancel {drug.name}", "delete", drug.ref),),
            override_reasons=tuple(kb.override_reasons) if level != "info" else (),
        ))
        break
    return out


def _interaction_cards(kb: KnowledgeBase, drug: Drug, other: Drug) -> list[Card]:
    rules, partners = kb.interaction_candidates(drug.tags)
    if partners.isdisjoint(other.tags):
        return []  # the common case: no rule joins these two drugs
    out: list[Card] = []
    for rule in rules:
        forward = bool(rule.a & drug.tags) and bool(rule.b & other.tags)
        backward = bool(rule.b & drug.tags) and bool(rule.a & other.tags)
        if not (forward or backward):
            continue
        if drug.ingredients == other.ingredients or (drug.ingredients & other.ingredients and rule.a == rule.b):
            continue  # the same drug twice is a duplicate, not an interaction with itself
        level = SEVERITY_LEVEL[rule.severity]
        detail = (f"**{drug.name}** with **{other.name}**.\n\n**Mechanism:** {rule.mechanism}\n\n"
                  f"**Effect:** {rule.effect}\n\n**What to do:** {rule.management}")
        suggestions = [Suggestion(f"Cancel {drug.name}", "delete", drug.ref, recommended=level == "critical")]
        if rule.alternative:
            detail += f"\n\n**Instead:** {rule.alternative}"
            suggestions.append(Suggestion(f"Consider instead: {rule.alternative}", None, None))
        out.append(Card(
            uuid=_card_uuid(kb.version, rule.id, drug.ref, other.ref),
            kind="drug-drug", indicator=level, rule_id=rule.id, order_ref=drug.ref, severity=rule.severity,
            summary=_short(f"{SEVERITY_WORD[rule.severity]}: {drug.name} + {other.name} — {rule.effect}"),
            detail=detail, implicated=(other.ref,), sources=_sources(kb, rule.sources),
            suggestions=tuple(suggestions), override_reasons=tuple(kb.override_reasons) if level != "info" else (),
        ))
        break  # the first (most specific, as ordered in the base) rule for a pair speaks for it
    return out


def _duplicate_card(kb: KnowledgeBase, drug: Drug, other: Drug) -> Card | None:
    shared = sorted(drug.ingredients & other.ingredients)
    if shared:
        what, level, rule_id = shared[0], "warning", "duplicate-ingredient"
        reason = f"both contain {what}"
    else:
        classes = sorted(
            key for t in drug.tags & other.tags if t.startswith("class:")
            and (key := t.partition(":")[2]) in kb.duplicate_classes
        )
        if not classes:
            return None
        rank = {c: level_rank(kb.duplicate_classes[c]) for c in classes}
        cls_id = max(classes, key=lambda c: rank[c])
        what, level, rule_id = kb.class_names[cls_id], kb.duplicate_classes[cls_id], f"duplicate-{cls_id}"
        reason = f"both are {what}"
    return Card(
        uuid=_card_uuid(kb.version, rule_id, drug.ref, other.ref),
        kind="duplicate", indicator=level, rule_id=rule_id, order_ref=drug.ref, severity="duplicate",
        summary=_short(f"Duplicate therapy: {drug.name} and {other.name} ({reason})"),
        detail=(f"**{drug.name}** and the active **{other.name}**: {reason}. Two drugs with the same action add "
                "side effects without adding benefit.\n\n**What to do:** stop one, or record why both are needed."),
        implicated=(other.ref,), sources=_sources(kb, ("omnicare-duplicate",)) if "omnicare-duplicate" in kb.sources
        else (), suggestions=(Suggestion(f"Cancel {drug.name}", "delete", drug.ref),),
        override_reasons=tuple(kb.override_reasons) if level != "info" else (),
    )


@dataclass(frozen=True)
class LabValue:
    ref: str
    value: float
    when: str


def _latest_labs(kb: KnowledgeBase, ctx: Context) -> dict[str, tuple[LabValue, float | None]]:
    best: dict[str, tuple[LabValue, float | None]] = {}
    for obs in ctx.observations:
        if obs.get("status") not in FINAL_OBSERVATION:
            continue
        q = obs.get("valueQuantity")
        if not isinstance(q, MAP) or not isinstance(q.get("value"), int | float) or isinstance(q.get("value"), bool):
            continue
        codes = set(_coding_code(obs.get("code"), LOINC))
        unit = unit_key(str(q.get("code") or q.get("unit") or ""))
        when = _obs_time(obs)
        for lab in kb.labs.values():
            if not (codes & lab.loinc) or unit not in lab.units:
                continue
            prev = best.get(lab.key)
            if prev is None or (when is not None and (prev[1] is None or when > prev[1])):
                best[lab.key] = (LabValue(f"Observation/{obs.get('id', '')}", float(q["value"]),
                                          str(obs.get("effectiveDateTime") or "")), when)
    return best


def _lab_cards(kb: KnowledgeBase, drug: Drug, labs: Mapping[str, tuple[LabValue, float | None]],
               now: float | None) -> list[Card]:
    out: list[Card] = []
    for rule in kb.lab_rules:
        if not (rule.drug & drug.tags) or rule.lab not in labs:
            continue
        value, when = labs[rule.lab]
        if rule.max_age_days is not None and now is not None and when is not None and (
            now - when > rule.max_age_days * 86400
        ):
            continue  # too old to describe the patient today
        band = next((b for b in rule.bands if b.hit(value.value)), None)
        if band is None:
            continue
        lab = kb.labs[rule.lab]
        shown = f"{value.value:g} {lab.unit}"
        out.append(Card(
            uuid=_card_uuid(kb.version, rule.id, drug.ref, value.ref),
            kind="lab", indicator=band.level, rule_id=rule.id, order_ref=drug.ref, severity=band.label,
            summary=_short(f"{drug.name} with {band.label} ({lab.name} {shown})"),
            detail=(f"Latest {lab.name}: **{shown}**{' on ' + value.when[:10] if value.when else ''}. {rule.text}"
                    f"\n\n**What to do:** {rule.management}"),
            implicated=(value.ref,), sources=_sources(kb, rule.sources),
            suggestions=(Suggestion(f"Cancel {drug.name}", "delete", drug.ref, recommended=band.level == "critical"),),
            override_reasons=tuple(kb.override_reasons) if band.level != "info" else (),
        ))
    return out
