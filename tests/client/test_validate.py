"""Offline validation: Harrell's C of a scores file against local outcomes, equal to the engine's (= sksurv)."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from app.client.cli import main
from app.client.validate import (
    ValidationInputError,
    by_patient,
    read_outcomes,
    read_scores,
    validate,
)
from app.domain.metrics import harrell_c_index


def _data(n: int, seed: int) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:
    rng = random.Random(seed)
    scores = {f"P{i}": float(rng.choice([0.1, 0.2, 0.3, rng.random()])) for i in range(n)}  # ties in risk
    outcomes = {
        f"P{i}": (float(rng.choice([100, 200, 300, rng.randint(1, 999)])), rng.randint(0, 1)) for i in range(n)
    }  # fmt: skip  ties in time, events and censorings at the same time
    return scores, outcomes


@pytest.mark.parametrize("seed", range(8))
def test_c_index_equals_the_engine_on_random_data_with_ties(seed):
    scores, outcomes = _data(40, seed)
    if not any(e for _, e in outcomes.values()):
        pytest.skip("no event drawn")
    res = validate(scores, outcomes, n_boot=0)
    ids = list(scores)
    ref = harrell_c_index(torch.tensor([outcomes[p][0] for p in ids]), torch.tensor([outcomes[p][1] for p in ids]),
                          torch.tensor([scores[p] for p in ids], dtype=torch.float64))  # fmt: skip
    assert res.c_index == pytest.approx(ref.c_index, abs=1e-12) and res.pairs == ref.pairs
    assert res.ci_low is None and res.n_boot == 0


def test_bootstrap_interval_is_deterministic_and_brackets_the_estimate():
    scores, outcomes = _data(60, 1)
    a, b = validate(scores, outcomes, n_boot=150, seed=3), validate(scores, outcomes, n_boot=150, seed=3)
    assert a == b and a.n_boot == 150 and a.ci_low < a.c_index < a.ci_high
    assert validate(scores, outcomes, n_boot=150, seed=4).ci_low != a.ci_low
    shuffled = dict(reversed(list(scores.items())))  # the same patients in another row order (--workers 2)
    assert validate(shuffled, outcomes, n_boot=150, seed=3) == a


def test_perfect_and_reversed_risks():
    outcomes = {f"P{i}": (float(100 * (i + 1)), 1) for i in range(6)}
    assert validate({f"P{i}": -i for i in range(6)}, outcomes, n_boot=0).c_index == 1.0
    assert validate({f"P{i}": i for i in range(6)}, outcomes, n_boot=0).c_index == 0.0
    assert validate({f"P{i}": 1.0 for i in range(6)}, outcomes, n_boot=0).c_index == 0.5


def test_files_csv_jsonl_fhir_and_slide_level_scores(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,pathology_id,t,e\nA,A-1,100,1\nA,A-2,100,1\nB,B-1,300,0\nC,C-1,200,1\n")
    outcomes, slides = read_outcomes(labels)
    assert outcomes == {"A": (100.0, 1), "B": (300.0, 0), "C": (200.0, 1)} and slides["A-2"] == "A"
    csv_scores = tmp_path / "s.csv"
    csv_scores.write_text("patient_id,risk,model_id\nA-1,2.0,m1\nA-2,4.0,m1\nB-1,1.0,m1\nC-1,2.5,m1\nZ-9,0,m1\n")
    scores, models = read_scores(csv_scores)
    patients, how = by_patient(scores, outcomes, slides)
    assert patients == {"A": 3.0, "B": 1.0, "C": 2.5} and how.startswith("pathology_id") and models == ["m1"]
    res = validate(patients, outcomes, n_boot=0)
    assert (res.c_index, res.pairs, res.events) == (1.0, 3, 2)  # A>C>B; pairs (A,C), (A,B), (C,B)
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("\n".join(json.dumps({"patient_id": p, "risk": r}) for p, r in patients.items()) + "\n")
    assert read_scores(jsonl)[0] == patients
    fhir = tmp_path / "s.ndjson"
    fhir.write_text(json.dumps({"resourceType": "Observation", "subject": {"identifier": {"value": "A"}},
                                "valueQuantity": {"value": 3.0}}) + "\n")  # fmt: skip
    assert read_scores(fhir)[0] == {"A": 3.0}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("patient_id,t\nA,1\n", "missing column(s) e"),
        ("patient_id,t,e\nA,-5,1\n", "must be > 0"),
        ("patient_id,t,e\nA,10,yes\n", "use 1 for an observed event"),
        ("patient_id,t,e\nA,abc,1\n", "not a number"),
    ],
)
def test_bad_labels_name_the_line_and_the_fix(tmp_path, labels, message):
    path = tmp_path / "l.csv"
    path.write_text(labels)
    with pytest.raises(ValidationInputError, match=re.escape(message)):
        read_outcomes(path)


def test_no_overlap_and_no_pairs_are_clear_errors():
    with pytest.raises(ValidationInputError, match="patient ids match"):
        validate({"A": 1.0}, {"B": (1.0, 1)})
    with pytest.raises(ValidationInputError, match="no comparable pairs"):
        validate({"A": 1.0, "B": 2.0}, {"A": (10.0, 0), "B": (20.0, 0)})


def test_cli_runs_offline_without_url_or_key(tmp_path, capsys):
    (tmp_path / "l.csv").write_text("patient_id,t,e\nA,100,1\nB,300,0\nC,200,1\n")
    (tmp_path / "s.csv").write_text("patient_id,risk\nA,3\nB,1\nC,2\n")
    code = main(["validate", "--scores", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                 "--bootstrap", "20"], env={})  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["c_index"] == 1.0 and out["patients"] == 3 and out["matched_by"] == "patient_id"
    assert main(["validate", "--scores", str(tmp_path / "nope.csv"), "--labels", str(tmp_path / "l.csv")],
                env={}) == 2  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_kaplan_meier_equals_scikit_survival(seed):
    from sksurv.nonparametric import kaplan_meier_estimator

    from app.client.validate import kaplan_meier_at

    rng = random.Random(seed)
    time = [float(rng.choice([100, 200, 300, rng.randint(1, 999)])) for _ in range(50)]
    event = [rng.randint(0, 1) for _ in range(50)]
    grid, surv = kaplan_meier_estimator([bool(e) for e in event], time)
    for t in (50.0, 100.0, 250.0, 300.0, 700.0):
        expected = float(surv[grid <= t][-1]) if (grid <= t).any() else 1.0
        assert kaplan_meier_at(time, event, t) == pytest.approx(expected, abs=1e-12)


def test_calibration_compares_mean_prediction_with_kaplan_meier(tmp_path):
    from app.client.validate import calibration, read_survival

    # 4 patients: deaths at 200 and 500 days, censored at 400 and 1500 → KM S(365) = 3/4, S(3·365) = 3/4 · 1/2
    outcomes = {"A": (200.0, 1), "B": (400.0, 0), "C": (500.0, 1), "D": (1500.0, 0)}
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(json.dumps({"patient_id": p, "risk": 0, "surv_1y": s1, "surv_3y": 0.5, "surv_5y": 0.2})
                              + "\n" for p, s1 in zip("ABCD", (0.5, 0.7, 0.8, 1.0), strict=True)))  # fmt: skip
    rows = calibration(read_survival(scores), outcomes)
    assert [r["years"] for r in rows] == [1, 3, 5]
    assert rows[0]["predicted_mean"] == pytest.approx(0.75) and rows[0]["observed_km"] == pytest.approx(0.75)
    assert rows[1]["observed_km"] == pytest.approx(0.375) and rows[1]["difference"] == pytest.approx(0.125)
    assert rows[2]["observed_km"] is None and rows[2]["difference"] is None  # 5 years > the longest follow-up
