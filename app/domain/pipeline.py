"""One merge run, end to end and in memory: parse → build → train (when needed) → compare on the test split.

The raw parameter dict of a merge job mixes training settings (the TrainConfig fields, TRAIN_KEYS) with the
method's own parameters; split_params separates and validates them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.domain.data import Samples, sample_labels
from app.domain.evaluation import Comparison, compare_with_metrics
from app.domain.merging.base import MergeInputs, MergeMethod, MergeParamsError, SurvivalModel
from app.domain.metrics import NoComparablePairs
from app.domain.promotion import GATE_KEYS, TARGET, Candidate, GateConfig, cross_validate, decide, paired_estimate
from app.domain.training import Progress, TrainConfig, TrainingCancelled, TrainResult, train

TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
AUTO = "auto"
PRESET_KEY = "train_preset"
# Training presets (BENCHMARKS.md, "Where merging pays": chosen for the cancer-specific baseline on a separate
# tuning world, then applied to every method): "paper" = SPEC §1 (lr 1e-4, 16 bags per step, 20 epochs: only
# 4 · 20 = 80 tiny steps on a 60-patient target); "tuned" = lr 1e-3, 16 bags per step, 40 epochs.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tuned": {"lr": 1e-3, "accum": 16, "epochs": 40, "compute_dtype": "auto"},
}
# The default for every merge method and for cancer-specific training (`steph train`): the tuned preset, so a
# scarce target gets enough optimiser steps, with the N×D matmuls in bf16 where the hardware has it (issue 7:
# a merge epoch 0.97× a float32 cancer-specific epoch instead of 1.40×; the C-index effect is measured by
# bench.train_dtype); "paper" reproduces SPEC §1 exactly (float32).
DEFAULT_TRAIN_PRESET = "tuned"


def preset_config(given: dict[str, Any], preset: str = DEFAULT_TRAIN_PRESET) -> dict[str, Any]:
    """TrainConfig keyword arguments: the preset's values, overridden by the `given` ones."""
    return {**TRAIN_PRESETS[preset], **given}


