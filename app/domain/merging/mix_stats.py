"""What a trained STEPH merge does, per bag: Σw, λ, top-k membership, and whether it collapsed to θ₀.

For every bag x the hypernetworks give w(x) [M] ≥ 0, λ(x) [M] ∈ (0, 1] and S(x) = top-k(w(x)); the merged
encoder is θ₀ + c_t(x) τ_t + Σ_i c_i(x) τ_{s_i} with

    Σw(x) = Σ_{i∈S} w_i          (how far the encoder moves from θ₀)
    λ̄(x)  = mean_{i∈S} λ_i       (share of the target's task vector in each selected mixup)
    c_t(x) = Σ_{i∈S} w_i λ_i     (weight on τ_t)

    c_s(x)  = Σ_{i∈S} w_i (1 − λ_i)  (weight on the sources' task vectors)
    source share(x) = c_s(x) / Σw(x)  (0: the encoder moved along τ_t only; no source knowledge used)

A merge **collapsed** when Σw(x) = 0 on every bag: the encoder is θ₀ exactly and, with ReLU weights, no
gradient reaches the w-hypernetwork any more (the 'paper' preset can do this; softplus weights cannot).
A merge **used no source knowledge** when its mean source share is below NO_SOURCES_SHARE (λ ≈ 1 on every
bag): the model is the target's own task vector rescaled per bag, whatever "sources" its predictions list.
Only the hypernetworks run (no encoder pass), so this is cheap.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from app.domain.data import Samples

COLLAPSE_TOL = 0.0  # Σw ≤ this on a bag counts as "all weights zero" (ReLU gives exact zeros)
NO_SOURCES_SHARE = 0.01  # mean c_s / Σw below this: the merge borrowed (next to) nothing from the sources
QUANTILES = (0.1, 0.5, 0.9)


def _summary(values: list[float]) -> dict[str, float]:
    """mean and the 10/50/90 % quantiles (linear interpolation) of a non-empty list."""
    t = torch.tensor(values, dtype=torch.float64)
    qs = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {"mean": float(t.mean()), **{f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}}


def supports_mix_stats(model: Any) -> bool:
    """True for models with per-bag hypernetworks (STEPH): model.hyper(bag) -> Mix."""
    return callable(getattr(model, "hyper", None)) and hasattr(model, "source_names")


def merge_statistics(model: Any, samples: Samples, *, max_bags: int | None = None) -> dict[str, Any]:
    """Per-bag merge statistics of a STEPH model on `samples` (at most `max_bags`, in order).

    Returns {"bags", "sum_w": {mean, q10, q50, q90}, "lam": {...}, "c_target": {...},
    "topk_share": {source name: fraction of bags with that source in S}, "zero_w_bags": fraction of bags with
    Σw = 0, "collapsed": bool (every bag), "source_share": {...} (c_s / Σw per bag), "no_source_knowledge": bool
    (not collapsed, mean source share < NO_SOURCES_SHARE)}. ValueError for a model without hypernetworks or no samples.
    """
    if not supports_mix_stats(model):
        raise ValueError(f"merge statistics need a STEPH model (per-bag hypernetworks); got {type(model).__name__}")
    n = len(samples) if max_bags is None else min(len(samples), max_bags)
    if n == 0:
        raise ValueError("merge statistics need at least one bag")
    names = list(model.source_names)
    sum_w, lam, c_t, share = [], [], [], []
    counts = [0] * len(names)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            for i in range(n):
                mix = model.hyper(samples[i].bag.to(device=device, dtype=torch.float32))
                sel = mix.selected.tolist()
                w_sel, lam_sel = mix.weights[mix.selected].double(), mix.lam[mix.selected].double()
                sum_w.append(float(w_sel.sum()))
                lam.append(float(lam_sel.mean()))
                c_t.append(float((w_sel * lam_sel).sum()))
                c_s = float((w_sel * (1.0 - lam_sel)).sum())
                share.append(c_s / sum_w[-1] if sum_w[-1] > COLLAPSE_TOL else 0.0)
                for j in sel:
                    counts[j] += 1
    finally:
        model.train(was_training)
    zero = sum(1 for s in sum_w if s <= COLLAPSE_TOL)
    return {
        "bags": n,
        "sum_w": _summary(sum_w),
        "lam": _summary(lam),
        "c_target": _summary(c_t),
        "topk_share": {name: counts[j] / n for j, name in enumerate(names)},
        "zero_w_bags": zero / n,
        "collapsed": zero == n,
        "source_share": _summary(share),
        "no_source_knowledge": zero < n and statistics.fmean(share) < NO_SOURCES_SHARE,
    }


def mean_lam(stats: dict[str, Any]) -> float:
    """The mean per-bag λ̄ of a merge_statistics() result."""
    return float(stats["lam"]["mean"])


def fmean_or_nan(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
