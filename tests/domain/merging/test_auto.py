"""auto: candidate parsing, the choice rule, the registry entry, and run_merge("auto") returning the winner."""

from __future__ import annotations

import pytest
import torch

from app.domain.merging.auto import CANDIDATES, AutoMethod, AutoParams, choose
from app.domain.merging.base import MergeParamsError, StaticModel
from app.domain.merging.registry import get_method, list_methods
from app.domain.promotion import RETRAIN, TARGET_LABEL, GateConfig
from app.domain.training import TrainConfig

from ..conftest import learnable_samples
from .tiny import DIMS, EDGES, make_inputs

METHOD = AutoMethod()


def test_params_select_candidates_and_always_keep_the_target():
    labels = [c.label for c in METHOD.parse_params({"candidates": ["steph", "base_head"]}).chosen()]
    assert labels == ["steph", "θ₀ encoder + retrained head", TARGET_LABEL]
    default = [c.label for c in METHOD.parse_params({}).chosen()]
    assert default == ["steph + sources' ensemble", RETRAIN.label, TARGET_LABEL]
    every = METHOD.parse_params({"candidates": list(CANDIDATES)}).chosen()
    assert len(every) == len(CANDIDATES) and every[-1].label == TARGET_LABEL
    with pytest.raises(MergeParamsError, match="unknown auto candidate 'ties'"):
        METHOD.parse_params({"candidates": ["ties"]})
    with pytest.raises(MergeParamsError, match="folds"):
        METHOD.parse_params({"folds": 1})


def test_choose_takes_the_best_candidate_that_beats_the_target_by_the_margin():
    scores = {
        TARGET_LABEL: {"c": 0.60, "difference": 0.0},
        "a": {"c": 0.63, "difference": 0.03},
        "b": {"c": 0.65, "difference": 0.05},
        "c": {"c": 0.65, "difference": 0.05},
    }
    order = ["a", "b", "c", TARGET_LABEL]
    assert choose(scores, order, 0.0) == "b"  # highest C; the tie with "c" goes to the earlier one
    assert choose(scores, order, 0.04) == "b"
    assert choose(scores, order, 0.06) == TARGET_LABEL  # nobody beats the target by 0.06
    assert choose({TARGET_LABEL: scores[TARGET_LABEL], "a": {"c": 0.5, "difference": -0.1}}, ["a"], 0.0) == TARGET_LABEL
    # with the retrained cancer-specific model among the candidates, no transfer means that model, not the
    # checkpoint; it never wins "by the margin" itself (its CV estimate IS the refitted target: Δ = 0)
    scores[RETRAIN.label] = {"c": 0.60, "difference": 0.0}
    order = ["a", "b", "c", RETRAIN.label, TARGET_LABEL]
    assert choose(scores, order, 0.0) == "b"
    assert choose(scores, order, 0.06) == RETRAIN.label
    assert choose(scores, order, -0.5) == "b"  # a negative margin still never picks a no-transfer label as "gain"


def test_auto_is_registered_but_only_runs_through_run_merge():
    assert get_method("auto").name == "auto"
    assert any(m["name"] == "auto" for m in list_methods())
    with pytest.raises(ValueError, match="run_merge"):
        METHOD.build(make_inputs(), AutoParams(), seed=0)


def test_run_merge_auto_returns_the_winner_with_its_evidence():
    from app.domain.pipeline import run_merge

    inputs, samples = make_inputs(3), learnable_samples(24)
    config = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=1)
    run = run_merge(
        method="auto", inputs=inputs, params={"candidates": ["base_head", "target_head"]}, train_config=config,
        train_samples=samples[:18], test_samples=samples[18:], reference=StaticModel(inputs.target, DIMS, EDGES),
        gate=GateConfig("fast"),
    )  # fmt: skip
    evidence = run.notes["auto"]
    cands = evidence["candidates"]
    assert set(cands) == {"θ₀ encoder + retrained head", "target encoder + retrained head", TARGET_LABEL}
    assert evidence["winner"] == choose(cands, list(cands), 0.0)
    if evidence["winner"] == TARGET_LABEL:
        assert run.promotion["status"] == "unchecked" and run.promotion["target_unchanged"] is True
        assert "the target's own checkpoint, unchanged" in run.promotion["reason"] and run.train_result is None
        assert all(torch.equal(v, inputs.target[k]) for k, v in run.model.artifact_tensors().items())
    else:
        assert run.model.method == "task_arithmetic" and run.train_result is not None
        assert run.promotion["estimate"]["difference"] == cands[evidence["winner"]]["difference"]


