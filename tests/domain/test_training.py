"""Training: config validation, schedule, optimiser groups, learning, determinism, progress, cancellation."""

from __future__ import annotations

import math

import pytest
import torch

from app.domain.evaluation import evaluate
from app.domain.merging.base import ModelOutput, StaticModel, SurvivalModel
from app.domain.metrics import harrell_c_index
from app.domain.mil import FamilyDims
from app.domain.survival import nll_loss, time_to_bin
from app.domain.training import (
    TrainConfig,
    TrainingCancelled,
    lr_factor,
    make_optimizer,
    train,
    train_cancer_specific,
)

from .conftest import DIMS, EDGES, learnable_samples

FAST = dict(epochs=3, lr=1e-2, accum=4, warmup_epochs=1)


class Probe(SurvivalModel):
    """Wraps a StaticModel; records bag sizes and adds a constant aux loss."""

    method = "probe"

    def __init__(self, inner: StaticModel, aux: float = 0.0) -> None:
        super().__init__(inner.dims, inner.bin_edges)
        self.inner, self.aux, self.sizes = inner, aux, []

    def forward(self, bag: torch.Tensor) -> ModelOutput:
        self.sizes.append(int(bag.shape[0]))
        out = self.inner(bag)
        return ModelOutput(out.logits, out.logits.new_tensor(self.aux), out.attention, {})


def states_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": "fast"}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"accum": True}, "accum"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"max_patches": 0}, "max_patches"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"device": "tpu"}, "device"),
        ({"seed": None}, "seed"),
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        TrainConfig(**kwargs)