def split_params(raw: dict[str, Any] | None) -> tuple[TrainConfig, dict[str, Any]]:
    """raw {train_preset?, TRAIN_KEYS…, method params…} → (TrainConfig, the remaining method params).

    TrainConfig fields missing from `raw` take the values of the preset `train_preset` (TRAIN_PRESETS;
    default DEFAULT_TRAIN_PRESET = "tuned"; "paper" = the TrainConfig defaults). A training value of the wrong
    type or out of range raises
    MergeParamsError (a ValueError) naming the key. Method params are not validated here
    (MergeMethod.parse_params does that). The promotion-gate keys (GATE_KEYS) are dropped: read them with
    app.domain.promotion.split_gate.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MergeParamsError(f"parameters must be an object (a dict), got {type(raw).__name__}")
    preset = raw.get(PRESET_KEY, DEFAULT_TRAIN_PRESET)
    if preset not in TRAIN_PRESETS:
        raise MergeParamsError(f"training parameter {PRESET_KEY!r}: {preset!r} is not one of {list(TRAIN_PRESETS)}")
    train_raw = preset_config({k: raw[k] for k in TRAIN_KEYS if k in raw}, preset)
    skip = {*TRAIN_KEYS, *GATE_KEYS, PRESET_KEY}
    method_params = {k: v for k, v in raw.items() if k not in skip}
    try:
        config = TrainConfig(**train_raw)
    except ValueError as exc:
        raise MergeParamsError(str(exc)) from None
    return config, method_params


@dataclass
class MergeRun:
    """The merged model, its parsed parameters (as a dict), the training result and the test comparison."""

    model: SurvivalModel
    params: dict[str, Any]
    train_result: TrainResult | None
    comparison: Comparison | None
    comparison_skipped: str | None = None  # why there is no comparison (empty test split, no comparable pair)
    notes: dict[str, Any] = field(default_factory=dict)  # JSON-able extras, e.g. "crossfit" (halves, phases)
    # Harrell/Uno C, time-dependent AUC and IBS of the merged and the reference model on the test split
    # (censoring distribution from the train split): {"merged": {...}, "reference": {...}}; None with no comparison
    test_metrics: dict[str, Any] | None = None
    # promotion gate: {"status": promoted | not_promoted | unchecked, "reason", "estimate"?, "gate"}
    promotion: dict[str, Any] | None = None
    # STEPH only: mix_stats.merge_statistics on the train bags ("train", "collapsed") and the test bags ("test")
    merge_stats: dict[str, Any] | None = None


def _check_cancel(should_cancel: Callable[[], bool] | None, stage: str) -> None:
    if should_cancel is not None and should_cancel():
        raise TrainingCancelled(f"merge cancelled {stage}")


def fit_parsed(
    impl: MergeMethod,
    parsed: Any,
    inputs: MergeInputs,
    config: TrainConfig,
    samples: Samples,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[SurvivalModel, TrainResult | None, dict[str, Any]]:
    """Build `impl` with parsed params (seed = config.seed) — after impl.adapt, which may set them from the
    samples (STEPH's β from the sources' relevance; notes["relevance"]) — and train it on `samples` when it needs
    training (STEPH crossfit runs its two phases). Returns (model in eval mode, train result or None, notes)."""
    notes: dict[str, Any] = {}
    if progress is not None and impl.adapts(parsed, inputs):  # a pass over the train bags before training starts
        progress(Progress(0, config.epochs, 0, 0, 0.0, 0.0, 0.0, stage="relevance pre-check (the sources' models)"))
    parsed, measured = impl.adapt(parsed, inputs, config, samples, should_cancel)  # STEPH: β from the relevance
    if measured is not None:
        notes["relevance"] = measured
    own = impl.fit(inputs, parsed, config, samples, progress=progress, should_cancel=should_cancel)
    if own is not None:  # a method with its own fitting (ensemble: the main model's training, then calibration)
        model, result, more = own
        notes.update(more)
    elif getattr(parsed, "crossfit", "off") != "off":
        from app.domain.crossfit import run_crossfit

        fitted = run_crossfit(impl, inputs, parsed, config, samples, progress=progress, should_cancel=should_cancel)
        model, result, notes["crossfit"] = fitted.model, fitted.train_result, fitted.info
    else:
        model = impl.build(inputs, parsed, seed=config.seed)
        result = None
        if impl.needs_training(parsed):
            result = train(model, samples, config, progress=progress, should_cancel=should_cancel)
    return model.eval(), result, notes


def fit_merge(
    method: str, inputs: MergeInputs, params: dict[str, Any], config: TrainConfig, samples: Samples, **hooks: Any
) -> SurvivalModel:
    """The registered `method` with raw `params`, built and trained on `samples` (fit_parsed)."""
    from app.domain.merging.registry import get_method

    impl = get_method(method)
    return fit_parsed(impl, impl.parse_params(params), inputs, config, samples, **hooks)[0]


def run_merge(
    *,
    method: str,
    inputs: MergeInputs,
    params: dict[str, Any],
    train_config: TrainConfig,
    train_samples: Samples,
    test_samples: Samples,
    reference: SurvivalModel,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    n_boot: int = 1000,
    gate: GateConfig | None = None,
) -> MergeRun:
    """Build `method` on `inputs` (seed = train_config.seed), train it on train_samples when the method needs
    training (learned methods, retrain_head), then compare it with `reference` (usually the target's
    cancer-specific model) on test_samples — skipped when test_samples is empty.

    Raises UnknownMethodError / MergeParamsError for a bad method or params, TrainingCancelled when
    should_cancel() turns True. When the test split is empty or has no comparable pair the model is still
    returned, with comparison None and comparison_skipped saying why.

    STEPH with crossfit 'split' / 'split_plugin' trains in two phases (app.domain.crossfit): a target model
    on half A of train_samples, then the merge on half B; train_result is the merge phase, progress covers
    both phases, and notes["crossfit"] describes the halves.

    gate (None = off): the promotion gate (app.domain.promotion) on the train split only; run.promotion holds
    its status, reason and estimate. method "auto" (app.domain.merging.auto) picks among candidates by the
    same inner validation. STEPH models get run.merge_stats (Σw, λ, top-k membership; collapse on train bags).
    """
    from app.domain.merging.registry import get_method  # the registry imports every method

    impl = get_method(method)
    parsed = impl.parse_params(params)
    gate = gate or GateConfig(mode="off")
    _check_cancel(should_cancel, "before building the model")
    if method == AUTO:
        from app.domain.merging.auto import run_auto

        auto = run_auto(inputs, parsed, train_config, train_samples, gate=gate, should_cancel=should_cancel)
        model, result, notes, promotion = auto.model, auto.train_result, {"auto": auto.evidence}, auto.promotion
    else:
        fit_start = time.monotonic()
        model, result, notes = fit_parsed(
            impl, parsed, inputs, train_config, train_samples, progress=progress, should_cancel=should_cancel
        )
        fit_s = time.monotonic() - fit_start
        gate_progress = GateProgress(progress, result, fit_s) if progress is not None else None
        promotion = gate_model(
            method, params, inputs, train_config, train_samples, gate, should_cancel, on_fold=gate_progress
        )
    stats = steph_stats(model, train_samples, test_samples)
    if len(test_samples) > 0:
        _check_cancel(should_cancel, "before the evaluation on the test split")
    comparison, test_metrics, skipped = _compare(model, reference, train_samples, test_samples, n_boot, train_config)
    return MergeRun(
        model, dataclasses.asdict(parsed), result, comparison, skipped, notes,
        test_metrics=test_metrics, promotion=promotion, merge_stats=stats,
    )  # fmt: skip


def _compare(model, reference, train_samples, test_samples, n_boot, config) -> tuple[Any, Any, str | None]:
    if len(test_samples) == 0:
        return None, None, "the test split is empty"
    ref_time, ref_event = sample_labels(train_samples)  # censoring distribution of the IPCW metrics
    try:
        comparison, test_metrics = compare_with_metrics(
            model, reference, test_samples, ref_time, ref_event, n_boot=n_boot, seed=config.seed
        )
    except NoComparablePairs as exc:
        return None, None, f"no comparison on the test split: {exc}"
    return comparison, test_metrics, None


class GateProgress:
    """Progress reports while the promotion gate runs (it trains 2 models per fold, so it can take several times
    the merge's own training): stage "promotion gate (fold k of n)", the ETA from the merge's training time
    before the first fold (≈ 2 (n − 1) trainings in all), then from the folds done so far."""

    def __init__(self, progress: Callable[[Progress], None], result: TrainResult | None, train_s: float) -> None:
        self.progress, self.train_s, self.start = progress, train_s, time.monotonic()
        self.steps = result.steps if result is not None else 0
        self.loss = result.final_loss if result is not None else 0.0
        self.epochs = len(result.history) if result is not None else 0  # the merge's training is complete

    def __call__(self, k: int, n: int) -> None:
        elapsed = time.monotonic() - self.start
        if k > 1:
            eta = elapsed / (k - 1) * (n - k + 1)
        else:
            eta = 2.0 * (n - 1) * self.train_s
        stage = f"promotion gate (fold {k} of {n})"
        total = self.train_s + elapsed  # the run's time so far: training, then the gate
        self.progress(Progress(self.epochs, self.epochs, self.steps, self.steps, self.loss, total, eta, stage=stage))


def gate_model(
    method: str, params: dict[str, Any], inputs: MergeInputs, config: TrainConfig, samples: Samples,
    gate: GateConfig, should_cancel: Callable[[], bool] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The promotion gate for one method: inner CV of [the target's own model (refitted), the method];
    `on_fold(k, n)` is called before each fold (progress)."""
    if gate.mode == "off":
        return {**decide(None, gate.margin), "gate": dataclasses.asdict(gate)}
    cand = Candidate(method, method, dict(params))
    t0 = time.perf_counter()
    try:
        cv = cross_validate(
            [TARGET, cand], inputs, samples, config, folds=gate.n_folds, should_cancel=should_cancel, on_fold=on_fold
        )
        estimate = paired_estimate(cv, cand.label, TARGET.label, seed=config.seed)
    except ValueError as exc:  # too few patients / no comparable pair: say so, do not fail the merge
        return {**decide(None, gate.margin, reason_if_none=f"gate not estimable: {exc}"), "gate": _gate_dict(gate)}
    out = {**decide(estimate, gate.margin), "estimate": estimate, "gate": _gate_dict(gate)}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _gate_dict(gate: GateConfig) -> dict[str, Any]:
    return {**dataclasses.asdict(gate), "folds": gate.n_folds}


def steph_stats(model: SurvivalModel, train_samples: Samples, test_samples: Samples) -> dict[str, Any] | None:
    """merge_statistics on the train bags (collapse check) and on the held-out bags; None for other models."""
    from app.domain.merging.mix_stats import merge_statistics, supports_mix_stats

    model = model.stats_model()  # an ensemble around STEPH: the statistics of its STEPH model
    if not supports_mix_stats(model):
        return None
    train_stats = merge_statistics(model, train_samples)
    out: dict[str, Any] = {"train": train_stats, "collapsed": train_stats["collapsed"],
                           "no_source_knowledge": train_stats["no_source_knowledge"]}  # fmt: skip
    if len(test_samples) > 0:
        out["test"] = merge_statistics(model, test_samples)
    return out
