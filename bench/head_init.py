"""STEPH's head initialised from the target checkpoint's head (`head_init: "target"`) vs a fresh head (the paper).

    python -m bench.head_init run --regime paper --world shared --seeds 28 29 … [--out bench/results/head-init]
    python -m bench.head_init table [--out …] [--seeds …]
    python -m bench.head_init lam --regime paper --seeds 0 … 13 [--out …]    # mean λ, shared vs control

`run`: on the worlds and cached checkpoints of bench.regimes (same world generator, same MERGE training settings,
one torch thread), per (regime, world, seed, target): the target's own checkpoint, the budget-matched
cancer-specific model, and STEPH four ways — β fixed (as the regime tables' STEPH rows) and the default β rule,
each with a fresh head and with the target's head — scored on the held-out test split; one JSON line each in
<out>/rows.jsonl. `table`: Δ vs the budget-matched model and vs the own model (mean ± se over seeds, wins), the
paired difference target head − fresh head, and how many seeds reach +0.03 over the own model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

OUT = Path("bench/results/head-init")
VARIANTS = {  # label → STEPH params
    "steph β fixed, fresh head": {"beta_rule": "fixed", "head_init": "fresh"},
    "steph β fixed, target head": {"beta_rule": "fixed", "head_init": "target"},
    "steph β rule, fresh head": {"beta_rule": "relevance", "head_init": "fresh"},
    "steph β rule, target head": {"beta_rule": "relevance", "head_init": "target"},
}
OWN, BM = "own", "budget-matched"


def run(regime: str, world: str, seeds: list[int], out: Path, targets: list[str] | None = None) -> None:
    from app.domain.merging.base import StaticModel
    from app.domain.pipeline import fit_merge
    from bench.regimes import each_target, fit_row, inputs_for, merge_config
    from bench.reproduction import c_index_of, log

    out.mkdir(parents=True, exist_ok=True)
    for seed, target, prep in each_target(regime, world, seeds, targets):
        train_s, test_s = prep["data"][target]
        common = {"regime": regime, "world": world, "seed": seed, "target": target, "n_train": len(train_s)}
        models: dict[str, Any] = {OWN: StaticModel(prep["states"][target], prep["dims"], prep["edges"])}
        t0 = time.perf_counter()
        models[BM] = fit_row(prep, target, None, {}, False, seed)
        for label, params in VARIANTS.items():
            models[label] = fit_merge("steph", inputs_for(prep, target), params, merge_config(seed), train_s)
        row = {**common, "c": {k: c_index_of(m, test_s)["c_index"] for k, m in models.items()},
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        with open(out / "rows.jsonl", "a") as sink:
            sink.write(json.dumps(row) + "\n")
        log(f"[{regime} {world} seed {seed}] {target}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["c"].items()))


def lam(regime: str, seeds: list[int], out: Path) -> None:
    """Mean λ on the test bags of the default STEPH (β rule, target head) in both worlds -> <out>/lam.jsonl."""
    from app.domain.merging.mix_stats import merge_statistics
    from app.domain.pipeline import fit_merge
    from bench.regimes import REGIMES, inputs_for, merge_config, prepare

    reg = REGIMES[regime]
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for world in ("shared", "control"):
            prep = prepare(reg, seed, world == "control")
            for target in reg.targets:
                train_s, test_s = prep["data"][target]
                model = fit_merge("steph", inputs_for(prep, target), {}, merge_config(seed), train_s)
                row = {"regime": regime, "world": world, "seed": seed, "target": target,
                       "lam": merge_statistics(model, test_s)["lam"]["mean"]}  # fmt: skip
                with open(out / "lam.jsonl", "a") as sink:
                    sink.write(json.dumps(row) + "\n")


def lam_table(out: Path) -> str:
    """Paired mean-λ difference shared − control per regime (default STEPH)."""
    rows = [json.loads(line) for line in (out / "lam.jsonl").read_text().splitlines() if line.strip()]
    by: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by[(r["regime"], r["seed"], r["target"])][r["world"]] = r["lam"]
    lines = ["| regime | pairs | mean λ shared | mean λ control | shared − control (paired) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for regime in sorted({k[0] for k in by}):
        pairs = [v for k, v in by.items() if k[0] == regime and len(v) == 2]
        d = [v["shared"] - v["control"] for v in pairs]
        sh, co = statistics.mean(v["shared"] for v in pairs), statistics.mean(v["control"] for v in pairs)
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
        lines.append(f"| {regime} | {len(pairs)} | {sh:.2f} | {co:.2f} | {statistics.mean(d):+.2f} ± {se:.2f} |")
    return "\n".join(lines)


def _ms(v: list[float]) -> str:
    se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
    return f"{statistics.mean(v):+.3f} ± {se:.3f} ({sum(x > 0 for x in v)}/{len(v)})"


def table(out: Path, seeds: list[int] | None = None) -> str:
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if seeds is None or r["seed"] in seeds:
            cells[(r["regime"], r["world"])].append(r["c"])
    lines = ["| regime | world | n | STEPH | Δ vs budget-matched | Δ vs own model | seeds ≥ +0.03 over own | "
             "target head − fresh head (paired) |", "|---|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for (regime, world), cs in sorted(cells.items()):
        for label in VARIANTS:
            bm = [c[label] - c[BM] for c in cs]
            own = [c[label] - c[OWN] for c in cs]
            pair = ""
            if label.endswith("target head"):
                pair = _ms([c[label] - c[label.replace("target head", "fresh head")] for c in cs])
            lines.append(f"| {regime} | {world} | {len(cs)} | {label.removeprefix('steph ')} | {_ms(bm)} | "
                         f"{_ms(own)} | {sum(x >= 0.03 for x in own)} | {pair} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.regimes import lane_parser

    p = argparse.ArgumentParser(prog="python -m bench.head_init", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lane_parser(sub, "run", OUT)
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, default=OUT)
    t.add_argument("--seeds", type=int, nargs="+")
    la = sub.add_parser("lam", help="mean λ of the default STEPH in both worlds (then: lam-table)")
    la.add_argument("--regime", required=True, choices=["small", "paper", "mixed"])
    la.add_argument("--seeds", type=int, nargs="+", required=True)
    la.add_argument("--out", type=Path, default=OUT)
    lt = sub.add_parser("lam-table")
    lt.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.cmd == "lam":
        import torch

        torch.set_num_threads(1)
        lam(args.regime, args.seeds, args.out)
        return 0
    if args.cmd == "lam-table":
        print(lam_table(args.out))
        return 0
    if args.cmd == "run":
        import torch

        torch.set_num_threads(1)  # two lanes side by side on a 2-core machine, as bench.regimes
        run(args.regime, args.world, args.seeds, args.out, args.targets)
    else:
        print(table(args.out, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
