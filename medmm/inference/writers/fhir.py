"""FHIR R4 output: a ``collection`` Bundle with one DiagnosticReport and one Observation per finding.

Plain dicts following the R4 resource structure (no FHIR library is a dependency). No PHI: the
resources carry no ``subject``, dates or identifiers from the input; the consumer links them to
the patient. Finding codes come from the ontology (SNOMED CT, RadLex) or medmm's local system.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from medmm.io.writers import atomic_write_text

# ontology Code.system -> FHIR code system URI
SYSTEMS = {
    "SNOMED CT": "http://snomed.info/sct",
    "RadLex": "http://radlex.org",
    "DICOM": "http://dicom.nema.org/resources/ontology/DCM",
}
LOCAL_SYSTEM = "urn:medmm:finding"
LOINC = "http://loinc.org"


def coding_list(codes: list[dict[str, str]], finding: str) -> list[dict[str, str]]:
    """FHIR codings: exact terminology matches first, then the local code (always present)."""
    out = [
        {"system": SYSTEMS[c["system"]], "code": str(c["code"]), "display": finding}
        for c in codes or []
        if c.get("match") == "exact" and c.get("system") in SYSTEMS
    ]
    out.append({"system": LOCAL_SYSTEM, "code": finding.lower().replace(" ", "-"), "display": finding})
    return out


def build_bundle(result: Any) -> dict[str, Any]:
    """The Bundle as a dict (deterministic ids derived from the result, no wall-clock time)."""
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"medmm:{result.model.get('id')}:{result.to_json()}")
    observations = []
    for i, row in enumerate(result.findings):
        obs_id = str(uuid.uuid5(namespace, f"obs-{i}"))
        observations.append(
            {
                "fullUrl": f"urn:uuid:{obs_id}",
                "resource": {
                    "resourceType": "Observation",
                    "id": obs_id,
                    "status": "preliminary",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "imaging",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": coding_list(row.get("codes") or {}, row["finding"]), "text": row["finding"]},
                    "valueBoolean": bool(row["positive"]),
                    "component": [
                        {
                            "code": {"coding": [{"system": LOCAL_SYSTEM, "code": "probability"}], "text": "probability"},
                            "valueQuantity": {"value": row["probability"], "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"},
                        },
                        {
                            "code": {"coding": [{"system": LOCAL_SYSTEM, "code": "threshold"}], "text": "decision threshold"},
                            "valueQuantity": {"value": row["threshold"], "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"},
                        },
                    ],
                    "method": {"text": f"medmm model {result.model.get('id')}"},
                },
            }
        )
    report_id = str(uuid.uuid5(namespace, "report"))
    report = {
        "fullUrl": f"urn:uuid:{report_id}",
        "resource": {
            "resourceType": "DiagnosticReport",
            "id": report_id,
            "status": "preliminary",
            "category": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}
            ],
            "code": {"coding": [{"system": LOINC, "code": "24627-2", "display": "Chest CT"}], "text": "Chest CT"},
            "result": [{"reference": o["fullUrl"]} for o in observations],
            "conclusion": result.report,
        },
    }
    from medmm.inference.writers.notes import fhir_extensions  # input warnings (plausibility gate)

    if extensions := fhir_extensions(result):
        report["resource"]["extension"] = extensions
    return {"resourceType": "Bundle", "type": "collection", "entry": [report, *observations]}


def write_fhir(result: Any, path: str | Path) -> Path:
    """Write :func:`build_bundle` as JSON atomically."""
    return atomic_write_text(path, json.dumps(build_bundle(result), indent=2))
