"""The promotion gate: folds, gate settings, within-fold C-index differences, decisions, run_merge's gate."""

from __future__ import annotations

import pytest
import torch

from app.domain.merging.base import MergeInputs, MergeParamsError, StaticModel
from app.domain.mil import new_abmil
from app.domain.promotion import (
    TARGET,
    Candidate,
    CrossValidation,
    GateConfig,
    c_index,
    cross_validate,
    decide,
    kfold_indices,
    paired_estimate,
    split_gate,
)
from app.domain.training import TrainConfig

from .conftest import DIMS, EDGES, learnable_samples, perturbed

TINY = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=3)


def test_kfold_indices_are_disjoint_covering_stratified_and_seeded():
    events = [1] * 13 + [0] * 8
    folds = kfold_indices(events, 3, seed=5)
    flat = sorted(i for f in folds for i in f)
    assert flat == list(range(21))
    assert [len(f) for f in folds] == [7, 7, 7]
    per_fold_events = [sum(events[i] for i in f) for f in folds]
    assert max(per_fold_events) - min(per_fold_events) <= 1
    assert folds == kfold_indices(events, 3, seed=5)
    assert folds != kfold_indices(events, 3, seed=6)
    with pytest.raises(ValueError, match="at least 10 patients"):
        kfold_indices([1] * 9, 5, seed=0)


def test_split_gate_defaults_override_and_errors():
    gate, rest = split_gate({"topk": 3, "gate": "full", "gate_margin": 0.01})
    assert (gate.mode, gate.n_folds, gate.margin, rest) == ("full", 5, 0.01, {"topk": 3})
    assert split_gate({})[0].n_folds == 3 and split_gate({"gate_folds": 4})[0].n_folds == 4
    for raw, key in (
        ({"gate": "slow"}, "gate"),
        ({"gate_folds": 1}, "gate_folds"),
        ({"gate_margin": 2}, "gate_margin"),
    ):
        with pytest.raises(MergeParamsError, match=key):
            split_gate(raw)


def _cv(risk_a: list[float], risk_b: list[float], fold: list[int]) -> CrossValidation:
    n = len(fold)
    times = torch.tensor([100.0 * (i + 1) for i in range(n)], dtype=torch.float64)
    return CrossValidation(
        times, torch.ones(n, dtype=torch.long), torch.tensor(fold),
        {"a": torch.tensor(risk_a, dtype=torch.float64), "b": torch.tensor(risk_b, dtype=torch.float64)}, 2,
    )  # fmt: skip


def test_within_fold_c_index_ignores_pairs_across_folds():
    # times increase with the index, all events: a concordant risk falls with the index.
    # Fold 0 = patients 0, 1; fold 1 = patients 2, 3. "a" orders each fold right but puts fold 1 above fold 0
    # (every cross-fold pair discordant); "b" orders each fold wrong.
    cv = _cv([2.0, 1.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1])
    assert c_index(cv, "a") == 1.0 and c_index(cv, "b") == 0.0
    est = paired_estimate(cv, "a", "b", n_boot=200, seed=0)
    assert (est["c"], est["reference_c"], est["difference"], est["pairs"]) == (1.0, 0.0, 1.0, 2)
    assert [f["c"] for f in est["per_fold"]] == [1.0, 1.0] and est["ci_low"] <= 1.0 <= est["ci_high"]
    assert est["se"] == pytest.approx(0.0)  # every resample with a pair has C_a = 1, C_b = 0
    with pytest.raises(ValueError, match="comparable"):
        paired_estimate(_cv([1.0, 2.0], [1.0, 2.0], [0, 1]), "a", "b")


def test_decide_uses_the_margin():
    est = {"difference": 0.02, "se": 0.01}
    assert decide(est, 0.0)["status"] == "promoted"
    clear = decide({**est, "ci_low": 0.004, "ci_high": 0.04}, 0.0)
    assert clear["status"] == "promoted" and clear["evidence"] == "clear" and "weak" not in clear["reason"]
    weak = decide({"difference": 0.047, "se": 0.041, "ci_low": -0.03, "ci_high": 0.13}, 0.0)
    assert weak["status"] == "promoted" and weak["evidence"] == "weak"
    assert "on weak evidence: its 95 % interval [-0.030, +0.130] reaches the margin" in weak["reason"]
    blocked = decide(est, 0.03)
    assert blocked["status"] == "not_promoted" and "+0.020" in blocked["reason"]
    assert decide(None, 0.0)["status"] == "unchecked"


