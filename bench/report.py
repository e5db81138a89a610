"""Markdown for the reproduction table, and updating its section of BENCHMARKS.md in place."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

START = "<!-- reproduction-table:start (written by python -m bench.reproduction) -->"
END = "<!-- reproduction-table:end -->"
BASELINE = "cancer_specific"


def _c(rows: list[dict], world: str) -> dict[tuple[str, int, str], float]:
    """(method, seed, target) -> C-index for one world kind."""
    return {(r["method"], r["seed"], r["target"]): r["c_index"] for r in rows if r["world"] == world}


def summarise(rows: list[dict], world: str, method: str) -> dict[str, Any] | None:
    """Mean C over targets × seeds, sd of per-seed means, paired Δ vs cancer-specific (mean ± se), wins."""
    c = _c(rows, world)
    keys = [(s, t) for (m, s, t) in c if m == method]
    if not keys:
        return None
    by_seed: dict[int, list[float]] = defaultdict(list)
    for s, t in keys:
        by_seed[s].append(c[(method, s, t)])
    seed_means = [statistics.fmean(v) for v in by_seed.values()]
    diffs = [c[(method, s, t)] - c[(BASELINE, s, t)] for s, t in keys if (BASELINE, s, t) in c]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return {
        "mean": statistics.fmean(c[(method, s, t)] for s, t in keys),
        "sd_seeds": statistics.stdev(seed_means) if len(seed_means) > 1 else float("nan"),
        "delta": statistics.fmean(diffs) if diffs else float("nan"),
        "se": se,
        "wins": sum(d > 0 for d in diffs),
        "n": len(diffs),
    }


def _fmt(x: float, digits: int = 4, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def main_table(rows: list[dict], methods: list[str]) -> list[str]:
    worlds = [w for w in ("shared", "control") if any(r["world"] == w for r in rows)]
    head = "| method |" + "".join(
        f" {w}: mean C | {w}: sd (seeds) | {w}: Δ vs cancer-specific (± se) | {w}: wins |" for w in worlds
    )
    lines = [head, "|---|" + "---:|" * 4 * len(worlds)]
    for method in methods:
        cells = []
        for w in worlds:
            s = summarise(rows, w, method)
            if s is None:
                cells += ["–"] * 4
                continue
            delta = f"{_fmt(s['delta'], signed=True)} ± {_fmt(s['se'])}" if method != BASELINE else "–"
            wins = f"{s['wins']}/{s['n']}" if method != BASELINE else "–"
            cells += [_fmt(s["mean"]), _fmt(s["sd_seeds"]), delta, wins]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def per_target_table(rows: list[dict], methods: list[str], world: str) -> list[str]:
    """Rows = targets (mean over seeds), columns = methods."""
    c = _c(rows, world)
    targets = list(dict.fromkeys(r["target"] for r in rows if r["world"] == world))
    n_train = {r["target"]: r["n_train"] for r in rows if r["world"] == world}
    lines = [
        "| target | n train (last seed) | " + " | ".join(methods) + " |",
        "|---|---:|" + "---:|" * len(methods),
    ]
    for t in targets:
        cells = []
        for m in methods:
            vals = [v for (mm, _, tt), v in c.items() if mm == m and tt == t]
            cells.append(_fmt(statistics.fmean(vals), 3) if vals else "–")
        lines.append(f"| {t} | {n_train[t]} | " + " | ".join(cells) + " |")
    return lines


def render_table(rows: list[dict], meta: dict, methods: list[str]) -> str:
    m, cfg = meta["machine"], meta["config"]
    out = [
        "Command: "
        + " and ".join(f"`{c}`" for c in meta.get("commands", [meta["command"]]))
        + (
            " (one process per world, run in parallel; wall time = the longer)"
            if len(meta.get("commands", [])) > 1
            else ""
        )
        + "  ",
        (f"Wall time: {meta['wall_s'] / 60:.1f} min. " if meta["wall_s"] else "PARTIAL RUN (still running). ")
        + f"Machine: `{m['uname']}`, {m['cpus']} CPUs (shared), "
        f"torch {m['torch']}, {m['threads']} torch thread(s). Raw rows: `results.jsonl` in {meta['out']}.",
        "",
        f"World: 13 cancers, D = {cfg['dim']}, cohort sizes uniform in {cfg['patients']} patients "
        f"(30 % test), {cfg['patches']} patches per slide, shared_fraction {cfg['shared_fraction']} "
        f"(control world: 0). "
        f"Seeds {meta['seeds']}; targets: {', '.join(meta['targets'])}.  ",
        f"Models: ABMIL hidden {cfg['hidden']}, attention {cfg['attn']}, {cfg['n_bins']} bins of 365 days. "
        f"Every training run (cancer-specific models, head retraining of static merges, learned methods) "
        f"uses AdamW lr {cfg['lr']}, weight decay {cfg['weight_decay']}, {cfg['epochs']} epochs, one step "
        f"per {cfg['accum']} bags, cosine schedule with 1 warm-up epoch; method parameters are the defaults.",
        "",
        "Mean held-out Harrell C-index over targets × seeds; sd over the per-seed means; Δ = paired "
        "difference with the target's cancer-specific model (mean ± standard error over target × seed); "
        "wins = pairs where the method's C-index is higher.",
        "",
        *main_table(rows, methods),
        "",
        "Per target, shared world (mean over seeds):",
        "",
        *per_target_table(rows, methods, "shared"),
        "",
    ]
    return "\n".join(out)


def update_benchmarks(path: Path, table: str) -> None:
    """Replace the text between the section markers (create the file / section when missing)."""
    block = f"{START}\n{table}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    elif "## Reproduction table" in text:  # append at the end of that section
        head, rest = text.split("## Reproduction table", 1)
        cut = rest.find("\n## ")
        body, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
        text = f"{head}## Reproduction table{body.rstrip()}\n\n{block}\n{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n## Reproduction table\n\n{block}\n"
    path.write_text(text)


def add_run_args(p: argparse.ArgumentParser, *, quick_help: str, tag_help: str) -> None:
    """The options every world benchmark takes: --quick, --seeds, --targets, --worlds, --threads, --out, --tag."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--seeds", type=int, nargs="+", help="world seeds (default 0 1 2; quick: 0)")
    p.add_argument("--targets", nargs="+", help="target cancers (default: all 13; quick: BLCA BRCA CESC)")
    p.add_argument(
        "--worlds",
        nargs="+",
        choices=["shared", "control"],
        default=["shared", "control"],
        help="world kinds to run (default both; run them as two processes to use two cores)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default="bench/out", help="output folder (default bench/out)")
    p.add_argument("--tag", help=tag_help)


def run_worlds(
    name: str,
    args: argparse.Namespace,
    argv: list[str] | None,
    run_world: Callable[[Any, int, bool, list[str], Callable[[dict], None]], None],
    render: Callable[[list[dict], dict], str],
    extra_meta: dict | None = None,
) -> int:
    """The common driver of the world benchmarks: for every world kind and seed call
    run_world(cfg, seed, control, targets, sink); rows go to bench/out/<tag>/results.jsonl as they come,
    meta.json holds the command, machine and wall time (None while running), table.md the rendered table."""
    from app.domain.synthetic import cancer_names
    from bench.reproduction import BenchConfig, machine_info

    torch.set_num_threads(args.threads)
    cfg = BenchConfig()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    targets = args.targets or (["BLCA", "BRCA", "CESC"] if args.quick else cancer_names(13))
    tag = args.tag or f"{name.replace('_', '-')}-{'quick' if args.quick else 'full'}-{'-'.join(args.worlds)}"
    out_dir = Path(args.out) / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    meta = {
        "command": f"python -m bench.{name} " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "wall_s": None, "seeds": seeds, "targets": targets, "worlds": args.worlds, "config": asdict(cfg),
        "machine": machine_info(), "out": str(out_dir), **(extra_meta or {}),
    }  # fmt: skip
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    start = time.perf_counter()
    with open(out_dir / "results.jsonl", "w") as fh:

        def sink(row: dict) -> None:
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()

        for kind in args.worlds:
            for seed in seeds:
                run_world(cfg, seed, kind == "control", targets, sink)
    meta["wall_s"] = round(time.perf_counter() - start, 1)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    table = render(rows, meta)
    (out_dir / "table.md").write_text(table)
    print(table)
    return 0


def run_header(meta: dict) -> list[str]:
    """Command, wall time, machine, seeds and targets of a run (or of combined runs), as markdown lines."""
    m = meta["machine"]
    return [
        f"Command: `{meta['command']}`  ",
        (f"Wall time: {meta['wall_s'] / 60:.1f} min. " if meta["wall_s"] else "PARTIAL RUN. ")
        + f"Machine: `{m['uname']}`, {m['cpus']} CPUs (shared), torch {m['torch']}, {m['threads']} torch "
        f"thread(s). Seeds {meta['seeds']}; {len(meta['targets'])} targets. Raw rows: `results.jsonl` in "
        f"{meta['out']}.",
    ]


def combine(dirs: list[Path]) -> tuple[list[dict], dict]:
    """Rows and one meta of several runs (e.g. the shared and the control world run as parallel processes)."""
    rows, metas = [], []
    for d in dirs:
        rows += [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]
        metas.append(json.loads((d / "meta.json").read_text()))
    if any(m["config"] != metas[0]["config"] for m in metas):
        raise SystemExit("the runs used different BenchConfigs; they cannot share one table")
    meta = {
        **metas[0],
        "commands": [m["command"] for m in metas],
        "wall_s": None if any(m["wall_s"] is None for m in metas) else max(m["wall_s"] for m in metas),
        "out": ", ".join(m["out"] for m in metas),
        "seeds": sorted({s for m in metas for s in m["seeds"]}),
    }
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    from bench.reproduction import METHOD_ORDER

    p = argparse.ArgumentParser(prog="python -m bench.report", description="render/combine bench runs")
    p.add_argument("dirs", nargs="+", type=Path, help="bench/out/<tag> folders (results.jsonl + meta.json)")
    p.add_argument("--write", type=Path, help="update this BENCHMARKS.md")
    args = p.parse_args(argv)
    rows, meta = combine(args.dirs)
    table = render_table(rows, meta, METHOD_ORDER)
    if args.write:
        update_benchmarks(args.write, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
