"""split_params and run_merge end to end on tiny inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from app.domain.merging.base import MergeParamsError, StaticModel
from app.domain.pipeline import TRAIN_KEYS, run_merge, split_params
from app.domain.training import TrainConfig, TrainingCancelled

from .conftest import DIMS, EDGES


def test_train_keys_are_the_trainconfig_fields():
    assert TRAIN_KEYS == tuple(f.name for f in dataclasses.fields(TrainConfig))
    assert {"epochs", "lr", "accum", "seed", "max_patches"} <= set(TRAIN_KEYS)


def test_split_params_separates_training_from_method_params():
    config, method = split_params({"epochs": 3, "lr": 0.001, "topk": 2, "gamma": 0.01, "seed": 7})
    assert (config.epochs, config.lr, config.seed, config.accum) == (3, 0.001, 7, 16)
    assert method == {"topk": 2, "gamma": 0.01}
    default, empty = split_params(None)  # the default (tuned) preset; "paper" = the TrainConfig defaults
    assert default == TrainConfig(lr=1e-3, accum=16, epochs=40, compute_dtype="auto") and empty == {}
    assert split_params({"train_preset": "paper"})[0] == TrainConfig()  # float32: the exact paper settings
    assert split_params({"compute_dtype": "float32"})[0].compute_dtype == "float32"  # a job can pin the reference
    raw = {"epochs": 2, "x": 1}
    split_params(raw)
    assert raw == {"epochs": 2, "x": 1}  # not modified


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"epochs": "ten"}, "epochs"),
        ({"lr": 0}, "lr"),
        ({"accum": 1.5}, "accum"),
        ({"max_patches": -3}, "max_patches"),
    ],
)
def test_split_params_errors_name_the_key(raw, key):
    with pytest.raises(MergeParamsError, match=f"'{key}'"):
        split_params(raw)
    with pytest.raises(ValueError):
        split_params(raw)


def test_split_params_rejects_a_non_dict():
    with pytest.raises(MergeParamsError, match="object"):
        split_params([1, 2])  # type: ignore[arg-type]


def test_run_merge_average_trains_the_head_and_compares(merge_inputs, samples):
    pytest.importorskip("app.domain.merging.registry")
    reference = StaticModel(merge_inputs.target, DIMS, EDGES)
    steps = []
    config = TrainConfig(epochs=2, accum=8, lr=1e-2)
    run = run_merge(
        method="average", inputs=merge_inputs, params={}, train_config=config,
        train_samples=samples[:16], test_samples=samples[16:], reference=reference, progress=steps.append,
        n_boot=100,
    )  # fmt: skip
    assert run.model.method == "average" and not run.model.training
    assert run.params == {"include_target": True, "retrain_head": True}
    assert run.train_result is not None and run.train_result.steps == 4 == len(steps)
    comp = run.comparison
    assert comp is not None and comp.patients == 16 and comp.ci_low <= comp.difference <= comp.ci_high
    tm = run.test_metrics
    assert tm is not None and tm["merged"]["c_index"] == comp.merged_c_index
    assert tm["reference"]["c_index"] == comp.reference_c_index and tm["merged"]["patients"] == 16
    assert tm["merged"]["reference_patients"] == 16 and set(tm["merged"]) >= {"uno_c_index", "ibs", "auc"}
    # the encoder is the mean of target and sources; the head was retrained
    tensors = run.model.artifact_tensors()
    key = "feat_proj.0.weight"
    mean = torch.stack([merge_inputs.target[key], *(s[key] for s in merge_inputs.sources)]).mean(0)
    assert torch.allclose(tensors[key], mean, atol=1e-6)


def test_run_merge_without_training_or_test_split(merge_inputs, samples):
    pytest.importorskip("app.domain.merging.registry")
    run = run_merge(
        method="average", inputs=merge_inputs, params={"retrain_head": False}, train_config=TrainConfig(),
        train_samples=samples, test_samples=[], reference=StaticModel(merge_inputs.target, DIMS, EDGES),
    )  # fmt: skip
    assert run.train_result is None and run.comparison is None
    assert run.comparison_skipped == "the test split is empty"
    assert run.params["retrain_head"] is False


def test_run_merge_without_comparable_pairs_keeps_the_model_and_says_why(merge_inputs, samples):
    pytest.importorskip("app.domain.merging.registry")
    censored = [dataclasses.replace(s, event=0) for s in samples[:6]]  # no event: no comparable pair
    run = run_merge(
        method="average", inputs=merge_inputs, params={}, train_config=TrainConfig(epochs=1, accum=4),
        train_samples=samples[6:14], test_samples=censored, reference=StaticModel(merge_inputs.target, DIMS, EDGES),
    )  # fmt: skip
    assert run.comparison is None and run.train_result is not None
    assert run.comparison_skipped is not None and "censored" in run.comparison_skipped


def test_run_merge_reports_bad_method_params_and_cancellation(merge_inputs, samples):
    pytest.importorskip("app.domain.merging.registry")
    common = dict(inputs=merge_inputs, train_config=TrainConfig(epochs=1), train_samples=samples,
                  test_samples=[], reference=StaticModel(merge_inputs.target, DIMS, EDGES))  # fmt: skip
    with pytest.raises(ValueError, match="nope"):
        run_merge(method="nope", params={}, **common)
    with pytest.raises(MergeParamsError, match="wrong_key"):
        run_merge(method="average", params={"wrong_key": 1}, **common)
    with pytest.raises(TrainingCancelled):
        run_merge(method="steph", params={"topk": 1}, should_cancel=lambda: True, **common)


def test_run_merge_steph_is_deterministic_for_the_seed(merge_inputs, samples):
    pytest.importorskip("app.domain.merging.registry")

    def run(seed: int):
        return run_merge(
            method="steph", inputs=merge_inputs, params={"topk": 1}, n_boot=20,
            train_config=TrainConfig(epochs=1, accum=4, lr=1e-2, seed=seed), train_samples=samples[:12],
            test_samples=samples[12:20], reference=StaticModel(merge_inputs.target, DIMS, EDGES),
        )  # fmt: skip

    a, b, c = run(3), run(3), run(4)
    ta, tb, tc = (r.model.artifact_tensors() for r in (a, b, c))
    assert all(torch.equal(ta[k], tb[k]) for k in ta) and a.comparison == b.comparison
    assert not all(torch.equal(ta[k], tc[k]) for k in ta)
    assert a.params["topk"] == 1 and a.train_result.steps == 3
