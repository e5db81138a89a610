"""Predict under load, as ratios measured in ONE run (issue 7): compute, precision, training cost, HTTP overhead,
concurrent clients, memory and cold start.

    nice -n 10 python -m bench.predict_load [--quick] [--ns 1000 10000 100000] [--skip-http]

1. compute: one ABMIL (cancer-specific, the reference forward), STEPH (top-k 5) and routing (top-k 5) on a random
   bag [N, 1536] (dims 1536 → 512 → 384, 32 bins, 12 sources; bench.inference_cost.random_inputs), in float32 and
   in the reduced dtype that `STEPH_INFERENCE_DTYPE=auto` picks on this machine; round-robin, median ms, and
   every ratio against one float32 ABMIL of the same N (plus STEPH / ABMIL in the same dtype).
2. precision on a bench world: a synthetic 4-cancer world at D = 1536 (bench_world), cancer-specific models
   and a STEPH / routing merge trained in float32, then the target's held-out test split scored in float32 and
   reduced precision: Harrell C-index change and max |Δrisk| per model; and STEPH trained with compute_dtype
   reduced vs float32 (C-index of each, same seed).
3. training cost: forward + loss + backward per bag at N = 10 000 (what an epoch is made of), steph vs a
   cancer-specific ABMIL, float32 and reduced; the ratio is the merge-epoch / cancer-specific-epoch cost.
4. service (bench.predict_load_http, unless --skip-http): a real `steph serve`: POST /predict of a 10k × 1536
   float16 .h5 vs the in-process forward of the same model (and read + forward), 1 / 4 / 16 concurrent clients
   (throughput, p50 / p95 latency, server peak RSS over its idle level), cold start to the first predict.

Output: markdown on stdout (the "Predict under load" section of BENCHMARKS.md) and bench/out/predict-load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from app.domain.merging.base import StaticModel, SurvivalModel
from app.domain.merging.registry import get_method
from app.domain.mil import FamilyDims
from app.domain.precision import resolve_inference_dtype
from bench.inference_cost import random_inputs

DIMS = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
REPEATS = {1000: 9, 10000: 5, 100000: 2}
OUT = Path(__file__).resolve().parent / "out" / "predict-load.json"


def scoring_settings(inference_dtype: str = "auto") -> Any:
    """The settings app.services.predict.score_patient reads, with limits far above any bench bag."""
    from types import SimpleNamespace

    return SimpleNamespace(
        max_patches=500_000, request_memory_mb=4096, process_memory_mb=8192, inference_dtype=inference_dtype
    )


def write_fp16_bag(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    """A TRIDENT-style .h5 bag: `features` [n, dim] float16, standard normal (seeded)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as fh:
        fh.create_dataset(
            "features", data=np.random.default_rng(seed).standard_normal((n, dim), np.float32).astype(np.float16)
        )
    return path


def build_models(dims: FamilyDims, n_sources: int = 12) -> dict[str, SurvivalModel]:
    """abmil (one cancer-specific ABMIL), steph (top-k 5), routing (top-k 5), eval mode, random weights."""
    inputs = random_inputs(dims, n_sources, seed=0)
    steph, routing = get_method("steph"), get_method("routing")
    return {
        "abmil": StaticModel(inputs.target, dims, inputs.bin_edges).eval(),
        "steph": steph.build(inputs, steph.parse_params({}), seed=0).eval(),
        "routing": routing.build(inputs, routing.parse_params({}), seed=0).eval(),
    }


def round_robin(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call; every call once per round with a rotating start (noise hits all alike)."""
    keys, times = list(calls), {k: [] for k in calls}
    for fn in calls.values():
        fn()  # warm-up
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            calls[key]()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def compute_rows(ns: list[int], low: torch.dtype, dims: FamilyDims) -> list[dict[str, Any]]:
    """Per N: median ms of every (model, dtype) and its ratio to the float32 ABMIL."""
    models, rows = build_models(dims), []
    for n in ns:
        bag = torch.randn(n, dims.in_dim, generator=torch.Generator().manual_seed(n))
        bags = {"float32": bag, str(low).removeprefix("torch."): bag.to(low)}
        calls = {(m, d): (lambda m=m, b=b: _infer(models[m], b)) for m in models for d, b in bags.items()}
        med = round_robin({f"{m}|{d}": fn for (m, d), fn in calls.items()}, REPEATS.get(n, 3))
        ref = med["abmil|float32"]
        for key, sec in med.items():
            model, dtype = key.split("|")
            same = med[f"abmil|{dtype}"]
            rows.append({"n": n, "model": model, "dtype": dtype, "ms": sec * 1e3, "x_abmil_fp32": sec / ref,
                         "x_abmil_same_dtype": sec / same})  # fmt: skip
        del bag, bags
    return rows


def _infer(model: SurvivalModel, bag: torch.Tensor) -> None:
    with torch.inference_mode():
        model(bag)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _log(stage: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {stage}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from bench import predict_load_render as render
    from bench.predict_load_quality import quality_rows, train_cost_rows

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small N and a tiny world (a smoke run, ~1 min)")
    p.add_argument("--ns", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--skip-http", action="store_true", help="no `steph serve` part")
    p.add_argument("--parts", nargs="+", default=["compute", "quality", "train", "service"],
                   help="which parts to run (default all: compute quality train service)")  # fmt: skip
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    p.add_argument("--server-env", nargs="*", default=[], metavar="K=V",
                   help="extra environment of the `steph serve` process only (e.g. MALLOC_* of glibc)")  # fmt: skip
    args = p.parse_args(argv)
    low = resolve_inference_dtype("auto")
    low = torch.bfloat16 if low == torch.float32 else low  # a CPU without native bf16 still gets the bf16 row
    ns = [200, 1000] if args.quick else args.ns
    t0 = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "low_dtype": str(low).removeprefix("torch.")}
    if "compute" in args.parts:
        _log("compute")
        result["compute"] = compute_rows(ns, low, FamilyDims(64, 32, 16, 8) if args.quick else DIMS)
    if "quality" in args.parts:
        _log("precision (bench world)")
        result["quality"] = quality_rows(low, quick=args.quick)
    if "train" in args.parts:
        _log("training cost")
        result["train"] = train_cost_rows(low, n=1000 if args.quick else 10000)
    if "service" in args.parts and not args.skip_http:
        from bench.predict_load_http import service_rows

        _log("service")
        server_env = dict(kv.split("=", 1) for kv in args.server_env)
        result["service"] = service_rows(quick=args.quick, server_env=server_env)
        result["service"]["server_env"] = server_env
    result["wall_s"] = time.perf_counter() - t0
    result["command"] = "nice -n 10 python -m bench.predict_load " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(render.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
