"""Scoring patients with a SurvivalModel and comparing two models on the same patients (SPEC §3).

    risk_i = −Σ_j S_j(x_i)                   (survival.risk_score of the model's logits)
    C      = Harrell's C-index of (t, e, risk) (metrics.harrell_c_index, = scikit-survival)

compare() runs a paired bootstrap over patients: a resample with multiplicities m ∈ ℕⁿ has
    C(m) = mᵀ (A ∘ K) m / mᵀ A m
where A[i, j] = 1 for comparable pairs and K[i, j] ∈ {0, ½, 1} is the pair's concordance — copies of one
patient are never comparable with each other, so this equals the C-index of the resampled cohort exactly.
Both models share A, so their difference is computed on the same resample. Memory is O(n²) (n ≤ a few 1000).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from app.domain.data import Samples
from app.domain.merging.base import ModelOutput, SurvivalModel
from app.domain.metrics import check_survival_inputs, comparable_block, harrell_c_index, score_block
from app.domain.survival import risk_score


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (cpu for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _to_cpu(out: ModelOutput) -> ModelOutput:
    attention = None if out.attention is None else out.attention.detach().cpu()
    return ModelOutput(out.logits.detach().cpu(), out.aux_loss.detach().cpu(), attention, out.info)


def _outputs(models: list[SurvivalModel], samples: Samples) -> Iterator[tuple[list[ModelOutput], float, int]]:
    """Per patient: (one cpu output per model, time, event). Each bag is loaded once and scored by every
    model in eval mode under no_grad; the models' train/eval modes are restored afterwards."""
    modes = [m.training for m in models]
    devices = [model_device(m) for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            for i in range(len(samples)):
                sample = samples[i]
                bag = sample.bag.to(dtype=torch.float32)
                outs = [_to_cpu(m(bag.to(d))) for m, d in zip(models, devices, strict=True)]
                yield outs, float(sample.time), int(sample.event)
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def predict_outputs(model: SurvivalModel, samples: Samples) -> list[ModelOutput]:
    """One ModelOutput per patient (logits [n_bins], attention [N], info), tensors on cpu."""
    return [outs[0] for outs, _, _ in _outputs([model], samples)]


def risks(model: SurvivalModel, samples: Samples) -> Tensor:
    """risk [n] = −Σ_j S_j per patient (higher = worse prognosis), float64."""
    return _labels_and_risks([model], samples)[2][0]


def _labels_and_risks(models: list[SurvivalModel], samples: Samples) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Times [n] (float64), events [n] and each model's risks [n] (float64)."""
    times, events, values = [], [], []
    for outs, t, e in _outputs(models, samples):
        times.append(t)
        events.append(e)
        values.append([float(risk_score(o.logits)) for o in outs])
    per_model = torch.tensor(values, dtype=torch.float64).reshape(len(times), len(models)).T
    return torch.tensor(times, dtype=torch.float64), torch.tensor(events), list(per_model)


@dataclass(frozen=True)
class EvalResult:
    """Harrell's C-index on `patients` patients, with its number of comparable pairs."""

    c_index: float
    pairs: int
    patients: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model: SurvivalModel, samples: Samples) -> EvalResult:
    """Harrell's C-index of the model's risks on `samples` (ValueError when there is no comparable pair)."""
    times, events, (risk,) = _labels_and_risks([model], samples)
    res = harrell_c_index(times, events, risk)
    return EvalResult(c_index=res.c_index, pairs=res.pairs, patients=len(times))


@dataclass(frozen=True)
class Comparison:
    """Merged vs reference C-index on the same patients; difference = merged − reference with a paired
    bootstrap 95% percentile interval [ci_low, ci_high] over `n_boot` usable resamples."""

    merged_c_index: float
    reference_c_index: float
    difference: float
    ci_low: float
    ci_high: float
    n_boot: int
    patients: int
    pairs: int

    def to_dict(self) -> dict:
        return asdict(self)


def pair_matrices(time: Tensor, event: Tensor, risk_list: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """A [n, n] (1.0 for comparable pairs) and A ∘ K for each risk vector (float64)."""
    rows = slice(0, len(time))
    comp = comparable_block(time, event.bool(), rows).to(torch.float64)
    return comp, [comp * score_block(r, rows, 1e-8) for r in risk_list]


def bootstrap_difference(
    time: Tensor, event: Tensor, risk_a: Tensor, risk_b: Tensor, *, n_boot: int, seed: int
) -> Tensor:
    """C_a(m) − C_b(m) for n_boot paired patient resamples m (resamples with no comparable pair dropped)."""
    n = len(time)
    comp, (score_a, score_b) = pair_matrices(time, event, [risk_a, risk_b])
    gen = torch.Generator().manual_seed(seed)
    diffs = []
    for start in range(0, n_boot, 256):
        idx = torch.randint(0, n, (min(256, n_boot - start), n), generator=gen)
        counts = torch.zeros(idx.shape[0], n, dtype=torch.float64).scatter_add_(
            1, idx, torch.ones_like(idx, dtype=torch.float64)
        )
        den = ((counts @ comp) * counts).sum(1)
        num_a = ((counts @ score_a) * counts).sum(1)
        num_b = ((counts @ score_b) * counts).sum(1)
        ok = den > 0
        diffs.append((num_a[ok] - num_b[ok]) / den[ok])
    return torch.cat(diffs)


def compare(
    model: SurvivalModel, reference: SurvivalModel, samples: Samples, *, n_boot: int = 1000, seed: int = 0
) -> Comparison:
    """C-index of `model` and `reference` on the same patients, their difference and its bootstrap 95% CI.

    ValueError when the patients have no comparable pair (too few patients or events).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1; got {n_boot}")
    times, events, (risk_m, risk_r) = _labels_and_risks([model, reference], samples)
    merged = harrell_c_index(times, events, risk_m)
    ref = harrell_c_index(times, events, risk_r)
    t, e, _ = check_survival_inputs(times, events, risk_m)
    diffs = bootstrap_difference(t, e, risk_m, risk_r, n_boot=n_boot, seed=seed)
    if len(diffs) == 0:
        low = high = merged.c_index - ref.c_index
    else:
        low, high = (float(q) for q in torch.quantile(diffs, torch.tensor([0.025, 0.975], dtype=diffs.dtype)))
    return Comparison(
        merged_c_index=merged.c_index,
        reference_c_index=ref.c_index,
        difference=merged.c_index - ref.c_index,
        ci_low=low,
        ci_high=high,
        n_boot=len(diffs),
        patients=len(times),
        pairs=merged.pairs,
    )
