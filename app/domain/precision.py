"""Reduced-precision inference: which dtype the two big N×D×hidden matmuls run in (mil.project).

A model computes `project(bag, W, b)` in the bag's dtype when it is bfloat16 or float16, and everything else
(attention, merge weights, heads, softmax, sums) in float32; so the caller picks the precision by casting the
bag once: `bag.to(resolve_inference_dtype(name, device))`.

    "float32"   exact reference path (what the tests compare against)
    "bfloat16"  8-bit mantissa, float32 range: no overflow; fast on CPUs with avx512_bf16 / AMX and on GPUs
    "float16"   10-bit mantissa, range ±65504; fast on GPUs (on most CPUs slower than float32)
    "auto"      bfloat16 on a CPU with native bf16 (avx512_bf16 or AMX), float16 on CUDA, else float32

Training (TrainConfig.compute_dtype, resolve_train_dtype) reads "auto" differently on CUDA: bfloat16 where the
GPU supports it, else float32 — never float16, whose range can overflow gradients without loss scaling.
"""

from __future__ import annotations

from functools import lru_cache

import torch

INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (avx512_bf16 or AMX tiles) through oneDNN."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        native = any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
        return native and bool(torch.backends.mkldnn.is_available())
    except (RuntimeError, AttributeError):  # pragma: no cover - exotic builds
        return False


def resolve_inference_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype for an inference-dtype setting ("auto" | "float32" | "bfloat16" | "float16").

    Raises ValueError naming the accepted values for anything else.
    """
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    try:
        return INFERENCE_DTYPES[name]
    except KeyError:
        raise ValueError(f"inference dtype {name!r} is not one of auto, {', '.join(INFERENCE_DTYPES)}") from None


def resolve_train_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype of a training compute-dtype setting: as resolve_inference_dtype, except that "auto" is
    bfloat16 on a CPU with native bf16 or on a CUDA GPU that supports it, and float32 otherwise."""
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return resolve_inference_dtype(name, device)


def dtype_name(dtype: torch.dtype) -> str:
    """ "float32" | "bfloat16" | "float16" for one of the INFERENCE_DTYPES."""
    return next(name for name, d in INFERENCE_DTYPES.items() if d == dtype)


HALF_DTYPES = (torch.float16, torch.bfloat16)
CAST_ROWS = 1024  # rows per step of an in-place cast (a 1024 × D temporary, e.g. 3 MiB at D = 1536)


def cast_bag(bag: torch.Tensor, dtype: torch.dtype, *, reuse: bool = False) -> torch.Tensor:
    """The bag in `dtype` (no copy when it already is); integer / float64 bags become float32 first.

    reuse=True: the caller owns `bag` and drops it for the result. A float16 <-> bfloat16 cast (the same 2 bytes a
    value) then converts in place, 1024 rows at a time (each block is converted into a small temporary before its
    bytes are overwritten): no second [N, D] buffer is allocated and written. The request's peak memory is set
    later, by the forward's activations (bench.request_peak). The result shares `bag`'s storage as a dtype view
    that torch does not track as a view: keep `bag` referenced while something tied to that tensor object (a
    memory reservation) must hold. `bag` no longer holds its old values."""
    if bag.dtype == dtype:
        return bag
    if not (reuse and bag.dtype in HALF_DTYPES and dtype in HALF_DTYPES and bag.is_contiguous() and bag.dim() >= 1):
        return bag.to(dtype)
    out = bag.view(dtype)
    with torch.no_grad():
        for start in range(0, bag.shape[0], CAST_ROWS):
            block = bag[start : start + CAST_ROWS]
            out[start : start + CAST_ROWS].copy_(block.to(dtype))
    return out
