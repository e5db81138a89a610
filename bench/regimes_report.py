"""Markdown tables of bench.regimes runs: methods × worlds, the gate's accuracy, `auto`'s choices, λ.

Δ columns are paired differences over (seed, target) pairs: mean ± standard error, and wins. Derived rows:
- "auto (relevance, then STEPH)": `auto`'s default since session 9 — STEPH when the sources pass the relevance
  pre-check (z ≥ app.domain.merging.auto.RELEVANCE_Z; the run's "relevance" row, or for runs made before it
  existed bench/results/relevance/rows.jsonl), else the budget-matched cancer-specific model (auto's `retrain`);
- "auto, inner CV (before session 9)": the previous default — app.domain.merging.auto.choose, margin 0, over
  STEPH, STEPH λ = 0 and retrain on the inner-CV evidence (the budget-matched model when no candidate beats the
  refitted target); "auto, all six candidates": the same rule over every candidate (+ averaging, target encoder +
  head, θ₀ encoder + head);
- "X + gate": what a user gets by default: X when the gate promotes it (inner-CV Δ > 0), else the checkpoint.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.regimes import CKPT_ROW, CV_ROWS, ROWS

BUDGET = "cancer_specific (budget-matched)"
BASE_HEAD = "θ₀ encoder + retrained head"
TARGET_HEAD = "target encoder + retrained head"
AUTO = "auto (relevance, then STEPH)"
AUTO_CV = "auto, inner CV (before session 9)"
AUTO_ALL = "auto, all six candidates"
RELEVANCE_ROWS = Path("bench/results/relevance/rows.jsonl")  # runs made before bench.regimes recorded relevance
GATE_CV = {"steph": "steph", "steph λ = 0": "steph λ = 0", "average": "average + retrained head"}
GATED = list(GATE_CV)


def load(dirs: list[Path]) -> tuple[list[dict], list[dict]]:
    rows, metas = [], []
    for d in dirs:
        rows += [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines() if x.strip()]
        metas.append(json.loads((d / "meta.json").read_text()))
    have = {(r["regime"], r["world"], r["seed"], r["target"]) for r in rows if r["method"] == "relevance"}
    runs = {(r["regime"], r["world"], r["seed"], r["target"]) for r in rows}
    if RELEVANCE_ROWS.is_file():  # relevance measured afterwards by bench.relevance for the older runs
        for line in RELEVANCE_ROWS.read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            key = r and (r["regime"], r["world"], r["seed"], r["target"])
            if r and key in runs and key not in have:
                rows.append({**r, "method": "relevance", "c_index": None})
                have.add(key)
    return rows, metas


def derive(rows: list[dict]) -> list[dict]:
    """Add the auto and gated rows (see module docstring)."""
    from app.domain.merging.auto import CANDIDATES, RELEVANCE_Z, choose
    from app.domain.promotion import RETRAIN, TARGET_LABEL

    by = {(r["regime"], r["world"], r["seed"], r["target"], r["method"]): r for r in rows}
    out = list(rows)
    orders = {
        AUTO_CV: [CANDIDATES[n].label for n in ("steph", "steph_lam0", "retrain")],
        AUTO_ALL: [  # the six candidates (and the target) this row was defined with, before steph_ensemble
            CANDIDATES[n].label
            for n in ("steph", "steph_lam0", "average", "target_head", "base_head", "retrain", "target")
        ],
    }
    for r in rows:
        if r["method"] == "relevance":
            key = (r["regime"], r["world"], r["seed"], r["target"])
            chosen = "steph" if r["z"] >= RELEVANCE_Z else BUDGET
            if (*key, chosen) in by:
                out.append({**by[(*key, chosen)], "method": AUTO, "chosen": chosen})
    for r in rows:
        if r["method"] != "inner-cv":
            continue
        key = (r["regime"], r["world"], r["seed"], r["target"])
        cv = dict(r["cv"])  # runs before the 'retrain' candidate existed: its CV estimate is the fold refit's
        cv.setdefault(RETRAIN.label, {"c": cv[TARGET_LABEL]["c"], "difference": 0.0})
        for row_label, order in orders.items():
            winner = choose(cv, order, 0.0)
            chosen = {TARGET_LABEL: CKPT_ROW, RETRAIN.label: BUDGET}.get(winner) or CV_ROWS[winner]
            if (*key, chosen) in by:
                out.append({**by[(*key, chosen)], "method": row_label, "chosen": chosen})
        for label, cv_label in (
            ("steph", "steph"),
            ("steph λ = 0", "steph λ = 0"),
            ("average", "average + retrained head"),
        ):
            promoted = r["cv"][cv_label]["difference"] > 0
            src = by.get((*key, label if promoted else CKPT_ROW))
            if src is not None and (*key, label) in by:
                truth = by[(*key, label)]["c_index"] - by[(*key, CKPT_ROW)]["c_index"]
                out.append({**src, "method": f"{label} + gate", "promoted": promoted, "truth": truth})
    return out


def _c(rows: list[dict], world: str) -> dict[tuple, float]:
    return {
        (r["method"], r["seed"], r["target"]): r["c_index"]
        for r in rows
        if r["world"] == world and r["c_index"] is not None
    }


def paired(c: dict, a: str, b: str) -> tuple[float, float, int, int, list[float]]:
    keys = [(s, t) for (m, s, t) in c if m == a and (b, s, t) in c]
    d = [c[(a, s, t)] - c[(b, s, t)] for s, t in keys]
    if not d:
        return math.nan, math.nan, 0, 0, []
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return statistics.fmean(d), se, sum(x > 0 for x in d), len(d), d


def _f(x: float, signed: bool = True, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _delta(c: dict, a: str, b: str) -> str:
    m, se, wins, n, _ = paired(c, a, b)
    return "–" if n == 0 or a == b else f"{_f(m)} ± {_f(se, False)} ({wins}/{n})"


def methods_table(rows: list[dict], w: str) -> list[str]:
    """One world: mean C (sd over seed means), paired Δ vs the own model, the budget-matched model and the two
    trivial baselines (mean ± se (wins/n)), mean λ on the test bags."""
    methods = [CKPT_ROW, *[x[0] for x in ROWS], AUTO, AUTO_CV, AUTO_ALL, *[f"{g} + gate" for g in GATED]]
    lines = [
        f"| {w} world: method | mean C (sd seeds) | Δ vs own model | Δ vs budget-matched | Δ vs θ₀ + head | "
        "Δ vs target enc. + head | mean λ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    c = _c(rows, w)
    for m in methods:
        per_seed: dict[int, list[float]] = defaultdict(list)
        for (mm, s, _), v in c.items():
            if mm == m:
                per_seed[s].append(v)
        if not per_seed:
            continue
        means = [statistics.fmean(v) for v in per_seed.values()]
        sd = statistics.stdev(means) if len(means) > 1 else math.nan
        mean = statistics.fmean(v for vs in per_seed.values() for v in vs)
        lam = [r["lam"] for r in rows if r["world"] == w and r["method"] == m and "lam" in r]
        cells = [
            f"{_f(mean, False)} ({_f(sd, False)})", _delta(c, m, CKPT_ROW), _delta(c, m, BUDGET),
            _delta(c, m, BASE_HEAD), _delta(c, m, TARGET_HEAD), _f(statistics.fmean(lam), False, 2) if lam else "–",
        ]  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def per_seed_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Δ vs the own model and vs the budget-matched model at every seed (the 'every seed' target)."""
    lines = ["| world | method | Δ vs own model per seed | Δ vs budget-matched per seed |", "|---|---|---|---|"]
    for w in ("shared", "control"):
        c = _c(rows, w)
        for m in methods:
            own = [f"{_f(x)}" for x in paired(c, m, CKPT_ROW)[4]]
            bud = [f"{_f(x)}" for x in paired(c, m, BUDGET)[4]]
            if own:
                lines.append(f"| {w} | {m} | {' '.join(own)} | {' '.join(bud)} |")
    return lines


