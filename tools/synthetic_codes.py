"""Codes, names and places the synthetic data generator draws from (real LOINC, SNOMED CT, RxNorm codes)."""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.99999.1"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
VITALS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FAMILY = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kowalski Novak Schmidt Dubois Rossi"
)
GIVEN = {
    "female": _words(
        "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty "
        "Sandra Margaret Ashley Emily Donna Michelle Carol Amanda Melissa Deborah Laura Rebecca Sofia Aisha"
    ),
    "male": _words(
        "James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel "
        "Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Omar Luca Hiroshi"
    ),
}
CITIES = (
    ("Boston", "MA", "021"),
    ("Worcester", "MA", "016"),
    ("Springfield", "MA", "011"),
    ("Providence", "RI", "029"),
    ("Hartford", "CT", "061"),
    ("Portland", "ME", "041"),
    ("Manchester", "NH", "031"),
    ("Burlington", "VT", "054"),
)
STREETS = _words("Main Oak Maple Cedar Elm Washington Lake Hill Park Pine Church Mill Water School")
MARITAL_CODES = (("M", "Married"), ("S", "Never Married"), ("D", "Divorced"), ("W", "Widowed"))
SPECIALTIES = (
    ("394814009", "General practice"),
    ("419772000", "Family practice"),
    ("394579002", "Cardiology"),
    ("394583002", "Endocrinology"),
)
ENCOUNTER_TYPES = (
    ("AMB", "ambulatory", "185349003", "Encounter for check up (procedure)", 45),
    ("AMB", "ambulatory", "185345009", "Encounter for symptom (procedure)", 30),
    ("EMER", "emergency", "50849002", "Emergency room admission (procedure)", 180),
    ("IMP", "inpatient encounter", "32485007", "Hospital admission (procedure)", 4320),
)
# (SNOMED code, display, chronic)
CONDITIONS = (
    ("38341003", "Hypertensive disorder, systemic arterial (disorder)", True),
    ("44054006", "Diabetes mellitus type 2 (disorder)", True),
    ("55822004", "Hyperlipidemia (disorder)", True),
    ("195967001", "Asthma (disorder)", True),
    ("15777000", "Prediabetes (finding)", True),
    ("271737000", "Anemia (disorder)", True),
    ("444814009", "Viral sinusitis (disorder)", False),
    ("195662009", "Acute viral pharyngitis (disorder)", False),
    ("10509002", "Acute bronchitis (disorder)", False),
    ("233604007", "Pneumonia (disorder)", False),
)
# RxNorm code and display per condition code; conditions without a line get no prescription.
MEDICATIONS = {
    "38341003": ("314076", "lisinopril 10 MG Oral Tablet", "1 tablet once daily"),
    "44054006": ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", "1 daily"),
    "55822004": ("259255", "atorvastatin 80 MG Oral Tablet", "1 tablet at bedtime"),
    "195967001": ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "2 puffs as needed"),
    "195662009": ("313782", "acetaminophen 325 MG Oral Tablet", "2 tablets every 6 hours as needed"),
    "10509002": ("313782", "acetaminophen 325 MG Oral Tablet", "2 tablets every 6 hours as needed"),
    "233604007": ("308182", "amoxicillin 250 MG Oral Capsule", "1 capsule every 8 hours for 10 days"),
}
# (LOINC, display, UCUM unit, low, high, decimals)
VITALS = (
    ("8867-4", "Heart rate", "/min", 52, 110, 0),
    ("9279-1", "Respiratory rate", "/min", 11, 22, 0),
    ("8310-5", "Body temperature", "Cel", 36.1, 38.4, 1),
    ("29463-7", "Body weight", "kg", 48, 125, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 18, 38, 1),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 91, 100, 0),
)
# (LOINC, display, UCUM unit, reference low, reference high, sampled low, sampled high, decimals)
LABS = (
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 99, 65, 210, 0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 4.2, 9.5, 1),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 200, 140, 290, 0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 9.5, 17.8, 1),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 0.5, 2.1, 2),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 131, 149, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 3.2, 5.6, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11.0, 3.1, 15.2, 1),
)
