"""STEPH with cross-fitting on the reproduction worlds (BENCHMARKS.md, "STEPH with cross-fitting").

    python -m bench.crossfit [--quick] [--worlds shared control] [--seeds 0 1 2] [--targets BLCA BRCA]

Same worlds, θ₀, cancer-specific models, training settings and scoring as bench.reproduction (its helpers are
imported, so the cancer_specific / steph / λ = 0 rows equal the reproduction table's). Per target:

- cancer_specific, steph (default) and steph λ = 0 (reference rows);
- steph crossfit "split": θ_t^A trained from θ₀ on half A of the train split, hypernetworks + head on half B,
  the model keeps τ_t^A (app.domain.crossfit, through app.domain.pipeline.run_merge);
- steph crossfit "split_plugin": the same trained model with the full τ_t swapped in. Training is identical
  to "split" (tests/domain/merging/test_crossfit.py checks that run_merge's split_plugin model equals the split
  model with τ_t replaced), so the split model is trained once and scored twice;
- diagnostic: θ_t^A alone (the cancer-specific model trained on half A), to show how much weaker τ_t^A is;
- diagnostic (`--rows cs lam0_half_b`): STEPH λ = 0 trained on half B only, i.e. what halving the patients
  the hypernetworks and head learn on costs by itself.

For every STEPH row it also records the per-bag merge statistics on the test bags (Σw, mean λ, c_t = Σ w λ;
bench.steph_diagnostics). Rows: bench/out/<tag>/results.jsonl; table: bench/out/<tag>/table.md;
`--combine DIR DIR` prints one table of runs made as parallel processes (one per world).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.reproduction import BenchConfig, Prepared, c_index_of, log, merged_model, prepare_world
from bench.steph_diagnostics import merge_stats

CS = "cancer_specific"
STEPH = "steph"
SPLIT = "steph crossfit=split (τ_t^A kept)"
PLUGIN = "steph crossfit=split_plugin (full τ_t swapped in)"
LAM0 = "steph (λ = 0, sources only)"
HALF_A = "diagnostic: θ_t^A alone (cancer-specific on half A)"
LAM0_B = "diagnostic: steph λ = 0 trained on half B only"
METHODS = [CS, STEPH, SPLIT, PLUGIN, LAM0, HALF_A, LAM0_B]
# --rows keys: which rows to compute (the default computes all but lam0_half_b)
ROW_KEYS = ("cs", "steph", "lam0", "crossfit", "lam0_half_b")
STEPH_ROWS = [STEPH, SPLIT, PLUGIN, LAM0, LAM0_B]


def crossfit_models(prep: Prepared, target: str) -> tuple[Any, Any, Any]:
    """(split model, split_plugin model, θ_t^A alone) for one target."""
    import copy

    from app.domain.crossfit import crossfit_halves, sample_events
    from app.domain.merging.base import StaticModel
    from app.domain.merging.stacked import encoder_shapes, task_vector_stack
    from app.domain.pipeline import run_merge
    from app.domain.training import train_cancer_specific

    train_s = prep.data[target][0]
    run = run_merge(
        method="steph", inputs=prep.inputs(target), params={"crossfit": "split"}, train_config=prep.tcfg,
        train_samples=train_s, test_samples=[], reference=StaticModel(prep.states[target], prep.dims, prep.edges),
    )  # fmt: skip
    split = run.model.eval()
    plugin = copy.deepcopy(split)
    full = task_vector_stack(prep.inputs(target))
    plugin.replace_target_vector({k: full[k][0] for k in encoder_shapes(prep.dims)})
    half_a, _ = crossfit_halves(sample_events(train_s), prep.tcfg.seed)
    alone = train_cancer_specific(
        prep.base, [train_s[i] for i in half_a], prep.tcfg, dims=prep.dims, bin_edges=prep.edges
    )
    return split, plugin.eval(), alone.eval()


def score_row(prep: Prepared, target: str, label: str, model: Any, seconds: float) -> dict[str, Any]:
    train_s, test_s = prep.data[target]
    row = {
        "world": prep.kind, "seed": prep.seed, "target": target, "n_train": len(train_s), "method": label,
        **c_index_of(model, test_s), "seconds": round(seconds, 2),
    }  # fmt: skip
    if label in STEPH_ROWS:
        row.update(merge_stats(model, test_s))
    log(f"[{prep.kind} seed {prep.seed}] {target:9s} {label:52s} C={row['c_index']:.4f} ({seconds:.1f}s)")
    return row


def lam0_half_b(prep: Prepared, target: str) -> Any:
    """STEPH λ = 0 trained on half B only (= crossfit "split" with λ = 0, where τ_t^A gets weight 0)."""
    from dataclasses import replace

    from app.domain.crossfit import SubsetSamples, crossfit_halves, sample_events

    train_s, test_s = prep.data[target]
    _, half_b = crossfit_halves(sample_events(train_s), prep.tcfg.seed)
    sub = replace(prep, data={**prep.data, target: (SubsetSamples(train_s, half_b), test_s)})
    return merged_model(sub, target, "steph", {"lam_mode": "fixed", "lam_value": 0.0})


def run_world(cfg: BenchConfig, seed: int, control: bool, targets: list[str], sink: Any, rows: tuple[str, ...]) -> None:
    prep = prepare_world(cfg, seed, control)
    for target in targets:
        for key, label, method, params in [
            ("cs", CS, None, {}),
            ("steph", STEPH, "steph", {}),
            ("lam0", LAM0, "steph", {"lam_mode": "fixed", "lam_value": 0.0}),
        ]:
            if key in rows:
                t0 = time.perf_counter()
                model = merged_model(prep, target, method, params)
                sink(score_row(prep, target, label, model, time.perf_counter() - t0))
        if "crossfit" in rows:
            t0 = time.perf_counter()
            split, plugin, alone = crossfit_models(prep, target)
            seconds = time.perf_counter() - t0  # includes training θ_t^A alone a second time
            sink(score_row(prep, target, SPLIT, split, seconds))
            sink(score_row(prep, target, PLUGIN, plugin, 0.0))
            sink(score_row(prep, target, HALF_A, alone, 0.0))
        if "lam0_half_b" in rows:
            t0 = time.perf_counter()
            sink(score_row(prep, target, LAM0_B, lam0_half_b(prep, target), time.perf_counter() - t0))


def stats_table(rows: list[dict]) -> list[str]:
    """Mean per-bag merge statistics of the STEPH rows on the test bags, per world."""
    lines = [
        "| world | STEPH variant | mean Σw | mean λ | c_t = Σ w λ (weight on τ_t) |",
        "|---|---|---:|---:|---:|",
    ]
    for world in ("shared", "control"):
        for method in STEPH_ROWS:
            sel = [r for r in rows if r["world"] == world and r["method"] == method]
            if not sel:
                continue
            mean = {k: statistics.fmean(r[k] for r in sel) for k in ("sum_w", "mean_lam", "c_target")}
            lines.append(
                f"| {world} | {method} | {mean['sum_w']:.2f} | {mean['mean_lam']:.2f} | {mean['c_target']:.2f} |"
            )
    return lines


def render(rows: list[dict], meta: dict) -> str:
    from bench.report import main_table, per_target_table

    out = [
        *report.run_header(meta),
        "",
        *main_table(rows, METHODS),
        "",
        *stats_table(rows),
        "",
        "Per target, shared world (mean over seeds):",
        "",
        *per_target_table(rows, METHODS, "shared"),
        "",
    ]
    return "\n".join(out)


def combine(dirs: list[Path]) -> str:
    """One table of several runs (e.g. the shared and the control world run as parallel processes)."""
    rows, meta = report.combine(dirs)
    return render(rows, {**meta, "command": "` and `".join(meta["commands"])})


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(prog="python -m bench.crossfit", description=__doc__.split("\n")[0])
    report.add_run_args(
        p,
        quick_help="1 seed, 3 targets (BLCA BRCA CESC), 20 epochs",
        tag_help="run name (default crossfit-<quick|full>-<worlds>)",
    )
    p.add_argument(
        "--rows", nargs="+", choices=ROW_KEYS, default=["cs", "steph", "lam0", "crossfit"],
        help="rows to compute (default: cs steph lam0 crossfit; lam0_half_b is an extra diagnostic)",
    )  # fmt: skip
    p.add_argument("--combine", nargs="+", metavar="DIR", help="print one table of finished runs; runs nothing")
    args = p.parse_args(argv)
    if args.combine:
        print(combine([Path(d) for d in args.combine]))
        return 0
    return report.run_worlds(
        "crossfit", args, argv, lambda cfg, seed, control, targets, sink: run_world(
            cfg, seed, control, targets, sink, tuple(args.rows)), render,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