def test_auto_falls_back_to_a_retrained_cancer_specific_model_scored_by_the_fold_refits():
    """Nothing can beat the target by a margin of 0.99, so no transfer wins: with 'retrain' a cancer-specific model
    trained from θ₀ with the job's settings (bit-identical to training it directly), not the checkpoint; its CV
    estimate is the refitted target's (Δ = 0 exactly, no extra training in the folds)."""
    from app.domain.pipeline import run_merge
    from app.domain.training import train_cancer_specific

    inputs, samples = make_inputs(2), learnable_samples(24)
    config = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=1)
    run = run_merge(
        method="auto", inputs=inputs, params={"candidates": ["target_head", "retrain"], "margin": 0.99},
        train_config=config, train_samples=samples[:18], test_samples=samples[18:],
        reference=StaticModel(inputs.target, DIMS, EDGES), gate=GateConfig("fast"),
    )  # fmt: skip
    evidence = run.notes["auto"]
    assert evidence["winner"] == RETRAIN.label
    retrain_cv = evidence["candidates"][RETRAIN.label]
    assert retrain_cv["difference"] == 0.0 and retrain_cv["c"] == evidence["candidates"][TARGET_LABEL]["c"]
    assert run.model.method == "cancer_specific" and run.train_result is not None and run.train_result.steps > 0
    assert run.promotion["status"] == "not_promoted" and "retrained" in run.promotion["reason"]
    direct = train_cancer_specific(inputs.base, samples[:18], config, dims=DIMS, bin_edges=EDGES)
    got, want = run.model.artifact_tensors(), direct.artifact_tensors()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], inputs.target[k]) for k in want)  # not the checkpoint


def test_steph_params_reach_the_steph_candidates_only():
    chosen = METHOD.parse_params({"steph_params": {"topk": 2}, "candidates": list(CANDIDATES)}).chosen()
    by = {c.label: c for c in chosen}
    assert by["steph"].params == {"topk": 2}
    assert by["steph λ = 0"].params == {"lam_mode": "fixed", "lam_value": 0.0, "topk": 2}
    assert by["average + retrained head"].params == {}
    assert by["steph + sources' ensemble"].params == {"main_params": {"topk": 2}}  # to the ensemble's STEPH
    capped = METHOD.parse_params({"ensemble_params": {"max_sources": 3}, "steph_params": {"topk": 2}}).chosen()
    assert capped[0].params == {"main_params": {"topk": 2}, "max_sources": 3} and capped[1].params == {}
    for bad, match in (({"ensemble_params": {"max_sources": 0}}, "max_sources"),
                       ({"ensemble_params": {"main_method": "average"}}, "cannot set main_method")):  # fmt: skip
        with pytest.raises(MergeParamsError, match=match):
            METHOD.parse_params(bad)
    with pytest.raises(MergeParamsError, match="topk"):
        METHOD.parse_params({"steph_params": {"topk": 0}})


