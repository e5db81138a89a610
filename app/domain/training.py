"""Training loops: cancer-specific ABMIL from θ₀, and the trainable part of a merge (SPEC §1 "Optimisation").

    steps_per_epoch = ceil(n_patients / accum);   total_steps = epochs · steps_per_epoch
    step loss       = mean over the step's bags b of  nll_loss(logits_b, bin_b, e_b, α = 0.5) + aux_loss_b
    optimiser       = AdamW(lr, weight_decay) — no weight decay on biases and other 1-D parameters
    lr(s)           = lr · (s + 1) / W                                   for steps s < W = warmup_epochs · spe
                    = lr · ½ (1 + cos(π (s − W) / (total_steps − W)))     afterwards (cosine to 0)

Deterministic for `TrainConfig.seed`: the shuffle and the patch subsampling use their own torch.Generator,
dropout uses the global RNG seeded inside `torch.random.fork_rng` (the caller's RNG state is restored).
Bags are processed one at a time (gradients accumulate over the step's bags), so memory holds one bag.
`compute_dtype` "bfloat16" (or "auto" on a CPU with native bf16) runs the two N×D×hidden matmuls of every
forward and backward (feat_proj, STEPH's hypernetwork input layer) in bf16; everything else, every parameter and
every gradient stay float32 (app.domain.mil.project). "float32" (TrainConfig's default) is the exact reference;
the service's and the CLI's default training preset ("tuned", app.domain.pipeline) asks for "auto" (issue 7: a merge
epoch then costs 0.97× a float32 cancer-specific epoch instead of 1.40×; bench.train_dtype measures the C-index
effect, BENCHMARKS.md "Predict under load").
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from app.domain.data import Sample, Samples
from app.domain.merging.base import StaticModel, SurvivalModel
from app.domain.mil import FamilyDims
from app.domain.precision import dtype_name, resolve_train_dtype
from app.domain.survival import nll_loss, time_to_bin
from app.domain.task_vectors import StateDict

ALPHA = 0.5  # weight of the uncensored term in the NLL (SPEC §3)
# issue 8: upper bounds of the training parameters, checked at submission (a 422 naming the key and range)
MAX_EPOCHS, MAX_ACCUM, MAX_PATCHES, MAX_SEED = 10_000, 4096, 10_000_000, 2**63
MAX_LR, MAX_WEIGHT_DECAY = 10.0, 10.0


@dataclass
class TrainConfig:
    """Optimisation settings (defaults = the paper's). `device`: "cpu", "cuda", "cuda:N" or "auto"."""

    epochs: int = 20
    lr: float = 1e-4
    weight_decay: float = 1e-5
    accum: int = 16
    warmup_epochs: float = 1
    seed: int = 42
    max_patches: int | None = None
    grad_clip: float | None = None
    device: str = "cpu"
    compute_dtype: str = "float32"  # dtype of the two N×D matmuls (app.domain.precision); "auto": bf16 if native

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f.name, getattr(self, f.name))
        for key in ("lr", "weight_decay", "warmup_epochs", "grad_clip"):
            if getattr(self, key) is not None:
                setattr(self, key, float(getattr(self, key)))
        checks = [  # issue 8: documented ranges (TRAIN_RANGES), NaN fails every comparison
            ("epochs", 1 <= self.epochs <= MAX_EPOCHS, f"must be in [1, {MAX_EPOCHS}]"),
            ("lr", 0 < self.lr <= MAX_LR, f"must be a number in (0, {MAX_LR:g}]"),
            ("weight_decay", 0 <= self.weight_decay <= MAX_WEIGHT_DECAY, f"must be in [0, {MAX_WEIGHT_DECAY:g}]"),
            ("accum", 1 <= self.accum <= MAX_ACCUM, f"must be in [1, {MAX_ACCUM}] (bags per optimiser step)"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= MAX_EPOCHS, f"must be in [0, {MAX_EPOCHS}]"),
            ("seed", 0 <= self.seed < MAX_SEED, "must be in [0, 2**63)"),
            ("max_patches", self.max_patches is None or 1 <= self.max_patches <= MAX_PATCHES,
             f"must be in [1, {MAX_PATCHES}] or null"),
            ("grad_clip", self.grad_clip is None or 0 < self.grad_clip <= 1e6, "must be in (0, 1e6] or null"),
            ("compute_dtype", self.compute_dtype in COMPUTE_DTYPES, f"must be one of {', '.join(COMPUTE_DTYPES)}"),
        ]  # fmt: skip
        for key, ok, why in checks:
            if not ok:
                raise ValueError(f"training parameter {key!r} {why}; got {getattr(self, key)!r}")
        resolve_device(self.device)

    def resolved(self) -> TrainConfig:
        """This config with compute_dtype "auto" replaced by the dtype it means on this machine and device (what
        a model's provenance records, so a rerun elsewhere can ask for the same)."""
        dtype = resolve_train_dtype(self.compute_dtype, resolve_device(self.device))
        return replace(self, compute_dtype=dtype_name(dtype))


