"""Side check for issue 12: does a 5-fold inner CV make `auto`'s choice safer than the 3-fold default?

    python -m bench.auto_folds run --regime paper --world control --folds 5 --seeds 0 1 2 3 4 5 6 7 \\
        > bench/results/regimes/cv5/paper-control.jsonl
    python -m bench.auto_folds compare bench/results/regimes/cv5/*.jsonl

`run` repeats only the inner CV of auto's default transfer candidates (STEPH, STEPH λ = 0, vs the refitted target)
with another fold count on the bench.regimes worlds (same checkpoints, settings and seeds). `compare` applies
auto's rule (app.domain.merging.auto.choose, margin 0, retrain as the fallback) to that evidence and to the 3-fold
evidence stored by bench.regimes (bench/results/regimes/{full,fresh}), and prints Δ vs the budget-matched
cancer-specific model of the chosen rows (their test C-index from the same result files).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "regimes"
BUDGET = "cancer_specific (budget-matched)"
ROW = {"steph": "steph", "steph λ = 0": "steph λ = 0"}


def run(regime: str, world: str, folds: int, seeds: list[int]) -> None:
    import torch

    from app.domain.merging.auto import CANDIDATES
    from app.domain.promotion import TARGET, cross_validate, paired_estimate
    from bench.regimes import REGIMES, inputs_for, merge_config, prepare

    torch.set_num_threads(1)
    reg = REGIMES[regime]
    cands = [CANDIDATES["steph"], CANDIDATES["steph_lam0"], TARGET]
    for seed in seeds:
        prep = prepare(reg, seed, world == "control")
        for target in reg.targets if regime != "small" else ("BLCA",):
            t0 = time.perf_counter()
            cv = cross_validate(
                cands, inputs_for(prep, target), prep["data"][target][0], merge_config(seed), folds=folds
            )
            ev = {}
            for c in cands[:-1]:
                est = paired_estimate(cv, c.label, TARGET.label, seed=seed)
                ev[c.label] = {k: est[k] for k in ("c", "difference", "se")}
            row = {"regime": regime, "world": world, "seed": seed, "target": target, "folds": folds, "cv": ev,
                   "s": round(time.perf_counter() - t0, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)


def compare(files: list[Path]) -> None:
    from app.domain.merging.auto import choose
    from app.domain.promotion import RETRAIN

    rows = [json.loads(x) for f in RESULTS.glob("*/*/results.jsonl") for x in f.read_text().splitlines() if x]
    by = {(r["regime"], r["world"], r["seed"], r["target"], r["method"]): r for r in rows}

    def delta(key: tuple, cv: dict) -> float:
        cv = {k: v for k, v in cv.items() if k in ROW}
        cv[RETRAIN.label] = {"c": 0.0, "difference": 0.0}
        winner = choose(cv, [*ROW, RETRAIN.label], 0.0)
        chosen = BUDGET if winner == RETRAIN.label else ROW[winner]
        return by[(*key, chosen)]["c_index"] - by[(*key, BUDGET)]["c_index"]

    print("| regime | world | folds | Δ vs budget-matched (mean ± se) | per seed |\n|---|---|---:|---:|---|")
    for f in files:
        alt, base = [], []
        for line in f.read_text().splitlines():
            r = json.loads(line)
            key = (r["regime"], r["world"], r["seed"], r["target"])
            alt.append(delta(key, r["cv"]))
            base.append(delta(key, by[(*key, "inner-cv")]["cv"]))
        for folds, d in ((r["folds"], alt), (3, base)):
            se = statistics.stdev(d) / math.sqrt(len(d))
            print(f"| {r['regime']} | {r['world']} | {folds} | {statistics.fmean(d):+.3f} ± {se:.3f} | "
                  + " ".join(f"{x:+.3f}" for x in d) + " |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.auto_folds", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--regime", required=True)
    r.add_argument("--world", choices=["shared", "control"], required=True)
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    c = sub.add_parser("compare")
    c.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.regime, args.world, args.folds, args.seeds)
    else:
        compare(args.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
