"""FHIR R4 Observation output: structure checked by a validator written from the R4 definition."""

from __future__ import annotations

import json

import pytest

from app.client.fhir import observation, row_key
from app.client.outputs import RowWriter, read_done
from tests.client.fhir_check import validate_observation


def _row(**kw):
    row = {
        "patient_id": "TCGA-AB-1234",
        "risk": -2.75,
        "surv_1y": 0.9,
        "surv_3y": 0.6,
        "surv_5y": 0.4,
        "model_id": "mdl_1",
        "model_sha256": "f" * 64,
        "top_sources": "BRCA:0.41;LUAD:0.22",
        "scored_at": "2026-11-27T00:10:00Z",
    }
    return {**row, **kw}


def test_observation_is_valid_and_carries_the_numbers():
    obs = observation(_row())
    assert validate_observation(obs) == []
    assert obs["valueQuantity"]["value"] == -2.75 and obs["subject"]["identifier"]["value"] == "TCGA-AB-1234"
    comps = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
    assert comps["survival-3y"]["valueQuantity"]["value"] == 0.6
    assert comps["borrowed-sources"]["valueString"] == "BRCA:0.41;LUAD:0.22"
    assert "f" * 64 in obs["method"]["text"]
    assert row_key(obs) == ("TCGA-AB-1234", "mdl_1")
    assert observation(_row())["id"] == obs["id"] != observation(_row(patient_id="other"))["id"]


def test_non_steph_models_have_no_sources_component_and_stay_valid():
    obs = observation(_row(top_sources=""))
    assert validate_observation(obs) == []
    assert len(obs["component"]) == 3


def test_the_validator_catches_broken_observations():
    obs = observation(_row())
    assert validate_observation({**obs, "status": "done"})
    assert validate_observation({k: v for k, v in obs.items() if k != "code"})
    assert validate_observation({**obs, "valueString": "x"})  # two value[x]
    assert validate_observation({**obs, "effectiveDateTime": "27/11/2026"})
    assert validate_observation({**obs, "subject": {}})


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        observation(_row(risk=float("nan")))


def test_fhir_ndjson_file_is_one_observation_per_line_and_resumable(tmp_path):
    out = tmp_path / "obs.ndjson"
    w = RowWriter(out, "fhir")
    w.write(_row())
    w.write(_row(patient_id="P2"))
    w.close()
    lines = out.read_text().splitlines()
    assert [validate_observation(json.loads(line)) for line in lines] == [[], []]
    assert read_done(out, "fhir") == {"TCGA-AB-1234": "mdl_1", "P2": "mdl_1"}
