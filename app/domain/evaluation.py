"""Scoring patients with a SurvivalModel and comparing two models on the same patients (SPEC §3).

    risk_i = −Σ_j S_j(x_i)                   (survival.risk_score of the model's logits)
    C      = Harrell's C-index of (t, e, risk) (metrics.harrell_c_index, = scikit-survival)

evaluate_metrics() adds the IPCW metrics (Uno's C, time-dependent AUC, integrated Brier score), for which a
reference cohort (the training split) provides the censoring distribution; a metric the data leave undefined is
reported as None with the reason instead of failing.

compare() runs a paired bootstrap over patients: a resample with multiplicities m ∈ ℕⁿ has
    C(m) = mᵀ (A ∘ K) m / mᵀ A m
where A[i, j] = 1 for comparable pairs and K[i, j] ∈ {0, ½, 1} is the pair's concordance — copies of one
patient are never comparable with each other, so this equals the C-index of the resampled cohort exactly.
Both models share A, so their difference is computed on the same resample. Memory is O(n²) (n ≤ a few 1000).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from app.domain.data import Samples
from app.domain.merging.base import ModelOutput, SurvivalModel
from app.domain.metrics import (
    NoComparablePairs,
    check_survival_inputs,
    comparable_block,
    cumulative_dynamic_auc,
    harrell_c_index,
    integrated_brier_score,
    score_block,
    uno_c_index,
)
from app.domain.survival import risk_score, survival_at_times, survival_curve


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (cpu for a model with neither)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):  # the first one: no list of them all
        return tensor.device
    return torch.device("cpu")


def _to_cpu(out: ModelOutput) -> ModelOutput:
    attention = None if out.attention is None else out.attention.detach().cpu()
    return ModelOutput(out.logits.detach().cpu(), out.aux_loss.detach().cpu(), attention, out.info)


def _outputs(
    models: list[SurvivalModel], samples: Samples, *, prepare: Callable[[Tensor], Tensor] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[tuple[list[ModelOutput], float, int]]:  # fmt: skip
    """Per patient: (one cpu output per model, time, event). Each bag is loaded once (float32, then `prepare`d:
    e.g. subsampled and cast) and scored by every model in eval mode under no_grad; the models' train/eval modes
    are restored afterwards. TrainingCancelled before a bag once should_cancel() turns True."""
    modes = [m.training for m in models]
    devices = [model_device(m) for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            for i in range(len(samples)):
                if should_cancel is not None and should_cancel():
                    from app.domain.training import TrainingCancelled  # training imports this module

                    raise TrainingCancelled("cancelled while the models scored the patients")
                sample = samples[i]
                bag = sample.bag.to(dtype=torch.float32)
                if prepare is not None:
                    bag = prepare(bag)
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
    return score_split([model], samples).risks[0]


@dataclass(frozen=True)
class ScoredSplit:
    """Labels and every model's outputs on one split, from a single pass over the bags: times [n] (float64),
    events [n], and per model its risks [n] (float64) and survival curves [n, n_bins] (float64)."""

    times: Tensor
    events: Tensor
    risks: list[Tensor]
    curves: list[Tensor]


def score_split(
    models: list[SurvivalModel], samples: Samples, *, prepare: Callable[[Tensor], Tensor] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ScoredSplit:  # fmt: skip
    """Load each bag once and score it with every model (see _outputs)."""
    times: list[float] = []
    events: list[int] = []
    risks: list[list[float]] = [[] for _ in models]
    curves: list[list[Tensor]] = [[] for _ in models]
    for outs, t, e in _outputs(models, samples, prepare=prepare, should_cancel=should_cancel):
        times.append(t)
        events.append(e)
        for k, out in enumerate(outs):
            risks[k].append(float(risk_score(out.logits)))
            curves[k].append(survival_curve(out.logits.reshape(-1)).double())
    return ScoredSplit(
        times=torch.tensor(times, dtype=torch.float64),
        events=torch.tensor(events, dtype=torch.long),
        risks=[torch.tensor(r, dtype=torch.float64) for r in risks],
        curves=[
            torch.stack(c) if c else torch.zeros(0, len(m.bin_edges) - 1, dtype=torch.float64)
            for c, m in zip(curves, models, strict=True)
        ],
    )


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
    scored = score_split([model], samples)
    res = harrell_c_index(scored.times, scored.events, scored.risks[0])
    return EvalResult(c_index=res.c_index, pairs=res.pairs, patients=len(scored.times))


DAYS_PER_YEAR = 365.0
DEFAULT_YEARS = (1, 2, 3, 4, 5)


def default_times(
    test_time: Sequence[float] | Tensor,
    test_event: Sequence[int] | Tensor,
    train_time: Sequence[float] | Tensor,
    years: Sequence[int] = DEFAULT_YEARS,
) -> list[float]:
    """The default grid of the time-dependent metrics: 365·k days for k in `years`, kept where every metric is
    defined — at or after the first test event (AUC(t) needs a case), before the longest test follow-up (a
    control must remain) and before the longest training follow-up (the censoring distribution is known).

    When fewer than two yearly times fit (short follow-up), the 25/50/75 % quantiles of the test follow-up
    times in that range (whole days) are used instead. May return fewer than two times, or none.
    """
    t = torch.as_tensor(test_time, dtype=torch.float64).reshape(-1)
    e = torch.as_tensor(test_event).reshape(-1).bool()
    tr = torch.as_tensor(train_time, dtype=torch.float64).reshape(-1)
    if not bool(e.any()) or len(tr) == 0:
        return []
    lo, hi = float(t[e].min()), min(float(t.max()), float(tr.max()))
    yearly = [k * DAYS_PER_YEAR for k in years if lo <= k * DAYS_PER_YEAR < hi]
    if len(yearly) >= 2:
        return yearly
    inside = t[(t >= lo) & (t < hi)]
    if len(inside) == 0:
        return yearly
    quantiles = torch.quantile(inside, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).round()
    found = sorted({float(q) for q in quantiles if lo <= float(q) < hi})
    return found if len(found) > len(yearly) else yearly


@dataclass(frozen=True)
class MetricsReport:
    """Every metric of a model on `patients` patients (SPEC §3). Harrell's C as evaluate() gives it; the IPCW
    metrics use the censoring distribution of `reference_patients` reference (training) patients:

    uno_c_index: Uno's C (events up to `uno_tau_days` when set — the longest reference follow-up, used when a
        test event lies beyond it); auc_per_time / auc_mean: cumulative/dynamic AUC at `times_days` and its
        Kaplan–Meier-weighted mean; ibs: integrated Brier score over `times_days` with S(t) the step function of
        the model's survival curve. A metric the data leave undefined is None, with the reason in `skipped`.
    """

    c_index: float
    pairs: int
    patients: int
    uno_c_index: float | None
    uno_tau_days: float | None
    auc_mean: float | None
    auc_per_time: tuple[float, ...] | None
    ibs: float | None
    times_days: tuple[float, ...]
    reference_patients: int
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form: c_index, pairs, patients (as evaluate()), then uno_c_index, auc {mean, per_time}, ibs,
        times_days, uno_tau_days, reference_patients and skipped {metric: reason}."""
        auc = None if self.auc_mean is None else {"mean": self.auc_mean, "per_time": list(self.auc_per_time or ())}
        return {
            "c_index": self.c_index,
            "pairs": self.pairs,
            "patients": self.patients,
            "uno_c_index": self.uno_c_index,
            "auc": auc,
            "ibs": self.ibs,
            "times_days": list(self.times_days),
            "uno_tau_days": self.uno_tau_days,
            "reference_patients": self.reference_patients,
            "skipped": dict(self.skipped),
        }


