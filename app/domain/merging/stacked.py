"""Shared machinery of the task-vector merges: input checks, frozen tensor banks, the functional ABMIL
encoder, sparse mixup coefficients and artifact helpers.

Notation (SPEC §1): θ₀ the base, τ_t = θ_t − θ₀ the target's task vector, τ_{s_i} = θ_{s_i} − θ₀ (i < M).
For every encoder parameter the task vectors are stacked in one tensor T [M+1, *shape] (row 0 = τ_t, row 1+i =
τ_{s_i}); a merge is θ* = θ₀ + tensordot(c, T) for a coefficient vector c [M+1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from app.domain.merging.base import MergeInputs, fresh_head_state
from app.domain.mil import ABMIL, FamilyDims, is_encoder_key, reference_shapes
from app.domain.task_vectors import IncompatibleCheckpointError, StateDict, check_compatible


def encoder_shapes(dims: FamilyDims) -> dict[str, tuple[int, ...]]:
    """Reference encoder keys (feat_proj.*, attention_net.*) and their shapes for `dims`."""
    return {k: s for k, s in reference_shapes(dims).items() if is_encoder_key(k)}


def validate_inputs(inputs: MergeInputs, *, min_sources: int = 1) -> None:
    """Check the merge inputs: names match sources, every state dict fits `inputs.dims` and θ₀.

    Raises ValueError (too few sources, name count) or IncompatibleCheckpointError (naming the key).
    """
    if len(inputs.sources) < min_sources:
        raise ValueError(f"this merge needs at least {min_sources} source model(s); got {len(inputs.sources)}")
    if len(inputs.source_names) != len(inputs.sources):
        raise ValueError(
            f"got {len(inputs.sources)} source models but {len(inputs.source_names)} source names; "
            "give one name per source"
        )
    for key, shape in reference_shapes(inputs.dims).items():
        if key not in inputs.base:
            raise IncompatibleCheckpointError(f"base: missing key {key!r}; expected the reference ABMIL layout")
        if tuple(inputs.base[key].shape) != shape:
            raise IncompatibleCheckpointError(
                f"base: key {key!r} has shape {list(inputs.base[key].shape)}, the family dims give {list(shape)}"
            )
    check_compatible(inputs.base, inputs.target, name=f"target {inputs.target_name!r}")
    for name, source in zip(inputs.source_names, inputs.sources, strict=True):
        check_compatible(inputs.base, source, name=f"source {name!r}")


def task_vector_stack(inputs: MergeInputs) -> dict[str, Tensor]:
    """Encoder task vectors stacked per key: T[k] [M+1, *shape] float32, row 0 = τ_t, row 1+i = τ_{s_i}."""
    out = {}
    for key in encoder_shapes(inputs.dims):
        base = inputs.base[key].double()
        rows = [inputs.target[key].double() - base] + [s[key].double() - base for s in inputs.sources]
        out[key] = torch.stack(rows).float()
    return out


def buffer_name(key: str) -> str:
    """State-dict key → a legal buffer name ("feat_proj.0.weight" → "feat_proj__0__weight")."""
    return key.replace(".", "__")


class FrozenState(nn.Module):
    """A dict of frozen tensors kept as buffers (they move with .to() and are saved, never trained)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.names = list(tensors)
        for key, value in tensors.items():
            self.register_buffer(buffer_name(key), value.detach().float().clone())

    def get(self, key: str) -> Tensor:
        return getattr(self, buffer_name(key))

    def as_dict(self) -> dict[str, Tensor]:
        return {k: self.get(k) for k in self.names}


class ABMILEncoder(ABMIL):
    """ABMIL without its head: forward(bag [N, D]) -> Encoded(slide_feature [hidden], attention [N]).

    Parameter keys are the reference encoder keys (its forward is mil.encode_with on its own parameters).
    """

    def __init__(self, dims: FamilyDims) -> None:
        super().__init__(dims)
        del self.pred_head

    def forward(self, bag: Tensor):  # type: ignore[override]
        return self.encode(bag)


def encoder_from_state(dims: FamilyDims, state: StateDict, *, trainable: bool) -> ABMILEncoder:
    """An ABMILEncoder holding the encoder entries of `state`."""
    enc = ABMILEncoder(dims)
    enc.load_state_dict({k: state[k].float() for k in encoder_shapes(dims)})
    enc.requires_grad_(trainable)
    return enc


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic module initialisation for `seed` without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_head(dims: FamilyDims, seed: int) -> nn.Linear:
    """A fresh Linear(hidden → n_bins), initialised exactly as base.fresh_head_state(dims, seed)."""
    head = nn.Linear(dims.hidden_dim, dims.n_bins)
    state = fresh_head_state(dims, seed)
    head.load_state_dict({"weight": state["pred_head.weight"], "bias": state["pred_head.bias"]})
    return head


def hyper_mlp(width: int, out: int, dropout: float) -> nn.Sequential:
    """Linear(width → width), ReLU, Dropout, Linear(width → out) (SPEC §1 hypernetwork MLP)."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out))


def resolve_k(topk: int | None, n: int) -> int:
    """Number of selected entries: all n when topk is None, else min(topk, n)."""
    return n if topk is None else min(topk, n)


def mix_coefficients(w: Tensor, lam: Tensor, selected: Tensor) -> Tensor:
    """Sparse mixup coefficients c [M+1] from w [M], λ [M] and the selected indices S [k].

    c_0 = Σ_{i∈S} w_i λ_i (on τ_t),  c_{1+i} = w_i (1 − λ_i) for i ∈ S, 0 otherwise, so that
    θ₀ + tensordot(c, T) = θ₀ + Σ_{i∈S} w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}).
    """
    assert w.dim() == 1 and lam.shape == w.shape, f"w and λ must both be [M]; got {tuple(w.shape)}, {tuple(lam.shape)}"
    mask = torch.zeros_like(w).index_fill(0, selected, 1.0)
    wm = w * mask
    return torch.cat([(wm * lam).sum().reshape(1), wm * (1 - lam)])


def merge_stack(base: dict[str, Tensor], stack: dict[str, Tensor], c: Tensor) -> dict[str, Tensor]:
    """θ*[k] = θ₀[k] + Σ_r c_r T[k][r] (one tensordot per key, no loop over sources), in the stack's dtype
    (float32) even when c comes out of an autocast region in bfloat16/float16."""
    return {k: base[k] + torch.tensordot(c.to(stack[k].dtype), stack[k], dims=1) for k in base}


def logit(p: float) -> float:
    """log(p / (1 − p)), with p clamped into [1e-4, 1 − 1e-4]."""
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def sources_info(names: list[str], selected: Tensor, weights: Tensor, lams: Tensor | None) -> list[dict[str, Any]]:
    """[{index, name, weight, lam}] for the selected entries, by weight (descending); lam None if absent."""
    idx = selected.tolist()
    w = weights.detach()[selected].tolist()
    lam = lams.detach()[selected].tolist() if lams is not None else [None] * len(idx)
    rows = [
        {"index": i, "name": names[i], "weight": float(wi), "lam": None if li is None else float(li)}
        for i, wi, li in zip(idx, w, lam, strict=True)
    ]
    return sorted(rows, key=lambda r: -r["weight"])


def load_exact(model: nn.Module, tensors: dict[str, Tensor], method: str) -> None:
    """load_state_dict(strict) with an error that says the artifact and its config disagree."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{method} artifact: tensors do not match its config ({exc}); the file is damaged") from None