_NUMBER, _INT = (int, float), (int,)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "epochs": (_INT, "an integer"),
    "lr": (_NUMBER, "a number"),
    "weight_decay": (_NUMBER, "a number"),
    "accum": (_INT, "an integer"),
    "warmup_epochs": (_NUMBER, "a number"),
    "seed": (_INT, "an integer"),
    "max_patches": ((int, type(None)), "an integer or null"),
    "grad_clip": ((int, float, type(None)), "a number or null"),
    "device": ((str,), "a string"),
    "compute_dtype": ((str,), "a string"),
}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "auto")  # issue 7


def check_type(key: str, value: object) -> None:
    """ValueError naming the TrainConfig field `key` unless `value` has its type (bool is never a number)."""
    types, description = _TYPES[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"training parameter {key!r} must be {description}; got {value!r}")


@dataclass
class Progress:
    """After each optimiser step: epoch (1-based), step (1-based, cumulative), that step's loss, ETA."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    elapsed_s: float
    eta_s: float
    stage: str = "training"  # what runs now: "training", or e.g. "promotion gate (fold 2 of 3)"


class TrainingCancelled(Exception):
    """should_cancel() returned True between two optimiser steps."""


@dataclass
class TrainResult:
    """steps run; history = mean loss per epoch (over its bags); final_loss = history[-1];
    step_losses = the loss of every optimiser step, in order (for training curves)."""

    steps: int
    final_loss: float
    history: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    """Device "auto" → cuda when available, else cpu. Raises ValueError for unknown names or a missing GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"training parameter 'device': unknown device {device!r}; use cpu, cuda or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"training parameter 'device' is {device!r} but no CUDA GPU is available; use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"training parameter 'device': {device!r} is not supported; use cpu, cuda or auto")
    return dev


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr for 0-based `step`: linear warm-up, then cosine decay towards 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on ≥ 2-D tensors only (none on biases / 1-D parameters)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


def _bag_for_training(sample: Sample, config: TrainConfig, gen: torch.Generator, device: torch.device) -> Tensor:
    bag = sample.bag
    if bag.dim() == 3 and bag.shape[0] == 1:
        bag = bag[0]
    if config.max_patches is not None and bag.shape[0] > config.max_patches:
        bag = bag[torch.randperm(bag.shape[0], generator=gen)[: config.max_patches]]
    return bag.to(device=device, dtype=resolve_train_dtype(config.compute_dtype, device))


def _bag_loss(model: SurvivalModel, bag: Tensor, sample: Sample, device: torch.device) -> Tensor:
    """nll_loss(α = 0.5) + aux_loss for one bag (scalar)."""
    out = model(bag)
    bins = time_to_bin(torch.tensor([float(sample.time)]), model.bin_edges).to(device)
    events = torch.tensor([float(sample.event)], device=device)
    return nll_loss(out.logits.unsqueeze(0), bins, events, alpha=ALPHA) + out.aux_loss


def patient_ref(patient_id: str) -> str:
    """A patient as errors and logs name it: 'id-hash <12 hex of sha256(id)>', never the id itself (issue 8).
    An operator with the labels can find the patient: sha256 of each id, first 12 hex digits."""
    return "id-hash " + hashlib.sha256(str(patient_id).encode("utf-8")).hexdigest()[:12]