def evaluate_metrics(
    model: SurvivalModel,
    samples: Samples,
    reference_time: Sequence[float] | Tensor,
    reference_event: Sequence[int] | Tensor,
    times: Sequence[float] | None = None,
) -> MetricsReport:
    """Harrell's C, Uno's C, time-dependent AUC and integrated Brier score of the model on `samples`.

    reference_time/reference_event: follow-up (days) and event flags of the reference patients — the training
    split of the same cohort — whose Kaplan–Meier censoring distribution weights the IPCW metrics. times: days
    at which AUC and Brier are evaluated (strictly increasing); default default_times() of the data.
    Harrell's C fails as in evaluate() (ValueError: no comparable pair); every other metric the data leave
    undefined (no reference events, times outside the follow-up, fewer than two times for the IBS, …) is None
    with the reason in `skipped`. A malformed `times` raises ValueError.
    """
    scored = score_split([model], samples)
    return metrics_report(scored, 0, model.bin_edges, reference_time, reference_event, times)


def metrics_report(
    scored: ScoredSplit,
    k: int,
    bin_edges: Sequence[float],
    reference_time: Sequence[float] | Tensor,
    reference_event: Sequence[int] | Tensor,
    times: Sequence[float] | None = None,
) -> MetricsReport:
    """evaluate_metrics for model `k` of an already scored split (no bag is read again)."""
    t, e, risk, curves = scored.times, scored.events, scored.risks[k], scored.curves[k]
    harrell = harrell_c_index(t, e, risk)
    ref_t = torch.as_tensor(reference_time, dtype=torch.float64).reshape(-1)
    ref_e = torch.as_tensor(reference_event).reshape(-1)
    skipped: dict[str, str] = {}
    uno = tau = None
    auc = ibs = None
    grid: list[float] = []
    if len(ref_t) == 0:
        why = "no reference (training) patients to estimate the censoring distribution from"
        skipped.update(uno_c_index=why, auc=why, ibs=why)
    else:
        ref_max = float(ref_t.max())
        tau = ref_max if bool((e.bool() & (t > ref_max)).any()) else None
        try:
            uno = uno_c_index(ref_t, ref_e, t, e, risk, tau=tau).c_index
        except ValueError as exc:
            skipped["uno_c_index"] = str(exc)
        grid = [float(x) for x in times] if times is not None else default_times(t, e, ref_t)
        if not grid:
            why = (
                "no time at which the metric is defined: it needs one after the first test event and before the "
                "longest test and reference follow-up"
            )
            skipped.update(auc=why, ibs=why)
        else:
            try:
                auc = cumulative_dynamic_auc(ref_t, ref_e, t, e, risk, grid)
            except NoComparablePairs as exc:
                skipped["auc"] = str(exc)
            if len(grid) < 2:
                skipped["ibs"] = f"the integrated Brier score needs at least two times; only {grid} fit the data"
            else:
                surv = survival_at_times(curves, bin_edges, grid)
                try:
                    ibs = integrated_brier_score(ref_t, ref_e, t, e, surv, grid)
                except NoComparablePairs as exc:
                    skipped["ibs"] = str(exc)
    return MetricsReport(
        c_index=harrell.c_index,
        pairs=harrell.pairs,
        patients=len(t),
        uno_c_index=uno,
        uno_tau_days=tau if uno is not None else None,
        auc_mean=None if auc is None else auc.mean_auc,
        auc_per_time=None if auc is None else auc.auc,
        ibs=ibs,
        times_days=tuple(grid),
        reference_patients=len(ref_t),
        skipped=skipped,
    )


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

    @property
    def verdict(self) -> str:
        """'better' / 'worse' when the 95% interval of the difference excludes 0, else 'inconclusive'."""
        if self.ci_low > 0:
            return "better"
        if self.ci_high < 0:
            return "worse"
        return "inconclusive"

    def to_dict(self) -> dict:
        """The fields, plus `verdict` (merged vs reference on these patients: better, worse or inconclusive)."""
        return {**asdict(self), "verdict": self.verdict}


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
    return comparison_of(score_split([model, reference], samples), n_boot=n_boot, seed=seed)


