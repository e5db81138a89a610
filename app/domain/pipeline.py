"""One merge run, end to end and in memory: parse → build → train (when needed) → compare on the test split.

The raw parameter dict of a merge job mixes training settings (the TrainConfig fields, TRAIN_KEYS) with the
method's own parameters; split_params separates and validates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.domain.data import Samples, sample_labels
from app.domain.evaluation import Comparison, compare_with_metrics
from app.domain.merging.base import MergeInputs, MergeParamsError, SurvivalModel
from app.domain.metrics import NoComparablePairs
from app.domain.training import Progress, TrainConfig, TrainingCancelled, TrainResult, train

TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))


def split_params(raw: dict[str, Any] | None) -> tuple[TrainConfig, dict[str, Any]]:
    """raw {TRAIN_KEYS…, method params…} → (TrainConfig, the remaining method params).

    TrainConfig fields missing from `raw` keep their defaults. A training value of the wrong type or out of
    range raises MergeParamsError (a ValueError) naming the key. Method params are not validated here
    (MergeMethod.parse_params does that).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MergeParamsError(f"parameters must be an object (a dict), got {type(raw).__name__}")
    train_raw = {k: raw[k] for k in TRAIN_KEYS if k in raw}
    method_params = {k: v for k, v in raw.items() if k not in TRAIN_KEYS}
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


def _check_cancel(should_cancel: Callable[[], bool] | None, stage: str) -> None:
    if should_cancel is not None and should_cancel():
        raise TrainingCancelled(f"merge cancelled {stage}")


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
    """
    from app.domain.merging.registry import get_method  # the registry imports every method

    impl = get_method(method)
    parsed = impl.parse_params(params)
    _check_cancel(should_cancel, "before building the model")
    notes: dict[str, Any] = {}
    if getattr(parsed, "crossfit", "off") != "off":
        from app.domain.crossfit import run_crossfit

        fitted = run_crossfit(
            impl, inputs, parsed, train_config, train_samples, progress=progress, should_cancel=should_cancel
        )
        model, result, notes["crossfit"] = fitted.model, fitted.train_result, fitted.info
    else:
        model = impl.build(inputs, parsed, seed=train_config.seed)
        result = None
        if impl.needs_training(parsed):
            result = train(model, train_samples, train_config, progress=progress, should_cancel=should_cancel)
    model.eval()
    comparison: Comparison | None = None
    test_metrics: dict[str, Any] | None = None
    skipped: str | None = "the test split is empty"
    if len(test_samples) > 0:
        _check_cancel(should_cancel, "before the evaluation on the test split")
        ref_time, ref_event = sample_labels(train_samples)  # censoring distribution of the IPCW metrics
        try:
            comparison, test_metrics = compare_with_metrics(
                model, reference, test_samples, ref_time, ref_event, n_boot=n_boot, seed=train_config.seed
            )
            skipped = None
        except NoComparablePairs as exc:
            skipped = f"no comparison on the test split: {exc}"
    return MergeRun(model, dataclasses.asdict(parsed), result, comparison, skipped, notes, test_metrics=test_metrics)
