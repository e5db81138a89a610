"""Why does STEPH win or lose? Per-bag merge statistics of trained STEPH models on the bench worlds.

    python -m bench.steph_diagnostics [--world shared] [--seeds 0 1 2] [--configs default lam0 epochs60 ...]

Same worlds, θ₀ and cancer-specific models as bench.reproduction (deterministic for the seed). For every
target and STEPH configuration it reports the held-out C-index and, averaged over the target's test bags:
Σ_{i∈S} w_i (how far the merged encoder moves from θ₀: c_t + Σ c_s = Σ w), the mean λ over the selected
sources, and the weight on the target's own task vector c_t = Σ w_i λ_i. Output: bench/out/diag-<tag>/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.reproduction import BenchConfig, c_index_of, log, merged_model, prepare_world

# name -> (STEPH params, TrainConfig overrides)
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "lam0": ({"lam_mode": "fixed", "lam_value": 0.0}, {}),
    "lam1": ({"lam_mode": "fixed", "lam_value": 1.0}, {}),
    "global_lam": ({"lam_mode": "global"}, {}),
    "epochs60": ({}, {"epochs": 60}),
    "gamma0": ({"gamma": 0.0}, {}),
    "gamma1e-2": ({"gamma": 1e-2}, {}),
    "beta0": ({"beta": 0.0}, {}),
    "beta0.5": ({"beta": 0.5}, {}),
}


def merge_stats(model: Any, samples: list) -> dict[str, float]:
    """Mean over bags of Σ_S w, mean_S λ and c_t = Σ_S w λ (from ModelOutput.info["sources"])."""
    sum_w, mean_lam, c_t = [], [], []
    with torch.no_grad():
        for s in samples:
            src = model(s.bag).info.get("sources", [])
            sum_w.append(sum(x["weight"] for x in src))
            mean_lam.append(statistics.fmean(x["lam"] for x in src) if src else float("nan"))
            c_t.append(sum(x["weight"] * x["lam"] for x in src))
    return {
        "sum_w": statistics.fmean(sum_w),
        "mean_lam": statistics.fmean(mean_lam),
        "c_target": statistics.fmean(c_t),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.steph_diagnostics")
    p.add_argument("--world", choices=["shared", "control"], default="shared")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", help="default: all 13")
    p.add_argument("--configs", nargs="+", default=["default", "lam0", "epochs60"], choices=list(CONFIGS))
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = BenchConfig()
    out_dir = Path("bench/out") / (args.tag or f"diag-{args.world}-{time.strftime('%H%M%S', time.gmtime())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(out_dir / "results.jsonl", "w") as fh:
        for seed in args.seeds:
            prep = prepare_world(cfg, seed, args.world == "control")
            for target in args.targets or list(prep.world.cancers):
                test = prep.data[target][1]
                cs = c_index_of(merged_model(prep, target, None, {}), test)["c_index"]
                for name in args.configs:
                    params, overrides = CONFIGS[name]
                    sub = replace(prep, tcfg=replace(prep.tcfg, **overrides))
                    model = merged_model(sub, target, "steph", params)
                    row = {"seed": seed, "target": target, "config": name, "cancer_specific": cs,
                           **c_index_of(model, test), **merge_stats(model, test)}  # fmt: skip
                    rows.append(row)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    log(f"[diag {args.world} {seed}] {target:9s} {name:10s} C={row['c_index']:.4f} "
                        f"(CS {cs:.4f}) Σw={row['sum_w']:.3f} λ={row['mean_lam']:.3f}")  # fmt: skip
    print("| config | mean C | Δ vs cancer-specific | wins | mean Σw | mean λ | mean c_t = Σwλ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.configs:
        sel = [r for r in rows if r["config"] == name]
        mean = {k: statistics.fmean(r[k] for r in sel) for k in ("c_index", "sum_w", "mean_lam", "c_target")}
        delta = statistics.fmean(r["c_index"] - r["cancer_specific"] for r in sel)
        wins = sum(r["c_index"] > r["cancer_specific"] for r in sel)
        print(f"| {name} | {mean['c_index']:.4f} | {delta:+.4f} | {wins}/{len(sel)} | {mean['sum_w']:.3f} | "
              f"{mean['mean_lam']:.3f} | {mean['c_target']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
