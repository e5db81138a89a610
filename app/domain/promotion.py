"""The promotion gate: does a merge beat the target's own model? Estimated on the target's TRAIN split only.

Inner K-fold cross-validation (folds stratified by event, fixed by the seed). In fold k, with fold-train F_k
and fold-val V_k:

    θ_t^k  = train_cancer_specific(θ₀, F_k)        the target model is REFITTED: the given checkpoint has
                                                    already seen V_k, so its τ_t would look too good there
    m_c^k  = candidate c built with τ_t^k (and the given sources), trained on F_k
    risks of θ_t^k and of every m_c^k on V_k

The C-index of a candidate counts only pairs of patients from the SAME fold (both scored by the same fitted
model):  C_c = Σ_k Σ_{i,j ∈ V_k} A_ij K^c_ij / Σ_k Σ_{i,j ∈ V_k} A_ij  (A comparable, K ∈ {0, ½, 1}), and the
paired difference C_a − C_b gets a 95 % percentile interval and a standard error from a patient bootstrap
that keeps the fold structure (A ∘ [fold_i = fold_j]; see evaluation.bootstrap_difference).

Decision: promoted ⇔ C_merge − C_target > margin; a promotion whose 95 % interval reaches the margin is marked
`evidence: weak` (and says so), otherwise `clear`. Cost: K × (one target refit + one training per candidate).
Gate modes: 'off' (no estimate, status 'unchecked'), 'fast' (3 folds, the default), 'full' (5 folds);
gate_folds overrides the count. Pure torch + stdlib.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from app.domain.data import Samples, sample_labels
from app.domain.merging.base import MergeInputs, MergeParamsError, StaticModel, SurvivalModel
from app.domain.metrics import bootstrap_pair_sums, comparable_block, score_block
from app.domain.training import TrainConfig, TrainingCancelled, train_cancer_specific

GATE_KEYS: tuple[str, ...] = ("gate", "gate_folds", "gate_margin")
GATE_FOLDS = {"fast": 3, "full": 5}
MIN_PER_FOLD = 2  # patients per fold-val at least
TARGET_LABEL = "target's own model"


@dataclass
class GateConfig:
    """mode 'off' | 'fast' (3 folds) | 'full' (5 folds); folds overrides; margin in C-index units."""

    mode: Literal["off", "fast", "full"] = "fast"
    folds: int | None = None
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("off", "fast", "full"):
            raise ValueError(f"gate must be 'off', 'fast' or 'full'; got {self.mode!r}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int)):
            raise ValueError(f"gate_folds must be an integer ≥ 2 or null; got {self.folds!r}")
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"gate_folds must be ≥ 2 (or null for the mode's default); got {self.folds}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int | float) or not -1 < self.margin < 1:
            raise ValueError(f"gate_margin must be a number in (−1, 1) (C-index units); got {self.margin!r}")
        self.margin = float(self.margin)

    @property
    def n_folds(self) -> int:
        return self.folds or GATE_FOLDS.get(self.mode, 3)


def split_gate(raw: dict[str, Any]) -> tuple[GateConfig, dict[str, Any]]:
    """raw params → (GateConfig from gate / gate_folds / gate_margin, the other params). MergeParamsError on
    a bad value (naming the key and the allowed values)."""
    values = {"mode": raw.get("gate", "fast"), "folds": raw.get("gate_folds"), "margin": raw.get("gate_margin", 0.0)}
    try:
        gate = GateConfig(**values)
    except ValueError as exc:
        raise MergeParamsError(str(exc)) from None
    return gate, {k: v for k, v in raw.items() if k not in GATE_KEYS}


@dataclass(frozen=True)
class Candidate:
    """A model to validate: a registry method + params (method None = the target's own model, refitted in
    each fold); use_sources False builds it without the source models (e.g. the target encoder + a new head).
    refit True (with method None): a cancer-specific model trained from θ₀ on the given patients — in a fold
    that IS the fold's refitted target (no extra training), on the whole train split it is one more training."""

    label: str
    method: str | None
    params: dict[str, Any] = field(default_factory=dict)
    use_sources: bool = True
    refit: bool = False


