#!/usr/bin/env python3
"""Train the zlib preset dictionary for pyclient.compress from FHIR R4 JSON.

Usage::

    python scripts/train_fhir_dictionary.py                 # report only
    python scripts/train_fhir_dictionary.py --write 2       # write pyclient/data/fhir-r4-v2.zdict

The corpus is synthetic (this script's generator plus, when importable, the
independent generator in ``omnicare/fhir/demo.py``) but shaped like real charts (Patient, vital-sign and lab
Observations with LOINC, Condition with SNOMED CT + ICD-10-CM, AllergyIntolerance,
MedicationRequest with RxNorm, Encounter, CareTeam, Practitioner). Training and
held-out sets use different seeds, so the reported figures are for unseen records.

Two methods are tried and the smaller held-out total wins:

* ``sampled``: whole training records, sampled at random, concatenated up to the
  size (keeps key order and whole code/display pairs together; wins here);
* ``ngram`` (a small cousin of zstd's COVER): runs of JSON tokens that start an
  object member, scored by ``docs containing it * (bytes - 3)`` (what a DEFLATE
  match saves), taken greedily unless already inside the dictionary; best last,
  because DEFLATE codes short distances cheaper and the dictionary start is the
  first to slide out of the 32 KB window.

Once a dictionary id has shipped, never overwrite it: records name the id they
were compressed with. Add a new id instead and bump CURRENT_DICTIONARY_ID.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyclient.compress import Codec, canonical_json  # noqa: E402

# -- synthetic corpus -------------------------------------------------------------

FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Pérez",
    "Thompson",
    "White",
    "Harris",
    "Sánchez",
    "Clark",
    "Ramírez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Müller",
    "O'Brien",
    "Kowalski",
    "Schmidt",
    "Rossi",
    "Dubois",
    "Novak",
    "Haddad",
    "Okafor",
    "Tanaka",
    "Kim",
]
GIVEN_F = [
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Zoë",
    "María",
    "Amélie",
    "Aisha",
    "Mei",
    "Fatima",
    "Olga",
    "Ingrid",
    "Chloé",
    "Ana",
]
GIVEN_M = [
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "José",
    "Luis",
    "François",
    "Ahmed",
    "Wei",
    "Ivan",
    "Lars",
    "Kofi",
    "Raj",
    "Jürgen",
]
CITIES = [
    ("Boston", "MA", "021"),
    ("Springfield", "IL", "627"),
    ("Austin", "TX", "787"),
    ("Portland", "OR", "972"),
    ("Denver", "CO", "802"),
    ("Madison", "WI", "537"),
]
STREETS = [
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Washington Blvd",
    "Park Rd",
    "Lake View Ct",
]

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

VITALS = [  # code, display, unit, ucum, low, high, decimals
    ("8867-4", "Heart rate", "beats/minute", "/min", 52, 118, 0),
    ("9279-1", "Respiratory rate", "breaths/minute", "/min", 11, 26, 0),
    ("8310-5", "Body temperature", "Cel", "Cel", 36.0, 39.2, 1),
    ("2708-6", "Oxygen saturation in Arterial blood", "%", "%", 88, 100, 0),
    ("29463-7", "Body weight", "kg", "kg", 45, 130, 1),
    ("8302-2", "Body height", "cm", "cm", 150, 195, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 18, 41, 1),
]
LABS = [  # code, display, unit, low, high, ref_low, ref_high, decimals
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 65, 260, 70, 99, 0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 3.1, 0.6, 1.2, 2),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 8.5, 17.5, 12.0, 16.0, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.1, 17.0, 4.5, 11.0, 1),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 128, 149, 136, 145, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.0, 5.9, 3.5, 5.1, 1),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.8, 11.5, 4.0, 5.6, 1),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120, 290, 0, 200, 0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 90, 450, 150, 400, 0),
]
CONDITIONS = [  # snomed, display, icd10, icd display
    ("44054006", "Diabetes mellitus type 2", "E11.9", "Type 2 diabetes mellitus without complications"),
    ("38341003", "Hypertensive disorder, systemic arterial", "I10", "Essential (primary) hypertension"),
    ("195967001", "Asthma", "J45.909", "Unspecified asthma, uncomplicated"),
    (
        "13645005",
        "Chronic obstructive lung disease",
        "J44.9",
        "Chronic obstructive pulmonary disease, unspecified",
    ),
    ("49436004", "Atrial fibrillation", "I48.91", "Unspecified atrial fibrillation"),
    ("431855005", "Chronic kidney disease stage 1", "N18.1", "Chronic kidney disease, stage 1"),
    ("35489007", "Depressive disorder", "F32.A", "Depression, unspecified"),
    ("55822004", "Hyperlipidemia", "E78.5", "Hyperlipidemia, unspecified"),
    ("84114007", "Heart failure", "I50.9", "Heart failure, unspecified"),
    ("68566005", "Urinary tract infectious disease", "N39.0", "Urinary tract infection, site not specified"),
]
ALLERGENS = [  # system, code, display, category
    (RXNORM, "7980", "Penicillin G", "medication"),
    (RXNORM, "2670", "Codeine", "medication"),
    (RXNORM, "10831", "Sulfamethoxazole / Trimethoprim", "medication"),
    (RXNORM, "1191", "Aspirin", "medication"),
    (SCT, "256349002", "Peanut - dietary", "food"),
    (SCT, "300913006", "Shellfish allergy", "food"),
    (SCT, "111088007", "Latex", "environment"),
    (SCT, "264287008", "Animal dander", "environment"),
]
REACTIONS = [
    ("271807003", "Eruption of skin"),
    ("247472004", "Weal"),
    ("39579001", "Anaphylaxis"),
    ("267036007", "Dyspnea"),
    ("422587007", "Nausea"),
]
MEDS = [  # rxnorm, display, dose text, dose value, unit, freq, period
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", 500, "mg", 1, 1),
    ("314076", "lisinopril 10 MG Oral Tablet", 10, "mg", 1, 1),
    ("197361", "amlodipine 5 MG Oral Tablet", 5, "mg", 1, 1),
    ("617310", "atorvastatin 20 MG Oral Tablet", 20, "mg", 1, 1),
    ("310965", "ibuprofen 200 MG Oral Tablet", 400, "mg", 3, 1),
    ("308182", "amoxicillin 250 MG Oral Capsule", 500, "mg", 3, 1),
    ("855332", "warfarin sodium 5 MG Oral Tablet", 5, "mg", 1, 1),
    ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", 2, "puff", 4, 1),
    ("198211", "simvastatin 40 MG Oral Tablet", 40, "mg", 1, 1),
    ("1049221", "acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet", 1, "tablet", 4, 1),
]
ENC_TYPES = [
    ("185349003", "Encounter for check up (procedure)"),
    ("50849002", "Emergency room admission (procedure)"),
    ("183452005", "Emergency hospital admission (procedure)"),
    ("390906007", "Follow-up encounter (procedure)"),
]
ROLES = [
    ("223366009", "Healthcare professional"),
    ("158965000", "Medical practitioner"),
    ("224535009", "Registered nurse"),
    ("46255001", "Pharmacist"),
]


class Gen:
    """Deterministic synthetic FHIR R4 generator."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.practitioners = [self.practitioner() for _ in range(12)]

    def uid(self) -> str:
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    def when(self) -> str:
        r = self.r
        return (
            f"20{r.randint(19, 26):02d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
            f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}+00:00"
        )

    def meta(self) -> dict[str, Any]:
        return {"versionId": str(self.r.randint(1, 9)), "lastUpdated": self.when()}

    def ref(self, kind: str, ident: str, display: str | None = None) -> dict[str, str]:
        out = {"reference": f"{kind}/{ident}"}
        if display:
            out["display"] = display
        return out

    def human_name(self, female: bool) -> dict[str, Any]:
        given = [self.r.choice(GIVEN_F if female else GIVEN_M)]
        if self.r.random() < 0.4:
            given.append(self.r.choice(GIVEN_F if female else GIVEN_M))
        return {"use": "official", "family": self.r.choice(FAMILY), "given": given}

    def practitioner(self) -> dict[str, Any]:
        female = self.r.random() < 0.5
        name = self.human_name(female)
        name["prefix"] = ["Dr."]
        return {
            "resourceType": "Practitioner",
            "id": self.uid(),
            "meta": self.meta(),
            "active": True,
            "identifier": [
                {"system": "http://hl7.org/fhir/sid/us-npi", "value": str(self.r.randint(10**9, 2 * 10**9))}
            ],
            "name": [name],
            "gender": "female" if female else "male",
            "telecom": [
                {"system": "email", "value": f"{name['family'].lower()}@clinic.example.org", "use": "work"}
            ],
            "qualification": [
                {
                    "code": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0360",
                                "code": "MD",
                                "display": "Doctor of Medicine",
                            }
                        ]
                    }
                }
            ],
        }

    def patient(self) -> dict[str, Any]:
        r = self.r
        female = r.random() < 0.5
        city, state, zip3 = r.choice(CITIES)
        p: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.uid(),
            "meta": self.meta(),
            "active": True,
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                                "display": "Medical record number",
                            }
                        ]
                    },
                    "system": "urn:oid:2.16.840.1.113883.19.5",
                    "value": f"MRN-{r.randint(100000, 999999)}",
                },
            ],
            "name": [self.human_name(female)],
            "telecom": [
                {
                    "system": "phone",
                    "value": f"555-{r.randint(100, 999)}-{r.randint(1000, 9999)}",
                    "use": r.choice(["home", "mobile"]),
                }
            ],
            "gender": "female" if female else "male",
            "birthDate": f"{r.randint(1930, 2024)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "address": [
                {
                    "use": "home",
                    "line": [f"{r.randint(1, 9999)} {r.choice(STREETS)}"],
                    "city": city,
                    "state": state,
                    "postalCode": f"{zip3}{r.randint(10, 99)}",
                    "country": "US",
                }
            ],
            "communication": [
                {
                    "language": {
                        "coding": [
                            {
                                "system": "urn:ietf:bcp:47",
                                "code": "en-US",
                                "display": "English (United States)",
                            }
                        ]
                    },
                    "preferred": True,
                }
            ],
            "generalPractitioner": [self.ref("Practitioner", r.choice(self.practitioners)["id"])],
        }
        if r.random() < 0.3:
            p["maritalStatus"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                        "code": "M",
                        "display": "Married",
                    }
                ]
            }
        return p

    def vital(self, pid: str, enc: str) -> dict[str, Any]:
        r = self.r
        base = {
            "resourceType": "Observation",
            "id": self.uid(),
            "meta": self.meta(),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CAT, "code": "vital-signs", "display": "Vital Signs"}]}],
            "subject": self.ref("Patient", pid),
            "encounter": self.ref("Encounter", enc),
            "effectiveDateTime": self.when(),
            "issued": self.when(),
            "performer": [self.ref("Practitioner", r.choice(self.practitioners)["id"])],
        }
        if r.random() < 0.25:
            base["code"] = {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "85354-9",
                        "display": "Blood pressure panel with all children optional",
                    }
                ],
                "text": "Blood pressure",
            }
            base["component"] = [
                {
                    "code": {
                        "coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]
                    },
                    "valueQuantity": {
                        "value": r.randint(95, 185),
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
                {
                    "code": {
                        "coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]
                    },
                    "valueQuantity": {
                        "value": r.randint(55, 115),
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
            ]
            return base
        code, display, unit, ucum, lo, hi, dec = r.choice(VITALS)
        base["code"] = {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}
        value = round(r.uniform(lo, hi), dec) if dec else r.randint(int(lo), int(hi))
        base["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        return base

    def lab(self, pid: str, enc: str) -> dict[str, Any]:
        r = self.r
        code, display, unit, lo, hi, rlo, rhi, dec = r.choice(LABS)
        value = round(r.uniform(lo, hi), dec) if dec else r.randint(int(lo), int(hi))
        flag = "H" if value > rhi else "L" if value < rlo else "N"
        flag_display = {"H": "High", "L": "Low", "N": "Normal"}[flag]
        return {
            "resourceType": "Observation",
            "id": self.uid(),
            "meta": self.meta(),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CAT, "code": "laboratory", "display": "Laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": self.ref("Patient", pid),
            "encounter": self.ref("Encounter", enc),
            "effectiveDateTime": self.when(),
            "issued": self.when(),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
            "interpretation": [{"coding": [{"system": INTERP, "code": flag, "display": flag_display}]}],
            "referenceRange": [
                {
                    "low": {"value": rlo, "unit": unit, "system": UCUM, "code": unit},
                    "high": {"value": rhi, "unit": unit, "system": UCUM, "code": unit},
                }
            ],
        }

    def condition(self, pid: str, enc: str) -> dict[str, Any]:
        r = self.r
        sct, sd, icd, idisp = r.choice(CONDITIONS)
        status = r.choice(["active", "active", "resolved", "inactive"])
        return {
            "resourceType": "Condition",
            "id": self.uid(),
            "meta": self.meta(),
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                            "display": "Problem List Item",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {"system": SCT, "code": sct, "display": sd},
                    {"system": ICD10, "code": icd, "display": idisp},
                ],
                "text": sd,
            },
            "subject": self.ref("Patient", pid),
            "encounter": self.ref("Encounter", enc),
            "onsetDateTime": self.when(),
            "recordedDate": self.when(),
            "recorder": self.ref("Practitioner", r.choice(self.practitioners)["id"]),
        }

    def allergy(self, pid: str) -> dict[str, Any]:
        r = self.r
        system, code, display, cat = r.choice(ALLERGENS)
        rc, rd = r.choice(REACTIONS)
        return {
            "resourceType": "AllergyIntolerance",
            "id": self.uid(),
            "meta": self.meta(),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                        "display": "Active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "code": "confirmed",
                        "display": "Confirmed",
                    }
                ]
            },
            "type": "allergy",
            "category": [cat],
            "criticality": r.choice(["low", "high", "unable-to-assess"]),
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "patient": self.ref("Patient", pid),
            "recordedDate": self.when(),
            "recorder": self.ref("Practitioner", r.choice(self.practitioners)["id"]),
            "reaction": [
                {
                    "manifestation": [{"coding": [{"system": SCT, "code": rc, "display": rd}]}],
                    "severity": r.choice(["mild", "moderate", "severe"]),
                }
            ],
        }

    def medication(self, pid: str, enc: str) -> dict[str, Any]:
        r = self.r
        code, display, dose, unit, freq, period = r.choice(MEDS)
        return {
            "resourceType": "MedicationRequest",
            "id": self.uid(),
            "meta": self.meta(),
            "status": r.choice(["active", "active", "completed", "stopped"]),
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": code, "display": display}],
                "text": display,
            },
            "subject": self.ref("Patient", pid),
            "encounter": self.ref("Encounter", enc),
            "authoredOn": self.when(),
            "requester": self.ref("Practitioner", r.choice(self.practitioners)["id"]),
            "dosageInstruction": [
                {
                    "sequence": 1,
                    "text": f"Take {dose} {unit} by mouth {freq} times daily",
                    "timing": {"repeat": {"frequency": freq, "period": period, "periodUnit": "d"}},
                    "route": {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]},
                    "doseAndRate": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/dose-rate-type",
                                        "code": "ordered",
                                        "display": "Ordered",
                                    }
                                ]
                            },
                            "doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit},
                        }
                    ],
                }
            ],
            "dispenseRequest": {
                "numberOfRepeatsAllowed": r.randint(0, 5),
                "quantity": {"value": r.choice([30, 60, 90]), "unit": "tablet"},
                "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
            },
        }

    def encounter(self, pid: str) -> dict[str, Any]:
        r = self.r
        cls = r.choice([("AMB", "ambulatory"), ("IMP", "inpatient encounter"), ("EMER", "emergency")])
        tc, td = r.choice(ENC_TYPES)
        doc = r.choice(self.practitioners)
        return {
            "resourceType": "Encounter",
            "id": self.uid(),
            "meta": self.meta(),
            "status": r.choice(["finished", "in-progress", "planned"]),
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": cls[0],
                "display": cls[1],
            },
            "type": [{"coding": [{"system": SCT, "code": tc, "display": td}], "text": td}],
            "subject": self.ref("Patient", pid),
            "participant": [
                {
                    "type": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "PPRF",
                                    "display": "primary performer",
                                }
                            ]
                        }
                    ],
                    "individual": self.ref("Practitioner", doc["id"], "Dr. " + doc["name"][0]["family"]),
                }
            ],
            "period": {"start": self.when(), "end": self.when()},
            "serviceProvider": self.ref(
                "Organization", "omnicare-general-hospital", "OmniCare General Hospital"
            ),
        }

    def careteam(self, pid: str) -> dict[str, Any]:
        r = self.r
        return {
            "resourceType": "CareTeam",
            "id": self.uid(),
            "meta": self.meta(),
            "status": "active",
            "name": "Primary care team",
            "subject": self.ref("Patient", pid),
            "period": {"start": self.when()},
            "participant": [
                {
                    "role": [{"coding": [{"system": SCT, "code": c, "display": d}]}],
                    "member": self.ref("Practitioner", r.choice(self.practitioners)["id"]),
                }
                for c, d in r.sample(ROLES, r.randint(2, 3))
            ],
            "managingOrganization": [self.ref("Organization", "omnicare-general-hospital")],
        }

    def chart(self) -> list[dict[str, Any]]:
        """One patient with a realistic mix of resources."""
        r = self.r
        pat = self.patient()
        out = [pat, self.careteam(pat["id"])]
        for _ in range(r.randint(1, 3)):
            enc = self.encounter(pat["id"])
            out.append(enc)
            out += [self.vital(pat["id"], enc["id"]) for _ in range(r.randint(2, 6))]
            out += [self.lab(pat["id"], enc["id"]) for _ in range(r.randint(0, 5))]
            out += [self.condition(pat["id"], enc["id"]) for _ in range(r.randint(0, 2))]
            out += [self.medication(pat["id"], enc["id"]) for _ in range(r.randint(0, 2))]
        out += [self.allergy(pat["id"]) for _ in range(r.randint(0, 2))]
        if r.random() < 0.2:
            out.append(r.choice(self.practitioners))
        return out