def gate_table(rows: list[dict]) -> list[str]:
    lines = [
        "| world | method | promoted | blocked: truly worse | blocked: truly better | mean inner-CV Δ | mean test Δ |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for w in ("shared", "control"):
        for g in GATED:
            sel = [r for r in rows if r["world"] == w and r["method"] == f"{g} + gate"]
            if not sel:
                continue
            worse = [r for r in sel if r["truth"] < 0]
            better = [r for r in sel if r["truth"] > 0]
            cvd = [r2["cv"][GATE_CV[g]]["difference"] for r2 in rows
                   if r2["world"] == w and r2["method"] == "inner-cv"]  # fmt: skip
            lines.append(
                f"| {w} | {g} | {sum(r['promoted'] for r in sel)}/{len(sel)} | "
                f"{sum(not r['promoted'] for r in worse)}/{len(worse)} | "
                f"{sum(not r['promoted'] for r in better)}/{len(better)} | "
                f"{_f(statistics.fmean(cvd))} | {_f(statistics.fmean(r['truth'] for r in sel))} |"
            )
    return lines


def auto_table(rows: list[dict]) -> list[str]:
    lines = ["| world | auto's choices (count) |", "|---|---|"]
    for w in ("shared", "control"):
        picks: dict[str, int] = defaultdict(int)
        for r in rows:
            if r["world"] == w and r["method"] == AUTO:
                picks[r["chosen"]] += 1
        if picks:
            lines.append(f"| {w} | " + ", ".join(f"{k}: {v}" for k, v in sorted(picks.items())) + " |")
    return lines


def collapse_line(rows: list[dict]) -> str:
    parts = []
    for m in ("steph", "steph paper (ReLU w)"):
        sel = [r for r in rows if r["method"] == m and "collapsed" in r]
        parts.append(f"{m}: {sum(r['collapsed'] for r in sel)}/{len(sel)} collapsed")
    return "Collapse (Σw = 0 on every train bag): " + "; ".join(parts) + "."


def lambda_line(rows: list[dict]) -> str:
    """Default STEPH's mean test-bag λ per seed, shared vs control (same seed = same generator draw except the
    shared prognostic rule), and the paired difference: does the data decide how much to borrow?"""
    lam = {(r["world"], r["seed"], r["target"]): r["lam"] for r in rows if r["method"] == "steph" and "lam" in r}
    keys = sorted({(s, t) for (w, s, t) in lam if ("shared", s, t) in lam and ("control", s, t) in lam})
    if not keys:
        return ""
    d = [lam[("shared", s, t)] - lam[("control", s, t)] for s, t in keys]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    shared = " ".join(f"{lam[('shared', s, t)]:.2f}" for s, t in keys)
    control = " ".join(f"{lam[('control', s, t)]:.2f}" for s, t in keys)
    return (f"Mean λ of default STEPH on the test bags, per seed: shared {shared}; control {control}; "
            f"paired difference shared − control {statistics.fmean(d):+.3f} ± {se:.3f} (n = {len(d)}).")  # fmt: skip


def render(dirs: list[Path]) -> str:
    rows, metas = load(dirs)
    rows = derive(rows)
    out: list[str] = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in rows if r["regime"] == regime]
        walls = [m["wall_s"] for m in metas if m["regime"] == regime]
        out += [f"### Regime `{regime}`", "", "Commands: " + "; ".join(
            f"`{m['command']}`" for m in metas if m["regime"] == regime) + f". Wall: {walls} s.", ""]  # fmt: skip
        for w in ("shared", "control"):
            if any(r["world"] == w for r in sel):
                out += [*methods_table(sel, w), ""]
        out += [*per_seed_table(sel, ["steph", AUTO, AUTO_CV, AUTO_ALL, "steph + gate"]), ""]
        out += [*gate_table(sel), "", *auto_table(sel), "", collapse_line(sel), "", lambda_line(sel), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> Any:
    import sys

    print(render([Path(a) for a in (argv or sys.argv[1:])]))


if __name__ == "__main__":
    main()


def holdout_table(dirs: list[Path]) -> str:
    """One line per (regime, world): Δ vs the budget-matched cancer-specific model of default STEPH, `auto` (the
    default rule), the previous inner-CV rule and the inner CV over all six candidates, mean ± se over the
    (seed, target) pairs, wins, and the worst pair — for seeds run after auto's rule was fixed (an out-of-sample
    check of the rule)."""
    rows = derive(load(dirs)[0])
    lines = [
        "| regime | world | pairs | steph | auto (default: relevance, then STEPH) | auto, inner CV (before) "
        "| auto, all six | auto (default): worst pair |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for regime in dict.fromkeys(r["regime"] for r in rows):
        for w in ("shared", "control"):
            c = _c([r for r in rows if r["regime"] == regime], w)
            if not c:
                continue
            cells = []
            for m in ("steph", AUTO, AUTO_CV, AUTO_ALL):
                mean, se, wins, n, d = paired(c, m, BUDGET)
                cells.append(f"{_f(mean)} ± {se:.3f} ({wins}/{n})")
            worst = min(paired(c, AUTO, BUDGET)[4])
            lines.append(f"| {regime} | {w} | {n} | " + " | ".join(cells) + f" | {_f(worst)} |")
    return "\n".join(lines)
