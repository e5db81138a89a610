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

from typing import Any

import torch

from app.domain.data import Samples
from app.domain.evaluation import score_split
from app.domain.merging.base import SurvivalModel
from app.domain.metrics import bootstrap_pair_sums, comparable_block, score_block


def _standardised(risk: torch.Tensor) -> torch.Tensor:
    sd = risk.std()
    return (risk - risk.mean()) / sd if float(sd) > 0 else torch.zeros_like(risk)


def source_relevance(
    models: list[SurvivalModel], names: list[str], samples: Samples, *, n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    """C-index of the sources' standardised-risk ensemble on `samples` (the target's train split), its bootstrap
    se and 95 % interval, z = (C − ½)/se, and each source's own C. ValueError without models or comparable pairs.
    """
    if not models:
        raise ValueError("source relevance needs at least one source model")
    scored = score_split(models, samples)
    ensemble = torch.stack([_standardised(r) for r in scored.risks]).mean(0)
    rows = slice(0, len(scored.times))
    comp = comparable_block(scored.times, scored.events.bool(), rows).to(torch.float64)
    den = float(comp.sum())
    if den == 0:
        raise ValueError("the target's train split holds no comparable pair (too few patients or events)")

    def c_of(risk: torch.Tensor) -> float:
        return float((comp * score_block(risk, rows, 1e-8)).sum()) / den

    score = comp * score_block(ensemble, rows, 1e-8)
    c = float(score.sum()) / den
    n = len(scored.times)
    d, total = bootstrap_pair_sums([comp, score], n, n_boot=n_boot, seed=seed)
    ok = d > 0
    boot = total[ok] / d[ok]
    se = float(boot.std()) if len(boot) > 1 else float("nan")
    lo, hi = (float(q) for q in torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)))
    z = (c - 0.5) / se if se > 0 else (float("inf") if c > 0.5 else 0.0)
    return {
        "c": c, "se": se, "z": z, "ci_low": lo, "ci_high": hi, "patients": n, "pairs": int(den),
        "per_source": {name: c_of(r) for name, r in zip(names, scored.risks, strict=True)},
    }  # fmt: skip
