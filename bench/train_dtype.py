"""What training in bfloat16 does to the models (issue 7: the merge-epoch cost target is met by bf16 training).

    python -m bench.train_dtype [--regimes paper mixed] [--seeds 0 1 2] [--out bench/results/train-dtype]

For every regime × world (shared, control) × seed of bench.regimes (the same worlds, checkpoints and MERGE
training settings as the "Where merging pays" table), the default STEPH merge and the budget-matched
cancer-specific model are trained twice — `compute_dtype` float32 and bfloat16, same seed — and scored on the
target's test split. Output: one JSON line per fit (regime, world, seed, method, dtype, C-index, seconds) and a
markdown table of the paired C-index differences (bf16 − fp32) on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.regimes import REGIMES, inputs_for, merge_config, prepare
from bench.reproduction import c_index_of, log, machine_info

DTYPES = ("float32", "bfloat16")
METHODS = ("steph", "cancer_specific")


def fit(prep: dict[str, Any], target: str, method: str, dtype: str, seed: int) -> Any:
    from app.domain.pipeline import fit_merge
    from app.domain.training import train_cancer_specific

    train_s = prep["data"][target][0]
    config = merge_config(seed, compute_dtype=dtype)
    if method == "cancer_specific":
        return train_cancer_specific(prep["base"], train_s, config, dims=prep["dims"], bin_edges=prep["edges"])
    return fit_merge(method, inputs_for(prep, target), {}, config, train_s)


def run(regimes: list[str], seeds: list[int], out: Path) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with open(out / "rows.jsonl", "a") as sink:
        for name in regimes:
            reg = REGIMES[name]
            for control in (False, True):
                for seed in seeds:
                    prep = prepare(reg, seed, control)
                    target = reg.targets[0]
                    for method in METHODS:
                        for dtype in DTYPES:
                            t0 = time.perf_counter()
                            model = fit(prep, target, method, dtype, seed)
                            row = {"regime": name, "world": "control" if control else "shared", "seed": seed,
                                   "method": method, "dtype": dtype, **c_index_of(model, prep["data"][target][1]),
                                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
                            rows.append(row)
                            sink.write(json.dumps(row) + "\n")
                            sink.flush()
                            log(f"{name} {row['world']} {seed} {method} {dtype}: C {row['c_index']:.4f}")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Paired Δ C-index (bf16 − fp32) per regime × world × method: mean, per seed, max |Δ|."""
    key = lambda r: (r["regime"], r["world"], r["method"], r["seed"])  # noqa: E731
    by = {(*key(r), r["dtype"]): r["c_index"] for r in rows}
    groups: dict[tuple, list[tuple[int, float, float]]] = {}
    for (reg, world, method, seed, dtype), c in by.items():
        if dtype == "bfloat16" and (reg, world, method, seed, "float32") in by:
            groups.setdefault((reg, world, method), []).append((seed, by[(reg, world, method, seed, "float32")], c))
    lines = ["| regime | world | method | C float32 (mean) | C bfloat16 (mean) | Δ mean | Δ per seed | max abs Δ |",
             "|---|---|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for (reg, world, method), vals in sorted(groups.items()):
        vals.sort()
        deltas = [b - a for _, a, b in vals]
        lines.append(
            f"| {reg} | {world} | {method} | {statistics.mean(a for _, a, _ in vals):.4f} | "
            f"{statistics.mean(b for _, _, b in vals):.4f} | {statistics.mean(deltas):+.4f} | "
            + ", ".join(f"{d:+.4f}" for d in deltas)
            + f" | {max(abs(d) for d in deltas):.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--regimes", nargs="+", default=["paper", "mixed"], choices=list(REGIMES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("bench/results/train-dtype"))
    p.add_argument("--table-only", action="store_true", help="only print the table of the rows already in --out")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.table_only:
        rows = [json.loads(line) for line in (args.out / "rows.jsonl").read_text().splitlines() if line.strip()]
    else:
        rows = run(args.regimes, args.seeds, args.out)
        info = {**machine_info(), "command": "python -m bench.train_dtype " + " ".join(argv or []),
                "wall_min": round((time.perf_counter() - t0) / 60, 1)}  # fmt: skip
        (args.out / "machine.json").write_text(json.dumps(info, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
