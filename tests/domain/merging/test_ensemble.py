"""ensemble: the combined score by hand, the train-split standardisation, the calibration, round trips, params,
flat members, and auto's steph_ensemble candidate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from app.domain.evaluation import score_split
from app.domain.merging.auto import AutoMethod
from app.domain.merging.base import MergeParamsError, StaticModel
from app.domain.merging.ensemble import EnsembleModel, baseline_hazards, fit_calibration
from app.domain.merging.registry import get_method, load_model
from app.domain.metrics import harrell_c_index
from app.domain.pipeline import fit_merge, steph_stats
from app.domain.survival import risk_score
from app.domain.training import TrainConfig

from ..conftest import learnable_samples
from .tiny import DIMS, EDGES, make_inputs

FAST = TrainConfig(epochs=4, accum=8, lr=1e-2)


@pytest.fixture(scope="module")
def fitted() -> tuple[EnsembleModel, list, object]:
    inputs, train = make_inputs(3), learnable_samples(40, 0)
    model = fit_merge("ensemble", inputs, {"main_method": "average"}, TrainConfig(epochs=20, accum=8, lr=1e-2), train)
    assert isinstance(model, EnsembleModel) and float(model.calib_slope) > 0.1  # the combined score ranks
    return model, train, inputs


def _by_hand(model: EnsembleModel, inputs, bag: torch.Tensor) -> torch.Tensor:
    """logits = b + γ (z_main + mean_i z_i), every risk computed by its own model, outside the ensemble."""
    sources = [StaticModel(s, DIMS, EDGES).eval() for s in inputs.sources]
    risks = torch.stack([risk_score(m(bag).logits) for m in [model.main, *sources]])
    z = (risks - model.z_mean) / model.z_sd
    score = z[0] + z[1:].mean()
    return model.calib_bias + model.calib_slope * score


def test_logits_are_the_calibrated_sum_of_standardised_risks(fitted) -> None:
    model, train, inputs = fitted
    with torch.no_grad():
        for sample in train[:6]:
            out = model(sample.bag)
            assert_close(out.logits, _by_hand(model, inputs, sample.bag), rtol=1e-5, atol=1e-5)
            members = out.info["ensemble"]["members"]
            assert [m["name"] for m in members] == ["main", "cancer0", "cancer1", "cancer2"]
            assert [m["weight"] for m in members] == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
            assert out.info["ensemble"]["score"] == pytest.approx(sum(m["weight"] * m["z"] for m in members), abs=1e-5)


def test_members_are_standardised_on_the_train_bags(fitted) -> None:
    model, train, _ = fitted
    with torch.no_grad():
        z = torch.tensor([[m["z"] for m in model(s.bag).info["ensemble"]["members"]] for s in train])
    assert_close(z.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    assert_close(z.std(0), torch.ones(4), atol=1e-4, rtol=0)


def test_the_calibration_keeps_the_ranking_of_the_combined_score(fitted) -> None:
    model, train, _ = fitted
    assert float(model.calib_slope) > 0
    scored = score_split([model], train)
    with torch.no_grad():
        scores = torch.tensor([model(s.bag).info["ensemble"]["score"] for s in train], dtype=torch.float64)
    c_model = harrell_c_index(scored.times, scored.events, scored.risks[0]).c_index
    c_score = harrell_c_index(scored.times, scored.events, scores).c_index
    assert c_model == pytest.approx(c_score, abs=1e-9)


def test_fit_calibration_recovers_a_known_slope_and_baseline() -> None:
    gen = torch.Generator().manual_seed(3)
    n, bias = 3000, torch.tensor([-2.0, -1.5, -1.0, -0.5])
    score = torch.randn(n, generator=gen, dtype=torch.float64)
    hazards = torch.sigmoid(bias.double()[None, :] + 1.5 * score[:, None])
    died = torch.rand(n, 4, generator=gen, dtype=torch.float64) < hazards
    first = torch.where(died.any(1), died.double().argmax(1), torch.full((n,), 3))
    events = died.any(1).long()
    fitted_bias, slope, nll = fit_calibration(score, first, events, 4)
    assert slope == pytest.approx(1.5, abs=0.15)
    assert_close(fitted_bias, bias, atol=0.15, rtol=0)
    assert math.isfinite(nll) and nll > 0


def test_baseline_hazards_count_events_over_those_at_risk() -> None:
    bins = torch.tensor([0, 0, 1, 1, 1, 2])
    events = torch.tensor([1, 0, 1, 1, 0, 0])
    h = baseline_hazards(bins, events, 5)
    # bin 0: 1 of 6; bin 1: 2 of 4; bin 2: no event, ½ of 1; bins 3, 4: nobody left, the last hazard carried on
    assert h.tolist() == pytest.approx([1 / 6, 2 / 4, 0.5, 0.5, 0.5])


def test_source_weight_zero_ranks_as_the_main_model() -> None:
    inputs, train = make_inputs(3), learnable_samples(40, 0)
    params = {"main_method": "average", "source_weight": 0.0}
    model = fit_merge("ensemble", inputs, params, TrainConfig(epochs=20, accum=8, lr=1e-2), train)
    assert model.weights.tolist() == [1.0, 0.0, 0.0, 0.0] and float(model.calib_slope) > 0.1
    scored = score_split([model, model.main], learnable_samples(40, 1))
    c = [harrell_c_index(scored.times, scored.events, r).c_index for r in scored.risks]
    assert c[0] == pytest.approx(c[1], abs=1e-9) and c[0] != 0.5


def test_a_flat_member_gets_weight_zero_and_is_reported() -> None:
    inputs, train = make_inputs(3), learnable_samples(40, 0)
    flat = dict(inputs.sources[1])
    flat["pred_head.weight"] = torch.zeros_like(flat["pred_head.weight"])  # the same risk for every bag
    inputs.sources[1] = flat
    method = get_method("ensemble")
    model, _, notes = method.fit(inputs, method.parse_params({"main_method": "target"}), FAST, train)
    assert notes["ensemble"]["flat_members"] == ["cancer1"]
    # the tiny sources are random models: the relevance pre-check fails and the fit warns, saying why; the
    # (untrained, anti-prognostic) target and those sources rank nobody: one curve for all, said too
    warning = notes["ensemble"]["warning"]
    assert notes["relevance"]["passed"] is False and "ensembles the sources only when they pass" in warning
    assert notes["ensemble"]["degenerate"] and notes["ensemble"]["slope"] < 1e-3 and "do not use this model" in warning
    assert notes["ensemble"]["weights"] == pytest.approx([1.0, 1 / 3, 0.0, 1 / 3])
    with torch.no_grad():
        assert torch.isfinite(model(train[0].bag).logits).all()


def test_a_fitted_ensemble_round_trips_exactly_and_a_damaged_one_is_refused(fitted) -> None:
    model, train, _ = fitted
    config = json.loads(json.dumps(model.artifact_config()))
    tensors = {k: v.clone() for k, v in model.artifact_tensors().items()}
    loaded = load_model(tensors, config)
    assert isinstance(loaded, EnsembleModel) and config["main_config"]["method"] == "average"
    with torch.no_grad():
        for sample in train[:4]:
            a, b = model(sample.bag), loaded(sample.bag)
            assert torch.equal(a.logits, b.logits) and a.info == b.info
    missing = {k: v for k, v in tensors.items() if not k.startswith("member.2.")}
    with pytest.raises(ValueError, match="damaged"):
        load_model(missing, config)
    with pytest.raises(ValueError, match="damaged"):
        load_model({**tensors, "calib_bias": torch.zeros(7)}, config)
    nested = {**config, "main_config": {**config, "params": config["params"]}}  # an ensemble inside an ensemble
    with pytest.raises(ValueError, match="main model must be"):
        load_model(tensors, nested)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"main_method": "auto"}, "cannot be 'auto'"),
        ({"main_method": "ensemble"}, "cannot be 'ensemble'"),
        ({"main_method": "nope"}, "unknown merge method 'nope'"),
        ({"main_params": {"topkk": 2}}, "unknown parameter 'topkk'"),
        ({"main_method": "target", "main_params": {"topk": 2}}, "main_params must be empty"),
        ({"source_weight": -1.0}, "source_weight"),
        ({"source_weight": float("nan")}, "source_weight"),
    ],
)
def test_bad_params_are_refused_naming_what_is_wrong(raw, needle) -> None:
    with pytest.raises(MergeParamsError, match=needle):
        get_method("ensemble").parse_params(raw)


def test_an_ensemble_needs_a_source() -> None:
    with pytest.raises(ValueError, match="at least 1 source"):
        get_method("ensemble").build(make_inputs(0), get_method("ensemble").parse_params({}), seed=0)


def test_steph_statistics_of_an_ensemble_are_its_steph_model() -> None:
    inputs, train = make_inputs(3), learnable_samples(24, 0)
    model = fit_merge("ensemble", inputs, {}, TrainConfig(epochs=1, accum=8, lr=1e-2), train)
    stats = steph_stats(model, train, train[:8])
    assert stats is not None and stats == steph_stats(model.main, train, train[:8])


def test_auto_candidate_passes_steph_params_to_the_main_model() -> None:
    params = AutoMethod().parse_params({"candidates": ["steph_ensemble"], "steph_params": {"hyper_hidden": 6}})
    cand = params.chosen()[0]
    assert cand.method == "ensemble" and cand.params == {"main_params": {"hyper_hidden": 6}}


def test_max_sources_keeps_the_sources_that_rank_the_train_patients_best() -> None:
    """max_sources 1 of 3: the one source with the highest train C stays (one member fewer to run per bag), the
    calibration is the one an ensemble of that source alone gets, and the artifact round-trips."""
    inputs, train = make_inputs(3), learnable_samples(40, 0)
    method = get_method("ensemble")
    params = {"main_method": "average"}
    config = TrainConfig(epochs=20, accum=8, lr=1e-2)
    model, _, notes = method.fit(inputs, method.parse_params({**params, "max_sources": 1}), config, train)
    selection = notes["ensemble"]["selection"]
    best = max(selection["train_c"], key=selection["train_c"].get)
    assert selection["kept"] == [best] and model.source_names == [best] and len(model.members) == 1
    scored = score_split([StaticModel(s, DIMS, EDGES) for s in inputs.sources], train)
    by_hand = {
        n: harrell_c_index(scored.times, scored.events, r).c_index
        for n, r in zip(inputs.source_names, scored.risks, strict=True)
    }
    assert selection["train_c"] == pytest.approx(by_hand)
    i = inputs.source_names.index(best)  # the same main with that source alone, calibrated from scratch
    single = EnsembleModel(model.main, [inputs.sources[i]], [best], method.parse_params(params))
    single.calibrate(train)
    assert_close(model.calib_bias, single.calib_bias)
    assert_close(model.calib_slope, single.calib_slope)
    assert_close(model.z_mean, single.z_mean)
    loaded = load_model(model.artifact_tensors(), json.loads(json.dumps(model.artifact_config())))
    with torch.no_grad():
        assert torch.equal(loaded(train[0].bag).logits, model(train[0].bag).logits)
    with pytest.raises(MergeParamsError, match="max_sources"):
        method.parse_params({"max_sources": 0})
