"""FHIR R4 output: one `Observation` per patient, written as NDJSON (one resource per line, the FHIR bulk-data
format), so the file is resumable like JSONL and an integration engine can forward each line as is.

Each Observation: status "final", category laboratory (anatomic pathology), code "STEPH prognostic risk score"
(local code system), subject by identifier (ids need not be FHIR resource ids), effective and
issued = scoring time, method = the model (id and sha256), valueQuantity = risk ("score"), and components for
survival probability at 1, 3 and 5 years (UCUM unit "1") plus the STEPH sources the patient borrowed from.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

CODE_SYSTEM = "urn:steph-service:codes"
MODEL_SYSTEM = "urn:steph-service:model"
PATIENT_SYSTEM = "urn:steph-service:patient-id"
PREDICTION_SYSTEM = "urn:steph-service:prediction"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
NOTE = "Risk from whole-slide image features; higher = worse prognosis. Research use only."
_NAMESPACE = uuid.UUID("6f1c1f4e-6b4a-4d53-9d3e-5b1f0c0a7e11")


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    if not math.isfinite(value):
        raise ValueError(f"FHIR quantities must be finite numbers, got {value}")
    return {"value": round(float(value), 6), "unit": unit, "system": UCUM, "code": code}


def _concept(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": CODE_SYSTEM, "code": code, "display": display}], "text": display}


def _components(row: dict[str, Any]) -> list[dict[str, Any]]:
    """S(1y), S(3y), S(5y) as probability quantities, plus the STEPH sources as a string when present."""
    components: list[dict[str, Any]] = []
    for years in (1, 3, 5):
        label = f"Predicted probability of survival at {years} year" + ("s" if years > 1 else "")
        components.append(
            {
                "code": _concept(f"survival-{years}y", label),
                "valueQuantity": _quantity(float(row[f"surv_{years}y"]), "probability", "1"),
            }
        )
    if row.get("top_sources"):
        label = "Source cancers the STEPH merge borrowed from (cancer:weight)"
        sources = str(row["top_sources"])
        components.append({"code": _concept("borrowed-sources", label), "valueString": sources})
    return components


def observation(row: dict[str, Any], *, patient_system: str = PATIENT_SYSTEM) -> dict[str, Any]:
    """Build the Observation for one scored row (patient_id, risk, surv_*y, model_id, …)."""
    pid, model_id, sha = str(row["patient_id"]), str(row["model_id"]), str(row.get("model_sha256") or "")
    model_text = f"STEPH model {model_id}" + (f" (sha256 {sha})" if sha else "")
    category = {"system": CATEGORY_SYSTEM, "code": "laboratory", "display": "Laboratory"}
    return {
        "resourceType": "Observation",
        "id": str(uuid.uuid5(_NAMESPACE, f"{model_id}\n{pid}")),
        "identifier": [{"system": PREDICTION_SYSTEM, "value": f"{model_id}/{pid}"}],
        "status": "final",
        "category": [{"coding": [category]}],
        "code": _concept("prognostic-risk", "STEPH prognostic risk score"),
        "subject": {"identifier": {"system": patient_system, "value": pid}, "display": pid},
        "effectiveDateTime": str(row["scored_at"]),
        "issued": str(row["scored_at"]),
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": model_id, "display": model_text}],
            "text": model_text,
        },
        "valueQuantity": _quantity(float(row["risk"]), "score", "{score}"),
        "component": _components(row),
        "note": [{"text": NOTE}],
    }


def row_key(resource: dict[str, Any]) -> tuple[str, str]:
    """(patient_id, model_id) of an Observation written by `observation` (used to resume)."""
    if resource.get("resourceType") != "Observation":
        raise ValueError(f"expected an Observation, got {resource.get('resourceType')!r}")
    pid = resource["subject"]["identifier"]["value"]
    model_id = resource["method"]["coding"][0]["code"]
    return str(pid), str(model_id)
