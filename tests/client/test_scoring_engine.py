"""The batch engine with an in-process predict function: resume, crash safety, errors file, abort rules."""

from __future__ import annotations

import csv
import json
import threading

import pytest

from app.client.inputs import PatientInput
from app.client.outputs import OutputError
from app.client.scoring import run_scoring
from app.client.transport import AuthError, ClientError
from app.client.types import Prediction, SourceUse


@pytest.fixture
def patients(tmp_path):
    out = []
    for i in range(12):
        f = tmp_path / "bags" / f"P{i:02d}.h5"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
        out.append(PatientInput(f"P{i:02d}", (f,)))
    return out


def fake_predict(patient: PatientInput) -> Prediction:
    i = int(patient.patient_id[1:])
    return Prediction(
        patient_id=patient.patient_id,
        risk=-float(i),
        times_days=[0.0, 365.0, 1095.0],
        probabilities=[1.0, 0.5 + i / 100, 0.25],
        sources=[SourceUse("BRCA", 0.75, 0.2)],
    )


def _csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_scores_every_patient_once_with_many_workers(tmp_path, patients):
    out = tmp_path / "scores.csv"
    s = run_scoring(
        patients=patients,
        predict=fake_predict,
        output=out,
        fmt="csv",
        model_id="m1",
        model_sha256="abc",
        workers=4,
        progress=False,
    )
    rows = _csv(out)
    assert (s.scored, s.skipped, s.failed, s.aborted) == (12, 0, 0, None)
    assert sorted(r["patient_id"] for r in rows) == [p.patient_id for p in patients]
    r7 = next(r for r in rows if r["patient_id"] == "P07")
    assert float(r7["risk"]) == -7.0 and float(r7["surv_1y"]) == pytest.approx(0.57) and float(r7["surv_3y"]) == 0.25
    assert r7["model_sha256"] == "abc" and r7["top_sources"] == "BRCA:0.75" and r7["scored_at"].endswith("Z")
    again = run_scoring(
        patients=patients,
        predict=fake_predict,
        output=out,
        fmt="csv",
        model_id="m1",
        workers=4,
        progress=False,
    )
    assert (again.scored, again.skipped) == (0, 12) and len(_csv(out)) == 12


def test_crash_mid_run_then_resume_gives_each_patient_exactly_once(tmp_path, patients):
    out = tmp_path / "scores.jsonl"
    calls, lock = [0], threading.Lock()

    def crashing(patient):
        with lock:
            calls[0] += 1
            if calls[0] > 5:
                raise RuntimeError("power cut")
        return fake_predict(patient)

    with pytest.raises(RuntimeError, match="power cut"):
        run_scoring(
            patients=patients,
            predict=crashing,
            output=out,
            fmt="jsonl",
            model_id="m1",
            workers=1,
            progress=False,
        )
    partial = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(partial) <= 5
    with out.open("a") as fh:
        fh.write('{"patient_id": "P1')  # and a torn last line, as from a kill -9
    s = run_scoring(
        patients=patients,
        predict=fake_predict,
        output=out,
        fmt="jsonl",
        model_id="m1",
        workers=3,
        progress=False,
    )
    ids = [json.loads(line)["patient_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [p.patient_id for p in patients] and len(ids) == len(set(ids))
    assert s.skipped == len(partial) and s.scored == 12 - len(partial)


def test_input_errors_go_to_the_errors_file_and_the_run_goes_on(tmp_path, patients):
    out = tmp_path / "scores.csv"

    def picky(patient):
        if patient.patient_id == "P03":
            raise ClientError(422, "bag P03.h5 has D=8 features but the base expects D=16")
        return fake_predict(patient)

    missing = PatientInput("P99", (tmp_path / "gone.h5",))
    s = run_scoring(
        patients=[*patients, missing],
        predict=picky,
        output=out,
        fmt="csv",
        model_id="m1",
        workers=2,
        progress=False,
    )
    assert (s.scored, s.failed) == (12 - 1, 2)
    errors = {r["patient_id"]: r for r in _csv(tmp_path / "scores.errors.csv")}
    assert errors["P03"]["status"] == "422" and "D=8" in errors["P03"]["message"]
    assert errors["P03"]["files"].endswith("P03.h5")
    assert errors["P99"]["status"] == "0" and "gone.h5" in errors["P99"]["message"]
    assert "P03" not in {r["patient_id"] for r in _csv(out)}


def test_auth_error_aborts_and_other_models_output_is_refused(tmp_path, patients):
    out = tmp_path / "scores.csv"

    def revoked(patient):
        raise AuthError(401, "invalid API key")

    s = run_scoring(patients=patients, predict=revoked, output=out, fmt="csv", model_id="m1", workers=2, progress=False)
    assert s.aborted == "HTTP 401: invalid API key" and s.abort_status == 401 and s.scored == 0
    assert not (tmp_path / "scores.errors.csv").exists()
    run_scoring(patients=patients[:2], predict=fake_predict, output=out, fmt="csv", model_id="m1", progress=False)
    with pytest.raises(OutputError, match="model"):
        run_scoring(patients=patients, predict=fake_predict, output=out, fmt="csv", model_id="m2", progress=False)


def test_a_500_is_one_patients_error_but_a_persistent_503_stops_the_run(tmp_path, patients):
    def flaky(patient):
        if patient.patient_id == "P01":
            raise ClientError(500, "internal server error")
        if patient.patient_id >= "P04":
            raise ClientError(503, "service unavailable")
        return fake_predict(patient)

    out = tmp_path / "scores.csv"
    s = run_scoring(patients=patients, predict=flaky, output=out, fmt="csv", model_id="m1", workers=1,
                    progress=False)  # fmt: skip
    assert s.aborted == "HTTP 503: service unavailable" and s.abort_status == 503
    assert sorted(r["patient_id"] for r in _csv(out)) == ["P00", "P02", "P03"]
    assert [r["patient_id"] for r in _csv(tmp_path / "scores.errors.csv")] == ["P01"]
    assert s.scored + s.failed + s.skipped < s.total  # the rest is left for the next run
