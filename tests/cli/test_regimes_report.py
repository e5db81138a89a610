"""bench.regimes_report: auto's derived rows — the default (relevance, then STEPH) and the previous inner-CV rule —
map `retrain` to the budget-matched row; the holdout table and the λ line compute paired differences."""

from __future__ import annotations

import json

import pytest

import bench.regimes_report as report
from bench.regimes_report import AUTO, AUTO_ALL, AUTO_CV, BUDGET, derive, holdout_table, lambda_line

CKPT = "target's own model (checkpoint)"


@pytest.fixture(autouse=True)
def _no_stored_relevance(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "RELEVANCE_ROWS", tmp_path / "none.jsonl")  # only the rows each test writes


def _rows(seed: int, world: str, cv: dict, tests: dict, z: float = 0.0) -> list[dict]:
    common = {"regime": "paper", "world": world, "seed": seed, "target": "BLCA"}
    out = [{**common, "method": m, "c_index": c, **({"lam": 0.5 + seed / 10} if m == "steph" else {})}
           for m, c in tests.items()]  # fmt: skip
    out.append({**common, "method": "inner-cv", "c_index": None, "cv": cv})
    out.append({**common, "method": "relevance", "c_index": None, "c": 0.5 + z / 20, "se": 0.05, "z": z})
    return out


def _cv(steph: float, lam0: float, average: float) -> dict:
    return {
        "target's own model": {"c": 0.60, "difference": 0.0},
        "steph": {"c": 0.60 + steph, "difference": steph, "se": 0.02},
        "steph λ = 0": {"c": 0.60 + lam0, "difference": lam0, "se": 0.02},
        "average + retrained head": {"c": 0.60 + average, "difference": average, "se": 0.02},
        "target encoder + retrained head": {"c": 0.5, "difference": -0.1, "se": 0.02},
        "θ₀ encoder + retrained head": {"c": 0.5, "difference": -0.1, "se": 0.02},
    }


TESTS = {CKPT: 0.55, BUDGET: 0.60, "steph": 0.65, "steph λ = 0": 0.58, "average": 0.50,
         "target encoder + retrained head": 0.5, "θ₀ encoder + retrained head": 0.5}  # fmt: skip


def test_auto_rows_follow_the_rule_and_retrain_is_the_budget_matched_model():
    rows = [
        *_rows(0, "shared", _cv(0.02, 0.01, -0.01), TESTS),  # steph wins for both rules
        *_rows(1, "shared", _cv(-0.01, -0.02, 0.05), TESTS),  # only average beats the refit
        *_rows(0, "control", _cv(-0.01, -0.02, -0.03), TESTS),  # nothing does: retrain
    ]
    got = {(r["seed"], r["world"], r["method"]): r["chosen"] for r in derive(rows) if "chosen" in r}
    assert got[(0, "shared", AUTO_CV)] == got[(0, "shared", AUTO_ALL)] == "steph"
    assert got[(1, "shared", AUTO_CV)] == BUDGET  # average was not a default candidate
    assert got[(1, "shared", AUTO_ALL)] == "average"
    assert got[(0, "control", AUTO_CV)] == got[(0, "control", AUTO_ALL)] == BUDGET  # never the checkpoint
    assert {got[k] for k in got if k[2] == AUTO} == {BUDGET}  # relevance z 0 < 1.645: no transfer


def test_the_default_auto_row_follows_the_relevance_pre_check():
    rows = [*_rows(0, "shared", _cv(-0.05, 0, 0), TESTS, z=1.7), *_rows(1, "shared", _cv(0.05, 0, 0), TESTS, z=1.6)]
    got = {(r["seed"], r["method"]): r for r in derive(rows) if "chosen" in r}
    assert got[(0, AUTO)]["chosen"] == "steph" and got[(0, AUTO)]["c_index"] == TESTS["steph"]  # CV disagrees
    assert got[(1, AUTO)]["chosen"] == BUDGET and got[(1, AUTO_CV)]["chosen"] == "steph"


def test_holdout_table_and_lambda_line(tmp_path):
    rows = [*_rows(0, "shared", _cv(0.02, 0.0, 0.0), TESTS, z=2.0)]
    rows += _rows(1, "shared", _cv(-0.01, -0.01, -0.01), TESTS)
    rows += [*_rows(0, "control", _cv(0.02, 0, 0), TESTS), *_rows(1, "control", _cv(0.02, 0, 0), TESTS)]
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (d / "meta.json").write_text(json.dumps({"regime": "paper", "wall_s": 1.0, "command": "x"}))
    table = holdout_table([d])
    shared = next(line for line in table.splitlines() if line.startswith("| paper | shared"))
    # steph +0.05 on both seeds; both auto rules pick steph (+0.05) on seed 0 and retrain (0) on seed 1
    assert "| 2 | +0.050 ± 0.000 (2/2) | +0.025 ± 0.025 (1/2) | +0.025 ± 0.025 (1/2) |" in shared
    line = lambda_line(rows)
    assert "shared 0.50 0.60" in line and "+0.000 ± 0.000 (n = 2)" in line
    assert lambda_line([]) == ""


@pytest.mark.parametrize("bad", [0.0, -0.001])
def test_a_candidate_must_beat_the_refit_strictly(bad):
    rows = _rows(0, "shared", _cv(bad, bad, bad), TESTS)
    chosen = {r["method"]: r["chosen"] for r in derive(rows) if "chosen" in r}
    assert chosen[AUTO_CV] == chosen[AUTO_ALL] == BUDGET
