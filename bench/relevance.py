"""Source relevance (app.domain.relevance) on the "Where merging pays" worlds, and what it does to `auto`.

    python -m bench.relevance run --regime paper --world shared --seeds 0 1 2 [--out bench/results/relevance]
    python -m bench.relevance table [--out bench/results/relevance] [--runs bench/results/regimes/full ...]
    python -m bench.relevance gate                                   # the test as a promotion signal
    python -m bench.relevance oracle                                 # can any row reach +0.03 at every seed?

`run`: for each (regime, world, seed) of bench.regimes — the same worlds and cached checkpoints — every source's
own model scores the target's TRAIN split; the ensemble C-index, its bootstrap se and z = (C − ½)/se go to
<out>/rows.jsonl (no merge is trained: seconds per world once the checkpoints exist).

`table`: joins those rows with the finished regime runs (their test C-indices and inner-CV evidence; nothing is
retrained: every rule below picks one of the rows a run already scored) and reports, per regime × world, the
held-out Δ vs the budget-matched cancer-specific model of:
  - the auto rule before this change: candidates STEPH, STEPH λ = 0, retrain; the best inner-CV C wins;
  - the current default: the relevance pre-check (z ≥ relevance_z, else retrain), then STEPH vs retrain;
  - STEPH alone (the best single method in regime b) and the z distribution per world.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.reproduction import log

OUT = Path("bench/results/relevance")
RUNS = [Path(f"bench/results/regimes/{d}") for d in ("full", "fresh", "holdout", "holdout2", "holdout3")]
OWN = "target's own model (checkpoint)"
LABELS = {  # inner-CV candidate label → regime-run row label
    "steph": "steph",
    "steph λ = 0": "steph λ = 0",
    "cancer-specific (retrained)": "cancer_specific (budget-matched)",
}
BM = "cancer_specific (budget-matched)"


def measure(prep: dict[str, Any], target: str, seed: int) -> dict[str, Any]:
    """source_relevance of every other cancer's checkpoint on `target`'s train split (bench.regimes.prepare)."""
    from app.domain.merging.base import StaticModel
    from app.domain.relevance import source_relevance

    names = [c for c in prep["world"].cancers if c != target]
    models: list[Any] = [StaticModel(prep["states"][c], prep["dims"], prep["edges"]).eval() for c in names]
    return source_relevance(models, names, prep["data"][target][0], seed=seed)


def run(regime: str, world: str, seeds: list[int], out: Path) -> None:
    from bench.regimes import REGIMES, prepare

    reg = REGIMES[regime]
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        t0 = time.perf_counter()
        prep = prepare(reg, seed, world == "control")
        for target in reg.targets:
            rel = measure(prep, target, seed)
            row = {"regime": regime, "world": world, "seed": seed, "target": target, **rel,
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            with open(out / "rows.jsonl", "a") as sink:
                sink.write(json.dumps(row) + "\n")
            log(f"[{regime} {world} seed {seed}] {target}: C {rel['c']:.3f} ± {rel['se']:.3f}, z {rel['z']:+.2f}")


BETA0 = "steph β = 0"
BETA0_ROWS = "steph-beta0.jsonl"


def run_beta0(regime: str, world: str, seeds: list[int], out: Path, targets: list[str] | None = None) -> None:
    """STEPH with β = 0 (no λ² penalty) on the regime's worlds, scored on the test split: the row that a
    relevance-chosen β (0 when the sources fail the pre-check) would use. Appends to <out>/steph-beta0.jsonl."""
    from app.domain.merging.mix_stats import merge_statistics
    from app.domain.pipeline import fit_merge
    from bench.regimes import REGIMES, inputs_for, merge_config, prepare
    from bench.reproduction import c_index_of

    reg = REGIMES[regime]
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        prep = prepare(reg, seed, world == "control")
        for target in targets or reg.targets:
            t0 = time.perf_counter()
            train_s, test_s = prep["data"][target]
            model = fit_merge("steph", inputs_for(prep, target), {"beta": 0.0}, merge_config(seed), train_s)
            stats = merge_statistics(model, test_s)
            row = {"regime": regime, "world": world, "seed": seed, "target": target, "method": BETA0,
                   **c_index_of(model, test_s), "lam": stats["lam"]["mean"],
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            with open(out / BETA0_ROWS, "a") as sink:
                sink.write(json.dumps(row) + "\n")
            log(f"[{regime} {world} seed {seed}] {target} {BETA0}: C {row['c_index']:.4f}, λ {row['lam']:.2f}")


def _key(r: dict[str, Any]) -> tuple:
    return r["regime"], r["world"], r["seed"], r["target"]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keyed(path: Path) -> dict[tuple, dict[str, Any]]:
    """A JSON-lines file of per-(regime, world, seed, target) rows (relevance, STEPH β = 0), by that key."""
    return {_key(r): r for r in _rows(path)}


def _runs(dirs: list[Path]) -> dict[tuple, dict[str, Any]]:
    """The finished regime runs: (regime, world, seed, target) → method → row."""
    found: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for d in dirs:
        for f in sorted(d.glob("*/results.jsonl")):
            for r in _rows(f):
                found[_key(r)][r["method"]] = r
    return found


def _mean_se(v: list[float], digits: int = 4) -> str:
    se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
    return f"{statistics.mean(v):+.{digits}f} ± {se:.{digits}f}"


def choose(cv: dict[str, Any], candidates: list[str], z: float = 0.0) -> str:
    """The best inner-CV C among `candidates` whose gain over retrain is above z standard errors; else retrain."""
    best, best_c = "cancer-specific (retrained)", cv["cancer-specific (retrained)"]["c"]
    for c in candidates:
        e = cv[c]
        if e["difference"] > z * (e.get("se") or 0.0) and e["c"] > best_c:
            best, best_c = c, e["c"]
    return best


def table(out: Path, dirs: list[Path], relevance_z: float, seeds_only: list[int] | None = None) -> str:
    rel = _keyed(out / "rows.jsonl")
    runs = _runs(dirs)
    passed = lambda r: r["z"] >= relevance_z  # noqa: E731
    no = "cancer-specific (retrained)"
    rules = {
        "auto before (CV: STEPH, λ = 0, retrain)": lambda cv, r: choose(cv, ["steph", "steph λ = 0"]),
        "CV: STEPH vs retrain": lambda cv, r: choose(cv, ["steph"]),
        f"relevance ≥ {relevance_z:g}, CV: STEPH, λ = 0, retrain": lambda cv, r: (
            choose(cv, ["steph", "steph λ = 0"]) if passed(r) else no
        ),
        f"relevance ≥ {relevance_z:g}, CV: STEPH vs retrain": lambda cv, r: choose(cv, ["steph"]) if passed(r) else no,
        f"relevance ≥ {relevance_z:g}, then STEPH": lambda cv, r: "steph" if passed(r) else no,
        "STEPH alone": lambda cv, r: "steph",
    }
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    zs: dict[tuple, list[float]] = defaultdict(list)
    seeds: dict[tuple, set[int]] = defaultdict(set)
    for key, r in sorted(rel.items()):
        rows = runs.get(key)
        if not rows or "inner-cv" not in rows or (seeds_only and key[2] not in seeds_only):
            continue
        group = (key[0], key[1])
        zs[group].append(r["z"])
        seeds[group].add(key[2])
        bm = rows[BM]["c_index"]
        for name, rule in rules.items():
            cells[group][name].append(rows[LABELS[rule(rows["inner-cv"]["cv"], r)]]["c_index"] - bm)
    lines = ["| regime | world | seeds | relevance z (per seed) | " + " | ".join(rules) + " |",
             "|---|---|---|---|" + "---:|" * len(rules)]  # fmt: skip
    for group in sorted(cells):
        d = cells[group]
        n = len(d["STEPH alone"])

        def fmt(vals: list[float]) -> str:
            return f"{_mean_se(vals)} (worst {min(vals):+.3f})"

        lines.append(
            f"| {group[0]} | {group[1]} | {','.join(map(str, sorted(seeds[group])))} (n = {n}) | "
            + " ".join(f"{z:+.1f}" for z in zs[group]) + " | " + " | ".join(fmt(d[name]) for name in rules) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def steph_table(out: Path, dirs: list[Path], relevance_z: float) -> str:
    """Default STEPH (β = 0.05), STEPH β = 0, and STEPH with β chosen by the relevance pre-check (β = 0.05 when
    the sources pass, else 0): Δ vs the budget-matched model and vs the target's own checkpoint, mean λ on the test
    bags, per regime × world; and the paired λ difference shared − control per regime."""
    rel = _keyed(out / "rows.jsonl")
    beta0 = _keyed(out / BETA0_ROWS)
    runs = _runs(dirs)
    cells: dict[tuple, dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    lam: dict[tuple, dict[str, float]] = defaultdict(dict)  # (regime, seed, target) → world → λ of the rule
    for key, rows in sorted(runs.items()):
        if key not in rel or key not in beta0 or "steph" not in rows:
            continue
        bm, own = rows[BM]["c_index"], rows["target's own model (checkpoint)"]["c_index"]
        chosen = rows["steph"] if rel[key]["z"] >= relevance_z else beta0[key]
        for name, r in (("steph (β 0.05)", rows["steph"]), ("steph β = 0", beta0[key]), ("β by relevance", chosen)):
            cells[(key[0], key[1])][name].append((r["c_index"] - bm, r["c_index"] - own, r["lam"]))
        lam[(key[0], key[2], key[3])][key[1]] = chosen["lam"]
        lam[(key[0], key[2], key[3])][key[1] + " default"] = rows["steph"]["lam"]

    def fmt(v: list[float], digits: int = 3) -> str:
        return _mean_se(v, digits)

    lines = ["| regime | world | n | rule | Δ vs budget-matched | Δ vs own model | min Δ vs own | mean λ |",
             "|---|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for (regime, world), d in sorted(cells.items()):
        for name, vals in d.items():
            lines.append(f"| {regime} | {world} | {len(vals)} | {name} | {fmt([v[0] for v in vals])} | "
                         f"{fmt([v[1] for v in vals])} | {min(v[1] for v in vals):+.3f} | "
                         f"{statistics.mean(v[2] for v in vals):.2f} |")  # fmt: skip
    lines += ["", "| regime | λ shared − control, default STEPH | λ shared − control, β by relevance | pairs |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for regime in sorted({k[0] for k in lam}):
        both = [v for k, v in lam.items() if k[0] == regime and "shared" in v and "control" in v]
        if len(both) > 1:
            dd = [v["shared default"] - v["control default"] for v in both]
            dr = [v["shared"] - v["control"] for v in both]
            lines.append(f"| {regime} | {fmt(dd, 2)} | {fmt(dr, 2)} | {len(both)} |")
    return "\n".join(lines)


def gate_table(out: Path, dirs: list[Path], relevance_z: float) -> str:
    """The relevance test as a promotion signal: per method, how many models truly worse / better than the target's
    own checkpoint on the test split the inner-CV gate, the relevance test, and both together would block."""
    rel = _keyed(out / "rows.jsonl")
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    methods = {"steph": "steph", "steph λ = 0": "steph λ = 0", "average": "average + retrained head"}
    for key, rows in _runs(dirs).items():
        if key not in rel or "inner-cv" not in rows:
            continue
        for method, cv_label in methods.items():
            if method not in rows:
                continue
            worse = rows[method]["c_index"] < rows["target's own model (checkpoint)"]["c_index"]
            by_cv, by_rel = rows["inner-cv"]["cv"][cv_label]["difference"] > 0, rel[key]["z"] >= relevance_z
            for rule, promoted in (("inner-CV gate", by_cv), ("relevance", by_rel), ("both", by_cv and by_rel)):
                c = counts[(method, rule)]
                c["worse" if worse else "better"] += 1
                c["blocked worse" if worse else "blocked better"] += not promoted
    lines = ["| method | rule | blocked: truly worse | blocked: truly better |", "|---|---|---:|---:|"]
    for (method, rule), c in counts.items():
        lines.append(f"| {method} | {rule} | {c['blocked worse']}/{c['worse']} | {c['blocked better']}/{c['better']} |")
    return "\n".join(lines)


def oracle_table(dirs: list[Path], margin: float = 0.03) -> str:
    """How reachable "≥ +margin over the target's own model at every seed" is: per regime × world, the seeds at
    which even the best row of the run (chosen with the TEST split: an oracle no rule can beat) stays below the
    margin, and how many seeds STEPH (β fixed) reaches it at. Only the rows every run has (the core rows)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (regime, world, seed, target), rows in sorted(_runs(dirs).items()):
        if OWN not in rows or "steph" not in rows:
            continue
        own = rows[OWN]["c_index"]
        gains = {m: r["c_index"] - own for m, r in rows.items() if m != OWN and r.get("c_index") is not None}
        best = max(gains, key=lambda m: gains[m])
        cells[(regime, world)].append(
            {"seed": seed, "target": target, "best": best, "best_gain": gains[best], "steph_gain": gains["steph"]}
        )
    lines = [f"| regime | world | seeds (× targets) | STEPH ≥ +{margin:.2f} over own | best row ≥ +{margin:.2f} "
             f"(oracle) | where even the best row stays below: seed, best Δ (its row) |",
             "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for (regime, world), pairs in sorted(cells.items()):
        one_target = len({p["target"] for p in pairs}) == 1
        below = [f"{p['seed']}{'' if one_target else ' ' + p['target']}: {p['best_gain']:+.4f} ({p['best']})"
                 for p in pairs if p["best_gain"] < margin]  # fmt: skip
        steph_ok = sum(p["steph_gain"] >= margin for p in pairs)
        best_ok = sum(p["best_gain"] >= margin for p in pairs)
        lines.append(f"| {regime} | {world} | {len(pairs)} | {steph_ok} | {best_ok} | {'; '.join(below) or '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.regimes import world_args

    p = argparse.ArgumentParser(prog="python -m bench.relevance", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    world_args(r, [0, 1, 2])
    r.add_argument("--out", type=Path, default=OUT)
    b = sub.add_parser("beta0", help="STEPH with β = 0 on the regime's worlds (for a relevance-chosen β)")
    world_args(b, [0, 1, 2])
    b.add_argument("--targets", nargs="+")
    b.add_argument("--out", type=Path, default=OUT)
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, default=OUT)
    t.add_argument("--runs", type=Path, nargs="+", default=RUNS)
    t.add_argument("--relevance-z", type=float, default=None, help="default: auto's RELEVANCE_Z")
    t.add_argument("--seeds", type=int, nargs="+", help="only these seeds (e.g. the development seeds 0–4)")
    st = sub.add_parser("steph", help="STEPH with β chosen by the relevance pre-check, from the beta0 rows")
    st.add_argument("--out", type=Path, default=OUT)
    st.add_argument("--runs", type=Path, nargs="+", default=RUNS)
    g = sub.add_parser("gate", help="the relevance test as a promotion signal, next to the inner-CV gate")
    g.add_argument("--out", type=Path, default=OUT)
    g.add_argument("--runs", type=Path, nargs="+", default=RUNS)
    o = sub.add_parser("oracle", help="seeds where even the best row stays under +0.03 over the own model")
    o.add_argument("--runs", type=Path, nargs="+", default=RUNS)
    args = p.parse_args(argv)
    if args.cmd == "oracle":
        print(oracle_table(args.runs))
        return 0
    if args.cmd == "run":
        import torch

        torch.set_num_threads(1)  # as bench.regimes: two runs side by side on a 2-core machine
        run(args.regime, args.world, args.seeds, args.out)
    elif args.cmd == "beta0":
        import torch

        torch.set_num_threads(1)
        run_beta0(args.regime, args.world, args.seeds, args.out, args.targets)
    else:
        from app.domain.merging.auto import RELEVANCE_Z

        if args.cmd in ("gate", "steph"):
            print((gate_table if args.cmd == "gate" else steph_table)(args.out, args.runs, RELEVANCE_Z))
            return 0
        z = RELEVANCE_Z if args.relevance_z is None else args.relevance_z
        print(table(args.out, args.runs, z, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
