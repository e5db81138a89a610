"""Reproduction table on a synthetic 13-cancer world (our analogue of the paper's main table, SPEC §5).

    python -m bench.reproduction [--quick] [--seeds 0 1 2] [--targets BLCA BRCA] [--worlds shared control]

(see bench/README.md for the exact commands behind BENCHMARKS.md)

Protocol, per world kind (shared prognostic structure, and a control world without it) and seed:
1. draw a world: 13 cancers, cohort sizes uniform in 60-150 patients, 30 % of each cancer held out for test;
2. θ₀ = new_abmil(dims, seed); θ_c = cancer-specific ABMIL trained from θ₀ on each cancer's train split;
3. for each target cancer t, with the other 12 models as sources: every method below is built from
   (θ₀, θ_t, {θ_s}), trained on t's train split when it learns anything (same TrainConfig for all), and scored
   by Harrell's C-index on t's test split. "cancer_specific" is θ_t itself.
Rows go to bench/out/<tag>/results.jsonl as they finish; the markdown table to bench/out/<tag>/table.md
and, unless --quick (or --no-write), into BENCHMARKS.md's "Reproduction table" section (see bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# (label, registry method, params); cancer_specific is the target's own model.
VARIANTS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("cancer_specific", None, {}),
    ("average", "average", {}),
    ("task_arithmetic", "task_arithmetic", {}),
    ("ties", "ties", {}),
    ("learned_weights", "learned_weights", {}),
    ("routing", "routing", {}),
    ("steph", "steph", {}),
    ("steph (no sparsity: topk=all)", "steph", {"topk": None}),
    ("steph (λ = 0, sources only)", "steph", {"lam_mode": "fixed", "lam_value": 0.0}),
    ("steph (λ = 1, target only)", "steph", {"lam_mode": "fixed", "lam_value": 1.0}),
]


ORACLE = "oracle: true hazard η (ceiling)"
POOLED = "pooled: one ABMIL on all 13 train splits (diagnostic, not a merge)"


METHOD_ORDER = [label for label, _, _ in VARIANTS] + [POOLED, ORACLE]


@dataclass(frozen=True)
class BenchConfig:
    """Everything that fixes the numbers (written next to the table)."""

    dim: int = 32
    hidden: int = 64
    attn: int = 32
    n_bins: int = 32
    patients: tuple[int, int] = (60, 150)
    patches: tuple[int, int] = (16, 64)
    shared_fraction: float = 0.8
    epochs: int = 20
    lr: float = 4e-3  # chosen for the cancer-specific baseline on a separate tuning world: bench/tune_lr.py
    accum: int = 8
    weight_decay: float = 1e-5


def world_config(cfg: BenchConfig, seed: int, control: bool) -> Any:
    from app.domain.synthetic import WorldConfig

    return WorldConfig(
        cancers=13, dim=cfg.dim, patients_range=cfg.patients, patches=cfg.patches, seed=seed,
        shared_fraction=0.0 if control else cfg.shared_fraction,
    )  # fmt: skip


def train_config(cfg: BenchConfig, seed: int) -> Any:
    from app.domain.training import TrainConfig

    return TrainConfig(epochs=cfg.epochs, lr=cfg.lr, accum=cfg.accum, weight_decay=cfg.weight_decay, seed=seed)


def c_index_of(model: Any, samples: list) -> dict[str, Any]:
    from app.domain.evaluation import evaluate

    res = evaluate(model, samples)
    return {"c_index": float(res.c_index), "pairs": int(res.pairs), "patients": int(res.patients)}


def oracle_row(world: Any, target: str, kind: str, seed: int, n_train: int) -> dict[str, Any]:
    """C-index of the true log hazard η on the target's test split (the ceiling, on average)."""
    from app.domain.metrics import harrell_c_index

    cohort = world.cancers[target]
    test = set(cohort.splits["test"])
    pts = [p for p in cohort.patients if p.patient_id in test]
    res = harrell_c_index(
        torch.tensor([p.time for p in pts]), torch.tensor([p.event for p in pts]),
        torch.tensor([p.log_hazard for p in pts]),
    )  # fmt: skip
    return {
        "world": kind, "seed": seed, "target": target, "method": ORACLE, "c_index": float(res.c_index),
        "pairs": int(res.pairs), "patients": len(pts), "n_train": n_train, "seconds": 0.0,
    }  # fmt: skip


@dataclass
class Prepared:
    """One world with its θ₀ and its 13 cancer-specific models (deterministic for the seed)."""

    kind: str
    seed: int
    world: Any
    dims: Any
    edges: list[float]
    base: dict
    tcfg: Any
    data: dict[str, tuple[list, list]]  # cancer -> (train samples, test samples)
    states: dict[str, dict]  # cancer -> θ_c

    def inputs(self, target: str) -> Any:
        from app.domain.merging.base import MergeInputs

        sources = [c for c in self.world.cancers if c != target]
        return MergeInputs(
            base=self.base, target=self.states[target], sources=[self.states[s] for s in sources],
            source_names=sources, target_name=target, dims=self.dims, bin_edges=self.edges,
        )  # fmt: skip


