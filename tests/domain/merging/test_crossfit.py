"""STEPH cross-fitting (StephParams.crossfit, app.domain.crossfit) on tiny inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from app.domain.crossfit import (
    MIN_PATIENTS,
    SubsetSamples,
    crossfit_halves,
    sample_events,
    steps_of,
)
from app.domain.merging.base import MergeParamsError, StaticModel
from app.domain.merging.registry import get_method, load_model
from app.domain.merging.stacked import task_vector_stack
from app.domain.pipeline import run_merge
from app.domain.training import TrainConfig, TrainingCancelled, train, train_cancer_specific

from ..conftest import learnable_samples
from .tiny import DIMS, EDGES

CONFIG = TrainConfig(epochs=2, accum=4, lr=1e-2, seed=3)
PARAMS = {"beta_rule": "fixed", "hyper_hidden": 8}


def merge(inputs, samples, crossfit: str, **kwargs):
    return run_merge(
        method="steph", inputs=inputs, params={**PARAMS, "crossfit": crossfit}, train_config=CONFIG,
        train_samples=samples, test_samples=[], reference=StaticModel(inputs.target, DIMS, EDGES), **kwargs,
    )  # fmt: skip


def tv_rows(model) -> dict[str, torch.Tensor]:
    """Row 0 (τ_t) of every stacked task vector in the model's artifact."""
    tensors = model.artifact_tensors()
    return {k: v[0] for k, v in tensors.items() if k.startswith("task_vectors.")}