def test_the_relevance_pre_check_skips_the_borrowing_candidates_when_the_sources_know_nothing():
    """A threshold no source can reach: the candidates that borrow from the sources are not even tried (no inner
    CV), auto returns the retrained cancer-specific model with the relevance evidence and its reason; without
    'retrain' it keeps the checkpoint. A threshold every source reaches: the inner CV runs as usual."""
    from app.domain.pipeline import run_merge
    from app.domain.training import train_cancer_specific

    inputs, samples = make_inputs(3), learnable_samples(24)
    config = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=1)

    def auto(**params):
        return run_merge(
            method="auto", inputs=inputs, params=params, train_config=config, train_samples=samples[:18],
            test_samples=samples[18:], reference=StaticModel(inputs.target, DIMS, EDGES), gate=GateConfig("fast"),
        )  # fmt: skip

    blocked = auto(relevance_z=10.0, fallback="retrain")
    ev = blocked.notes["auto"]
    rel = ev["relevance"]
    assert ev["winner"] == RETRAIN.label and ev["candidates"] == {} and rel["passed"] is False
    assert rel["threshold_z"] == 10.0 and rel["z"] < 10 and 0 <= rel["c"] <= 1 and len(rel["per_source"]) == 3
    assert blocked.promotion["status"] == "not_promoted" and "no prognostic signal" in blocked.promotion["reason"]
    direct = train_cancer_specific(inputs.base, samples[:18], config, dims=DIMS, bin_edges=EDGES)
    got, want = blocked.model.artifact_tensors(), direct.artifact_tensors()
    assert blocked.model.method == "cancer_specific" and all(torch.equal(got[k], want[k]) for k in want)

    kept = auto(relevance_z=10.0, candidates=["steph"], fallback="target")  # the checkpoint stays
    assert kept.notes["auto"]["winner"] == TARGET_LABEL and kept.train_result is None
    # nothing to promote it over (it is what the gate compares with): unchecked, so it can be aliased as is
    assert kept.promotion["status"] == "unchecked" and kept.promotion["target_unchanged"] is True
    assert all(torch.equal(v, inputs.target[k]) for k, v in kept.model.artifact_tensors().items())

    # a threshold every source passes: by default STEPH wins without an inner CV for the choice, and the
    # promotion gate validates it against the refitted target like any merge
    tried = auto(relevance_z=-10.0, candidates=["steph", "retrain"])
    ev = tried.notes["auto"]
    assert ev["rule"] == "relevance" and ev["winner"] == "steph" and ev["relevance"]["passed"] is True
    assert ev["relevance"]["c"] == rel["c"]  # the same measurement, a different threshold
    assert tried.model.method == "steph" and tried.train_result is not None
    assert set(ev["candidates"]) == {"steph"} and tried.promotion["estimate"]["difference"] == ev["candidates"][
        "steph"]["difference"]  # fmt: skip
    assert tried.promotion["status"] in ("promoted", "not_promoted") and "auto chose steph" in tried.promotion["reason"]
    # auto's verdict decides STEPH's β too: one relevance pass, not a second one inside STEPH's own β rule
    from app.domain.pipeline import fit_merge

    fixed = fit_merge("steph", inputs, {"beta_rule": "fixed"}, config, samples[:18])
    got, want = tried.model.artifact_tensors(), fixed.artifact_tensors()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    cv = auto(relevance_z=-10.0, choose="cv", candidates=["steph", "retrain"])  # the inner CV chooses
    ev = cv.notes["auto"]
    assert ev["rule"] == "cv" and set(ev["candidates"]) == {"steph", RETRAIN.label, TARGET_LABEL}
    off = auto(relevance_z=None, choose="cv", candidates=["target_head", "retrain"])
    assert "relevance" not in off.notes["auto"]  # no threshold (and no borrowing candidate): no pre-check
    for bad, match in (({"relevance_z": 99}, "relevance_z"), ({"choose": "vote"}, "choose must be one of"),
                       ({"relevance_z": None}, "needs a relevance_z")):  # fmt: skip
        with pytest.raises(MergeParamsError, match=match):
            METHOD.parse_params(bad)