def corpus(seed: int, n_records: int) -> list[bytes]:
    """About ``n_records`` canonical JSON records from synthetic charts."""
    g = Gen(seed)
    out: list[bytes] = []
    while len(out) < n_records:
        out += [canonical_json(res) for res in g.chart()]
    return out[:n_records]


def demo_corpus(seed: int, n_records: int) -> list[bytes]:
    """Records from ``omnicare.fhir.demo`` (an independent generator), or [] if it is absent."""
    try:
        from omnicare.fhir.demo import demo_resources
    except ImportError:
        return []
    out: list[bytes] = []
    for res in demo_resources(patients=max(10, n_records // 40), seed=seed):
        out.append(canonical_json(res))
        if len(out) >= n_records:
            break
    return out


# -- training --------------------------------------------------------------------

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^{}\[\],:"]+')


def train_ngram(docs: list[bytes], size: int, max_ngram: int = 24) -> bytes:
    """Greedy document-frequency dictionary over runs of JSON tokens that start a member."""
    df: Counter[bytes] = Counter()
    for doc in docs:
        toks = _TOKEN.findall(doc)
        seen: set[bytes] = set()
        for i in range(len(toks)):
            if i and toks[i - 1] not in (b"{", b",", b"[", b":"):
                continue
            s = b""
            for j in range(i, min(i + max_ngram, len(toks))):
                s += toks[j]
                if len(s) > 300:
                    break
                if len(s) >= 5:
                    seen.add(s)
        df.update(seen)
    min_df = max(2, len(docs) // 100)
    cands = sorted(((c * (len(s) - 3), s) for s, c in df.items() if c >= min_df), reverse=True)[:60000]
    chosen: list[bytes] = []
    blob = b""
    for _, s in cands:
        if s in blob:
            continue
        chosen.append(s)
        blob += b"\x00" + s
        if len(blob) >= size:
            break
    return b"".join(reversed(chosen))[-size:]


def train_sampled(docs: list[bytes], size: int, seed: int = 0) -> bytes:
    """Whole training records sampled at random (type mix follows the corpus) until full."""
    pool = docs[:]
    random.Random(seed).shuffle(pool)
    out = b""
    for d in pool:
        if len(out) >= size:
            break
        out = d + out
    return out[-size:]


METHODS = {"sampled": train_sampled, "ngram": train_ngram}


def evaluate(docs: list[bytes], zdict: bytes | None) -> tuple[int, int, int]:
    """(raw bytes, plain zlib bytes, dictionary codec bytes) summed over ``docs``."""
    raw = sum(len(d) for d in docs)
    plain = sum(len(zlib.compress(d, 9)) for d in docs)
    if zdict is None:
        return raw, plain, plain
    codec = Codec({250: zdict}, 250)
    return raw, plain, sum(len(codec.compress(d)) for d in docs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-records", type=int, default=3000)
    ap.add_argument("--heldout-records", type=int, default=1500)
    ap.add_argument("--size", type=int, default=0, help="dictionary bytes (0: try several, keep the best)")
    ap.add_argument("--write", type=int, metavar="ID", help="write pyclient/data/fhir-r4-v<ID>.zdict")
    args = ap.parse_args()

    train_docs = corpus(1, args.train_records) + demo_corpus(1, args.train_records)
    held_synth = corpus(2, args.heldout_records)
    held_demo = demo_corpus(2, args.heldout_records)
    held = held_synth + held_demo
    print(
        f"training records: {len(train_docs)}; held-out: {len(held_synth)} synthetic + {len(held_demo)} demo.py"
    )
    sizes = [args.size] if args.size else [16384, 32768]
    best: tuple[int, bytes] | None = None
    for (method, fn), size in ((m, s) for m in METHODS.items() for s in sizes):
        zdict = fn(train_docs, size)
        raw, plain, withdict = evaluate(held, zdict)
        print(
            f"{method:8} dict {len(zdict):6d} B: held-out raw {raw} B, zlib {plain} B ({1 - plain / raw:.1%} saved), "
            f"zlib+dict {withdict} B ({1 - withdict / raw:.1%} saved, {1 - withdict / plain:.1%} smaller than zlib)"
        )
        if best is None or withdict < best[0]:
            best = (withdict, zdict)
    assert best is not None
    for label, docs in (("synthetic", held_synth), ("demo.py", held_demo)):
        if docs:
            raw, plain, withdict = evaluate(docs, best[1])
            print(
                f"held-out {label:9}: zlib {1 - plain / raw:.1%} saved, zlib+dict {1 - withdict / raw:.1%} saved"
            )
    codec_best = Codec({250: best[1]}, 250)
    by_type: dict[str, list[bytes]] = {}
    for d in held:
        by_type.setdefault(json.loads(d)["resourceType"], []).append(d)
    codec = Codec({250: best[1]}, 250)
    per_rec = [len(codec_best.compress(d)) / len(d) for d in held]
    per_zlib = [len(zlib.compress(d, 9)) / len(d) for d in held]
    print(
        f"\nmean per-record saving vs raw JSON: zlib+dict {1 - sum(per_rec) / len(held):.1%}, "
        f"plain zlib {1 - sum(per_zlib) / len(held):.1%}"
    )
    print(f"\nper resource type (held-out, best dictionary {len(best[1])} B):")
    print(
        f"{'type':22} {'n':>5} {'raw/rec':>8} {'zlib/rec':>9} {'dict/rec':>9} {'saved vs raw':>13} {'vs zlib':>8}"
    )
    for rtype, docs in sorted(by_type.items()):
        n = len(docs)
        raw = sum(len(d) for d in docs)
        plain = sum(len(zlib.compress(d, 9)) for d in docs)
        wd = sum(len(codec.compress(d)) for d in docs)
        print(
            f"{rtype:22} {n:5d} {raw / n:8.0f} {plain / n:9.0f} {wd / n:9.0f} {1 - wd / raw:13.1%} {1 - wd / plain:8.1%}"
        )
    if args.write:
        path = ROOT / "pyclient" / "data" / f"fhir-r4-v{args.write}.zdict"
        if path.exists():
            print(f"refusing to overwrite shipped dictionary {path}", file=sys.stderr)
            return 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(best[1])
        print(f"wrote {path} ({len(best[1])} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
