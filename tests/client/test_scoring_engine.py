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


def const_predict(patient: PatientInput) -> Prediction:
    return Prediction(patient_id=patient.patient_id, risk=-1.25, times_days=[0.0, 365.0], probabilities=[1.0, 0.5])


def _bag(folder, name, data=b"x"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _score(out, patients, predict=const_predict, fmt=None, **kw):
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl"}.get(out.suffix, "fhir")
    return run_scoring(patients=patients, predict=predict, output=out, fmt=fmt, model_id="m1", progress=False, **kw)


def _ids(out):
    if out.suffix == ".csv":
        return [r["patient_id"] for r in _csv(out)]
    from app.client import fhir

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return [r["patient_id"] if "patient_id" in r else fhir.row_key(r)[0] for r in rows]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".fhir"])
def test_an_id_with_a_control_character_is_a_failure_and_reruns_never_duplicate(tmp_path, suffix):
    bags = tmp_path / "bags"
    weird = ["pat\nient", "tab\there", "cr\rid", "esc\x1bid"]
    patients = [PatientInput(pid, (_bag(bags, f"{i}.h5"),)) for i, pid in enumerate(["ok", *weird])]
    out = tmp_path / f"s{suffix}"
    sent = []
    for _ in range(3):
        s = _score(out, patients, predict=lambda p: sent.append(p.patient_id) or const_predict(p))
        assert (s.scored + s.skipped, s.failed) == (1, 4)
    assert _ids(out) == ["ok"] and sent == ["ok"]  # never sent, never written, never duplicated
    errors = _csv(tmp_path / f"s{suffix.replace('.csv', '')}.errors.csv")
    assert [e["patient_id"] for e in errors] == ["pat\\nient", "tab\\there", "cr\\rid", "esc\\x1bid"]
    assert errors[0]["message"] == (
        "patient id 'pat\\nient' contains a control character (newline); rename the file or fix the manifest"
    )
    assert all(e["status"] == "0" and "rename the file or fix the manifest" in e["message"] for e in errors)


def test_errors_file_lists_exactly_the_latest_runs_failures(tmp_path):
    bags = tmp_path / "bags"
    patients = [PatientInput(f"P{i}", (_bag(bags, f"P{i}.h5"),)) for i in range(4)]
    gone = PatientInput("P9", (bags / "P9.h5",))
    out, errors = tmp_path / "s.csv", tmp_path / "s.errors.csv"
    broken = {"P1", "P2"}

    def picky(patient):
        if patient.patient_id in broken:
            raise ClientError(422, f"bag {patient.patient_id}.h5 has D=8")
        return const_predict(patient)

    assert _score(out, [*patients, gone], picky).failed == 3
    assert sorted(e["patient_id"] for e in _csv(errors)) == ["P1", "P2", "P9"]
    broken.discard("P1")  # P1's bag is fixed
    for scored in (1, 0):  # reruns retry P2 and P9 and list them once
        s = _score(out, [*patients, gone], picky)
        assert (s.scored, s.failed, s.errors_listed) == (scored, 2, 2)
        assert sorted(e["patient_id"] for e in _csv(errors)) == ["P2", "P9"]
    assert _score(out, patients[:2], picky).failed == 0  # P2 and P9 left the input: nothing to list
    assert not errors.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bags", "s.csv"]  # no temp or lock files left behind


def test_outputs_of_other_formats_sharing_a_stem_keep_their_own_errors_file(tmp_path):
    ok = PatientInput("P0", (_bag(tmp_path, "P0.h5"),))
    _score(tmp_path / "s.csv", [ok, PatientInput("A", (tmp_path / "A.h5",))])
    _score(tmp_path / "s.jsonl", [ok, PatientInput("B", (tmp_path / "B.h5",))])
    _score(tmp_path / "s.fhir", [ok, PatientInput("C", (tmp_path / "C.h5",))], fmt="fhir")
    assert [e["patient_id"] for e in _csv(tmp_path / "s.errors.csv")] == ["A"]
    assert [e["patient_id"] for e in _csv(tmp_path / "s.jsonl.errors.csv")] == ["B"]
    assert [e["patient_id"] for e in _csv(tmp_path / "s.fhir.errors.csv")] == ["C"]