def test_the_ensemble_candidate_wraps_the_steph_that_auto_would_train():
    """Candidates steph_ensemble + retrain (the default), sources passing: the winner is an ensemble whose STEPH
    model is the one auto trains alone (β from auto's verdict), validated by the promotion gate; sources failing:
    the default fallback, STEPH with β = 0."""
    from app.domain.merging.ensemble import EnsembleModel
    from app.domain.pipeline import fit_merge, run_merge

    inputs, samples = make_inputs(3), learnable_samples(24)
    config = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=1)

    def auto(**params):
        return run_merge(
            method="auto", inputs=inputs, params={"candidates": ["steph_ensemble", "retrain"], **params},
            train_config=config, train_samples=samples[:18], test_samples=samples[18:],
            reference=StaticModel(inputs.target, DIMS, EDGES), gate=GateConfig("fast"),
        )  # fmt: skip

    won = auto(relevance_z=-10.0)
    ev = won.notes["auto"]
    assert ev["winner"] == "steph + sources' ensemble" and isinstance(won.model, EnsembleModel)
    assert won.model.method == "ensemble" and won.model.main.method == "steph" and ev["models_per_bag"] == 4
    assert "auto chose steph + sources' ensemble" in won.promotion["reason"] and won.promotion.get("estimate")
    alone = fit_merge("steph", inputs, {"beta_rule": "fixed"}, config, samples[:18])
    got, want = won.model.main.artifact_tensors(), alone.artifact_tensors()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert won.merge_stats is not None  # the statistics of its STEPH model
    # the tiny sources fail the ensemble's own check at the default threshold: the fit's warning is in the evidence
    assert "ensembles the sources only when they pass" in ev["warning"]
    capped = auto(relevance_z=-10.0, ensemble_params={"max_sources": 1})  # 2 of 3 sources dropped: 2 models
    assert capped.notes["auto"]["models_per_bag"] == 2 and len(capped.model.members) == 1
    blocked = auto(relevance_z=10.0)  # the default fallback: STEPH with β = 0, one model (no ensemble)
    assert blocked.notes["auto"]["winner"] == "steph β = 0 (fallback)" and blocked.model.method == "steph"
    assert blocked.model.params.beta == 0.0 and blocked.notes["auto"]["models_per_bag"] == 1


def test_the_steph_fallback_trains_steph_without_the_penalty_when_the_sources_fail():
    """fallback 'steph': sources failing the pre-check give STEPH with β = 0 (exactly the default STEPH's own
    no-relevance branch), validated by the gate; without any source model it is the retrain; bad settings refused."""
    from app.domain.pipeline import fit_merge, run_merge

    inputs, samples = make_inputs(3), learnable_samples(24)
    config = TrainConfig(epochs=1, accum=8, lr=1e-2, seed=1)

    def auto(inp, **params):
        return run_merge(
            method="auto", inputs=inp, params=params, train_config=config, train_samples=samples[:18],
            test_samples=samples[18:], reference=StaticModel(inp.target, DIMS, EDGES), gate=GateConfig("fast"),
        )  # fmt: skip

    run = auto(inputs, relevance_z=10.0, fallback="steph")
    ev = run.notes["auto"]
    assert ev["winner"] == "steph β = 0 (fallback)" and ev["relevance"]["passed"] is False
    assert run.model.method == "steph" and "as its fallback" in run.promotion["reason"]
    assert run.promotion.get("estimate") and set(ev["candidates"]) == {"steph β = 0 (fallback)"}
    default = fit_merge("steph", inputs, {"relevance_z": 10.0}, config, samples[:18])  # its own β rule: β = 0
    got, want = run.model.artifact_tensors(), default.artifact_tensors()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    alone = auto(make_inputs(0), fallback="steph")
    assert alone.notes["auto"]["winner"] == RETRAIN.label and alone.model.method == "cancer_specific"
    bad_settings = [
        ({"fallback": "average"}, "fallback must be one of"),
        ({"fallback": "steph", "choose": "cv"}, "fallback applies to choose 'relevance' only"),
    ]
    for bad, match in bad_settings:
        with pytest.raises(MergeParamsError, match=match):
            METHOD.parse_params(bad)
