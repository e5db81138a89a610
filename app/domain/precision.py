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


def cast_bag(bag: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The bag in `dtype` (no copy when it already is); integer / float64 bags become float32 first."""
    return bag if bag.dtype == dtype else bag.to(dtype)
