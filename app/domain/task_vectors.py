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


DEFAULT_MIN_BASE_RETENTION = 0.2  # fine-tuned checkpoints keep ≈ 0.7–1.1 of θ₀; an independent init ≈ 0 ± 0.05
MAX_SIZE_RATIO = 100.0  # ‖θ‖ / ‖θ₀‖ above this: weights rescaled by orders of magnitude, not fine-tuned
MIN_RELATIVE_CHANGE = 1e-6  # ‖τ‖ / ‖θ₀‖ below this: the checkpoint is its base (it learned nothing)


def _norms(base: StateDict, state: StateDict) -> tuple[float, float, float, float]:
    """(⟨θ, θ₀⟩, ‖θ₀‖², ‖θ‖², ‖θ − θ₀‖²) over every floating tensor of the base (float64 sums)."""
    dot = base2 = state2 = diff2 = 0.0
    for key, ref in base.items():
        if not ref.is_floating_point() or key not in state:
            continue
        a, b = ref.detach().double().flatten(), state[key].detach().double().flatten()
        dot += float(a @ b)
        base2 += float(a @ a)
        state2 += float(b @ b)
        diff2 += float((b - a) @ (b - a))
    return dot, base2, state2, diff2


def base_retention(base: StateDict, state: StateDict) -> float | None:
    """How much of the base θ₀ a checkpoint θ still carries: r = ⟨θ, θ₀⟩ / ‖θ₀‖² over every floating tensor.

    A checkpoint fine-tuned from θ₀ keeps most of it (θ = θ₀ + τ with a small, mostly orthogonal τ: r ≈ 1; the
    benchmark's checkpoints 0.9–1.0, weight decay lowers it slowly); one trained from another initialisation of
    the same architecture is unrelated to θ₀ (r ≈ 0, spread ≈ ‖θ‖ / (‖θ₀‖ √n) for n parameters). Unlike the
    cosine it does not fall when training grows the weights. None when the base holds no non-zero weight.
    """
    dot, base2, _, _ = _norms(base, state)
    return dot / base2 if base2 > 0 else None


def check_descends_from(
    base: StateDict, state: StateDict, *, name: str = "checkpoint", min_retention: float = DEFAULT_MIN_BASE_RETENTION
) -> float | None:
    """Refuse a checkpoint that cannot be a fine-tuning of `base`, whose task vector τ = θ − θ₀ every merge would
    mix in without any error: trained from another initialisation (base_retention below `min_retention`: τ is
    the difference of two unrelated random inits), rescaled by orders of magnitude (‖θ‖ / ‖θ₀‖ above
    MAX_SIZE_RATIO: every prediction of a merge with it is the same), or the base itself (‖τ‖ / ‖θ₀‖ below
    MIN_RELATIVE_CHANGE: it learned nothing). A negative `min_retention` turns the checks off. Returns the
    retention."""
    dot, base2, state2, diff2 = _norms(base, state)
    if min_retention < 0 or base2 <= 0:
        return dot / base2 if base2 > 0 else None
    retention, size, change = dot / base2, (state2 / base2) ** 0.5, (diff2 / base2) ** 0.5
    fix = (
        "register the checkpoint the training produced, against the base it was trained from (GET /bases lists "
        "them; POST /bases adds one), or set STEPH_MIN_BASE_RETENTION to a negative value to turn these checks off"
    )
    if retention < min_retention:
        raise IncompatibleCheckpointError(
            f"{name} does not look trained from this base: it keeps {retention:.2f} of the base's weights "
            f"(⟨θ, θ₀⟩ / ‖θ₀‖², below the limit {min_retention:g}; a checkpoint fine-tuned from the base keeps about "
            "0.7–1, one trained from another initialisation about 0), so its task vector would be noise. Register it "
            "against the base it was trained from (GET /bases lists them; POST /bases adds one), or lower "
            "STEPH_MIN_BASE_RETENTION (a negative value turns this check off) if it really was trained from this base"
        )
    if size > MAX_SIZE_RATIO:
        raise IncompatibleCheckpointError(
            f"{name}: its weights are {size:.3g} times the size of the base's (‖θ‖ / ‖θ₀‖, limit {MAX_SIZE_RATIO:g}; "
            "fine-tuning moves weights, it does not rescale them by orders of magnitude): a merge with it would "
            f"give every patient the same prediction; {fix}"
        )
    if change < MIN_RELATIVE_CHANGE:
        raise IncompatibleCheckpointError(
            f"{name} is identical to its base (‖θ − θ₀‖ / ‖θ₀‖ = {change:.1g}): its task vector is zero, it learned "
            f"nothing to merge; {fix}"
        )
    return retention


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
