"""Deterministic, clinically coherent demo data as FHIR R4 resources (plain dicts).

Everything comes from ``random.Random`` seeded with ``(seed, what, index)`` and a reference date passed in;
there is no wall clock and no global randomness, so the same arguments always give the same resources,
ids included. Each patient has its own random stream: ``--patients 10`` is exactly the first ten
patients of ``--patients 200``, so seeding more patients later only adds new ones.

Coherence rules: conditions drive medications and measurements. Hypertensives get lisinopril (some had
amlodipine stopped for ankle oedema) and high blood pressure that falls after treatment starts;
diabetics get metformin, HbA1c and glucose that improve; CKD raises creatinine and potassium; COPD lowers
SpO2 and raises the respiratory rate; atrial fibrillation raises the heart rate and gets apixaban.

Demo users (``DEMO_USERS``) are represented by Practitioners identified by
``{"system": "urn:omnicare:user", "value": <username>}``; the CareTeam of most patients lists them as
participants, which is how the sync scope finds "my patients". ``create_demo_users`` creates the Django
users and repairs those memberships when the data was seeded differently.
"""

from __future__ import annotations

import base64
import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

Resource = dict[str, Any]

REFERENCE_DATE = date(2026, 11, 1)
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"
USER_SYSTEM = "urn:omnicare:user"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PRACTITIONER_POOL = 24  # fixed, so a patient's clinicians don't depend on how many patients are seeded

# ---------------------------------------------------------------------------------------------- users


@dataclass(frozen=True)
class DemoUser:
    """A demo login. ``care_team_share`` is the fraction of demo patients whose CareTeam lists the user."""

    username: str
    role: str  # a role of omnicare.access.roles: physician | nurse | administrator | auditor
    given: str
    family: str
    gender: str
    care_team_share: float
    superuser: bool = False

    @property
    def is_clinical(self) -> bool:
        return self.care_team_share > 0


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("dr.adams", "physician", "Alice", "Adams", "female", 0.85),
    DemoUser("nurse.baker", "nurse", "Ben", "Baker", "male", 0.85),
    DemoUser("dr.chen", "physician", "Wei", "Chen", "male", 0.30),
    DemoUser("admin", "administrator", "Ada", "Admin", "female", 0.0),  # staff (role), not a superuser
    DemoUser("privacy.officer", "auditor", "Priya", "Officer", "female", 0.0),
)

_ID_NAMESPACE = uuid.UUID("6f1c3c2e-6c1b-4c55-9a53-0e0b6a3f1d10")


