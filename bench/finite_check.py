"""The bag finite check (app.io.limits.all_finite) against the one it replaced, in one run (issue 7).

    nice -n 10 python -m bench.finite_check [--n 10000] [--repeats 15]

A 10 000 × 1536 float16 bag (a TRIDENT .h5 on disk) and a random STEPH (bench.predict_load.build_models):
median ms, round-robin, of the finite check alone — the chunked float32 sum used until session 10 (kept here as
the reference) vs the aminmax check now in the service — and of the service's whole scoring of one patient
(app.services.predict.score_patient: read, finite check, cast to the auto dtype, forward) with either check,
against the in-process forward alone (the bag in memory, cast to the same dtype).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import torch

import app.io.bags as bags
from app.domain.precision import resolve_inference_dtype
from app.io.limits import all_finite
from app.services.predict import BagFile, score_patient
from bench.predict_load import DIMS, build_models, machine, scoring_settings, write_fp16_bag

ROWS = 4096


def chunked_sum_all_finite(features: torch.Tensor) -> bool:
    """The previous check: a float32 sum per 4096-row chunk (NaN/Inf propagate), re-checked exactly on overflow."""
    if features.dtype in (torch.float32, torch.float64):
        return bool(features.sum().isfinite()) or bool(torch.isfinite(features).all())
    for start in range(0, max(features.shape[0], 1), ROWS):
        chunk = features[start : start + ROWS]
        if not bool(chunk.sum(dtype=torch.float32).isfinite()) and not bool(torch.isfinite(chunk).all()):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.finite_check", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    model = build_models(DIMS)["steph"]
    dtype = resolve_inference_dtype("auto")
    settings = scoring_settings("auto")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_fp16_bag(Path(tmp) / "bag.h5", args.n, DIMS.in_dim)
        files = [BagFile("bag.h5", path)]
        with h5py.File(path) as f:
            bag = torch.from_numpy(f["features"][()])

        def forward() -> None:
            with torch.inference_mode():
                model(bag.to(dtype))

        def score(check: Callable[[torch.Tensor], bool]) -> Callable[[], None]:
            def run() -> None:
                bags.all_finite = check  # what app.io.bags.check_finite calls
                try:
                    score_patient(model, "P", files, settings, 0)
                finally:
                    bags.all_finite = all_finite

            return run

        calls: dict[str, Callable[[], object]] = {
            "check: float32 sum (before)": lambda: chunked_sum_all_finite(bag),
            "check: aminmax (now)": lambda: all_finite(bag),
            "forward alone": forward,
            "score_patient, float32-sum check": score(chunked_sum_all_finite),
            "score_patient, aminmax check": score(all_finite),
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for fn in calls.values():
            fn()
        keys = list(calls)
        for r in range(args.repeats):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                calls[key]()
                times[key].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    fwd = ms["forward alone"]
    print(f"Command: `nice -n 10 python -m bench.finite_check --n {args.n} --repeats {args.repeats}`  ")
    print(f"Machine: {machine()}; bag {args.n:,} × {DIMS.in_dim} float16, dtype {dtype}.\n")
    print("| call | median ms | × forward alone |\n|---|---:|---:|")
    for key, v in ms.items():
        print(f"| {key} | {v:,.1f} | {v / fwd:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