TARGET = Candidate(TARGET_LABEL, None)
RETRAIN = Candidate("cancer-specific (retrained)", None, refit=True)
TARGET_HEAD = Candidate("target encoder + retrained head", "task_arithmetic", {"scale": 1.0}, use_sources=False)
BASE_HEAD = Candidate("θ₀ encoder + retrained head", "task_arithmetic", {"scale": 0.0}, use_sources=False)


def kfold_indices(events: list[int], k: int, seed: int) -> list[list[int]]:
    """k disjoint folds (sorted indices) covering 0..n−1, stratified by event: events then censored patients,
    each in a seeded random order, are dealt round-robin. ValueError when a fold would get < MIN_PER_FOLD."""
    n = len(events)
    if k < 2 or n < k * MIN_PER_FOLD:
        raise ValueError(f"{k}-fold validation needs at least {k * MIN_PER_FOLD} patients; the train split has {n}")
    from app.domain.crossfit import deal_stratified

    return deal_stratified(events, k, f"steph-gate-{seed}")


def candidate_inputs(candidate: Candidate, inputs: MergeInputs) -> MergeInputs:
    return inputs if candidate.use_sources else dataclasses.replace(inputs, sources=[], source_names=[])


def fit_candidate(
    candidate: Candidate, inputs: MergeInputs, samples: Samples, config: TrainConfig, **hooks: Any
) -> SurvivalModel:
    """The candidate trained on `samples` (method None: StaticModel of inputs.target, untouched). A refit
    candidate is not built here: in a fold it is the fold's refitted target (cross_validate)."""
    if candidate.method is None:
        return StaticModel(inputs.target, inputs.dims, inputs.bin_edges).eval()
    from app.domain.pipeline import fit_merge  # pipeline imports this module

    return fit_merge(candidate.method, candidate_inputs(candidate, inputs), candidate.params, config, samples, **hooks)


@dataclass
class CrossValidation:
    """Out-of-fold risks: times/events/fold [n] over all fold-val patients, risks[label] [n]."""

    times: Tensor
    events: Tensor
    fold: Tensor
    risks: dict[str, Tensor]
    folds: int