def test_a_run_that_stops_early_keeps_the_failures_it_did_not_retry(tmp_path, patients):
    out, errors = tmp_path / "scores.csv", tmp_path / "scores.errors.csv"

    def first(patient):
        if patient.patient_id in ("P01", "P08"):
            raise ClientError(422, "bad bag")
        return fake_predict(patient)

    assert _score(out, patients, first, workers=1).failed == 2

    def down_after_p01(patient):
        if patient.patient_id > "P01":
            raise ClientError(503, "service unavailable")
        return fake_predict(patient)  # P01 was fixed meanwhile

    s = _score(out, patients, down_after_p01, workers=1)
    assert s.aborted and s.scored == 1 and s.failed == 0
    assert [(e["patient_id"], e["message"]) for e in _csv(errors)] == [("P08", "bad bag")]  # P08 was not retried


def test_ids_that_look_like_formulas_resume_without_rescoring(tmp_path):
    from app.client.validate import read_scores

    ids = ["=cmd|' /C calc'!A0", "+41", "-7", "@SUM(A1)", "'quoted", "plain"]
    patients = [PatientInput(pid, (_bag(tmp_path / "bags", f"{i}.h5"),)) for i, pid in enumerate(ids)]
    out = tmp_path / "s.csv"
    assert _score(out, patients, workers=1).scored == 6
    raw = [line.split(",")[:2] for line in out.read_text().splitlines()[1:]]
    assert [r[0] for r in raw] == ["'=cmd|' /C calc'!A0", "'+41", "'-7", "'@SUM(A1)", "''quoted", "plain"]
    assert {r[1] for r in raw} == {"-1.25"}  # the (negative) risk is a number: never quoted
    again = _score(out, patients)
    assert (again.scored, again.skipped) == (0, 6) and len(_csv(out)) == 6
    assert sorted(read_scores(out)[0]) == sorted(ids)  # `validate` reads the ids back too


def test_empty_and_broken_bags_are_failures_without_a_request(tmp_path):
    bags = tmp_path / "bags"
    empty = _bag(bags, "E.h5", b"")
    (bags / "C.h5").symlink_to("/nonexistent/C.h5")
    sent = []
    s = _score(tmp_path / "s.csv", [PatientInput("E", (empty,)), PatientInput("C", (bags / "C.h5",))],
               predict=lambda p: sent.append(p) or const_predict(p))  # fmt: skip
    assert s.failed == 2 and sent == []
    errors = {e["patient_id"]: e["message"] for e in _csv(tmp_path / "s.errors.csv")}
    assert errors["E"] == "E.h5: the file is empty (0 bytes)"
    assert errors["C"].startswith("C.h5 is a broken symbolic link")


def test_a_wrong_server_root_stops_the_run_once_instead_of_failing_every_patient(tmp_path, patients):
    """--server-paths with a --server-root that is not the server's data root: every bag is 'not found' — a setting,
    so the run stops after 5 such answers (exit 2) instead of recording all 12 patients as failed one by one."""
    from app.client.commands import EXIT_USAGE
    from app.client.scoring import ROOT_MISS

    def not_there(patient):
        raise ClientError(422, f"{patient.patient_id}.h5: {ROOT_MISS}")

    out = tmp_path / "scores.csv"
    s = run_scoring(patients=patients, predict=not_there, output=out, fmt="csv", model_id="m1", workers=1,
                    progress=False)  # fmt: skip
    assert s.abort_status == 400 and "--server-root" in s.aborted and s.failed == 5
    from app.client.commands import exit_code

    assert exit_code(s) == EXIT_USAGE

    def some_missing(patient):  # one bag really missing after others were found: that patient's error only
        if patient.patient_id in ("P03", "P04", "P05", "P06", "P07", "P08"):
            raise ClientError(422, f"{patient.patient_id}.h5: {ROOT_MISS}")
        return fake_predict(patient)

    s = run_scoring(patients=patients, predict=some_missing, output=tmp_path / "b.csv", fmt="csv", model_id="m1",
                    workers=1, progress=False)  # fmt: skip
    assert s.aborted is None and s.failed == 6 and s.scored == 6