def test_config_defaults_are_the_papers_and_numbers_become_floats():
    c = TrainConfig(lr=1, grad_clip=2)
    assert (c.epochs, c.accum, c.weight_decay, c.warmup_epochs, c.seed) == (20, 16, 1e-5, 1.0, 42)
    assert isinstance(c.lr, float) and isinstance(c.grad_clip, float)


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine():
    factors = [lr_factor(s, 4, 20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lr_factor(0, 0, 10) == 1.0


def test_no_weight_decay_on_biases_and_1d_params():
    model = StaticModel(learnable_base(), DIMS, EDGES, train_head_only=False)
    opt = make_optimizer(model.trainable_parameters(), TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == 10


def learnable_base() -> dict:
    from app.domain.mil import new_abmil

    return new_abmil(DIMS, seed=0).state_dict()


def test_cancer_specific_training_learns_and_leaves_base_untouched(samples):
    base = learnable_base()
    before = {k: v.clone() for k, v in base.items()}
    untrained = evaluate(StaticModel(base, DIMS, EDGES), samples).c_index
    model = train_cancer_specific(base, samples, TrainConfig(**FAST), dims=DIMS, bin_edges=EDGES)
    assert states_equal(base, before)
    assert model.method == "cancer_specific" and not model.training
    after = model.artifact_tensors()
    assert all(not torch.equal(after[k], base[k]) for k in base)  # every parameter trained
    trained = evaluate(model, samples).c_index
    # the oracle knows only the risk group (within-group order is random): its C is the reachable ceiling
    oracle = harrell_c_index([s.time for s in samples], [s.event for s in samples],
                             [float(int(s.patient_id[1:]) % 2 == 0) for s in samples]).c_index  # fmt: skip
    assert untrained < 0.5 and trained > oracle - 0.05 and trained > untrained + 0.3


def test_loss_decreases_and_history_is_per_epoch(samples):
    model = StaticModel(learnable_base(), DIMS, EDGES, train_head_only=False)
    result = train(model, samples, TrainConfig(epochs=4, lr=1e-2, accum=4))
    assert result.steps == 4 * 8 and len(result.history) == 4
    assert result.final_loss == result.history[-1] < result.history[0]


def test_same_seed_same_weights_other_seed_other_weights_rng_restored():
    samples = learnable_samples(12)
    cfg = dict(epochs=2, lr=1e-2, accum=3, max_patches=8)
    rng = torch.random.get_rng_state()
    runs = [
        train_cancer_specific(learnable_base(), samples, TrainConfig(seed=s, **cfg), dims=DIMS, bin_edges=EDGES)
        for s in (1, 1, 2)
    ]
    assert torch.equal(torch.random.get_rng_state(), rng)
    a, b, c = (m.artifact_tensors() for m in runs)
    assert states_equal(a, b)
    assert not states_equal(a, c)


def test_head_only_model_keeps_its_encoder(samples):
    base = learnable_base()
    model = StaticModel(base, DIMS, EDGES)  # train_head_only by default
    train(model, samples, TrainConfig(epochs=1, lr=1e-2, accum=8))
    after = model.artifact_tensors()
    assert all(torch.equal(after[k], base[k]) for k in base if not k.startswith("pred_head."))
    assert not torch.equal(after["pred_head.weight"], base["pred_head.weight"])


def test_progress_is_called_after_every_step(samples):
    seen = []
    train(
        StaticModel(learnable_base(), DIMS, EDGES),
        samples[:10],
        TrainConfig(epochs=2, accum=4),
        progress=seen.append,
    )
    assert [p.step for p in seen] == list(range(1, 7))
    assert {p.total_steps for p in seen} == {6} and {p.epochs for p in seen} == {2}
    assert [p.epoch for p in seen] == [1, 1, 1, 2, 2, 2]
    assert all(math.isfinite(p.loss) and p.loss > 0 and p.eta_s >= 0 and p.elapsed_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0.0


def test_cancellation_between_steps(samples):
    calls, seen = [], []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    model = StaticModel(learnable_base(), DIMS, EDGES)
    with pytest.raises(TrainingCancelled, match="after 3 of"):
        train(model, samples, TrainConfig(epochs=2, accum=4), progress=seen.append, should_cancel=cancel)
    assert len(seen) == 3 and not model.training


def test_step_loss_is_the_mean_of_nll_plus_aux():
    dims = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4, dropout=0.0)
    samples = learnable_samples(6, dims=dims)
    from app.domain.mil import new_abmil

    probe = Probe(StaticModel(new_abmil(dims, 0).state_dict(), dims, EDGES), aux=0.25)
    with torch.no_grad():
        expected = sum(
            float(nll_loss(probe.inner(s.bag).logits.unsqueeze(0), time_to_bin(torch.tensor([s.time]), EDGES),
                           torch.tensor([s.event]), alpha=0.5))
            for s in samples
        ) / len(samples) + 0.25  # fmt: skip
    seen = []
    train(probe, samples, TrainConfig(epochs=1, accum=6), progress=seen.append)
    assert len(seen) == 1 and seen[0].loss == pytest.approx(expected, rel=1e-5)


def test_max_patches_subsamples_only_big_bags(samples):
    probe = Probe(StaticModel(learnable_base(), DIMS, EDGES))
    train(probe, samples, TrainConfig(epochs=1, accum=8, max_patches=10))
    sizes = sorted(min(s.bag.shape[0], 10) for s in samples)
    assert sorted(probe.sizes) == sizes and max(probe.sizes) == 10


def test_grad_clip_shrinks_the_updates(samples):
    deltas = []
    for clip in (None, 1e-12):
        base = learnable_base()
        model = StaticModel(base, DIMS, EDGES)
        train(model, samples[:8], TrainConfig(epochs=1, accum=8, lr=1e-2, grad_clip=clip))
        deltas.append(float((model.artifact_tensors()["pred_head.weight"] - base["pred_head.weight"]).abs().max()))
    assert deltas[1] < deltas[0] / 100


def test_bad_inputs_are_reported(samples):
    with pytest.raises(ValueError, match="no training samples"):
        train(StaticModel(learnable_base(), DIMS, EDGES), [], TrainConfig())
    frozen = StaticModel(learnable_base(), DIMS, EDGES)
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(frozen, samples, TrainConfig())
    with pytest.raises(FloatingPointError, match="diverged"):
        train(
            Probe(StaticModel(learnable_base(), DIMS, EDGES), aux=float("nan")),
            samples,
            TrainConfig(epochs=1),
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TrainConfig(device="cuda")
    assert TrainConfig(device="auto").device == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu_without_dropout():
    dims = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4, dropout=0.0)
    from app.domain.mil import new_abmil

    samples, base = learnable_samples(12, dims=dims), new_abmil(dims, 0).state_dict()
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = TrainConfig(epochs=2, accum=4, lr=1e-2, device=device)
        runs[device] = train_cancer_specific(base, samples, cfg, dims=dims, bin_edges=EDGES)
    assert next(runs["cuda"].parameters()).is_cuda
    a, b = runs["cpu"].artifact_tensors(), runs["cuda"].artifact_tensors()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert evaluate(runs["cuda"], samples).c_index == pytest.approx(evaluate(runs["cpu"], samples).c_index, abs=0.02)
