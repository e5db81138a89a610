"""Task vectors over state dicts: τ = θ_finetuned − θ₀ (SPEC §1)."""

from __future__ import annotations

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


class IncompatibleCheckpointError(ValueError):
    """A checkpoint does not fit its base: key set, shape, dtype or finiteness. The message names the key."""


MAX_PARAMETER_ABS = 1e6  # a trained network's parameters are O(1); far larger ones overflow float32 merges


def check_finite(state: StateDict, *, name: str = "checkpoint", max_abs: float = MAX_PARAMETER_ABS) -> None:
    """Raise IncompatibleCheckpointError naming the first key holding NaN or Inf, or a value whose magnitude
    exceeds `max_abs` (finite values near float32's limit make every norm, sum and scaled task vector overflow)."""
    for key, value in state.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise IncompatibleCheckpointError(
                f"{name}: tensor {key!r} holds {bad} non-finite value(s) (NaN or Inf); "
                "re-export the checkpoint from a healthy training run"
            )
        lo, hi = torch.aminmax(value.detach())
        largest = max(abs(float(lo)), abs(float(hi)))
        if largest > max_abs:
            raise IncompatibleCheckpointError(
                f"{name}: tensor {key!r} holds a value of magnitude {largest:.3g}, above the limit of "
                f"{max_abs:.0g} for a network parameter (trained weights are of order 1; values this large "
                "overflow float32 when task vectors are scaled and summed); re-export the checkpoint from a "
                "healthy training run"
            )


def check_compatible(reference: StateDict, candidate: StateDict, *, name: str = "checkpoint") -> None:
    """Check `candidate` against `reference` (e.g. the base θ₀): same key set, shapes, dtypes, all finite.

    Raises IncompatibleCheckpointError whose message names the offending key and what was expected.
    """
    missing = sorted(set(reference) - set(candidate))
    extra = sorted(set(candidate) - set(reference))
    if missing:
        raise IncompatibleCheckpointError(
            f"{name}: missing key {missing[0]!r} (expected shape {list(reference[missing[0]].shape)})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; the checkpoint must hold every parameter of the base"
        )
    if extra:
        raise IncompatibleCheckpointError(
            f"{name}: unexpected key {extra[0]!r}"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            + "; the base has no such parameter"
        )
    for key, ref in reference.items():
        cand = candidate[key]
        if tuple(cand.shape) != tuple(ref.shape):
            raise IncompatibleCheckpointError(
                f"{name}: key {key!r} has shape {list(cand.shape)}, expected {list(ref.shape)} as in the base"
            )
        if cand.dtype != ref.dtype:
            raise IncompatibleCheckpointError(
                f"{name}: key {key!r} has dtype {str(cand.dtype).removeprefix('torch.')}, "
                f"expected {str(ref.dtype).removeprefix('torch.')} as in the base"
            )
    check_finite(candidate, name=name)


def compute_task_vector(finetuned: StateDict, base: StateDict) -> StateDict:
    """τ[k] = finetuned[k] − base[k] for every key (keys must match; see check_compatible)."""
    check_compatible(base, finetuned)
    return {k: finetuned[k] - base[k] for k in base}


def apply_task_vector(base: StateDict, task_vector: StateDict, scale: float = 1.0) -> StateDict:
    """θ[k] = base[k] + scale · τ[k] for keys of τ; keys absent from τ are copied from base."""
    unknown = sorted(set(task_vector) - set(base))
    if unknown:
        raise IncompatibleCheckpointError(f"task vector key {unknown[0]!r} is not in the base")
    return {k: (v + scale * task_vector[k]) if k in task_vector else v.clone() for k, v in base.items()}


def layer_norms(task_vector: StateDict) -> dict[str, float]:
    """Frobenius norm of every tensor of a task vector."""
    return {k: float(torch.linalg.vector_norm(v.double())) for k, v in task_vector.items()}
