"""`steph evaluate`: Harrell's C as before, plus Uno's C, time-dependent AUC and IBS with the train split as the
censoring reference."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.metrics import concordance_index_ipcw

from app.io.cohort import open_cohort

from .conftest import run_cli


def structured(patients):
    return np.array([(bool(p.event), float(p.time)) for p in patients], dtype=[("e", bool), ("t", float)])


def test_evaluate_reports_every_metric(tiny_world, capsys):
    res = run_cli(capsys, "evaluate", "--model", tiny_world.ckpt("BRCA"), "--cohort", tiny_world.cohort("BRCA"))
    assert res.code == 0, res.err
    doc = res.json()
    assert list(doc)[:7] == ["c_index", "pairs", "patients", "uno_c_index", "auc", "ibs", "times_days"]
    cohort = open_cohort(tiny_world.cohort("BRCA"))
    train, test = cohort.patients("train"), cohort.patients("test")
    assert doc["patients"] == len(test) and doc["reference_patients"] == len(train)
    times = doc["times_days"]
    assert len(times) >= 2 and times == sorted(times)
    assert len(doc["auc"]["per_time"]) == len(times) and 0.0 <= doc["auc"]["mean"] <= 1.0
    assert doc["ibs"] is not None and 0.0 <= doc["ibs"] and doc["skipped"] == {}
    assert 0.0 <= doc["uno_c_index"] <= 1.0
    if doc["uno_tau_days"] is None:  # the same Uno's C as scikit-survival with the train split as reference
        from app.domain.evaluation import risks
        from app.io.artifacts import load_any_model

        model = load_any_model(tiny_world.ckpt("BRCA")).model
        r = risks(model, cohort.samples("test", expected_dim=model.dims.in_dim)).numpy()
        assert doc["uno_c_index"] == pytest.approx(concordance_index_ipcw(structured(train), structured(test), r)[0])


def test_evaluate_times_flag_and_undefined_metrics(tiny_world, capsys):
    argv = ["evaluate", "--model", tiny_world.ckpt("BRCA"), "--cohort", tiny_world.cohort("BRCA")]
    doc = run_cli(capsys, *argv, "--times", "1").json()  # before every follow-up: skipped with the reason
    assert doc["auc"] is None and doc["ibs"] is None and doc["c_index"] is not None
    assert "within the test follow-up" in doc["skipped"]["auc"] and doc["times_days"] == [1.0]
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, *argv, "--times", "730,365")
    assert exc.value.code == 2 and "strictly increasing" in capsys.readouterr().err


def test_evaluate_help_names_the_censoring_reference(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "evaluate", "--help")
    out = capsys.readouterr().out
    assert "TRAIN split" in out and "--times" in out
