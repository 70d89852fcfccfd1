"""Clinical merge rules: the one table a clinician reviews.

How OmniCare combines two concurrent edits of one FHIR record
=============================================================

When a device was offline, the server's copy of a record ("ours") and the
device's edit ("theirs") may both have changed since the version the device
started from ("base"). :func:`pyclient.merge.merge` compares all three and
decides field by field. This module holds every rule it uses, as data, so this
text and the tables below are the whole policy. The guiding principle:

    **The software never silently chooses between two different clinical
    values.** When both sides changed the same thing differently, the record
    is stored as a *conflict* and a person decides. Until then the merged
    record shows the server's value ("ours") at that place, so the record stays
    valid; the device's edit is kept, never dropped.

General rules (every resource type)
-----------------------------------
1. A field changed on one side only takes that side's value. A field changed
   identically on both sides takes that value. A field changed differently on
   both sides is a conflict, except where a table below says otherwise.
2. A field removed on one side and left untouched on the other is removed.
   Removed on one side and edited on the other: conflict.
3. Lists (arrays) are compared item by item using what *identifies* an item
   (``IDENTITY`` below), never by position: a telecom is the same telecom if it
   has the same system and value, a name is the same name if it has the same
   ``use``, a note is the same note if it has the same time and author, and so
   on. So:

   * both sides add different items: both are kept;
   * one side removes an item the other did not touch: it is removed;
   * both sides edit the same item: merged field by field inside the item, with
     the same rules (e.g. ``name[use=official].family`` changed differently on
     both sides is a conflict, while one side fixing ``family`` and the other
     adding a ``given`` name is clean only if they touched different fields).

   * both sides *replace* the same identifier or telecom with different new
     values (the phone number 111 corrected to 222 on one side and to 333 on
     the other; the same MRN system given two new values): conflict, because
     keeping both would silently record two numbers where one was meant.

   A list whose items have no identity (e.g. ``given`` names, ``line`` of an
   address, ``referenceRange``, ``contact``) is treated as one value: changed
   differently on both sides is a conflict. So is a list where two items share
   one identity.
4. Coded values (``coding`` inside a CodeableConcept): both sides *adding*
   codings (e.g. a SNOMED translation on one side, an ICD-10 one on the other)
   are combined. If either side *replaced* a coding (removed one) while the
   other also changed the concept, it is a conflict: two people re-coded the
   same thing.
5. "Choice" fields (``value[x]``, ``onset[x]``, ``medication[x]``,
   ``deceased[x]`` ...) are one field whatever their type: if one side records
   a ``valueQuantity`` and the other a ``valueString``, that is a conflict, not
   a record with two values.
6. Order of list items: items keep the order of the side that reordered them
   (base order if neither or both reordered differently); new items are placed
   after the item that preceded them on the side that added them; when both
   sides added items at the same place, those items are sorted by their
   identity so the result does not depend on who is "ours".
7. Unknown elements and extensions are kept exactly. Extensions are matched by
   ``url``; if a url appears several times (repeating extension), by url and
   whole content.

Fields that never conflict (``FIELD_RULES["*"]``)
-------------------------------------------------
* ``meta.versionId`` and ``meta.lastUpdated`` belong to the server: when both
  sides differ, the server's value is kept (the server assigns new ones when it
  stores the merge anyway). ``meta.tag``, ``meta.security`` merge as sets by
  system+code, ``meta.profile`` as a set of urls.
* ``text`` (the human-readable narrative) is *derived* from the structured
  data. When both sides changed it, the server's narrative is kept and no
  conflict is raised; the caller must regenerate the narrative of a merged
  record whose structured content differs from the server's (a narrative that
  disagrees with the data must not be shown as if it were current).
  These two rules are the only places where "ours" and "theirs" are treated
  asymmetrically.

One clinical value (``Policy.ATOMIC`` in ``FIELD_RULES``)
---------------------------------------------------------
Some fields are a single clinical statement even though they are structured:
an Observation's value with its unit, a medication's dosage instructions, what
substance an allergy is to. Merging inside them could produce a value nobody
entered (one side's number with the other side's unit, one side's dose with
the other side's frequency). Any two different changes to such a field are a
conflict, even if they touched different sub-fields.

Stops and retractions are never undone silently (``STOP_RULES``)
----------------------------------------------------------------
If one side *stops* a record (MedicationRequest status stopped, cancelled,
completed or entered-in-error; AllergyIntolerance verificationStatus
entered-in-error or refuted; AllergyIntolerance clinicalStatus inactive or
resolved) while the other side edits it:

* the stop stands (the status simply merges: only one side changed it);
  if the other side changed the status to something else, that is a conflict;
* the other side's edits to the clinical content listed in the rule (e.g. the
  dose, the drug, the allergen, a new reaction) become a conflict even though
  the stopping side did not touch them: someone changed the treatment of an
  order that someone else just stopped, and a person must look;
* non-clinical edits (notes, identifiers, extensions) merge normally.

The rest of the record (immunizations, procedures, lab reports, appointments)
-------------------------------------------------------------------------------
* **Immunization**: what was given, to whom, when, how much, which lot, where
  on the body and by which route are each one clinical statement (``ATOMIC``);
  the dose's place in a series (``protocolApplied``) too. Marking a record
  ``entered-in-error`` or ``not-done`` while the other side edits the vaccine,
  date, dose or lot is a conflict (someone documented details of a dose
  someone else says was never given).
* **Procedure**: the procedure code, the patient, when it was performed, the
  body site and the outcome are one value each. ``entered-in-error`` or
  ``not-done`` on one side with the code, time, site or outcome edited on the
  other is a conflict.
* **DiagnosticReport**: ``result`` is a list of references to Observations
  identified by the reference, so a lab adding results while a clinician adds
  a note merges, and two sides adding different results keep both (results
  arrive one by one). The report's code, conclusion and conclusion codes are
  one value each: two different conclusions are a conflict. A report marked
  ``entered-in-error`` (retracted) while the other side adds results or
  changes the conclusion is a conflict.
* **Appointment**: participants are identified by their ``actor``, so one
  side accepting for the patient and the other for the practitioner merge; the
  same participant's answer changed differently is a conflict. A cancellation
  (``cancelled``, ``noshow``, ``entered-in-error``) on one side while the other
  moves the time, the participants or the service is a conflict: a rescheduled
  appointment someone else just cancelled needs a person to decide which
  stands. Two different new times are a conflict by the general rule.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "CHOICE_PREFIXES",
    "CHOICE_TYPE_SUFFIXES",
    "FIELD_RULES",
    "IDENTITY",
    "STOP_RULES",
    "Identity",
    "Policy",
    "StopRule",
    "field_rules_for",
]


class Policy(enum.Enum):
    """What to do when both sides changed one field differently."""

    #: One clinical value: conflict, never merged inside.
    ATOMIC = "atomic"
    #: Owned by the server (meta.versionId, meta.lastUpdated): keep ours, no conflict.
    SERVER = "server"
    #: Derived from other fields (narrative): keep ours, no conflict; caller regenerates.
    DERIVED = "derived"


@dataclass(frozen=True)
class Identity:
    """What identifies an item of a list.

    ``fields`` name the item's elements whose values together identify it;
    ``"."`` means the item itself (a CodeableConcept by its codes, a Reference
    by its reference, a string by its text); ``"author[x]"`` any choice of author.
    """

    fields: tuple[str, ...]
    #: Identity used when the first of ``fields`` is absent (a note without time: its text).
    fallback: tuple[str, ...] = ()
    #: An item with none of the fields is still identifiable (the single name without ``use``).
    allow_empty: bool = False
    #: Extensions: url alone, or url + whole content when a url repeats.
    content_when_repeated: bool = False
    #: Codings: combining additions is fine, a replacement on either side with
    #: the other side also changing the list is a conflict.
    additive_only: bool = False
    #: Replacement slot: if both sides removed the same item and each added a
    #: different item with the same values of these fields (the same MRN system,
    #: the same kind of phone), they replaced one value differently: conflict,
    #: not both new values.
    replace_slot: tuple[str, ...] = ()


#: Identity of list items by element name, wherever the element occurs.
#: A resource table in FIELD_RULES can override one by path.
IDENTITY: Mapping[str, Identity] = MappingProxyType(
    {
        "identifier": Identity(("system", "value"), replace_slot=("system",)),
        "telecom": Identity(("system", "value"), replace_slot=("system",)),
        "name": Identity(("use",), allow_empty=True),
        "address": Identity(("use", "type"), allow_empty=True),
        "coding": Identity(("system", "code"), additive_only=True),
        "tag": Identity(("system", "code")),
        "security": Identity(("system", "code")),
        "profile": Identity((".",)),
        "note": Identity(("time", "author[x]"), fallback=("text",)),
        "extension": Identity(("url",), content_when_repeated=True),
        "modifierExtension": Identity(("url",), content_when_repeated=True),
        "reaction": Identity(("substance", "manifestation")),
        "manifestation": Identity((".",)),
        "component": Identity(("code",)),
        "category": Identity((".",)),
        "reasonCode": Identity((".",)),
        "reasonReference": Identity((".",)),
        "basedOn": Identity((".",)),
        "performer": Identity((".",)),
        "generalPractitioner": Identity((".",)),
        "communication": Identity(("language",)),
        "link": Identity(("other",)),
        "contained": Identity(("id",)),
        "insurance": Identity((".",)),
        "supportingInformation": Identity((".",)),
        "result": Identity((".",)),  # DiagnosticReport.result: references to Observations
    }
)

_A = Policy.ATOMIC

#: Per resource type: schema path -> policy (or identity override for a list).
#: Paths are element names joined by ".", list items transparent, choice
#: elements written ``value[x]``. "*" applies to every resource type.
FIELD_RULES: Mapping[str, Mapping[str, Policy | Identity]] = MappingProxyType(
    {
        "*": {
            "meta.versionId": Policy.SERVER,
            "meta.lastUpdated": Policy.SERVER,
            "text": Policy.DERIVED,
        },
        "Observation": {
            "code": _A,  # what was measured
            "value[x]": _A,  # the result with its unit
            "dataAbsentReason": _A,
            "interpretation": _A,  # H and L together would contradict
            "subject": _A,  # whose result it is
            "effective[x]": _A,  # when it was measured
            "bodySite": _A,
            "method": _A,
            "specimen": _A,
            "component.code": _A,
            "component.value[x]": _A,  # e.g. systolic / diastolic
            "component.dataAbsentReason": _A,
            "component.interpretation": _A,
        },
        "MedicationRequest": {
            "medication[x]": _A,  # the drug
            "dosageInstruction": _A,  # dose, route, frequency as one instruction
            "dispenseRequest": _A,
            "substitution": _A,
            "subject": _A,
            "statusReason": _A,
            "courseOfTherapyType": _A,
        },
        "AllergyIntolerance": {
            "code": _A,  # the allergen
            "patient": _A,
            "clinicalStatus": _A,
            "verificationStatus": _A,
            "onset[x]": _A,
            "reaction.substance": _A,
            "reaction.manifestation": _A,
        },
        "Condition": {
            "code": _A,  # the diagnosis: two re-codings of one problem need a human
            "subject": _A,
            "clinicalStatus": _A,  # active vs resolved must not be merged into either
            "verificationStatus": _A,
            "severity": _A,
            "onset[x]": _A,
            "abatement[x]": _A,
            "bodySite": _A,
        },
        "Patient": {
            "deceased[x]": _A,
            "managingOrganization": _A,
            "maritalStatus": _A,
        },
        "Immunization": {
            "vaccineCode": _A,  # which vaccine
            "patient": _A,
            "occurrence[x]": _A,  # when it was given
            "dose[x]": _A,  # doseQuantity: how much, with its unit (the "dose" prefix reads as a choice)
            "lotNumber": _A,
            "site": _A,
            "route": _A,
            "protocolApplied": _A,  # dose number in the series
            "statusReason": _A,
        },
        "Procedure": {
            "code": _A,  # what was done
            "subject": _A,
            "performed[x]": _A,  # when
            "bodySite": _A,
            "outcome": _A,
            "statusReason": _A,
        },
        "DiagnosticReport": {
            "code": _A,  # which panel
            "subject": _A,
            "effective[x]": _A,
            "conclusion": _A,  # the interpretation as one statement
            "conclusionCode": _A,
        },
        "Appointment": {
            "participant": Identity(("actor",)),  # answers per attendee
            "cancelationReason": _A,
            "serviceType": _A,
        },
    }
)


@dataclass(frozen=True)
class StopRule:
    """A status change that stops/retracts a record guards its clinical content.

    When exactly one side moves ``status_field`` to one of ``stop_codes``, the
    other side's changes to any ``guarded`` field are conflicts.
    """

    status_field: str
    stop_codes: frozenset[str]
    guarded: tuple[str, ...]
    why: str


STOP_RULES: Mapping[str, tuple[StopRule, ...]] = MappingProxyType(
    {
        "MedicationRequest": (
            StopRule(
                status_field="status",
                stop_codes=frozenset({"stopped", "cancelled", "entered-in-error", "completed"}),
                guarded=(
                    "medication[x]",
                    "dosageInstruction",
                    "dispenseRequest",
                    "substitution",
                    "doNotPerform",
                    "intent",
                    "subject",
                    "courseOfTherapyType",
                ),
                why="a dose or drug change on an order someone just stopped needs a human",
            ),
        ),
        "AllergyIntolerance": (
            StopRule(
                status_field="verificationStatus",
                stop_codes=frozenset({"entered-in-error", "refuted"}),
                guarded=(
                    "code",
                    "reaction",
                    "criticality",
                    "type",
                    "category",
                    "patient",
                    "clinicalStatus",
                    "onset[x]",
                ),
                why="clinical detail added to an allergy someone just retracted needs a human",
            ),
            StopRule(
                status_field="clinicalStatus",
                stop_codes=frozenset({"inactive", "resolved"}),
                guarded=("code", "reaction", "criticality", "type", "category", "patient"),
                why="a new reaction on an allergy someone just resolved contradicts it",
            ),
        ),
        "Immunization": (
            StopRule(
                status_field="status",
                stop_codes=frozenset({"entered-in-error", "not-done"}),
                guarded=("vaccineCode", "occurrence[x]", "dose[x]", "lotNumber", "site", "route",
                         "protocolApplied", "patient"),
                why="details of a dose someone else says was never given need a human",
            ),
        ),
        "Procedure": (
            StopRule(
                status_field="status",
                stop_codes=frozenset({"entered-in-error", "not-done"}),
                guarded=("code", "performed[x]", "bodySite", "outcome", "subject"),
                why="details of a procedure someone else retracted need a human",
            ),
        ),
        "DiagnosticReport": (
            StopRule(
                status_field="status",
                stop_codes=frozenset({"entered-in-error", "cancelled"}),
                guarded=("result", "conclusion", "conclusionCode", "code", "subject"),
                why="results added to a report someone just retracted need a human",
            ),
        ),
        "Appointment": (
            StopRule(
                status_field="status",
                stop_codes=frozenset({"cancelled", "noshow", "entered-in-error"}),
                guarded=("start", "end", "participant", "serviceType", "appointmentType", "minutesDuration",
                         "slot"),
                why="rescheduling an appointment someone just cancelled needs a human",
            ),
        ),
    }
)

#: Choice elements ("value[x]" ...): a key is a choice key when it is one of
#: these prefixes followed by one of the FHIR type names below.
CHOICE_PREFIXES: frozenset[str] = frozenset(
    {
        "value", "effective", "onset", "abatement", "deceased", "multipleBirth",
        "medication", "reported", "occurrence", "asNeeded", "dose", "rate",
        "performed", "timing", "born", "age", "serviced", "product", "item",
        "author", "defaultValue", "fixed", "pattern", "minValue", "maxValue",
        "subject", "allowed", "used", "content", "location",
        "collected", "bodySite", "event", "onBehalfOf", "detail",
    }
)  # fmt: skip

CHOICE_TYPE_SUFFIXES: tuple[str, ...] = (
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal",
    "Id", "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time",
    "UnsignedInt", "Uri", "Url", "Uuid", "Address", "Age", "Annotation",
    "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count", "Distance",
    "Duration", "HumanName", "Identifier", "Money", "Period", "Quantity", "Range",
    "Ratio", "Reference", "SampledData", "Signature", "Timing", "ContactDetail",
    "Contributor", "DataRequirement", "Expression", "ParameterDefinition",
    "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
    "SimpleQuantity",
)  # fmt: skip


def field_rules_for(resource_type: str | None) -> dict[str, Policy | Identity]:
    """The effective path table for one resource type ("*" rules + its own)."""
    rules: dict[str, Policy | Identity] = dict(FIELD_RULES["*"])
    if resource_type is not None:
        rules.update(FIELD_RULES.get(resource_type, {}))
    return rules