@pytest.mark.parametrize("n", [4, 5, 17, 32])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_halves_are_disjoint_cover_the_split_and_are_stratified(n, seed):
    events = [int(i % 3 != 0) for i in range(n)]
    a, b = crossfit_halves(events, seed)
    assert set(a).isdisjoint(b) and sorted(a + b) == list(range(n))
    assert (len(a), len(b)) == ((n + 1) // 2, n // 2)
    n_events = sum(events)
    assert abs(sum(events[i] for i in a) - n_events / 2) <= 1
    assert abs(sum(1 - events[i] for i in a) - (n - n_events) / 2) <= 1


def test_halves_are_deterministic_for_a_seed_and_change_with_it():
    events = [int(i % 4 != 3) for i in range(40)]
    assert crossfit_halves(events, 7) == crossfit_halves(events, 7)
    assert crossfit_halves(events, 7) != crossfit_halves(events, 8)


def test_sample_events_and_subset_do_not_load_lazy_samples():
    samples = learnable_samples(8)

    class Label:
        def __init__(self, time, event):
            self.time, self.event = time, event

    class Lazy(list):
        loads = 0

        def __getitem__(self, i):
            Lazy.loads += 1
            return super().__getitem__(i)

    lazy = Lazy(samples)
    lazy.labels = [Label(s.time, s.event) for s in samples]  # type: ignore[attr-defined]
    assert sample_events(lazy) == [s.event for s in samples] and Lazy.loads == 0
    sub = SubsetSamples(lazy, [1, 4, 6])
    assert len(sub) == 3 and Lazy.loads == 0
    assert sample_events(sub) == [samples[i].event for i in (1, 4, 6)] and Lazy.loads == 0  # labels pass through
    assert [s.patient_id for s in sub] == ["p001", "p004", "p006"] and sub[1].patient_id == "p004"
    assert sample_events(samples) == [s.event for s in samples]


def test_crossfit_param_is_validated_and_recorded(inputs):
    steph = get_method("steph")
    assert steph.parse_params({}).crossfit == "off"
    with pytest.raises(MergeParamsError, match="crossfit"):
        steph.parse_params({"crossfit": "both"})
    assert "crossfit" in {p["name"] for p in steph.params_schema()}


def test_crossfit_off_is_the_plain_merge(inputs, samples):
    run = merge(inputs, samples, "off")
    steph = get_method("steph")
    parsed = steph.parse_params(PARAMS)
    plain = steph.build(inputs, parsed, seed=CONFIG.seed)
    result = train(plain, samples, CONFIG)
    assert run.notes == {} and run.train_result is not None and run.train_result.history == result.history
    got, want = run.model.artifact_tensors(), plain.artifact_tensors()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_split_uses_a_target_trained_on_half_a_and_trains_the_merge_on_half_b(inputs, samples):
    progress = []
    run = merge(inputs, samples, "split", progress=progress.append)
    a, b = crossfit_halves([s.event for s in samples], CONFIG.seed)
    assert run.params["crossfit"] == "split"
    assert run.model.artifact_config()["params"]["crossfit"] == "split"
    note = run.notes["crossfit"]
    assert note["target_half"]["patients"] == len(a) and note["merge_half"]["patients"] == len(b)
    # τ_t in the model = θ_t^A − θ₀, θ_t^A trained from θ₀ on half A with the same TrainConfig
    target_a = train_cancer_specific(inputs.base, [samples[i] for i in a], CONFIG, dims=DIMS, bin_edges=EDGES)
    stack_a = task_vector_stack(dataclasses.replace(inputs, target=target_a.abmil.state_dict()))
    rows = tv_rows(run.model)
    assert rows and all(torch.equal(rows[k], stack_a[k.split(".", 1)[1].replace("__", ".")][0]) for k in rows)
    # the merge trained on half B only
    assert run.train_result is not None and run.train_result.steps == steps_of(len(b), CONFIG)
    # progress covers both phases, cumulative and monotone
    total = steps_of(len(a), CONFIG) + steps_of(len(b), CONFIG)
    assert [p.step for p in progress] == list(range(1, total + 1))
    assert {p.total_steps for p in progress} == {total} and {p.epochs for p in progress} == {2 * CONFIG.epochs}
    assert [p.epoch for p in progress] == sorted(p.epoch for p in progress) and progress[-1].epoch == 4
    # the artifact reloads to the same model
    reloaded = load_model(run.model.artifact_tensors(), run.model.artifact_config())
    bag = samples[0].bag
    with torch.no_grad():
        assert torch.allclose(reloaded(bag).logits, run.model(bag).logits)


def test_split_is_deterministic(inputs, samples):
    one, two = merge(inputs, samples, "split"), merge(inputs, samples, "split")
    t1, t2 = one.model.artifact_tensors(), two.model.artifact_tensors()
    assert all(torch.equal(t1[k], t2[k]) for k in t1)


def test_plugin_holds_exactly_the_full_target_vector(inputs, samples):
    split = merge(inputs, samples, "split")
    plugin = merge(inputs, samples, "split_plugin")
    full = task_vector_stack(inputs)
    rows = tv_rows(plugin.model)
    for k, row in rows.items():
        assert torch.equal(row, full[k.split(".", 1)[1].replace("__", ".")][0])
    # everything else (hypernetworks, head, source task vectors) is the split model's
    got, want = plugin.model.artifact_tensors(), split.model.artifact_tensors()
    for k in want:
        if k.startswith("task_vectors."):
            assert torch.equal(got[k][1:], want[k][1:])
        else:
            assert torch.equal(got[k], want[k]), k
    assert plugin.model.artifact_config()["params"]["crossfit"] == "split_plugin"
    reloaded = load_model(plugin.model.artifact_tensors(), plugin.model.artifact_config())
    assert all(torch.equal(v, tv_rows(reloaded)[k]) for k, v in rows.items())


def test_cancel_during_the_first_phase(inputs, samples):
    progress = []
    first_phase = steps_of((len(samples) + 1) // 2, CONFIG)
    with pytest.raises(TrainingCancelled):
        merge(inputs, samples, "split", progress=progress.append, should_cancel=lambda: len(progress) >= 3)
    assert len(progress) == 3 < first_phase


def test_cancel_between_or_in_the_second_phase(inputs, samples):
    progress = []
    first_phase = steps_of((len(samples) + 1) // 2, CONFIG)
    with pytest.raises(TrainingCancelled):
        merge(
            inputs, samples, "split_plugin", progress=progress.append,
            should_cancel=lambda: len(progress) >= first_phase + 1,
        )  # fmt: skip
    assert len(progress) == first_phase + 1


def test_too_few_patients_is_a_clear_error(inputs, samples):
    with pytest.raises(ValueError, match="at least"):
        merge(inputs, samples[: MIN_PATIENTS - 1], "split")
