"""A small structural validator for FHIR R4 Observation resources (the subset of the spec steph-client emits).

Checks cardinalities, data-type shapes and the value[x] choice rule from the R4 Observation definition
(https://hl7.org/fhir/R4/observation.html); returns a list of problems (empty = valid).
"""

from __future__ import annotations

import math
import re
from typing import Any

STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
ELEMENTS = {
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "basedOn",
    "partOf",
    "status",
    "category",
    "code",
    "subject",
    "focus",
    "encounter",
    "effectiveDateTime",
    "effectivePeriod",
    "effectiveTiming",
    "effectiveInstant",
    "issued",
    "performer",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
    "dataAbsentReason",
    "interpretation",
    "note",
    "bodySite",
    "method",
    "specimen",
    "device",
    "referenceRange",
    "hasMember",
    "derivedFrom",
    "component",
}
VALUE_KEYS = {k for k in ELEMENTS if k.startswith("value")}
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DATETIME_RE = re.compile(
    r"^([0-9]{4})(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
    r"(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$"
)
INSTANT_RE = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
    r"(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$"
)
URI_RE = re.compile(r"^\S+$")


def _no_empty(value: Any, path: str, out: list[str]) -> None:
    """FHIR JSON forbids empty strings, arrays and objects anywhere."""
    if value in ("", [], {}) or value is None:
        out.append(f"{path}: empty or null value")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]", out)


def _coding(c: Any, path: str, out: list[str]) -> None:
    if not isinstance(c, dict):
        out.append(f"{path}: Coding must be an object")
        return
    if "system" in c and not (isinstance(c["system"], str) and URI_RE.match(c["system"])):
        out.append(f"{path}.system: not a uri")
    if "code" in c and not (isinstance(c["code"], str) and c["code"] == c["code"].strip()):
        out.append(f"{path}.code: not a code")
    if not ({"code", "display"} & c.keys()):
        out.append(f"{path}: Coding needs a code or display")


def _concept(cc: Any, path: str, out: list[str]) -> None:
    if not isinstance(cc, dict) or not ({"coding", "text"} & cc.keys()):
        out.append(f"{path}: CodeableConcept needs coding or text")
        return
    for i, c in enumerate(cc.get("coding", [])):
        _coding(c, f"{path}.coding[{i}]", out)


def _quantity(q: Any, path: str, out: list[str]) -> None:
    if not isinstance(q, dict):
        out.append(f"{path}: Quantity must be an object")
        return
    v = q.get("value")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        out.append(f"{path}.value: not a finite decimal")
    if "code" in q and "system" not in q:
        out.append(f"{path}: a code needs a system")


def _value(obj: dict, path: str, out: list[str], *, required: bool) -> None:
    values = [k for k in obj if k.startswith("value")]
    if len(values) > 1:
        out.append(f"{path}: more than one value[x]: {values}")
    if required and not values:
        out.append(f"{path}: value[x] missing")
    for k in values:
        if k not in VALUE_KEYS:
            out.append(f"{path}.{k}: not a value[x] type of Observation")
        elif k == "valueQuantity":
            _quantity(obj[k], f"{path}.{k}", out)
        elif k == "valueString" and not isinstance(obj[k], str):
            out.append(f"{path}.valueString: not a string")


def _subject(ref: Any, out: list[str]) -> None:
    if not isinstance(ref, dict) or not ({"reference", "identifier", "display"} & ref.keys()):
        out.append("subject: Reference needs reference, identifier or display")
        return
    if "identifier" in ref and not isinstance(ref["identifier"].get("value"), str):
        out.append("subject.identifier.value: missing")


def validate_observation(obs: Any) -> list[str]:
    """Problems of `obs` against the R4 Observation structure (resourceType, status, code, subject, value)."""
    out: list[str] = []
    if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
        return ["resourceType must be 'Observation'"]
    _no_empty(obs, "Observation", out)
    out += [f"unknown element {k}" for k in obs.keys() - ELEMENTS]
    if "id" in obs and not ID_RE.match(str(obs["id"])):
        out.append("id: not a FHIR id")
    if obs.get("status") not in STATUS:
        out.append(f"status: {obs.get('status')!r} not in the required value set")
    if "code" not in obs:
        out.append("code: required (1..1)")
    else:
        _concept(obs["code"], "code", out)
    for i, cat in enumerate(obs.get("category", [])):
        _concept(cat, f"category[{i}]", out)
    if "method" in obs:
        _concept(obs["method"], "method", out)
    if "subject" in obs:
        _subject(obs["subject"], out)
    if "effectiveDateTime" in obs and not DATETIME_RE.match(str(obs["effectiveDateTime"])):
        out.append("effectiveDateTime: not a FHIR dateTime")
    if "issued" in obs and not INSTANT_RE.match(str(obs["issued"])):
        out.append("issued: not a FHIR instant")
    _value(obs, "Observation", out, required=False)
    for i, comp in enumerate(obs.get("component", [])):
        _concept(comp.get("code"), f"component[{i}].code", out)
        _value(comp, f"component[{i}]", out, required=True)
    if not any(k.startswith("value") for k in obs) and not obs.get("component") and "dataAbsentReason" not in obs:
        out.append("obs-6/obs-7: needs value[x], component or dataAbsentReason")
    return out
