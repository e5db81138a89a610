"""Do the sources know anything about the target's patients? (issue 12: merges that only borrow what helps)

    source_relevance(models, names, samples) -> {"c", "se", "z", "ci_low", "ci_high", "per_source", "patients"}

Every source's own model (θ₀ + τ_s with its own head) scores the target's TRAIN bags. None of them has seen a
target patient, so — unlike any estimate that involves τ_t — this needs no refit and no held-out part: every
train patient counts. Each source's risks are standardised over the patients and averaged (an equal-weight
ensemble); the ensemble's Harrell C-index against the target's labels gets a patient-bootstrap standard error,
and z = (C − ½) / se. Where the cancers share no prognostic structure C ≈ ½ (a source model knows nothing of the
target's patients); where they do, the sources rank the target's patients better than chance before any merge
is trained. `auto` uses it as a pre-check (app.domain.merging.auto): below `relevance_z` it does not try the
candidates that borrow from the sources. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from app.domain.data import Samples
from app.domain.evaluation import score_split
from app.domain.merging.base import SurvivalModel
from app.domain.metrics import bootstrap_pair_sums, comparable_block, score_block

MAX_PATCHES = 4096  # patches per bag the sources score (a fixed random subset above it: the cost stays bounded)
# The pre-check's threshold: the ensemble must rank the target's patients better than chance by this many bootstrap
# standard errors (one-sided 5 %), fixed before the benchmark (BENCHMARKS.md, "Where merging pays").
DEFAULT_Z = 1.645


def _standardised(risk: torch.Tensor) -> torch.Tensor:
    sd = risk.std()
    return (risk - risk.mean()) / sd if float(sd) > 0 else torch.zeros_like(risk)


def _bag_subset(max_patches: int | None, dtype: torch.dtype, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A bag → at most `max_patches` of its patches (a random subset, the sequence fixed by `seed`), in `dtype`."""
    gen = torch.Generator().manual_seed(seed)

    def prepare(bag: torch.Tensor) -> torch.Tensor:
        bag = bag[0] if bag.dim() == 3 and bag.shape[0] == 1 else bag
        if max_patches is not None and bag.shape[0] > max_patches:
            bag = bag[torch.randperm(bag.shape[0], generator=gen)[:max_patches]]
        return bag.to(dtype)

    return prepare


def source_relevance(
    models: list[SurvivalModel], names: list[str], samples: Samples, *, n_boot: int = 500, seed: int = 0,
    max_patches: int | None = MAX_PATCHES, dtype: torch.dtype = torch.float32,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """C-index of the sources' standardised-risk ensemble on `samples` (the target's train split), its bootstrap
    se and 95 % interval, z = (C − ½)/se, and each source's own C. ValueError without models or comparable pairs;
    TrainingCancelled when should_cancel() turns True. Each bag goes to each model's device; `dtype` is the bags'
    dtype (reduced precision: mil.project)."""
    if not models:
        raise ValueError("source relevance needs at least one source model")
    scored = score_split(models, samples, prepare=_bag_subset(max_patches, dtype, seed), should_cancel=should_cancel)
    return relevance_of_risks(scored.times, scored.events, scored.risks, names, n_boot=n_boot, seed=seed)


def relevance_of_risks(
    times: torch.Tensor, events: torch.Tensor, scored_risks: list[torch.Tensor], names: list[str], *,
    n_boot: int = 500, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """source_relevance from risks already scored (one [n] tensor per source, on the same patients)."""
    if not scored_risks:
        raise ValueError("source relevance needs at least one source model")
    ensemble = torch.stack([_standardised(r) for r in scored_risks]).mean(0)
    rows = slice(0, len(times))
    comp = comparable_block(times, events.bool(), rows).to(torch.float64)
    den = float(comp.sum())
    if den == 0:
        raise ValueError("the target's train split holds no comparable pair (too few patients or events)")

    def c_of(risk: torch.Tensor) -> float:
        return float((comp * score_block(risk, rows, 1e-8)).sum()) / den

    score = comp * score_block(ensemble, rows, 1e-8)
    c = float(score.sum()) / den
    n = len(times)
    d, total = bootstrap_pair_sums([comp, score], n, n_boot=n_boot, seed=seed)
    ok = d > 0
    boot = total[ok] / d[ok]
    se = float(boot.std()) if len(boot) > 1 else float("nan")
    lo, hi = (float(q) for q in torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)))
    z = (c - 0.5) / se if se > 0 else (float("inf") if c > 0.5 else 0.0)
    return {
        "c": c, "se": se, "z": z, "ci_low": lo, "ci_high": hi, "patients": n, "pairs": int(den),
        "per_source": {name: c_of(r) for name, r in zip(names, scored_risks, strict=True)},
    }  # fmt: skip


def check_sources(
    inputs: Any, samples: Samples, config: Any, z_min: float, should_cancel: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """The pre-check on a merge's inputs (app.domain.merging.base.MergeInputs): every source checkpoint as a
    model, on the job's device and compute dtype → source_relevance + passed (z ≥ z_min), threshold_z and a
    one-line reason. When it cannot be measured (no comparable pair) it passes, saying why."""
    from app.domain.merging.base import StaticModel
    from app.domain.precision import resolve_train_dtype
    from app.domain.training import resolve_device

    device = resolve_device(config.device)
    models: list[SurvivalModel] = [
        StaticModel(s, inputs.dims, inputs.bin_edges).to(device).eval() for s in inputs.sources
    ]
    names = list(inputs.source_names) or [f"source{i}" for i in range(len(models))]
    dtype = resolve_train_dtype(config.compute_dtype, device)
    return judged(
        lambda: source_relevance(models, names, samples, seed=config.seed, dtype=dtype, should_cancel=should_cancel),
        z_min,
    )


def judged(measure: Callable[[], dict[str, Any]], z_min: float) -> dict[str, Any]:
    """measure() (source_relevance or relevance_of_risks) + passed (z ≥ z_min), threshold_z and a one-line reason.
    When it cannot be measured (ValueError: no comparable pair) it passes, saying why."""
    try:
        rel = measure()
    except ValueError as exc:
        return {"passed": True, "threshold_z": z_min, "reason": f"not measurable ({exc})"}
    passed = rel["z"] >= z_min
    verdict = "at least" if passed else "below"
    rel.update(passed=passed, threshold_z=z_min, reason=(
        f"the sources' own models rank the target's train patients with C {rel['c']:.3f} ± {rel['se']:.3f} "
        f"(z {rel['z']:+.2f}, {verdict} the threshold {z_min:+.2f})"
    ))  # fmt: skip
    return rel
