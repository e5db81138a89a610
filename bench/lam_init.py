"""Where STEPH's λ starts: lam_init on the reproduction worlds (BENCHMARKS.md, "STEPH: where λ starts").

    python -m bench.lam_init [--quick] [--worlds shared control] [--seeds 0 1 2] [--targets BLCA BRCA]

Same worlds, θ₀, cancer-specific models, training settings and scoring as bench.reproduction (its helpers are
imported, so the cancer_specific / steph / λ = 0 rows equal the reproduction table's). Per target:

- cancer_specific, steph (default init, λ starts close to 1), steph λ = 0 (reference rows);
- steph lam_init=0.5 and steph lam_init=0.2 (StephParams.lam_init: λ starts near that value);
- steph, lam_init chosen per target on an inner validation split (the deployable variant): the target's train
  split is cut into inner-train / inner-val (`inner_split`: 30 % inner-val, stratified by event, fixed by the
  seed and the target's name); a target model θ_t^in is trained from θ₀ on inner-train only (so that τ_t has
  not seen the inner-val patients, as the cancer-specific model has not seen the test patients); each candidate
  lam_init ∈ {None, 0.5, 0.2} is built with τ_t^in, trained on inner-train and scored by Harrell's C on
  inner-val; the best wins (ties → the earlier candidate, i.e. the default first). The chosen configuration
  is then trained on the full train split with the full τ_t and scored on the test split. That final model
  is exactly the corresponding fixed-lam_init row's model (same params, samples, seed: training is
  deterministic), so it is reused; `--retrain` (on in --quick) retrains it and checks the test C-index is
  identical. The test split never influences the choice.
- `--rows leaky`: the same selection with the full τ_t (fitted on inner-val too), a diagnostic of the bias
  that skipping the θ_t^in refit would introduce.

For every STEPH row it records the per-bag merge statistics on the test bags (Σw, mean λ over the selected
sources, c_t = Σ w λ; bench.steph_diagnostics.merge_stats). Rows: bench/out/<tag>/results.jsonl; table:
bench/out/<tag>/table.md; `--combine DIR DIR` prints one table of runs made as parallel processes.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report
from bench.reproduction import BenchConfig, Prepared, c_index_of, log, merged_model, prepare_world
from bench.steph_diagnostics import merge_stats

CS = "cancer_specific"
STEPH = "steph (default init)"
L05 = "steph lam_init=0.5"
L02 = "steph lam_init=0.2"
LAM0 = "steph (λ = 0, sources only; reference)"
SEL = "steph, lam_init chosen on inner validation (deployable)"
LEAKY = "diagnostic: same selection without refitting τ_t (τ_t saw inner-val)"
PEEK = "not deployable: best of the 3 lam_init on the test split (peeks)"
CANDIDATES: list[tuple[str, float | None]] = [(STEPH, None), (L05, 0.5), (L02, 0.2)]
METHODS = [CS, STEPH, L05, L02, LAM0, SEL, LEAKY]
ROW_KEYS = ("fixed", "select", "leaky")
INNER_VAL_FRACTION = 0.3


def inner_split(events: list[int], seed: int, target: str, frac: float = INNER_VAL_FRACTION) -> tuple[list, list]:
    """(inner-train, inner-val) indices (sorted), stratified by event, deterministic for (seed, target)."""
    rng = random.Random(f"lam-init-inner-{seed}-{target}")
    train_idx: list[int] = []
    val_idx: list[int] = []
    for flag in (1, 0):
        group = [i for i, e in enumerate(events) if (e == 1) == (flag == 1)]
        rng.shuffle(group)
        n_val = round(frac * len(group))
        val_idx += group[:n_val]
        train_idx += group[n_val:]
    return sorted(train_idx), sorted(val_idx)


def steph_params(lam_init: float | None) -> dict[str, Any]:
    return {} if lam_init is None else {"lam_init": lam_init}


def inner_val_scores(prep: Prepared, target: str, *, refit_target: bool) -> dict[str, Any]:
    """C-index on inner-val of every candidate trained on inner-train; the choice (ties → earlier)."""
    from app.domain.crossfit import SubsetSamples, sample_events
    from app.domain.metrics import NoComparablePairs
    from app.domain.training import train_cancer_specific

    train_s, test_s = prep.data[target]
    tr_idx, val_idx = inner_split(sample_events(train_s), prep.seed, target)
    inner_train, inner_val = SubsetSamples(train_s, tr_idx), SubsetSamples(train_s, val_idx)
    states = prep.states
    if refit_target:
        theta_in = train_cancer_specific(prep.base, inner_train, prep.tcfg, dims=prep.dims, bin_edges=prep.edges)
        states = {**prep.states, target: {k: v.detach().clone() for k, v in theta_in.abmil.state_dict().items()}}
    sub = replace(prep, states=states, data={**prep.data, target: (inner_train, test_s)})
    scores: dict[str, float | None] = {}
    for label, lam_init in CANDIDATES:
        model = merged_model(sub, target, "steph", steph_params(lam_init))
        try:
            scores[label] = c_index_of(model, list(inner_val))["c_index"]
        except (NoComparablePairs, ValueError):
            scores[label] = None
    best_label, best = CANDIDATES[0][0], scores[CANDIDATES[0][0]]
    for label, _ in CANDIDATES[1:]:
        if scores[label] is not None and (best is None or scores[label] > best):
            best_label, best = label, scores[label]
    return {"chosen": best_label, "inner_val_c": scores, "n_inner_train": len(tr_idx), "n_inner_val": len(val_idx)}


def row_of(prep: Prepared, target: str, label: str, model: Any, seconds: float, **extra: Any) -> dict[str, Any]:
    train_s, test_s = prep.data[target]
    row = {
        "world": prep.kind, "seed": prep.seed, "target": target, "n_train": len(train_s), "method": label,
        **c_index_of(model, test_s), "seconds": round(seconds, 2), **extra,
    }  # fmt: skip
    if label != CS:
        row.update(merge_stats(model, test_s))
    log(f"[{prep.kind} seed {prep.seed}] {target:9s} {label:58s} C={row['c_index']:.4f} ({seconds:.1f}s)")
    return row


def run_world(
    cfg: BenchConfig, seed: int, control: bool, targets: list[str], sink: Any, rows: tuple[str, ...], retrain: bool
) -> None:
    prep = prepare_world(cfg, seed, control)
    for target in targets:
        models: dict[str, Any] = {}
        done: dict[str, dict[str, Any]] = {}
        for label, method, params in [
            (CS, None, {}),
            *[(lab, "steph", steph_params(li)) for lab, li in CANDIDATES],
            (LAM0, "steph", {"lam_mode": "fixed", "lam_value": 0.0}),
        ]:
            t0 = time.perf_counter()
            models[label] = merged_model(prep, target, method, params)
            done[label] = row_of(prep, target, label, models[label], time.perf_counter() - t0)
            sink(done[label])
        for key, label, refit in (("select", SEL, True), ("leaky", LEAKY, False)):
            if key not in rows:
                continue
            t0 = time.perf_counter()
            choice = inner_val_scores(prep, target, refit_target=refit)
            chosen = choice["chosen"]
            if retrain:  # the final model is the chosen fixed row's model; check that retraining gives it back
                again = merged_model(prep, target, "steph", steph_params(dict(CANDIDATES)[chosen]))
                c_again = c_index_of(again, prep.data[target][1])["c_index"]
                assert c_again == done[chosen]["c_index"], (target, chosen, c_again, done[chosen]["c_index"])
            row = row_of(prep, target, label, models[chosen], time.perf_counter() - t0, **choice)
            log(f"    chose {chosen!r}; inner-val C {choice['inner_val_c']}")
            sink(row)


def _stats(rows: list[dict], world: str, method: str) -> dict[str, Any] | None:
    from bench.report import summarise

    s = summarise(rows, world, method)
    if s is None:
        return None
    sel = [r for r in rows if r["world"] == world and r["method"] == method]
    s["lam"] = statistics.fmean(r["mean_lam"] for r in sel) if method != CS else float("nan")
    s["c_t"] = statistics.fmean(r["c_target"] for r in sel) if method != CS else float("nan")
    return s


def with_peek(rows: list[dict]) -> list[dict]:
    """Add the non-deployable 'best lam_init on the test split' rows (computed from the fixed rows)."""
    out = list(rows)
    by = {(r["world"], r["seed"], r["target"], r["method"]): r for r in rows}
    for w, s, t in dict.fromkeys((r["world"], r["seed"], r["target"]) for r in rows):  # in order: n_train
        cands = [by[(w, s, t, lab)] for lab, _ in CANDIDATES if (w, s, t, lab) in by]
        if len(cands) == len(CANDIDATES):
            best = max(cands, key=lambda r: r["c_index"])
            out.append({**best, "method": PEEK})
    return out


def fmt(x: float, digits: int = 4, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def summary_table(rows: list[dict]) -> list[str]:
    worlds = [w for w in ("shared", "control") if any(r["world"] == w for r in rows)]
    head = "| method |" + "".join(
        f" {w}: mean C | {w}: Δ vs cancer-specific (± se) | {w}: wins | {w}: mean λ (test bags) |" for w in worlds
    )
    lines = [head, "|---|" + "---:|" * 4 * len(worlds)]
    for method in [*METHODS, PEEK]:
        cells: list[str] = []
        for w in worlds:
            s = _stats(rows, w, method)
            if s is None:
                cells += ["–"] * 4
                continue
            delta = f"{fmt(s['delta'], signed=True)} ± {fmt(s['se'])}" if method != CS else "–"
            wins = f"{s['wins']}/{s['n']}" if method != CS else "–"
            cells += [fmt(s["mean"]), delta, wins, fmt(s["lam"], 2)]
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def paired(rows: list[dict], world: str, a: str, b: str) -> str:
    c = {(r["seed"], r["target"], r["method"]): r["c_index"] for r in rows if r["world"] == world}
    diffs = [c[(s, t, a)] - c[(s, t, b)] for (s, t, m) in c if m == a and (s, t, b) in c]
    if len(diffs) < 2:
        return "–"
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{statistics.fmean(diffs):+.4f} ± {se:.4f} ({sum(d > 0 for d in diffs)}/{len(diffs)})"


def selection_table(rows: list[dict]) -> list[str]:
    lines = [
        "| world | selection | chosen: default / 0.5 / 0.2 | mean inner-val C: default / 0.5 / 0.2 |",
        "|---|---|---:|---:|",
    ]
    for w in ("shared", "control"):
        for method in (SEL, LEAKY):
            sel = [r for r in rows if r["world"] == w and r["method"] == method]
            if not sel:
                continue
            counts = [sum(r["chosen"] == lab for r in sel) for lab, _ in CANDIDATES]
            means = []
            for lab, _ in CANDIDATES:
                vals = [r["inner_val_c"][lab] for r in sel if r["inner_val_c"][lab] is not None]
                means.append(fmt(statistics.fmean(vals), 3) if vals else "–")
            lines.append(f"| {w} | {method} | {' / '.join(map(str, counts))} | {' / '.join(means)} |")
    return lines


def comparisons_table(rows: list[dict]) -> list[str]:
    worlds = [w for w in ("shared", "control") if any(r["world"] == w for r in rows)]
    lines = ["| comparison (paired, mean ± se, wins) | " + " | ".join(worlds) + " |", "|---|" + "---:|" * len(worlds)]
    for a, b in ((L05, STEPH), (L02, STEPH), (SEL, STEPH), (LAM0, L02), (LAM0, SEL)):
        if any(r["method"] == a for r in rows) and any(r["method"] == b for r in rows):
            lines.append(f"| {a} − {b} | " + " | ".join(paired(rows, w, a, b) for w in worlds) + " |")
    return lines


def render(rows: list[dict], meta: dict) -> str:
    from bench.report import per_target_table

    rows = with_peek(rows)
    out = [
        *report.run_header(meta),
        "",
        *summary_table(rows),
        "",
        *selection_table(rows),
        "",
        *comparisons_table(rows),
        "",
        "Per target, shared world (mean over seeds):",
        "",
        *per_target_table(rows, [*METHODS, PEEK], "shared"),
        "",
    ]
    return "\n".join(out)


def combine(dirs: list[Path]) -> str:
    """One table of several runs (e.g. the shared and the control world run as parallel processes)."""
    rows, meta = report.combine(dirs)
    return render(rows, {**meta, "command": "` and `".join(meta["commands"])})


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(prog="python -m bench.lam_init", description=__doc__.split("\n")[0])
    report.add_run_args(
        p,
        quick_help="1 seed, 3 targets (BLCA BRCA CESC), 20 epochs, --retrain",
        tag_help="run name (default lam-init-<quick|full>-<worlds>)",
    )
    p.add_argument(
        "--rows", nargs="+", choices=ROW_KEYS, default=["fixed", "select"],
        help="'fixed' (always computed): cs, steph, lam_init 0.5 / 0.2, λ = 0; 'select': the inner-validation "
        "choice; 'leaky': the same choice without refitting τ_t (diagnostic)",
    )  # fmt: skip
    p.add_argument("--retrain", action="store_true", help="retrain the chosen model and check it equals the row")
    p.add_argument("--combine", nargs="+", metavar="DIR", help="print one table of finished runs; runs nothing")
    args = p.parse_args(argv)
    if args.combine:
        print(combine([Path(d) for d in args.combine]))
        return 0
    return report.run_worlds(
        "lam_init", args, argv, lambda cfg, seed, control, targets, sink: run_world(
            cfg, seed, control, targets, sink, tuple(args.rows), args.retrain or args.quick), render,
        extra_meta={"inner_val_fraction": INNER_VAL_FRACTION},
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