def _run_step(model, optimizer, params, group: list[Sample], config, gen, device) -> float:
    """One optimiser step over `group`; returns the step loss (mean over its bags)."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for sample in group:
        loss = _bag_loss(model, _bag_for_training(sample, config, gen, device), sample, device) / len(group)
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(
                f"training diverged: the loss of patient {patient_ref(sample.patient_id)} is "
                f"{float(loss.detach())}; "
                "lower lr or set grad_clip"
            )
        loss.backward()
        total += float(loss.detach())
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    return total


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def train(
    model: SurvivalModel,
    samples: Samples,
    config: TrainConfig,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train model.trainable_parameters() on `samples` (see the module docstring for the schedule).

    Calls should_cancel() before every step (TrainingCancelled when it returns True) and progress(Progress)
    after every step. The model ends on config.device, in eval mode (also when cancelled or failing).
    """
    if len(samples) == 0:
        raise ValueError("no training samples: the cohort's train split is empty")
    device = resolve_device(config.device)
    model.to(device)
    params = list(model.trainable_parameters())
    if not params:
        raise ValueError(f"model {model.method!r} has no trainable parameters")
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(config.seed)
        try:
            model.train()
            return _loop(model, samples, config, params, device, progress, should_cancel)
        finally:
            model.eval()


def _loop(model, samples, config, params, device, progress, should_cancel) -> TrainResult:
    n = len(samples)
    spe = math.ceil(n / config.accum)
    total_steps = config.epochs * spe
    warmup = min(total_steps, round(config.warmup_epochs * spe))
    optimizer = make_optimizer(params, config)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    patch_gen = torch.Generator().manual_seed(config.seed + 1)
    history: list[float] = []
    step_losses: list[float] = []
    step, start = 0, time.monotonic()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=shuffle_gen).tolist()
        epoch_sum = 0.0
        for first in range(0, n, config.accum):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled(f"training cancelled after {step} of {total_steps} steps")
            for g in optimizer.param_groups:
                g["lr"] = config.lr * lr_factor(step, warmup, total_steps)
            group = [samples[i] for i in order[first : first + config.accum]]
            loss = _run_step(model, optimizer, params, group, config, patch_gen, device)
            epoch_sum += loss * len(group)
            step_losses.append(loss)
            step += 1
            if progress is not None:
                elapsed = time.monotonic() - start
                eta = elapsed / step * (total_steps - step)
                progress(Progress(epoch, config.epochs, step, total_steps, loss, elapsed, eta))
        history.append(epoch_sum / n)
    return TrainResult(steps=step, final_loss=history[-1], history=history, step_losses=step_losses)


def train_cancer_specific(base: StateDict, samples: Samples, config: TrainConfig, **kwargs: Any) -> StaticModel:
    """fit_cancer_specific without the TrainResult (same keyword arguments: dims, bin_edges, progress,
    should_cancel)."""
    return fit_cancer_specific(base, samples, config, **kwargs)[0]


def fit_cancer_specific(
    base: StateDict,
    samples: Samples,
    config: TrainConfig,
    *,
    dims: FamilyDims,
    bin_edges: list[float],
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[StaticModel, TrainResult]:
    """A cancer-specific ABMIL θ_c: every parameter trained from θ₀ = `base` (which is not modified), and its
    TrainResult (loss history, steps).

    The model is StaticModel(method="cancer_specific") in eval mode; its artifact_tensors() is θ_c in the
    reference layout, and θ_c − θ₀ is the cancer's task vector.

    Small cohorts: the defaults (epochs 20, accum 16) give ceil(n / 16) · 20 optimiser steps — only 40 for
    n = 30 patients, too few at lr 1e-4. Raise `epochs` (e.g. 50–100), lower `accum` (e.g. 4–8, more and
    noisier steps) and/or raise `lr` (e.g. 5e-4–1e-3). `warmup_epochs` counts epochs, so the default 1
    stays a small share of a longer schedule. Check that TrainResult.history still falls at the end.
    """
    with torch.random.fork_rng(devices=[]):  # ABMIL's throwaway init must not move the caller's RNG
        model = StaticModel(
            {k: v.detach().clone() for k, v in base.items()},
            dims,
            bin_edges,
            method="cancer_specific",
            train_head_only=False,
        )
    result = train(model, samples, config, progress=progress, should_cancel=should_cancel)
    return model, result