def prepare_world(cfg: BenchConfig, seed: int, control: bool) -> Prepared:
    """Draw the world, θ₀ = new_abmil(dims, seed), and train every cancer's model from θ₀."""
    from app.domain.mil import FamilyDims, new_abmil
    from app.domain.survival import default_bin_edges
    from app.domain.synthetic import make_world
    from app.domain.training import train_cancer_specific

    kind = "control" if control else "shared"
    world = make_world(world_config(cfg, seed, control))
    dims = FamilyDims(in_dim=cfg.dim, hidden_dim=cfg.hidden, attn_dim=cfg.attn, n_bins=cfg.n_bins)
    edges = default_bin_edges(cfg.n_bins)
    base = {k: v.detach().clone() for k, v in new_abmil(dims, seed).state_dict().items()}
    tcfg = train_config(cfg, seed)
    data = {c: (co.samples("train"), co.samples("test")) for c, co in world.cancers.items()}
    states = {}
    for cancer, (train_s, _) in data.items():
        t0 = time.perf_counter()
        model = train_cancer_specific(base, train_s, tcfg, dims=dims, bin_edges=edges)
        states[cancer] = {k: v.detach().clone() for k, v in model.abmil.state_dict().items()}
        log(f"[{kind} seed {seed}] trained {cancer} ({len(train_s)} train) in {time.perf_counter() - t0:.1f}s")
    return Prepared(kind, seed, world, dims, edges, base, tcfg, data, states)


def merged_model(prep: Prepared, target: str, method_name: str | None, params: dict[str, Any]) -> Any:
    """The target's own model (method_name None) or a merge built and trained by app.domain.pipeline."""
    from app.domain.merging.base import StaticModel
    from app.domain.pipeline import run_merge

    reference = StaticModel(prep.states[target], prep.dims, prep.edges)
    if method_name is None:
        return reference.eval()
    run = run_merge(
        method=method_name, inputs=prep.inputs(target), params=params, train_config=prep.tcfg,
        train_samples=prep.data[target][0], test_samples=[], reference=reference,
    )  # fmt: skip
    return run.model.eval()


def run_world(cfg: BenchConfig, seed: int, control: bool, targets: list[str], sink: Any) -> None:
    """Train the 13 cancer-specific models, then score every variant for every target; rows go to `sink`."""
    from app.domain.training import train_cancer_specific

    prep = prepare_world(cfg, seed, control)
    kind, data = prep.kind, prep.data
    pooled_train = [x for tr, _ in data.values() for x in tr]
    pooled = train_cancer_specific(prep.base, pooled_train, prep.tcfg, dims=prep.dims, bin_edges=prep.edges)
    log(f"[{kind} seed {seed}] trained the pooled diagnostic model")
    for target in targets:
        train_s, test_s = data[target]
        common = {"world": kind, "seed": seed, "target": target, "n_train": len(train_s)}
        sink(oracle_row(prep.world, target, kind, seed, len(train_s)))
        sink({**common, "method": POOLED, **c_index_of(pooled, test_s), "seconds": 0.0})
        for label, method_name, params in VARIANTS:
            t0 = time.perf_counter()
            model = merged_model(prep, target, method_name, params)
            row = {**common, "method": label, **c_index_of(model, test_s)}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            sink(row)
            log(f"[{kind} seed {seed}] {target:9s} {label:32s} C={row['c_index']:.4f} ({row['seconds']:.1f}s)")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_info() -> dict[str, str]:
    return {
        "uname": " ".join(platform.uname()),
        "cpus": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reproduction", description=__doc__.split("\n")[0])
    from bench.report import add_run_args

    add_run_args(
        p, quick_help="1 seed, 3 targets, 8 epochs: a few minutes", tag_help="run name (default: quick|full-<UTC time>)"
    )
    p.add_argument("--epochs", type=int, help="epochs for every training run (default 20; quick 8)")
    p.add_argument("--lr", type=float, help="learning rate for every training run (default 4e-3)")
    p.add_argument("--accum", type=int, help="bags per optimiser step for every run (default 8)")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--benchmarks", default="BENCHMARKS.md", help="file whose section to update")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from app.domain.synthetic import cancer_names
    from bench.report import render_table, update_benchmarks

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("epochs", "lr", "accum") if getattr(args, k) is not None}
    if args.quick:
        overrides.setdefault("epochs", 8)
    cfg = BenchConfig(**overrides)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    targets = args.targets or (["BLCA", "BRCA", "CESC"] if args.quick else cancer_names(13))
    tag = args.tag or f"{'quick' if args.quick else 'full'}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out_dir = Path(args.out) / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    results = open(out_dir / "results.jsonl", "w")

    def sink(row: dict[str, Any]) -> None:
        rows.append(row)
        results.write(json.dumps(row) + "\n")
        results.flush()

    start = time.perf_counter()
    meta = {
        "command": "python -m bench.reproduction " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "wall_s": None, "seeds": seeds, "targets": targets, "worlds": args.worlds,
        "config": asdict(cfg), "machine": machine_info(), "out": str(out_dir),
    }  # fmt: skip
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # wall_s None = still running
    for control in [kind == "control" for kind in args.worlds]:
        for seed in seeds:
            run_world(cfg, seed, control, targets, sink)
    results.close()
    meta["wall_s"] = round(time.perf_counter() - start, 1)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    table = render_table(rows, meta, METHOD_ORDER)
    (out_dir / "table.md").write_text(table)
    if not (args.quick or args.no_write):
        update_benchmarks(Path(args.benchmarks), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