def cross_validate(
    candidates: list[Candidate],
    inputs: MergeInputs,
    samples: Samples,
    config: TrainConfig,
    *,
    folds: int,
    should_cancel: Callable[[], bool] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> CrossValidation:
    """Every candidate's out-of-fold risks (module docstring); the target model is refitted in every fold."""
    from app.domain.crossfit import SubsetSamples
    from app.domain.evaluation import score_split

    parts = kfold_indices(sample_labels(samples)[1], folds, config.seed)
    times, events, fold_ids = [], [], []
    risks: dict[str, list[Tensor]] = {c.label: [] for c in candidates}
    for k, val_idx in enumerate(parts):
        if on_fold is not None:
            on_fold(k + 1, folds)
        train_idx = sorted(set(range(len(samples))) - set(val_idx))
        fold_train, fold_val = SubsetSamples(samples, train_idx), SubsetSamples(samples, val_idx)
        refit = train_cancer_specific(
            inputs.base, fold_train, config, dims=inputs.dims, bin_edges=inputs.bin_edges, should_cancel=should_cancel
        )
        fold_inputs = dataclasses.replace(inputs, target=refit.artifact_tensors())
        models: list[SurvivalModel] = []
        for cand in candidates:
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled("merge cancelled during the promotion gate")
            if cand.refit:  # the fold's refitted target is exactly this candidate trained on the fold
                models.append(refit)
                continue
            models.append(fit_candidate(cand, fold_inputs, fold_train, config, should_cancel=should_cancel))
        scored = score_split(models, fold_val)
        times.append(scored.times)
        events.append(scored.events)
        fold_ids.append(torch.full((len(val_idx),), k, dtype=torch.long))
        for cand, r in zip(candidates, scored.risks, strict=True):
            risks[cand.label].append(r)
    return CrossValidation(
        torch.cat(times), torch.cat(events), torch.cat(fold_ids), {k: torch.cat(v) for k, v in risks.items()}, folds
    )


def _within_fold_scores(cv: CrossValidation, labels: list[str]) -> tuple[Tensor, list[Tensor]]:
    rows = slice(0, len(cv.times))
    same = (cv.fold[:, None] == cv.fold[None, :]).to(torch.float64)
    comp = comparable_block(cv.times, cv.events.bool(), rows).to(torch.float64) * same
    return comp, [comp * score_block(cv.risks[lab], rows, 1e-8) for lab in labels]


def c_index(cv: CrossValidation, label: str) -> float:
    """Within-fold Harrell C of one candidate (NaN when no fold has a comparable pair)."""
    comp, (score,) = _within_fold_scores(cv, [label])
    den = float(comp.sum())
    return float(score.sum()) / den if den > 0 else float("nan")


def paired_estimate(cv: CrossValidation, a: str, b: str, *, n_boot: int = 500, seed: int = 0) -> dict[str, Any]:
    """C_a − C_b (within-fold pairs) with bootstrap se and 95 % interval; per-fold C of both."""
    comp, (score_a, score_b) = _within_fold_scores(cv, [a, b])
    den = float(comp.sum())
    if den == 0:
        raise ValueError("the inner validation folds hold no comparable pair (too few patients or events)")
    diff = (float(score_a.sum()) - float(score_b.sum())) / den
    n = len(cv.times)
    d, sum_a, sum_b = bootstrap_pair_sums([comp, score_a, score_b], n, n_boot=n_boot, seed=seed)
    ok = d > 0
    boot = (sum_a[ok] - sum_b[ok]) / d[ok]
    lo, hi = (float(q) for q in torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)))
    per_fold = []
    for k in range(cv.folds):
        m = (cv.fold == k).to(torch.float64)
        mask = m[:, None] * m[None, :]
        dk = float((comp * mask).sum())
        per_fold.append({
            "fold": k, "patients": int(m.sum()), "pairs": int(dk),
            "c": float((score_a * mask).sum()) / dk if dk else None,
            "reference_c": float((score_b * mask).sum()) / dk if dk else None,
        })  # fmt: skip
    return {
        "c": float(score_a.sum()) / den, "reference_c": float(score_b.sum()) / den, "difference": diff,
        "se": float(boot.std()) if len(boot) > 1 else None, "ci_low": lo, "ci_high": hi,
        "patients": n, "pairs": int(den / 1), "folds": cv.folds, "per_fold": per_fold,
    }  # fmt: skip


def decide(estimate: dict[str, Any] | None, margin: float, *, reason_if_none: str = "") -> dict[str, Any]:
    """{"status": promoted | not_promoted | unchecked, "reason"} from an estimate (merge − target)."""
    if estimate is None:
        return {"status": "unchecked", "reason": reason_if_none or "the promotion gate was off"}
    d = estimate["difference"]
    se = estimate.get("se")
    spread = f" ± {se:.3f}" if se is not None else ""
    if d > margin:
        lo, hi = estimate.get("ci_low"), estimate.get("ci_high")
        if lo is None or lo > margin:
            return {"status": "promoted", "evidence": "clear",
                    "reason": f"inner-CV C-index gain {d:+.3f}{spread} > margin {margin:+.3f}"}  # fmt: skip
        return {  # the rule (estimate > margin) holds, but the interval says it could be chance
            "status": "promoted", "evidence": "weak",
            "reason": f"inner-CV C-index gain {d:+.3f}{spread} > margin {margin:+.3f}, on weak evidence: its 95 % "
            f"interval [{lo:+.3f}, {hi:+.3f}] reaches the margin (few train patients); check the held-out "
            "comparison before relying on it",
        }  # fmt: skip
    return {
        "status": "not_promoted",
        "reason": f"inner-CV C-index gain over the target's own model {d:+.3f}{spread} is not above the margin "
        f"{margin:+.3f}; the model stays downloadable but is not offered as the target's model",
    }
