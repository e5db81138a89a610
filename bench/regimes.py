"""Where merging pays: three world regimes × (shared, control) × seeds, every method, the gate and `auto`.

    python -m bench.regimes tune                                    # training settings on the tuning world
    python -m bench.regimes run --regime paper --world shared --seeds 0 1 2 [--tag T]
    python -m bench.regimes table bench/results/<tag> ...            # markdown of finished runs

Regimes (world generator settings fixed in REGIMES before any merge result was looked at):

- small: today's reproduction world: 13 cancers of 60–150 patients (30 % test), D = 32; targets BLCA, BRCA.
- paper: the paper's shape: 7 sources of 300–600 patients, a scarce target with 40–80 train patients (drawn
  per seed) and 200 extra test patients, D = 128.
- mixed: 10 small sources (60–150) + one large source (800), the same scarce target, D = 128.

Control world: shared_fraction 0 (no shared prognostic structure), everything else equal.
Checkpoints (every cancer's θ_c, the "given" models): CKPT_EPOCHS epochs (SOURCE_EPOCHS for cohorts ≥ 300),
one step per 16 bags (the paper's schedule) at the tuned lr. Every trained row of the table (merges, heads,
the budget-matched cancer-specific model, the gate's refits) uses one MERGE TrainConfig chosen by `tune` on a
tuning world (seeds 100–102, never in the table) for the cancer-specific baseline only.
Rows per target: see ROWS; plus a K-fold inner CV (app.domain.promotion, K = 3) over every auto candidate
(app.domain.merging.auto.CANDIDATES) on the train split, and the sources' relevance (bench.relevance.measure),
from which the gate's decision for each candidate and `auto`'s choice are derived (`auto`'s final model is the
chosen row's model: same params, samples and seed, training is deterministic; auto's `retrain` is the
budget-matched cancer-specific row).

    python -m bench.regimes table --holdout bench/results/fresh/*   # steph / auto vs budget-matched, compact
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench.reproduction import c_index_of, log, machine_info

HIDDEN, ATTN, BINS = 64, 32, 32
CKPT_EPOCHS, SOURCE_EPOCHS, CKPT_ACCUM = 20, 10, 16
CACHE = "bench/out/regimes-cache"  # checkpoints per (regime, world, seed, settings); git-ignored


@dataclass(frozen=True)
class Regime:
    name: str
    cancers: int
    dim: int
    patients_range: tuple[int, int] | None = None
    sizes: tuple[int, ...] | None = None  # per cancer (target first); None = patients_range
    target_train: tuple[int, int] | None = None  # scarce target: train size range; None = the world's split
    target_test: int | None = None
    targets: tuple[str, ...] = ("BLCA",)


def _mixed_sizes() -> tuple[int, ...]:
    rng = random.Random("regime-mixed")
    return (60, 800, *[rng.randint(60, 150) for _ in range(10)])


REGIMES = {
    "small": Regime("small", 13, 32, patients_range=(60, 150), targets=("BLCA", "BRCA")),
    "paper": Regime("paper", 8, 128, patients_range=(300, 600), target_train=(40, 80), target_test=200),
    "mixed": Regime("mixed", 12, 128, sizes=_mixed_sizes(), target_train=(40, 80), target_test=200),
}
# MERGE TrainConfig: the winner of `tune` (see BENCHMARKS.md, "Where merging pays"); lr also used for CKPT.
MERGE = {"lr": 1e-3, "accum": 16, "epochs": 40}

# Every STEPH row keeps β fixed (the default before session 9; STEPH's default beta_rule is now 'relevance'): the
# rows stay comparable with the runs made before, and bench.relevance derives the relevance rule from them and
# STEPH β = 0 (`python -m bench.relevance beta0`, then `python -m bench.relevance steph`).
FIXED_BETA = {"beta_rule": "fixed"}
STEPH_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("steph", FIXED_BETA),
    ("steph paper (ReLU w)", {"preset": "paper"}),
    ("steph λ = 0", {"lam_mode": "fixed", "lam_value": 0.0}),
    ("steph λ = 1", {"lam_mode": "fixed", "lam_value": 1.0}),
    ("steph topk=all", {"topk": None, **FIXED_BETA}),
]
# (label, method, params, use_sources); method None = budget-matched cancer-specific
ROWS: list[tuple[str, str | None, dict[str, Any], bool]] = [
    ("cancer_specific (budget-matched)", None, {}, True),
    ("target encoder + retrained head", "task_arithmetic", {"scale": 1.0}, False),
    ("θ₀ encoder + retrained head", "task_arithmetic", {"scale": 0.0}, False),
    ("average", "average", {}, True),
    ("task_arithmetic", "task_arithmetic", {}, True),
    ("ties", "ties", {}, True),
    ("learned_weights", "learned_weights", {}, True),
    ("routing", "routing", {}, True),
    *[(label, "steph", params, True) for label, params in STEPH_ROWS],
]
CKPT_ROW = "target's own model (checkpoint)"
# CV candidate label -> the ROWS label whose final model it is
CV_ROWS = {
    "steph": "steph",
    "steph λ = 0": "steph λ = 0",
    "average + retrained head": "average",
    "target encoder + retrained head": "target encoder + retrained head",
    "θ₀ encoder + retrained head": "θ₀ encoder + retrained head",
}


def world_config(reg: Regime, seed: int, control: bool) -> Any:
    from app.domain.synthetic import WorldConfig

    tp = None
    if reg.target_train is not None:
        tp = random.Random(f"target-size-{reg.name}-{seed}").randint(*reg.target_train)
    return WorldConfig(
        cancers=reg.cancers, dim=reg.dim, patients_range=reg.patients_range, sizes=reg.sizes, seed=seed,
        shared_fraction=0.0 if control else 0.8, target_patients=tp, target_test_patients=reg.target_test,
    )  # fmt: skip


def merge_config(seed: int, **over: Any) -> Any:
    from app.domain.training import TrainConfig

    return TrainConfig(**{**MERGE, **over}, seed=seed)


def ckpt_config(seed: int, n: int) -> Any:
    return merge_config(seed, accum=CKPT_ACCUM, epochs=SOURCE_EPOCHS if n >= 300 else CKPT_EPOCHS)


def prepare(reg: Regime, seed: int, control: bool) -> dict[str, Any]:
    """World, θ₀ and every cancer's checkpoint (ckpt_config)."""
    from app.domain.mil import FamilyDims, new_abmil
    from app.domain.survival import default_bin_edges
    from app.domain.synthetic import make_world
    from app.domain.training import train_cancer_specific

    world = make_world(world_config(reg, seed, control))
    dims = FamilyDims(in_dim=reg.dim, hidden_dim=HIDDEN, attn_dim=ATTN, n_bins=BINS)
    edges = default_bin_edges(BINS)
    base = {k: v.detach().clone() for k, v in new_abmil(dims, seed).state_dict().items()}
    data = {c: (co.samples("train"), co.samples("test")) for c, co in world.cancers.items()}
    cache = Path(CACHE) / f"{reg.name}-{'control' if control else 'shared'}-{seed}-{json.dumps(MERGE)}.pt"
    states = torch.load(cache, weights_only=True) if cache.exists() else {}
    for cancer, (tr, _) in data.items():
        if cancer in states:
            continue
        t0 = time.perf_counter()
        model = train_cancer_specific(base, tr, ckpt_config(seed, len(tr)), dims=dims, bin_edges=edges)
        states[cancer] = model.artifact_tensors()
        log(f"[{reg.name} seed {seed}] checkpoint {cancer} ({len(tr)} train) {time.perf_counter() - t0:.0f}s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(states, cache)  # deterministic for (regime, world, seed, settings): a rerun skips this step
    return {"world": world, "dims": dims, "edges": edges, "base": base, "data": data, "states": states}


def inputs_for(prep: dict[str, Any], target: str, use_sources: bool = True) -> Any:
    from app.domain.merging.base import MergeInputs

    sources = [c for c in prep["world"].cancers if c != target] if use_sources else []
    return MergeInputs(
        base=prep["base"], target=prep["states"][target], sources=[prep["states"][s] for s in sources],
        source_names=sources, target_name=target, dims=prep["dims"], bin_edges=prep["edges"],
    )  # fmt: skip


def fit_row(prep, target, method, params, use_sources, seed) -> Any:
    from app.domain.pipeline import fit_merge
    from app.domain.training import train_cancer_specific

    train_s = prep["data"][target][0]
    if method is None:
        return train_cancer_specific(
            prep["base"], train_s, merge_config(seed), dims=prep["dims"], bin_edges=prep["edges"]
        )
    return fit_merge(method, inputs_for(prep, target, use_sources), params, merge_config(seed), train_s)


def cv_evidence(prep: dict[str, Any], target: str, seed: int, folds: int) -> dict[str, Any]:
    """Inner CV of the auto candidates on the train split: C and Δ vs the refitted target."""
    from app.domain.merging.auto import CANDIDATES
    from app.domain.promotion import TARGET, c_index, cross_validate, paired_estimate

    cands = [  # the target's own model last; STEPH candidates with β fixed, as the STEPH rows
        replace(c, params={**c.params, **FIXED_BETA}) if c.method == "steph" else c for c in CANDIDATES.values()
    ]
    cv = cross_validate(cands, inputs_for(prep, target), prep["data"][target][0], merge_config(seed), folds=folds)
    out: dict[str, Any] = {TARGET.label: {"c": c_index(cv, TARGET.label), "difference": 0.0}}
    for c in cands[:-1]:
        est = paired_estimate(cv, c.label, TARGET.label, seed=seed)
        out[c.label] = {k: est[k] for k in ("c", "difference", "se")}
    return out


CORE = {"cancer_specific (budget-matched)", "target encoder + retrained head", "θ₀ encoder + retrained head",
        "average", "steph", "steph paper (ReLU w)", "steph λ = 0"}  # fmt: skip


def run(reg: Regime, seed: int, control: bool, sink: Any, folds: int, core: bool = False) -> None:
    from app.domain.merging.base import StaticModel
    from app.domain.merging.mix_stats import merge_statistics, supports_mix_stats

    kind = "control" if control else "shared"
    prep = prepare(reg, seed, control)
    for target in reg.targets:
        train_s, test_s = prep["data"][target]
        common = {"regime": reg.name, "world": kind, "seed": seed, "target": target, "n_train": len(train_s)}
        ckpt = StaticModel(prep["states"][target], prep["dims"], prep["edges"])
        sink({**common, "method": CKPT_ROW, **c_index_of(ckpt, test_s), "seconds": 0.0})
        for label, method, params, use_sources in ROWS:
            if core and label not in CORE:
                continue
            t0 = time.perf_counter()
            model = fit_row(prep, target, method, params, use_sources, seed)
            row = {**common, "method": label, **c_index_of(model, test_s)}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            if supports_mix_stats(model):
                tr_stats = merge_statistics(model, train_s)
                te_stats = merge_statistics(model, test_s)
                row.update(collapsed=tr_stats["collapsed"], zero_w_bags=tr_stats["zero_w_bags"],
                           sum_w=te_stats["sum_w"]["mean"], lam=te_stats["lam"]["mean"],
                           c_target=te_stats["c_target"]["mean"], topk_share=te_stats["topk_share"])  # fmt: skip
            sink(row)
            log(f"[{reg.name} {kind} seed {seed}] {target} {label:34s} C={row['c_index']:.4f} ({row['seconds']}s)")
        from bench.relevance import measure  # auto's relevance pre-check (session 9): cheap, no training

        t0 = time.perf_counter()
        rel = measure(prep, target, seed)
        sink({**common, "method": "relevance", **rel, "c_index": None, "seconds": round(time.perf_counter() - t0, 1)})
        t0 = time.perf_counter()
        ev = cv_evidence(prep, target, seed, folds)
        sink({**common, "method": "inner-cv", "cv": ev, "c_index": None, "seconds": round(time.perf_counter() - t0, 1)})
        log(f"[{reg.name} {kind} seed {seed}] {target} inner CV {time.perf_counter() - t0:.0f}s: "
            + ", ".join(f"{k} {v['difference']:+.3f}" for k, v in ev.items()))  # fmt: skip


def tune(seeds: list[int], grid: list[dict[str, Any]]) -> None:
    """Cancer-specific models on the scarce target of the paper-regime tuning worlds, for each setting."""
    from app.domain.mil import FamilyDims, new_abmil
    from app.domain.survival import default_bin_edges
    from app.domain.synthetic import make_world
    from app.domain.training import TrainConfig, train_cancer_specific

    reg = REGIMES["paper"]
    dims = FamilyDims(in_dim=reg.dim, hidden_dim=HIDDEN, attn_dim=ATTN, n_bins=BINS)
    edges = default_bin_edges(BINS)
    worlds = [make_world(replace(world_config(reg, s, False), cancers=1)) for s in seeds]
    for setting in grid:
        scores = []
        for s, world in zip(seeds, worlds, strict=True):
            co = world.cancers[world.target]
            base = new_abmil(dims, s).state_dict()
            model = train_cancer_specific(base, co.samples("train"), TrainConfig(**setting, seed=s),
                                          dims=dims, bin_edges=edges)  # fmt: skip
            scores.append(c_index_of(model, co.samples("test"))["c_index"])
        print(json.dumps({**setting, "mean_c": sum(scores) / len(scores), "c": scores}), flush=True)


TUNE_GRID = [
    {"lr": 1e-4, "accum": 16, "epochs": 20},  # the paper's settings
    *[{"lr": lr, "accum": a, "epochs": e} for lr in (1e-3, 4e-3) for a in (4, 16) for e in (20, 40)],
]


def world_args(parser: argparse.ArgumentParser, seeds: list[int] | None = None) -> None:
    """--regime, --world and --seeds (required when `seeds` is None, else that default) of a run over the
    regime worlds; shared by bench.regimes, bench.relevance and bench.head_init."""
    parser.add_argument("--regime", choices=list(REGIMES), required=True)
    parser.add_argument("--world", choices=["shared", "control"], required=True)
    if seeds is None:
        parser.add_argument("--seeds", type=int, nargs="+", required=True)
    else:
        parser.add_argument("--seeds", type=int, nargs="+", default=seeds)


def each_target(regime: str, world: str, seeds: list[int], targets: list[str] | None = None) -> Any:
    """(seed, target, prepare(...)) for every seed and target (default: the regime's) of one (regime, world)."""
    reg = REGIMES[regime]
    for seed in seeds:
        prep = prepare(reg, seed, world == "control")
        for target in targets or reg.targets:
            yield seed, target, prep


def lane_parser(sub: Any, name: str, out: Path, help: str | None = None) -> argparse.ArgumentParser:
    """A subcommand that trains on the regime worlds, one lane: world_args, --targets and --out."""
    parser = sub.add_parser(name, help=help)
    world_args(parser)
    parser.add_argument("--targets", nargs="+")
    parser.add_argument("--out", type=Path, default=out)
    return parser


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.regimes", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    r = sub.add_parser("run")
    world_args(r, [0, 1, 2])
    r.add_argument("--folds", type=int, default=3)
    r.add_argument("--tag")
    r.add_argument("--core", action="store_true", help="only the CORE rows (+ the inner CV): for a loaded machine")
    r.add_argument("--targets", nargs="+", help="targets (default: the regime's)")
    r.add_argument("--out", default="bench/results")
    tb = sub.add_parser("table")
    tb.add_argument("dirs", nargs="+", type=Path)
    tb.add_argument("--holdout", action="store_true", help="only the compact Δ-vs-budget-matched table of steph/auto")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "tune":
        tune(args.seeds, TUNE_GRID)
        return 0
    if args.cmd == "table":
        from bench.regimes_report import holdout_table, render

        print(holdout_table(args.dirs) if args.holdout else render(args.dirs))
        return 0
    out = Path(args.out) / (args.tag or f"{args.regime}-{args.world}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python -m bench.regimes " + " ".join(argv or sys.argv[1:]), "machine": machine_info(),
        "regime": args.regime, "world": args.world, "seeds": args.seeds, "merge": MERGE, "wall_s": None,
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    start = time.perf_counter()
    with open(out / "results.jsonl", "a") as fh:

        def sink(row: dict) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

        for seed in args.seeds:
            reg = REGIMES[args.regime]
            reg = replace(reg, targets=tuple(args.targets)) if args.targets else reg
            run(reg, seed, args.world == "control", sink, args.folds, args.core)
    meta["wall_s"] = round(time.perf_counter() - start, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