def _inputs(base_seed: int = 0) -> MergeInputs:
    base = new_abmil(DIMS, base_seed).state_dict()
    return MergeInputs(
        base=base, target=perturbed(base, 11, 0.5), sources=[perturbed(base, 12 + i) for i in range(2)],
        source_names=["s0", "s1"], target_name="t", dims=DIMS, bin_edges=EDGES,
    )  # fmt: skip


def test_cross_validate_refits_the_target_in_every_fold():
    from app.domain.evaluation import risks

    inputs, samples = _inputs(), learnable_samples(18)
    # θ₀ + 1 · τ_t with the head merged too = the target model the candidates were given (in CV: the refit)
    same = Candidate("θ₀ + τ_t (head merged)", "task_arithmetic", {"scale": 1.0, "retrain_head": False},
                     use_sources=False)  # fmt: skip
    cv = cross_validate([TARGET, same], inputs, samples, TINY, folds=3)
    assert len(cv.times) == 18 and sorted(cv.fold.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    assert torch.allclose(cv.risks[TARGET.label], cv.risks[same.label])  # candidates get the refitted τ_t
    val0 = [samples[i] for i in kfold_indices([s.event for s in samples], 3, TINY.seed)[0]]
    given = risks(StaticModel(inputs.target, DIMS, EDGES).eval(), val0)
    assert not torch.allclose(cv.risks[TARGET.label][cv.fold == 0], given)  # … not the given checkpoint


def test_run_merge_gate_reports_an_estimate_and_a_status():
    from app.domain.pipeline import run_merge

    inputs, samples = _inputs(), learnable_samples(24)
    seen = []
    run = run_merge(
        method="average", inputs=inputs, params={}, train_config=TINY, train_samples=samples[:18],
        test_samples=samples[18:], reference=StaticModel(inputs.target, DIMS, EDGES), gate=GateConfig("fast"),
        progress=seen.append,
    )  # fmt: skip
    gate_stages = [p for p in seen if p.stage != "training"]  # the gate reports its folds (it can take long)
    assert [p.stage for p in gate_stages] == [f"promotion gate (fold {k} of 3)" for k in (1, 2, 3)]
    last_training = [p for p in seen if p.stage == "training"][-1]
    for p in gate_stages:  # the merge's own training is complete: its counters stay at the end
        assert (p.epoch, p.step, p.total_steps) == (last_training.epochs, last_training.step, last_training.step)
        assert p.eta_s >= 0 and p.elapsed_s >= last_training.elapsed_s
    promo = run.promotion
    assert promo["status"] in ("promoted", "not_promoted") and promo["gate"]["folds"] == 3
    est = promo["estimate"]
    assert est["difference"] == pytest.approx(est["c"] - est["reference_c"])
    assert (promo["status"] == "promoted") == (est["difference"] > 0)
    tiny = run_merge(
        method="average", inputs=inputs, params={}, train_config=TINY, train_samples=samples[:4],
        test_samples=[], reference=StaticModel(inputs.target, DIMS, EDGES), gate=GateConfig("fast"),
    )  # fmt: skip
    assert tiny.promotion["status"] == "unchecked" and "6 patients" in tiny.promotion["reason"]


def test_train_presets_fill_missing_training_keys():
    from app.domain.pipeline import split_params

    config, rest = split_params({"train_preset": "tuned", "epochs": 5, "gate": "off", "topk": 2})
    assert (config.lr, config.accum, config.epochs, rest) == (1e-3, 16, 5, {"topk": 2})
    assert split_params({"train_preset": "paper"})[0] == TrainConfig()
    default = split_params({"seed": 3})[0]  # no preset named: the tuned one (enough steps for a scarce target)
    assert (default.lr, default.accum, default.epochs, default.seed) == (1e-3, 16, 40, 3)
    with pytest.raises(MergeParamsError, match="train_preset"):
        split_params({"train_preset": "fast"})