def comparison_of(scored: ScoredSplit, *, n_boot: int = 1000, seed: int = 0) -> Comparison:
    """compare() for a split already scored by [model, reference] (no bag is read again)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1; got {n_boot}")
    times, events, (risk_m, risk_r) = scored.times, scored.events, scored.risks[:2]
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


def compare_with_metrics(
    model: SurvivalModel,
    reference: SurvivalModel,
    samples: Samples,
    reference_time: Sequence[float] | Tensor,
    reference_event: Sequence[int] | Tensor,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Comparison, dict[str, dict]]:
    """compare() and both models' evaluate_metrics() from one pass over the bags:
    (comparison, {"merged": MetricsReport dict, "reference": MetricsReport dict})."""
    scored = score_split([model, reference], samples)
    comparison = comparison_of(scored, n_boot=n_boot, seed=seed)
    reports = {
        name: metrics_report(scored, k, m.bin_edges, reference_time, reference_event).to_dict()
        for k, (name, m) in enumerate((("merged", model), ("reference", reference)))
    }
    if len(samples) > 1 and is_constant(scored.risks[0]):
        reports["merged"]["constant_risk"] = True  # it ranks nobody: services.promotion warns on the job and model
    return comparison, reports


def is_constant(risks: Tensor) -> bool:
    """Every risk the same (to 1e-9 relative): a model that gives every patient one prediction."""
    if risks.numel() == 0:
        return False
    spread = float(risks.max() - risks.min())
    return spread <= 1e-9 * max(1.0, float(risks.abs().max()))
