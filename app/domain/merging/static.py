"""Static merges (one merged ABMIL for every bag): model averaging, task arithmetic, TIES.

All arithmetic runs in float64 and is cast back to float32, so e.g. θ₀ + (θ_s − θ₀) gives θ_s bit for bit.
With retrain_head (the default, as in the paper) the encoder is merged and the head is a fresh Linear(hidden →
n_bins) trained on the target cohort; without it the head is merged exactly like the encoder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from app.domain.merging.base import (
    MergeInputs,
    MergeMethod,
    StaticModel,
    SurvivalModel,
    encoder_with_head,
    fresh_head_state,
)
from app.domain.merging.stacked import validate_inputs
from app.domain.mil import FamilyDims, is_encoder_key
from app.domain.task_vectors import StateDict

_INCLUDE_TARGET_HELP = "merge the target's own model together with the sources"
_RETRAIN_HELP = "replace the head by a fresh one trained on the target cohort (else merge the head too)"


def average_states(states: list[StateDict], keys: list[str]) -> StateDict:
    """θ[k] = mean_j θ_j[k] over the given keys (float64)."""
    return {k: torch.stack([s[k].double() for s in states]).mean(dim=0) for k in keys}


def trim_top(task_vectors: list[StateDict], density: float, mode: str) -> list[StateDict]:
    """Keep, per task vector, the ceil(density · n) entries of largest magnitude; zero the rest.

    mode "per_tensor": n = numel of each tensor, separately; "global": n = all entries of the task vector.
    """
    out = []
    for tv in task_vectors:
        groups = [[k] for k in tv] if mode == "per_tensor" else [list(tv)]
        trimmed = {}
        for keys in groups:
            flat = torch.cat([tv[k].reshape(-1) for k in keys])
            keep = min(flat.numel(), max(1, math.ceil(density * flat.numel() - 1e-9)))
            mask = torch.zeros_like(flat).index_fill(0, torch.topk(flat.abs(), keep).indices, 1.0)
            parts = torch.split(flat * mask, [tv[k].numel() for k in keys])
            trimmed.update({k: p.reshape(tv[k].shape) for k, p in zip(keys, parts, strict=True)})
        out.append(trimmed)
    return out


def ties_merge(task_vectors: list[StateDict], density: float, mode: str = "per_tensor") -> StateDict:
    """TIES: trim (trim_top), elect γ = sign(Σ_j trimmed_j) per entry, then the disjoint mean
    merged = Σ_j trimmed_j · [sign(trimmed_j) = γ ≠ 0] / max(1, #{j : sign(trimmed_j) = γ ≠ 0})."""
    trimmed = trim_top(task_vectors, density, mode)
    merged = {}
    for key in task_vectors[0]:
        values = torch.stack([t[key] for t in trimmed])  # [J, *shape]
        elected = torch.sign(values.sum(dim=0))
        agree = (torch.sign(values) == elected) & (values != 0)
        count = agree.sum(dim=0).clamp(min=1)
        merged[key] = (values * agree).sum(dim=0) / count
    return merged


def _members(inputs: MergeInputs, include_target: bool) -> list[StateDict]:
    members = ([inputs.target] if include_target else []) + list(inputs.sources)
    if not members:
        raise ValueError("nothing to merge: no sources and include_target is false")
    return members


def _merge_keys(inputs: MergeInputs, retrain_head: bool) -> list[str]:
    return [k for k in inputs.base if is_encoder_key(k) or not retrain_head]


def _static_model(method: str, inputs: MergeInputs, merged: StateDict, params: Any, seed: int) -> StaticModel:
    """StaticModel from merged (float64) entries; a fresh head when params.retrain_head."""
    state = {k: v.float() for k, v in merged.items()}
    if params.retrain_head:
        state = encoder_with_head(state, fresh_head_state(inputs.dims, seed))
    config = {
        "params": dataclasses.asdict(params),
        "source_names": list(inputs.source_names),
        "target_name": inputs.target_name,
    }
    return StaticModel(state, inputs.dims, inputs.bin_edges, method=method, train_head_only=True, extra_config=config)


def load_static(tensors: dict[str, Tensor], config: dict[str, Any]) -> StaticModel:
    """Rebuild a StaticModel (cancer-specific or static merge) from reference-layout tensors and config."""
    extra = {k: v for k, v in config.items() if k not in ("method", "dims", "bin_edges")}
    dims = FamilyDims.from_dict(config["dims"])
    try:
        model = StaticModel(tensors, dims, config["bin_edges"], method=config["method"], extra_config=extra)
    except RuntimeError as exc:
        raise ValueError(f"{config['method']} artifact: tensors do not match its config ({exc})") from None
    return model.eval()


class StaticMethod(MergeMethod):
    """Shared load() of the static merges."""

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        return load_static(tensors, config)


@dataclass
class AverageParams:
    include_target: bool = field(default=True, metadata={"help": _INCLUDE_TARGET_HELP})
    retrain_head: bool = field(default=True, metadata={"help": _RETRAIN_HELP})


class AverageMethod(StaticMethod):
    name = "average"
    paper = "https://arxiv.org/abs/2203.05482"
    summary = "Model averaging (model soup): the mean of the target's and the sources' encoders."
    params_type = AverageParams

    def build(self, inputs: MergeInputs, params: AverageParams, *, seed: int) -> SurvivalModel:
        validate_inputs(inputs, min_sources=0)
        members = _members(inputs, params.include_target)
        merged = average_states(members, _merge_keys(inputs, params.retrain_head))
        return _static_model(self.name, inputs, merged, params, seed)


MAX_COEFFICIENT = 100.0  # |scale| and |weights| of the static merges: beyond it θ₀ + scale·Στ only overflows


@dataclass
class TaskArithmeticParams:
    scale: float = field(default=0.3, metadata={"help": "λ: θ = θ₀ + scale · Σ_j weight_j · τ_j"})
    weights: list[float] | None = field(default=None, metadata={"help": "one weight per source; null = all 1"})
    target_weight: float = field(default=1.0, metadata={"help": "weight of the target's task vector"})
    include_target: bool = field(default=True, metadata={"help": _INCLUDE_TARGET_HELP})
    retrain_head: bool = field(default=True, metadata={"help": _RETRAIN_HELP})

    def __post_init__(self) -> None:
        numbers = [self.scale, self.target_weight, *(self.weights or [])]
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError("scale, weights and target_weight must be finite numbers")
        if not all(abs(x) <= MAX_COEFFICIENT for x in numbers):
            raise ValueError(
                f"scale, weights and target_weight must lie in [-{MAX_COEFFICIENT:g}, {MAX_COEFFICIENT:g}] "
                "(task arithmetic uses scales of about 0.1–1)"
            )


class TaskArithmeticMethod(StaticMethod):
    name = "task_arithmetic"
    paper = "https://arxiv.org/abs/2212.04089"
    summary = "Task arithmetic: θ₀ + scale · Σ_j weight_j · τ_j over the target's and the sources' task vectors."
    params_type = TaskArithmeticParams

    def check_sources(self, params: TaskArithmeticParams, n_sources: int) -> None:
        if params.weights is not None and len(params.weights) != n_sources:
            raise ValueError(
                f"weights has {len(params.weights)} entries but the job has {n_sources} source checkpoint(s): "
                "give one weight per source, in the order the sources are listed, or leave weights out"
            )

    def build(self, inputs: MergeInputs, params: TaskArithmeticParams, *, seed: int) -> SurvivalModel:
        validate_inputs(inputs, min_sources=0)
        self.check_sources(params, len(inputs.sources))
        weights = params.weights if params.weights is not None else [1.0] * len(inputs.sources)
        members = _members(inputs, params.include_target)
        coefs = ([params.target_weight] if params.include_target else []) + list(weights)
        merged = {}
        for key in _merge_keys(inputs, params.retrain_head):
            base = inputs.base[key].double()
            tau = sum(a * (m[key].double() - base) for a, m in zip(coefs, members, strict=True))
            merged[key] = base + params.scale * tau
        return _static_model(self.name, inputs, merged, params, seed)


@dataclass
class TiesParams:
    density: float = field(default=0.2, metadata={"help": "fraction of each task vector kept (largest magnitude)"})
    trim: Literal["per_tensor", "global"] = field(
        default="per_tensor",
        metadata={"help": "trim each tensor separately or the whole task vector at once"},
    )
    scale: float = field(default=1.0, metadata={"help": "λ: θ = θ₀ + scale · TIES(τ)"})
    include_target: bool = field(default=True, metadata={"help": _INCLUDE_TARGET_HELP})
    retrain_head: bool = field(default=True, metadata={"help": _RETRAIN_HELP})

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1]; got {self.density}")
        if self.trim not in ("per_tensor", "global"):
            raise ValueError(f"trim must be 'per_tensor' or 'global'; got {self.trim!r}")
        if not math.isfinite(self.scale) or abs(self.scale) > MAX_COEFFICIENT:
            raise ValueError(
                f"scale must be a finite number in [-{MAX_COEFFICIENT:g}, {MAX_COEFFICIENT:g}]; got {self.scale}"
            )


class TiesMethod(StaticMethod):
    name = "ties"
    paper = "https://arxiv.org/abs/2306.01708"
    summary = "TIES-merging: trim each task vector to its largest entries, elect signs, average agreeing entries."
    params_type = TiesParams

    def build(self, inputs: MergeInputs, params: TiesParams, *, seed: int) -> SurvivalModel:
        validate_inputs(inputs, min_sources=0)
        keys = _merge_keys(inputs, params.retrain_head)
        base = {k: inputs.base[k].double() for k in keys}
        tvs = [{k: m[k].double() - base[k] for k in keys} for m in _members(inputs, params.include_target)]
        merged = ties_merge(tvs, params.density, params.trim)
        return _static_model(self.name, inputs, {k: base[k] + params.scale * merged[k] for k in keys}, params, seed)