def user_practitioner_id(username: str) -> str:
    """The fixed id of the Practitioner standing for a demo (or any) user."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{USER_SYSTEM}/{username}"))


def user_practitioner(user: DemoUser) -> Resource:
    """The Practitioner that represents ``user`` in CareTeams (identifier system ``urn:omnicare:user``)."""
    return {
        "resourceType": "Practitioner",
        "id": user_practitioner_id(user.username),
        "identifier": [{"system": USER_SYSTEM, "value": user.username}],
        "active": True,
        "name": [{"use": "official", "family": user.family, "given": [user.given],
                  "prefix": ["Dr."] if user.role == "physician" else []}],
        "gender": user.gender,
        "qualification": [{"code": {"text": "Physician" if user.role == "physician" else "Registered nurse"}}],
    }  # fmt: skip


def user_on_care_team(user: DemoUser, patient_id: str) -> bool:
    """Whether ``user`` belongs on the CareTeam of the patient ``patient_id`` (a stable hash, not the RNG).

    Both the seeder and ``create_demo_users`` ask this, so they agree whatever order they run in.
    """
    digest = hashlib.sha256(f"{user.username}|{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < user.care_team_share


def care_team_participant(practitioner_id: str, role: str) -> dict[str, Any]:
    """A CareTeam.participant entry for a Practitioner (``role``: physician | nurse)."""
    code = ("309343006", "Physician") if role == "physician" else ("224535009", "Registered nurse")
    return {
        "role": [{"coding": [{"system": SNOMED, "code": code[0], "display": code[1]}], "text": code[1]}],
        "member": {"reference": f"Practitioner/{practitioner_id}"},
    }


# ---------------------------------------------------------------------------------------------- names

GIVEN_FEMALE = [
    "Emma",
    "Olivia",
    "Sofia",
    "Zoë",
    "Chloé",
    "Ana",
    "Mária",
    "Ingrid",
    "Aisha",
    "Mei",
    "Grace",
    "Hannah",
    "Léa",
    "Renée",
    "Agnieszka",
    "Priya",
    "Fatima",
    "Linnéa",
    "Margaret",
    "Joan",
    "Ruth",
]
GIVEN_MALE = [
    "James",
    "Liam",
    "Noah",
    "José",
    "François",
    "Søren",
    "Łukasz",
    "Jürgen",
    "Mateo",
    "Omar",
    "Kenji",
    "Andrés",
    "Björn",
    "Ravi",
    "Thomas",
    "William",
    "George",
    "Henry",
    "Dmitri",
    "Tomáš",
    "Samuel",
]
FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "García",
    "Martínez",
    "Müller",
    "Nguyễn",
    "Dvořák",
    "Kowalski",
    "Ólafsdóttir",
    "Çelik",
    "O'Brien",
    "Lefèvre",
    "Jensen",
    "Nakamura",
    "Patel",
    "Kim",
    "Rossi",
    "Novák",
    "Anderson",
    "Thompson",
    "Moore",
    "Clark",
    "Lewis",
    "Walker",
    "Hernández",
    "Schröder",
    "Peña",
    "Ødegaard",
]
STREETS = [
    "Maple Street",
    "Oak Avenue",
    "Cedar Lane",
    "Elm Street",
    "Birch Road",
    "Pine Court",
    "Lakeview Drive",
    "Hillcrest Avenue",
    "Riverside Drive",
    "Chestnut Street",
    "Willow Way",
    "Sunset Boulevard",
]
CITIES = [
    ("Springfield", "IL", "627"),
    ("Madison", "WI", "537"),
    ("Portland", "OR", "972"),
    ("Austin", "TX", "787"),
    ("Burlington", "VT", "054"),
    ("Boulder", "CO", "803"),
    ("Ann Arbor", "MI", "481"),
    ("Durham", "NC", "277"),
]
LANGUAGES = [("en", "English", 0.8), ("es", "Spanish", 0.1), ("fr", "French", 0.04), ("de", "German", 0.03),
             ("pl", "Polish", 0.03)]  # fmt: skip

# ---------------------------------------------------------------------------------------------- catalogues


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class ConditionSpec:
    key: str
    snomed: Code
    icd10: Code
    prevalence: float
    min_age: int


CONDITIONS = (
    ConditionSpec("hypertension", Code(SNOMED, "38341003", "Hypertensive disorder, systemic arterial"),
                  Code(ICD10, "I10", "Essential (primary) hypertension"), 0.40, 30),
    ConditionSpec("diabetes", Code(SNOMED, "44054006", "Diabetes mellitus type 2"),
                  Code(ICD10, "E11.9", "Type 2 diabetes mellitus without complications"), 0.22, 30),
    ConditionSpec("hyperlipidemia", Code(SNOMED, "55822004", "Hyperlipidemia"),
                  Code(ICD10, "E78.5", "Hyperlipidemia, unspecified"), 0.30, 30),
    ConditionSpec("asthma", Code(SNOMED, "195967001", "Asthma"),
                  Code(ICD10, "J45.909", "Unspecified asthma, uncomplicated"), 0.10, 5),
    ConditionSpec("copd", Code(SNOMED, "13645005", "Chronic obstructive lung disease"),
                  Code(ICD10, "J44.9", "Chronic obstructive pulmonary disease, unspecified"), 0.08, 45),
    ConditionSpec("ckd", Code(SNOMED, "433144002", "Chronic kidney disease stage 3"),
                  Code(ICD10, "N18.30", "Chronic kidney disease, stage 3 unspecified"), 0.08, 50),
    ConditionSpec("afib", Code(SNOMED, "49436004", "Atrial fibrillation"),
                  Code(ICD10, "I48.91", "Unspecified atrial fibrillation"), 0.07, 55),
    ConditionSpec("hypothyroidism", Code(SNOMED, "40930008", "Hypothyroidism"),
                  Code(ICD10, "E03.9", "Hypothyroidism, unspecified"), 0.08, 20),
    ConditionSpec("depression", Code(SNOMED, "35489007", "Depressive disorder"),
                  Code(ICD10, "F32.A", "Depression, unspecified"), 0.12, 15),
    ConditionSpec("osteoarthritis", Code(SNOMED, "396275006", "Osteoarthritis"),
                  Code(ICD10, "M19.90", "Unspecified osteoarthritis, unspecified site"), 0.15, 45),
)  # fmt: skip
RESOLVED_CONDITIONS = (
    (Code(SNOMED, "10509002", "Acute bronchitis"), Code(ICD10, "J20.9", "Acute bronchitis, unspecified")),
    (Code(SNOMED, "68566005", "Urinary tract infection"), Code(ICD10, "N39.0", "Urinary tract infection, site not specified")),
    (Code(SNOMED, "444814009", "Viral sinusitis"), Code(ICD10, "J01.90", "Acute sinusitis, unspecified")),
)  # fmt: skip


@dataclass(frozen=True)
class MedSpec:
    rxnorm: Code
    per_day: int
    dose: float
    unit: str  # UCUM or orderable form code
    unit_display: str
    route: Code
    text: str
    as_needed: bool = False


ORAL = Code(SNOMED, "26643006", "Oral route")
INHALED = Code(SNOMED, "447694001", "Respiratory tract route")
MEDS = {
    "lisinopril": MedSpec(Code(RXNORM, "314076", "lisinopril 10 MG Oral Tablet"), 1, 1, "TAB", "tablet", ORAL,
                          "Take 1 tablet by mouth once daily"),
    "amlodipine": MedSpec(Code(RXNORM, "197361", "amlodipine 5 MG Oral Tablet"), 1, 1, "TAB", "tablet", ORAL,
                          "Take 1 tablet by mouth once daily"),
    "metformin": MedSpec(Code(RXNORM, "861007", "metformin hydrochloride 500 MG Oral Tablet"), 2, 1, "TAB", "tablet",
                         ORAL, "Take 1 tablet by mouth twice daily with meals"),
    "atorvastatin": MedSpec(Code(RXNORM, "617312", "atorvastatin 20 MG Oral Tablet"), 1, 1, "TAB", "tablet", ORAL,
                            "Take 1 tablet by mouth once daily at bedtime"),
    "albuterol": MedSpec(Code(RXNORM, "745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"), 4, 2, "{puff}",
                         "puff", INHALED, "Inhale 2 puffs every 4 to 6 hours as needed for wheezing", as_needed=True),
    "apixaban": MedSpec(Code(RXNORM, "1364445", "apixaban 5 MG Oral Tablet"), 2, 1, "TAB", "tablet", ORAL,
                        "Take 1 tablet by mouth twice daily"),
    "levothyroxine": MedSpec(Code(RXNORM, "966222", "levothyroxine sodium 0.05 MG Oral Tablet"), 1, 1, "TAB", "tablet",
                             ORAL, "Take 1 tablet by mouth every morning on an empty stomach"),
    "sertraline": MedSpec(Code(RXNORM, "312940", "sertraline 50 MG Oral Tablet"), 1, 1, "TAB", "tablet", ORAL,
                          "Take 1 tablet by mouth once daily"),
    "acetaminophen": MedSpec(Code(RXNORM, "198440", "acetaminophen 500 MG Oral Tablet"), 3, 2, "TAB", "tablet", ORAL,
                             "Take 2 tablets by mouth up to three times daily as needed for pain", as_needed=True),
}  # fmt: skip
MEDS_FOR = {"hypertension": "lisinopril", "diabetes": "metformin", "hyperlipidemia": "atorvastatin",
            "asthma": "albuterol", "copd": "albuterol", "afib": "apixaban", "hypothyroidism": "levothyroxine",
            "depression": "sertraline", "osteoarthritis": "acetaminophen"}  # fmt: skip


@dataclass(frozen=True)
class AllergySpec:
    substance: Code
    category: str
    manifestations: tuple[Code, ...]
    prevalence: float


HIVES = Code(SNOMED, "247472004", "Wheal (finding)")
RASH = Code(SNOMED, "271807003", "Eruption of skin")
ANAPHYLAXIS = Code(SNOMED, "39579001", "Anaphylaxis")
ANGIOEDEMA = Code(SNOMED, "41291007", "Angioedema")
WHEEZE = Code(SNOMED, "56018004", "Wheezing")
NAUSEA = Code(SNOMED, "422587007", "Nausea")
ITCH = Code(SNOMED, "418290006", "Itching")
ALLERGIES = (
    AllergySpec(Code(SNOMED, "764146007", "Penicillin"), "medication", (HIVES, RASH, ANAPHYLAXIS), 0.10),
    AllergySpec(Code(SNOMED, "256349002", "Peanut - dietary"), "food", (HIVES, ANGIOEDEMA, ANAPHYLAXIS), 0.04),
    AllergySpec(Code(SNOMED, "111088007", "Latex"), "environment", (ITCH, RASH, HIVES), 0.03),
    AllergySpec(Code(SNOMED, "387406002", "Sulfonamide"), "medication", (RASH, HIVES), 0.05),
    AllergySpec(Code(SNOMED, "44027008", "Seafood"), "food", (HIVES, ANGIOEDEMA, NAUSEA), 0.03),
    AllergySpec(Code(SNOMED, "387458008", "Aspirin"), "medication", (WHEEZE, HIVES), 0.03),
    AllergySpec(Code(SNOMED, "387494007", "Codeine"), "medication", (NAUSEA, ITCH), 0.03),
)  # fmt: skip


@dataclass(frozen=True)
class ObsSpec:
    loinc: str
    display: str
    unit: str
    category: str  # vital-signs | laboratory
    low: float | None = None
    high: float | None = None
    decimals: int = 0


OBS = {
    "hr": ObsSpec("8867-4", "Heart rate", "/min", "vital-signs", decimals=0),
    "bp": ObsSpec("85354-9", "Blood pressure panel with all children optional", "mm[Hg]", "vital-signs"),
    "sbp": ObsSpec("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs"),
    "dbp": ObsSpec("8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs"),
    "temp": ObsSpec("8310-5", "Body temperature", "Cel", "vital-signs", decimals=1),
    "rr": ObsSpec("9279-1", "Respiratory rate", "/min", "vital-signs"),
    "spo2": ObsSpec("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "vital-signs"),
    "weight": ObsSpec("29463-7", "Body weight", "kg", "vital-signs", decimals=1),
    "hgb": ObsSpec("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "laboratory", 12.0, 17.5, 1),
    "glucose": ObsSpec("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 70, 99, 0),
    "creatinine": ObsSpec("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 0.6, 1.3, 2),
    "potassium": ObsSpec("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", 3.5, 5.1, 1),
    "hba1c": ObsSpec("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "laboratory", 4.0, 5.6, 1),
}  # fmt: skip

# ---------------------------------------------------------------------------------------------- helpers


def _rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ref(resource: Resource) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _dt(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cc(*codes: Code, text: str | None = None) -> dict[str, Any]:
    return {"coding": [c.coding() for c in codes], "text": text or codes[0].display}


def _round(value: float, decimals: int) -> float | int:
    return round(value) if decimals == 0 else round(value, decimals)


def _phone(rng: random.Random) -> str:
    return f"+1-555-{rng.randrange(200, 999):03d}-{rng.randrange(0, 10000):04d}"


def _ascii(text: str) -> str:
    import unicodedata

    folded = unicodedata.normalize(
        "NFKD", text.replace("ø", "o").replace("Ø", "O").replace("ł", "l").replace("Ł", "L")
    )
    return "".join(c for c in folded if c.isascii() and (c.isalnum() or c in ".-")).lower()


# ---------------------------------------------------------------------------------------------- practitioners


def demo_practitioners(*, seed: int) -> list[Resource]:
    """The fixed pool of staff clinicians (physicians first, then nurses), same for every patient count."""
    out = []
    for j in range(PRACTITIONER_POOL):
        rng = _rng(seed, "practitioner", j)
        gender = rng.choice(["female", "male"])
        given = rng.choice(GIVEN_FEMALE if gender == "female" else GIVEN_MALE)
        family = rng.choice(FAMILY)
        physician = j < PRACTITIONER_POOL * 2 // 3
        out.append(
            {
                "resourceType": "Practitioner",
                "id": _uuid(rng),
                "identifier": [{"system": NPI_SYSTEM, "value": f"{1000000000 + rng.randrange(10**8, 10**9 - 1)}"}],
                "active": True,
                "name": [{"use": "official", "family": family, "given": [given],
                          "prefix": ["Dr."] if physician else []}],
                "telecom": [{"system": "phone", "value": _phone(rng), "use": "work"},
                            {"system": "email", "value": f"{_ascii(given)}.{_ascii(family)}@omnicare.example",
                             "use": "work"}],
                "gender": gender,
                "qualification": [{"code": {"text": "Physician" if physician else "Registered nurse"}}],
            }
        )  # fmt: skip
    return out


def _is_physician(practitioner: Resource) -> bool:
    return bool(practitioner["name"][0].get("prefix"))


# ---------------------------------------------------------------------------------------------- one patient


class _Patient:
    """Builds the record of one patient; all randomness from its own stream."""

    def __init__(self, *, seed: int, index: int, today: date, practitioners: list[Resource]) -> None:
        self.rng = rng = _rng(seed, "patient", index)
        self.index = index
        self.today = today
        self.out: list[Resource] = []
        physicians = [p for p in practitioners if _is_physician(p)]
        nurses = [p for p in practitioners if not _is_physician(p)]
        self.physician = rng.choice(physicians)
        self.nurse = rng.choice(nurses)
        self.gender = rng.choice(["female", "male"])
        self.age = rng.choice(
            [rng.randint(18, 40), rng.randint(40, 65), rng.randint(60, 92), rng.randint(2, 17)]
        )
        self.birth = today - timedelta(days=self.age * 365 + rng.randrange(0, 365))
        self.conditions = {
            c.key: c for c in CONDITIONS if self.age >= c.min_age and rng.random() < c.prevalence
        }
        if "ckd" in self.conditions and rng.random() < 0.7:
            self.conditions.setdefault("hypertension", CONDITIONS[0])
        # Visits over the last 6-18 months, oldest first; treatment for new diagnoses starts at the first one.
        span = rng.randint(180, 540)
        n_visits = rng.randint(4, 7) + (1 if len(self.conditions) >= 2 else 0)
        days = sorted(rng.sample(range(0, span), n_visits), reverse=True)
        self.visits = [
            datetime.combine(
                today - timedelta(days=d), time(rng.randint(8, 16), rng.choice([0, 15, 30, 45])), UTC
            )
            for d in days
        ]
        self.weight0 = rng.gauss(78 if self.gender == "male" else 66, 11) + (
            12 if "diabetes" in self.conditions else 0
        )
        if self.age < 18:
            self.weight0 = 8 + self.age * 3.2 + rng.gauss(0, 3)

    def add(self, resource: Resource) -> Resource:
        self.out.append(resource)
        return resource

    def new_id(self) -> str:
        return _uuid(self.rng)

    # -- demographics and care team

    def patient(self) -> Resource:
        rng = self.rng
        given = rng.choice(GIVEN_FEMALE if self.gender == "female" else GIVEN_MALE)
        middle = (
            rng.choice(GIVEN_FEMALE if self.gender == "female" else GIVEN_MALE)
            if rng.random() < 0.3
            else None
        )
        family = rng.choice(FAMILY)
        city, state, zip3 = rng.choice(CITIES)
        lang = rng.choices(LANGUAGES, weights=[w for *_, w in LANGUAGES])[0]
        telecom = [{"system": "phone", "value": _phone(rng), "use": rng.choice(["mobile", "home"])}]
        if rng.random() < 0.7:
            telecom.append(
                {
                    "system": "email",
                    "value": f"{_ascii(given)}.{_ascii(family)}{rng.randrange(1, 99)}@example.org",
                }
            )
        self.patient_res = self.add(
            {
                "resourceType": "Patient",
                "id": self.new_id(),
                "identifier": [{
                    "use": "usual",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                                         "display": "Medical record number"}], "text": "MRN"},
                    "system": MRN_SYSTEM,
                    "value": f"MRN-{self.index + 1:06d}",
                }],
                "active": True,
                "name": [{"use": "official", "family": family, "given": [given] + ([middle] if middle else [])}],
                "telecom": telecom,
                "gender": self.gender,
                "birthDate": self.birth.isoformat(),
                "address": [{"use": "home", "line": [f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"], "city": city,
                             "state": state, "postalCode": f"{zip3}{rng.randrange(0, 100):02d}", "country": "US"}],
                "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": lang[0],
                                                             "display": lang[1]}], "text": lang[1]},
                                   "preferred": True}],
                "generalPractitioner": [_ref(self.physician)],
            }
        )  # fmt: skip
        self.subject = _ref(self.patient_res)
        return self.patient_res

    def care_team(self) -> None:
        participants = [care_team_participant(self.physician["id"], "physician"),
                        care_team_participant(self.nurse["id"], "nurse")]  # fmt: skip
        for user in DEMO_USERS:
            if user.is_clinical and user_on_care_team(user, self.patient_res["id"]):
                participants.append(care_team_participant(user_practitioner_id(user.username), user.role))
        self.add(
            {
                "resourceType": "CareTeam",
                "id": self.new_id(),
                "status": "active",
                "category": [{"coding": [{"system": LOINC, "code": "LA27976-2", "display": "Encounter-focused care team"}]}],
                "name": f"Primary care team ({self.patient_res['identifier'][0]['value']})",
                "subject": self.subject,
                "period": {"start": _dt(self.visits[0])},
                "participant": participants,
            }
        )  # fmt: skip

    # -- problems, allergies, medications

    def condition_resources(self) -> None:
        first = self.visits[0]
        for spec in self.conditions.values():
            onset = self.birth + timedelta(
                days=365 * self.rng.randint(spec.min_age, max(spec.min_age, self.age))
            )
            onset = min(onset, first.date())
            self.add(self._condition(_cc(spec.snomed, spec.icd10), onset, first, active=True))
        if self.rng.random() < 0.35:  # an acute episode that resolved
            snomed, icd = self.rng.choice(RESOLVED_CONDITIONS)
            visit = self.rng.choice(self.visits[:-1]) if len(self.visits) > 1 else first
            self.add(self._condition(_cc(snomed, icd), visit.date(), visit, active=False))

    def _condition(self, code: dict[str, Any], onset: date, recorded: datetime, *, active: bool) -> Resource:
        cond: Resource = {
            "resourceType": "Condition",
            "id": self.new_id(),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active" if active else "resolved"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item" if active else "encounter-diagnosis"}]}],
            "code": code,
            "subject": self.subject,
            "onsetDateTime": onset.isoformat(),
            "recordedDate": _dt(recorded),
            "recorder": _ref(self.physician),
        }  # fmt: skip
        if not active:
            cond["abatementDateTime"] = (onset + timedelta(days=self.rng.randint(7, 21))).isoformat()
        return cond

    def allergies(self) -> None:
        for spec in ALLERGIES:
            if self.rng.random() >= spec.prevalence:
                continue
            manifestation = self.rng.choice(spec.manifestations)
            severe = manifestation in (ANAPHYLAXIS, ANGIOEDEMA)
            self.add(
                {
                    "resourceType": "AllergyIntolerance",
                    "id": self.new_id(),
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                                   "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                                       "code": "confirmed"}]},
                    "type": "allergy",
                    "category": [spec.category],
                    "criticality": "high" if severe else "low",
                    "code": _cc(spec.substance),
                    "patient": self.subject,
                    "recordedDate": _dt(self.visits[0]),
                    "recorder": _ref(self.physician),
                    "reaction": [{
                        "manifestation": [_cc(manifestation)],
                        "severity": "severe" if severe else self.rng.choice(["mild", "moderate"]),
                        "description": f"{manifestation.display} after exposure to {spec.substance.display.lower()}",
                    }],
                }
            )  # fmt: skip

    def medications(self) -> None:
        start = self.visits[0]
        for key in self.conditions:
            med = MEDS_FOR.get(key)
            if med is None:
                continue
            if key == "hypertension" and self.rng.random() < 0.3:
                # Started on amlodipine, stopped for ankle oedema, switched to lisinopril.
                stop_at = self.visits[1] if len(self.visits) > 1 else start
                self.add(self._med_request("amlodipine", start - timedelta(days=120), "stopped", stop_at))
            self.add(self._med_request(med, start, "active"))

    def _med_request(
        self, key: str, authored: datetime, status: str, stopped: datetime | None = None
    ) -> Resource:
        spec = MEDS[key]
        unit = ({"system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": spec.unit}
                if spec.unit == "TAB" else {"system": UCUM, "code": spec.unit})  # fmt: skip
        dosage: dict[str, Any] = {
            "sequence": 1,
            "text": spec.text,
            "timing": {"repeat": {"frequency": spec.per_day, "period": 1, "periodUnit": "d"}},
            "route": _cc(spec.route),
            "doseAndRate": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type", "code": "ordered",
                                     "display": "Ordered"}]},
                "doseQuantity": {"value": spec.dose, "unit": spec.unit_display, **unit},
            }],
        }  # fmt: skip
        if spec.as_needed:
            dosage["asNeededBoolean"] = True
            dosage["timing"]["repeat"] = {"frequency": 1, "period": 24 // spec.per_day, "periodUnit": "h"}
            dosage["maxDosePerPeriod"] = {
                "numerator": {"value": spec.dose * spec.per_day, "unit": spec.unit_display, **unit},
                "denominator": {"value": 1, "unit": "day", "system": UCUM, "code": "d"},
            }
        request: Resource = {
            "resourceType": "MedicationRequest",
            "id": self.new_id(),
            "status": status,
            "intent": "order",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                      "code": "outpatient"}]}],
            "medicationCodeableConcept": _cc(spec.rxnorm),
            "subject": self.subject,
            "authoredOn": _dt(authored),
            "requester": _ref(self.physician),
            "dosageInstruction": [dosage],
            "dispenseRequest": {"numberOfRepeatsAllowed": 3,
                                "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"}},
        }  # fmt: skip
        if status == "stopped" and stopped is not None:
            request["statusReason"] = {"text": "Ankle oedema"}
            request["dispenseRequest"]["validityPeriod"] = {"start": _dt(authored), "end": _dt(stopped)}
        return request

    # -- visits: encounter, vitals, labs, note

    def visit_resources(self) -> None:
        n = len(self.visits)
        c = self.conditions
        for k, when in enumerate(self.visits):
            progress = k / max(1, n - 1)  # 0 at the first visit, 1 at the last: treatment effect
            encounter = self._encounter(when, k)
            taken = when + timedelta(minutes=10)
            vitals = self._vitals(progress)
            for key in ("hr", "bp", "spo2", "weight"):
                self.add(self._observation(key, vitals, taken, encounter))
            if k == 0 or self.rng.random() < 0.35:  # temperature and breathing are not charted at every visit
                self.add(self._observation("temp", vitals, taken, encounter))
                self.add(self._observation("rr", vitals, taken, encounter))
            labs_due = k in (0, n - 1) or ("diabetes" in c and k == n // 2)
            if labs_due:
                drawn = when + timedelta(minutes=30)
                labs = self._labs(progress)
                keys = ["hgb", "glucose", "creatinine", "potassium"] if k == 0 else ["glucose", "creatinine"]
                if "ckd" in c or "hypertension" in c:
                    keys.append("potassium") if "potassium" not in keys else None
                if "diabetes" in c:
                    keys.append("hba1c")
                for key in keys:
                    self.add(self._observation(key, labs, drawn, encounter))
            if k == 0 or k == n - 1 or self.rng.random() < 0.4:
                self.add(self._note(encounter, when, vitals, k))

    def _encounter(self, when: datetime, k: int) -> Resource:
        acute = k > 0 and self.rng.random() < 0.2
        kind = (Code(SNOMED, "185345009", "Encounter for symptom") if acute
                else Code(SNOMED, "185349003", "Encounter for check up"))  # fmt: skip
        enc: Resource = {
            "resourceType": "Encounter",
            "id": self.new_id(),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [_cc(kind)],
            "subject": self.subject,
            "participant": [{"individual": _ref(self.physician)}, {"individual": _ref(self.nurse)}],
            "period": {"start": _dt(when), "end": _dt(when + timedelta(minutes=self.rng.choice([20, 30, 40])))},
        }  # fmt: skip
        if self.conditions and not acute:
            spec = next(iter(self.conditions.values()))
            enc["reasonCode"] = [_cc(spec.snomed)]
        self._acute = acute
        return self.add(enc)

    def _vitals(self, progress: float) -> dict[str, float]:
        g, c = self.rng.gauss, self.conditions
        sbp = 118 + g(0, 7) + (self.age - 40) * 0.25
        dbp = 76 + g(0, 5)
        if "hypertension" in c:  # high at diagnosis, falling as lisinopril takes effect
            sbp += 30 - 18 * progress
            dbp += 14 - 8 * progress
        hr = (96 if "afib" in c else 72) + g(0, 6) + (8 if self._acute else 0)
        spo2 = (92 if "copd" in c else 98) + g(0, 1)
        rr = (20 if "copd" in c else 15) + g(0, 1.5)
        temp = 36.8 + g(0, 0.2) + (1.4 if self._acute and self.rng.random() < 0.5 else 0)
        weight = self.weight0 + g(0, 0.6) - (2.5 * progress if "diabetes" in c else 0)
        if self.age < 18:
            hr += 15
            rr += 4
        return {"hr": hr, "sbp": sbp, "dbp": min(dbp, sbp - 25), "spo2": min(spo2, 100), "rr": rr, "temp": temp,
                "weight": max(weight, 3)}  # fmt: skip

    def _labs(self, progress: float) -> dict[str, float]:
        g, c = self.rng.gauss, self.conditions
        hgb = (14.8 if self.gender == "male" else 13.4) + g(0, 0.8) - (1.2 if "ckd" in c else 0)
        glucose = 88 + g(0, 7)
        hba1c = 5.3 + g(0, 0.2)
        if "diabetes" in c:  # metformin works: both come down over the months
            glucose = 175 - 45 * progress + g(0, 12)
            hba1c = 8.6 - 1.5 * progress + g(0, 0.15)
        creatinine = (1.9 if "ckd" in c else 0.9) + g(0, 0.12)
        potassium = (
            (4.9 if "ckd" in c else 4.2) + g(0, 0.25) + (0.15 if "hypertension" in c else 0)
        )  # ACE inhibitor
        return {"hgb": hgb, "glucose": glucose, "hba1c": hba1c, "creatinine": max(creatinine, 0.4),
                "potassium": potassium}  # fmt: skip

    def _observation(
        self, key: str, values: dict[str, float], when: datetime, encounter: Resource
    ) -> Resource:
        spec = OBS[key]
        category = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}[spec.category]
        obs: Resource = {
            "resourceType": "Observation",
            "id": self.new_id(),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": spec.category, "display": category}],
                          "text": category}],
            "code": {"coding": [{"system": LOINC, "code": spec.loinc, "display": spec.display}], "text": spec.display},
            "subject": self.subject,
            "encounter": _ref(encounter),
            "effectiveDateTime": _dt(when),
            "issued": _dt(when + timedelta(hours=2 if spec.category == "laboratory" else 0, minutes=1)),
            "performer": [_ref(self.nurse if spec.category == "vital-signs" else self.physician)],
        }  # fmt: skip
        if key == "bp":
            obs["component"] = [
                {"code": {"coding": [{"system": LOINC, "code": OBS[k].loinc, "display": OBS[k].display}]},
                 "valueQuantity": self._quantity(values[k], OBS[k])}
                for k in ("sbp", "dbp")
            ]  # fmt: skip
            return obs
        obs["valueQuantity"] = self._quantity(values[key], spec)
        if spec.low is not None and spec.high is not None:
            value = obs["valueQuantity"]["value"]
            flag = "H" if value > spec.high else "L" if value < spec.low else "N"
            text = {"H": "High", "L": "Low", "N": "Normal"}[flag]
            obs["interpretation"] = [
                {"coding": [{"system": INTERPRETATION, "code": flag, "display": text}], "text": text}
            ]
            obs["referenceRange"] = [
                {"low": self._quantity(spec.low, spec), "high": self._quantity(spec.high, spec)}
            ]
        return obs

    @staticmethod
    def _quantity(value: float, spec: ObsSpec) -> dict[str, Any]:
        return {"value": _round(value, spec.decimals), "unit": spec.unit, "system": UCUM, "code": spec.unit}

    def _note(self, encounter: Resource, when: datetime, vitals: dict[str, float], k: int) -> Resource:
        name = self.patient_res["name"][0]
        problems = (
            ", ".join(s.snomed.display.lower() for s in self.conditions.values()) or "no chronic problems"
        )
        plan = []
        for key in self.conditions:
            med = MEDS_FOR.get(key)
            if med:
                plan.append(f"continue {MEDS[med].rxnorm.display}")
        lines = [
            f"{'Acute visit' if self._acute else 'Follow-up visit'} for {' '.join(name['given'])} {name['family']}.",
            f"Known problems: {problems}.",
            f"Vitals: BP {round(vitals['sbp'])}/{round(vitals['dbp'])} mm[Hg], HR {round(vitals['hr'])}/min, "
            f"SpO2 {round(vitals['spo2'])} %, weight {vitals['weight']:.1f} kg.",
            "Assessment: " + ("symptoms reviewed, supportive care advised." if self._acute else "stable, improving on treatment."
                              if self.conditions else "well, routine check."),
            "Plan: " + ("; ".join(plan) if plan else "no medication changes") + f"; review in {self.rng.choice([4, 8, 12])} weeks.",
        ]  # fmt: skip
        text = "\n".join(lines) + "\n"
        title = f"Progress note {when.date().isoformat()}"
        return {
                "resourceType": "DocumentReference",
                "id": self.new_id(),
                "status": "current",
                "docStatus": "final",
                "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}], "text": "Progress note"},
                "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                                          "code": "clinical-note", "display": "Clinical Note"}]}],
                "subject": self.subject,
                "date": _dt(when + timedelta(minutes=45)),
                "author": [_ref(self.physician)],
                "description": title,
                "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "language": "en",
                                            "data": base64.b64encode(text.encode()).decode("ascii"),
                                            "title": title, "creation": _dt(when + timedelta(minutes=45))}}],
                "context": {"encounter": [_ref(encounter)],
                            "period": {"start": encounter["period"]["start"], "end": encounter["period"]["end"]}},
            }  # fmt: skip

    def build(self) -> list[Resource]:
        self.patient()
        self.care_team()
        self.condition_resources()
        self.allergies()
        self.medications()
        self.visit_resources()
        return self.out


def demo_patient_resources(
    *, seed: int, index: int, today: date, practitioners: list[Resource]
) -> list[Resource]:
    """Every resource of demo patient number ``index`` (0-based): Patient first, then CareTeam, problems, visits."""
    return _Patient(seed=seed, index=index, today=today, practitioners=practitioners).build()


def demo_resources(*, patients: int, seed: int, today: date = REFERENCE_DATE) -> Iterator[Resource]:
    """All demo resources in dependency order: the demo-user Practitioners, the staff pool, then patient by patient.

    About 50 resources per patient on average. Deterministic in ``(patients, seed, today)``, and the
    first k patients do not depend on ``patients``.
    """
    for user in DEMO_USERS:
        if user.is_clinical:
            yield user_practitioner(user)
    practitioners = demo_practitioners(seed=seed)
    yield from practitioners
    for index in range(patients):
        yield from demo_patient_resources(seed=seed, index=index, today=today, practitioners=practitioners)
