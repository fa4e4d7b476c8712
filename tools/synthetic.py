"""A deterministic generator of realistic FHIR R4 clinical data (``bulkhead seed``, benchmarks, tests).

``generate(patients, seed=...)`` yields resource dicts one at a time, never the whole set: first the
Organizations and Practitioners the records point at, then each patient followed by that patient's
Encounters and, per encounter, its vital signs and laboratory Observations, Conditions and
MedicationRequests. Every reference names a resource the same stream yields earlier (``Patient/…`` of that
patient, ``Encounter/…`` of that patient's encounter, ``Practitioner/…`` and ``Organization/…`` of the set).

Each patient's record is drawn from its own random generator seeded with ``(seed, patient index)``, so a
record does not depend on how many patients come before it, and the same ``seed`` yields the same bytes in
every process. Ids carry the seed (``pat-{seed}-{i}``), so two seeds never collide in one partition while the
same seed yields the same ids in every partition. Dates are relative to a fixed reference day, not the clock.
Codes are real LOINC, SNOMED CT and RxNorm codes; values are plausible, not clinical truth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tools.synthetic_codes import (
    ACT_CODE,
    CITIES,
    CLINICAL,
    CONDITION_CATEGORY,
    CONDITIONS,
    ENCOUNTER_TYPES,
    FAMILY,
    GIVEN,
    INTERPRETATION,
    LABS,
    LOINC,
    MARITAL,
    MARITAL_CODES,
    MEDICATIONS,
    MRN_SYSTEM,
    NPI_SYSTEM,
    OBS_CATEGORY,
    RXNORM,
    SNOMED,
    SPECIALTIES,
    STREETS,
    UCUM,
    VERIFICATION,
    VITALS,
    VITALS_PROFILE,
)

REFERENCE_DAY = date(2025, 6, 30)
PATIENTS_PER_ORGANIZATION = 200
PATIENTS_PER_PRACTITIONER = 25


@dataclass(frozen=True)
class Population:
    """How many shared resources a data set of ``patients`` patients has, and their ids."""

    seed: int
    patients: int

    @property
    def organizations(self) -> int:
        """Return the number of Organizations."""
        return max(1, -(-self.patients // PATIENTS_PER_ORGANIZATION))

    @property
    def practitioners(self) -> int:
        """Return the number of Practitioners."""
        return max(1, -(-self.patients // PATIENTS_PER_PRACTITIONER))

    def patient_id(self, index: int) -> str:
        """Return the id of patient ``index``."""
        return f"pat-{self.seed}-{index}"

    def organization_id(self, index: int) -> str:
        """Return the id of organization ``index``."""
        return f"org-{self.seed}-{index}"

    def practitioner_id(self, index: int) -> str:
        """Return the id of practitioner ``index``."""
        return f"prac-{self.seed}-{index}"


def _ref(rtype: str, rid: str, display: str | None = None) -> dict[str, str]:
    ref = {"reference": f"{rtype}/{rid}"}
    if display:
        ref["display"] = display
    return ref


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _instant(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(rng: random.Random, low: float, high: float, decimals: int) -> int | float:
    value = rng.uniform(low, high)
    return round(value) if decimals == 0 else round(value, decimals)


def _quantity(value: int | float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _address(rng: random.Random) -> dict[str, Any]:
    city, state, zip3 = rng.choice(CITIES)
    return {
        "use": "home",
        "line": [f"{rng.randint(1, 999)} {rng.choice(STREETS)} Street"],
        "city": city,
        "state": state,
        "postalCode": f"{zip3}{rng.randint(0, 99):02d}",
        "country": "US",
    }


def _phone(rng: random.Random) -> str:
    return f"555-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"


def organization(population: Population, index: int) -> dict[str, Any]:
    """Return Organization ``index`` of the population."""
    rng = random.Random(f"org:{population.seed}:{index}")
    address = _address(rng)
    return {
        "resourceType": "Organization",
        "id": population.organization_id(index),
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"ORG{index:05d}"}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": f"{address['city']} {rng.choice(('Community', 'General', 'Family', 'Regional'))} Health "
        f"{index}",
        "telecom": [{"system": "phone", "value": _phone(rng), "use": "work"}],
        "address": [{**address, "use": "work"}],
    }


def practitioner(population: Population, index: int) -> dict[str, Any]:
    """Return Practitioner ``index`` of the population."""
    rng = random.Random(f"prac:{population.seed}:{index}")
    gender = rng.choice(("female", "male"))
    code, display = rng.choice(SPECIALTIES)
    return {
        "resourceType": "Practitioner",
        "id": population.practitioner_id(index),
        "identifier": [{"system": NPI_SYSTEM, "value": f"{1_000_000_000 + rng.randint(0, 899_999_999)}"}],
        "active": True,
        "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN[gender])], "prefix": ["Dr."]}],
        "telecom": [{"system": "email", "value": f"dr.{index}@clinic.example.org", "use": "work"}],
        "gender": gender,
        "qualification": [{"code": _concept(SNOMED, code, display)}],
    }


class _Record:
    """One patient's record, drawn from that patient's own random generator."""

    def __init__(self, population: Population, index: int):
        self.population = population
        self.index = index
        self.rng = random.Random(f"patient:{population.seed}:{index}")
        self.id = population.patient_id(index)
        self.practitioner = self.rng.randrange(population.practitioners)
        self.organization = self.practitioner % population.organizations
        self.gender = self.rng.choice(("female", "male"))
        age_days = self.rng.randint(2 * 365, 92 * 365)
        self.birth = REFERENCE_DAY - timedelta(days=age_days)
        self.chronic = [c for c in CONDITIONS if c[2] and self.rng.random() < 0.18]
        self.name = (self.rng.choice(FAMILY), self.rng.choice(GIVEN[self.gender]))

    def patient(self) -> dict[str, Any]:
        rng = self.rng
        family, given = self.name
        marital, marital_display = rng.choice(MARITAL_CODES)
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.id,
            "identifier": [
                {
                    "use": "usual",
                    "type": _concept(
                        "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"
                    ),
                    "system": MRN_SYSTEM,
                    "value": f"MRN{self.population.seed:03d}{self.index:08d}",
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given, rng.choice(GIVEN[self.gender])]}],
            "telecom": [{"system": "phone", "value": _phone(rng), "use": rng.choice(("home", "mobile"))}],
            "gender": self.gender,
            "birthDate": self.birth.isoformat(),
            "address": [_address(rng)],
            "maritalStatus": _concept(MARITAL, marital, marital_display),
            "communication": [
                {
                    "language": _concept("urn:ietf:bcp:47", "en-US", "English (United States)"),
                    "preferred": True,
                }
            ],
            "generalPractitioner": [_ref("Practitioner", self.population.practitioner_id(self.practitioner))],
            "managingOrganization": _ref("Organization", self.population.organization_id(self.organization)),
        }
        return resource

    def resources(self) -> Iterator[dict[str, Any]]:
        yield self.patient()
        visits = self.rng.choices((1, 2, 3, 4, 5, 6), weights=(10, 20, 25, 20, 15, 10))[0]
        days = sorted(self.rng.sample(range(1, 5 * 365), visits), reverse=True)
        for number, days_ago in enumerate(days):
            start = datetime.combine(REFERENCE_DAY - timedelta(days=days_ago), datetime.min.time(), UTC)
            start += timedelta(minutes=self.rng.randint(7 * 60, 18 * 60))
            yield from self._visit(number, start)

    def _visit(self, number: int, start: datetime) -> Iterator[dict[str, Any]]:
        rng = self.rng
        act, act_display, type_code, type_display, minutes = rng.choices(
            ENCOUNTER_TYPES, weights=(55, 30, 10, 5)
        )[0]
        end = start + timedelta(minutes=minutes)
        encounter_id = f"enc-{self.population.seed}-{self.index}-{number}"
        subject = _ref("Patient", self.id, f"{self.name[1]} {self.name[0]}")
        practitioner = _ref("Practitioner", self.population.practitioner_id(self.practitioner))
        acute = None
        if type_code != "185349003" and rng.random() < 0.7:
            acute = rng.choice([c for c in CONDITIONS if not c[2]])
        found = [c for c in self.chronic if rng.random() < 0.5] if number == 0 else []
        reasons = [acute] if acute else []
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "finished",
            "class": {"system": ACT_CODE, "code": act, "display": act_display},
            "type": [_concept(SNOMED, type_code, type_display)],
            "subject": subject,
            "participant": [{"individual": practitioner}],
            "period": {"start": _instant(start), "end": _instant(end)},
            "serviceProvider": _ref("Organization", self.population.organization_id(self.organization)),
        }
        if reasons:
            encounter["reasonCode"] = [_concept(SNOMED, c[0], c[1]) for c in reasons]
        yield encounter
        context = {"subject": _ref("Patient", self.id), "encounter": _ref("Encounter", encounter_id)}
        ids = _Ids(f"{self.population.seed}-{self.index}-{number}")
        yield from self._vitals(ids, context, start)
        if type_code == "185349003" or rng.random() < 0.3:
            yield from self._labs(ids, context, start + timedelta(minutes=20))
        for code, display, chronic in [*found, *reasons]:
            condition_id = ids.next("cond")
            yield {
                "resourceType": "Condition",
                "id": condition_id,
                "clinicalStatus": _concept(
                    CLINICAL, *(("active", "Active") if chronic else ("resolved", "Resolved"))
                ),
                "verificationStatus": _concept(VERIFICATION, "confirmed", "Confirmed"),
                "category": [_concept(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
                "code": _concept(SNOMED, code, display),
                **context,
                "onsetDateTime": _instant(start),
                "recordedDate": _instant(start + timedelta(minutes=10)),
                **({} if chronic else {"abatementDateTime": _instant(start + timedelta(days=14))}),
            }
            medication = MEDICATIONS.get(code)
            if medication is not None:
                yield {
                    "resourceType": "MedicationRequest",
                    "id": ids.next("medrx"),
                    "status": "active" if chronic else "completed",
                    "intent": "order",
                    "medicationCodeableConcept": _concept(RXNORM, medication[0], medication[1]),
                    **context,
                    "authoredOn": _instant(start + timedelta(minutes=25)),
                    "requester": practitioner,
                    "reasonReference": [_ref("Condition", condition_id)],
                    "dosageInstruction": [{"sequence": 1, "text": medication[2]}],
                }

    def _observation(
        self, oid: str, category: str, code: tuple[str, str], context: dict[str, Any], when: datetime
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {"resourceType": "Observation", "id": oid}
        if category == "vital-signs":
            resource["meta"] = {"profile": [VITALS_PROFILE]}
        resource.update(
            {
                "status": "final",
                "category": [_concept(OBS_CATEGORY, category, category.replace("-", " ").title())],
                "code": _concept(LOINC, code[0], code[1]),
                **context,
                "effectiveDateTime": _instant(when),
                "issued": _instant(when + timedelta(minutes=5)).replace("Z", ".000Z"),
            }
        )
        return resource

    def _vitals(self, ids: _Ids, context: dict[str, Any], when: datetime) -> Iterator[dict[str, Any]]:
        rng = self.rng
        for code, display, unit, low, high, decimals in VITALS:
            if rng.random() < 0.15:
                continue
            resource = self._observation(ids.next("obs"), "vital-signs", (code, display), context, when)
            resource["valueQuantity"] = _quantity(_number(rng, low, high, decimals), unit)
            yield resource
        panel = self._observation(
            ids.next("obs"),
            "vital-signs",
            ("85354-9", "Blood pressure panel with all children optional"),
            context,
            when,
        )
        systolic = rng.randint(98, 165)
        panel["component"] = [
            {
                "code": _concept(LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": _quantity(systolic, "mm[Hg]"),
            },
            {
                "code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": _quantity(systolic - rng.randint(30, 55), "mm[Hg]"),
            },
        ]
        yield panel

    def _labs(self, ids: _Ids, context: dict[str, Any], when: datetime) -> Iterator[dict[str, Any]]:
        rng = self.rng
        for code, display, unit, ref_low, ref_high, low, high, decimals in rng.sample(
            LABS, rng.randint(2, 5)
        ):
            value = _number(rng, low, high, decimals)
            resource = self._observation(ids.next("obs"), "laboratory", (code, display), context, when)
            flag = "H" if value > ref_high else "L" if value < ref_low else "N"
            resource["valueQuantity"] = _quantity(value, unit)
            resource["interpretation"] = [
                _concept(INTERPRETATION, flag, {"H": "High", "L": "Low", "N": "Normal"}[flag])
            ]
            resource["referenceRange"] = [
                {"low": _quantity(ref_low, unit), "high": _quantity(ref_high, unit)}
            ]
            yield resource


class _Ids:
    """Number the resources of one encounter: ``obs-{seed}-{patient}-{encounter}-{n}``."""

    def __init__(self, stem: str):
        self.stem = stem
        self.counts: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        return f"{prefix}-{self.stem}-{n}"


def generate(patients: int, *, seed: int = 0, first: int = 0) -> Iterator[dict[str, Any]]:
    """Yield the resources of ``patients`` synthetic patients (and their shared resources) one at a time.

    ``first`` > 0 yields only patients ``first``.. ``patients - 1`` and no shared resources, so that a
    data set can be generated in slices.
    """
    if patients < 0 or first < 0:
        raise ValueError("patients and first must not be negative")
    population = Population(seed, patients)
    if first == 0:
        for index in range(population.organizations):
            yield organization(population, index)
        for index in range(population.practitioners):
            yield practitioner(population, index)
    for index in range(first, patients):
        yield from _Record(population, index).resources()


def patient_resources(population: Population, index: int) -> Iterator[dict[str, Any]]:
    """Yield the record of one patient: the Patient, then each encounter with what it produced."""
    return _Record(population, index).resources()
