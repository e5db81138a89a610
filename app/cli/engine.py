"""The engine commands of `steph`: synth, train, merge, evaluate, predict, methods (and their parsers)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import app
from app.cli.common import (
    SYNTH_TRAINING,
    UNSET,
    CliError,
    ProgressBar,
    cohort_samples,
    emit,
    load_family,
    load_model,
    read_state,
    sha256_file,
    topk_arg,
    train_config_from,
    training_flags,
)


def cmd_synth(args: argparse.Namespace) -> int:
    from app.domain.synthetic import WorldConfig, make_world
    from app.io.synth_files import write_world

    shared = 0.0 if args.control else args.shared_fraction
    config = WorldConfig(
        cancers=args.cancers, dim=args.dim, prototypes=args.prototypes, patients=args.patients,
        target=args.target, target_patients=args.target_patients, shared_fraction=shared, seed=args.seed,
        patches=(args.patch_min, args.patch_max),
    )  # fmt: skip
    bar = ProgressBar(args.quiet)
    written = write_world(
        make_world(config), args.out, hidden=args.hidden, attn=args.attn, n_bins=args.bins,
        base_seed=args.seed, train_checkpoints=not args.no_train, train_config=train_config_from(args),
        progress=lambda cancer, p: bar(p, cancer),
    )  # fmt: skip
    bar.close()
    emit(written.to_dict())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from app.domain.training import train_cancer_specific
    from app.io.synth_files import write_state

    base, dims, edges = load_family(args.base)
    samples = cohort_samples(args.cohort, args.split, dims.in_dim)
    bar = ProgressBar(args.quiet)
    model = train_cancer_specific(base, samples, train_config_from(args), dims=dims, bin_edges=edges, progress=bar)
    bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_state(out, model.abmil.state_dict(), {"dims": json.dumps(dims.to_dict()), "bin_edges": json.dumps(edges)})
    emit({"out": str(out), "sha256": sha256_file(out), "patients": len(samples), "split": args.split})
    return 0


def merge_params(args: argparse.Namespace) -> dict[str, Any]:
    """--param KEY=VALUE (values JSON-parsed, else kept as strings), --topk and the training flags."""
    raw: dict[str, Any] = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param {item!r}: expected KEY=VALUE, e.g. --param gamma=0.001")
        try:
            raw[key] = json.loads(value)
        except json.JSONDecodeError:
            raw[key] = value
    if args.topk is not UNSET:
        raw["topk"] = args.topk
    for key in ("epochs", "lr", "accum", "seed"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return raw


# = app.domain.task_vectors.DEFAULT_MIN_BASE_RETENTION (and the setting's default; a test checks), written out
# here so that `steph merge --help` does not import torch
DEFAULT_MIN_BASE_RETENTION = 0.2


def merge_provenance(args: argparse.Namespace, train_config: Any, run: Any) -> dict[str, Any]:
    """Input file names and sha256s, seed, training settings, code version and the held-out comparison."""
    files = {"base": args.base, "target": args.target}
    return {
        "inputs": {role: {"name": Path(p).name, "sha256": sha256_file(p)} for role, p in files.items()},
        "sources": [{"name": Path(p).stem, "sha256": sha256_file(p)} for p in args.source],
        "cohort": Path(args.cohort).name, "seed": train_config.seed, "train_config": asdict(train_config),
        "code_version": app.__version__, "comparison": run.comparison.to_dict() if run.comparison else None,
        "comparison_skipped": run.comparison_skipped, "test_metrics": run.test_metrics,
        **({"notes": run.notes} if run.notes else {}),
    }  # fmt: skip


def cmd_merge(args: argparse.Namespace) -> int:
    from app.domain.merging.base import MergeInputs, StaticModel
    from app.domain.pipeline import run_merge, split_params
    from app.domain.promotion import split_gate
    from app.domain.task_vectors import check_compatible, check_descends_from
    from app.io.artifacts import save_model

    base, dims, edges = load_family(args.base)
    target = read_state(args.target)
    check_compatible(base, target, name=Path(args.target).name)
    check_descends_from(base, target, name=Path(args.target).name, min_retention=args.min_base_retention)
    sources = []
    for path in args.source:
        sources.append(read_state(path))
        check_compatible(base, sources[-1], name=Path(path).name)
        check_descends_from(base, sources[-1], name=Path(path).name, min_retention=args.min_base_retention)
    raw_params = merge_params(args)
    train_config, params = split_params(raw_params)
    train_config = train_config.resolved()  # compute_dtype "auto" → what it means here (recorded in provenance)
    gate = split_gate({"gate": "off", **raw_params})[0]  # issue 12: --param gate=fast|full runs the gate
    inputs = MergeInputs(
        base=base, target=target, sources=sources, source_names=[Path(p).stem for p in args.source],
        target_name=Path(args.target).stem, dims=dims, bin_edges=edges,
    )  # fmt: skip
    bar = ProgressBar(args.quiet)
    run = run_merge(
        method=args.method, inputs=inputs, params=params, train_config=train_config,
        train_samples=cohort_samples(args.cohort, "train", dims.in_dim),
        test_samples=cohort_samples(args.cohort, "test", dims.in_dim),
        reference=StaticModel(target, dims, edges), progress=bar, gate=gate,
    )  # fmt: skip
    bar.close()
    provenance = merge_provenance(args, train_config, run)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sha = save_model(args.out, run.model, provenance)
    result = run.train_result
    emit({
        "method": args.method, "params": run.params, "train_config": asdict(train_config),
        "target": inputs.target_name, "sources": inputs.source_names,
        "train": {"steps": result.steps, "final_loss": result.final_loss} if result else None,
        "comparison": provenance["comparison"], "comparison_skipped": run.comparison_skipped,
        "test_metrics": run.test_metrics, "notes": run.notes,
        "promotion": run.promotion, "merge_stats": run.merge_stats,  # issue 12
        "artifact": {"path": str(args.out), "sha256": sha},
    })  # fmt: skip
    return 0


def times_arg(value: str) -> list[float]:
    """--times: comma-separated days, finite and strictly increasing (e.g. 365,730,1095)."""
    import math

    example = "comma-separated, strictly increasing days such as 365,730,1095"
    try:
        days = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}; got {value!r}") from None
    ok = days and all(math.isfinite(d) for d in days) and all(b > a for a, b in zip(days, days[1:], strict=False))
    if not ok:
        raise argparse.ArgumentTypeError(f"expected {example}; got {value!r}")
    return days


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.domain.evaluation import evaluate_metrics
    from app.io.cohort import open_cohort

    model = load_model(args.model)
    samples = cohort_samples(args.cohort, args.split, model.dims.in_dim)
    reference = open_cohort(args.cohort).patients("train")  # labels only: no bag is read
    report = evaluate_metrics(
        model, samples, [p.time for p in reference], [p.event for p in reference], times=args.times
    )
    emit(report.to_dict())
    return 0


def survival_points(bin_edges: list[float], surv: list[float]) -> dict[str, list[float]]:
    """{times_days: edges from 0, probabilities: [1, *surv]}, both n_bins + 1 long (as POST /predict)."""
    probabilities = [1.0, *[float(x) for x in surv]]
    times = [float(e) for e in bin_edges][: len(probabilities)]
    return {"times_days": times, "probabilities": probabilities[: len(times)]}


def predict_bag(model: Any, path: str) -> dict[str, Any]:
    """risk, survival curve at the bin edges and (STEPH) the selected sources of one bag.

    The curve is the one POST /predict returns: times_days = the bin edges from day 0, probabilities =
    [S(0) = 1, S_1, …] where S_j = Π_{i<=j} (1 − h_i) is the survival past bin j (n_bins + 1 points)."""
    import torch

    from app.domain.survival import risk_score, survival_curve
    from app.io.bags import non_finite_output, read_bag

    bag = read_bag(path, expected_dim=model.dims.in_dim, display_name=Path(path).name)
    with torch.no_grad():
        out = model(bag.features)
    if not bool(torch.isfinite(out.logits).all()):  # never print NaN as a risk (nor invalid JSON)
        raise non_finite_output(bag.features, [Path(path).name])
    doc = {
        "bag": Path(path).name, "patches": int(bag.features.shape[0]), "method": model.method,
        "risk": float(risk_score(out.logits)),
        "survival": survival_points(model.bin_edges, survival_curve(out.logits).reshape(-1).tolist()),
    }  # fmt: skip
    if "sources" in out.info:
        doc["sources"] = out.info["sources"]
    return doc


def cmd_predict(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    for path in args.bags:
        if not Path(path).is_file():
            raise CliError(f"bag {Path(path).name!r} does not exist (looked for {path})")
        emit(predict_bag(model, path))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from app.domain.merging import registry

    emit(registry.list_methods())
    return 0


# ---------------------------------------------------------------- parsers


def _add_synth(sub: Any) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic multi-cancer world (base, checkpoints, cohorts)",
        description="Draw a synthetic world and write base.safetensors, checkpoints/<cancer>."
        "safetensors (trained from the base) and cohorts/<cancer>/{labels.csv,splits.csv,bags/}.",
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--cancers", type=int, default=13, help="number of cancers K (default 13)")
    p.add_argument("--dim", type=int, default=32, help="feature dimension D (default 32)")
    p.add_argument("--prototypes", type=int, default=16, help="shared tissue prototypes (default 16)")
    p.add_argument("--patients", type=int, default=200, help="patients per cancer (default 200)")
    p.add_argument("--target", help="the scarce target cancer (default: the first, BLCA)")
    p.add_argument("--target-patients", type=int, help="patients of the target cancer (default: --patients)")
    p.add_argument(
        "--min-patches", dest="patch_min", type=int, default=16, help="fewest patches per slide (default 16)"
    )
    p.add_argument("--max-patches", dest="patch_max", type=int, default=64, help="most patches per slide (default 64)")
    p.add_argument("--shared-fraction", type=float, default=0.8, help="shared part of the prognostic weights")
    p.add_argument("--control", action="store_true", help="control world: no shared prognostic structure")
    p.add_argument("--hidden", type=int, default=64, help="ABMIL hidden width (default 64)")
    p.add_argument("--attn", type=int, default=32, help="ABMIL attention width (default 32)")
    p.add_argument("--bins", type=int, default=32, help="365-day time bins (default 32)")
    p.add_argument("--no-train", action="store_true", help="write base and cohorts only, no checkpoints")
    training_flags(p, SYNTH_TRAINING)
    p.set_defaults(func=cmd_synth)


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a cancer-specific ABMIL from the base on a cohort",
        description="Train θ_c from θ₀ on a cohort split and write it as .safetensors; prints JSON.",
    )
    p.add_argument("--base", required=True, help="base θ₀ (.safetensors or reference .pth)")
    p.add_argument("--cohort", required=True, help="cohort directory (labels.csv, splits.csv, bags)")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--split", default="train", help="split to train on (default train; 'all' = every patient)")
    training_flags(p)
    p.set_defaults(func=cmd_train)


def _add_merge(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="merge checkpoints for a target cohort and compare with the target model",
        description="Build (and train, for learned methods) a merged model on the cohort's train "
        "split, compare it with the target checkpoint on the test split, write the artifact; "
        "prints a JSON summary. See `steph methods` for every method's parameters.",
    )
    p.add_argument("--method", required=True, help="merge method (steph, auto, average, task_arithmetic, ...)")
    p.add_argument("--base", required=True, help="base θ₀ (.safetensors or .pth)")
    p.add_argument("--target", required=True, help="the target cancer's checkpoint (.safetensors or .pth)")
    p.add_argument("--source", required=True, nargs="+", action="extend", help="source checkpoints")
    p.add_argument("--cohort", required=True, help="the target cohort directory")
    p.add_argument("--out", required=True, help="output model artifact (.safetensors)")
    p.add_argument("--topk", type=topk_arg, default=UNSET, help="sources kept per bag (an integer, or 'all')")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter, value as JSON")
    p.add_argument(
        "--min-base-retention", type=float, default=DEFAULT_MIN_BASE_RETENTION, metavar="R",
        help="refuse a checkpoint keeping less than R of the base's weights (<θ, θ₀>/|θ₀|²: ≈ 1 when trained "
        f"from the base, ≈ 0 from another initialisation; default {DEFAULT_MIN_BASE_RETENTION}; negative = off)",
    )  # fmt: skip
    training_flags(p)
    p.set_defaults(func=cmd_merge)


def _add_evaluate_predict(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="C-indices, time-dependent AUC and integrated Brier score of a model on a cohort split",
        description='Prints {"c_index", "pairs", "patients"} (Harrell\'s C and its comparable pairs) and '
        '{"uno_c_index", "auc": {"mean", "per_time"}, "ibs", "times_days"}. Uno\'s C, the AUC and the '
        "integrated Brier score weight patients by the censoring distribution (Kaplan-Meier) of the cohort's "
        "TRAIN split (every labelled patient when the cohort has no splits.csv), whatever --split is evaluated. "
        "AUC and Brier score are taken at --times, by default yearly (365..1825 days) where the data allow: after "
        "the first evaluated event and before the longest evaluated and train follow-up. A metric the data leave "
        'undefined is null, with the reason under "skipped".',
    )
    p.add_argument("--model", required=True, help="model artifact or plain checkpoint (.safetensors / .pth)")
    p.add_argument("--cohort", required=True, help="cohort directory")
    p.add_argument("--split", default="test", help="split to evaluate (default test; 'all' = every patient)")
    p.add_argument(
        "--times",
        type=times_arg,
        default=None,
        metavar="DAYS",
        help="comma-separated days for the AUC and Brier score (e.g. 365,730,1095); default: yearly, clipped "
        "to the follow-up",
    )
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser(
        "predict",
        help="risk and survival curve per bag (JSON line each)",
        description="One JSON line per bag: risk, survival curve and, for steph, the sources "
        "selected for that bag with their w and λ.",
    )
    p.add_argument("--model", required=True, help="model artifact or plain checkpoint (.safetensors / .pth)")
    p.add_argument("bags", nargs="+", metavar="BAG", help="feature bags (.h5, .pt, .npy, .safetensors)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser(
        "methods",
        help="list merge methods and their parameters (JSON)",
        description="Print the merge methods (name, paper, parameters with types and defaults) as JSON on stdout.",
    )
    p.set_defaults(func=cmd_methods)


ADD_COMMANDS = (_add_synth, _add_train, _add_merge, _add_evaluate_predict)
