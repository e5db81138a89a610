"""`steph`: the engine on the command line (synth, train, merge, evaluate, predict, methods).

JSON results go to stdout (one document, or one line per bag for `predict`); progress goes to stderr.
User errors (bad files, bad parameters, incompatible checkpoints) print one line to stderr and exit 2.
Service commands (serve, worker, migrate, keys) are registered by app.cli_service when it is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import app

EXIT_USAGE = 2
UNSET = object()  # --topk not given (None means "all sources")


class CliError(ValueError):
    """A user error with a message that says what to fix."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


class ProgressBar:
    """A tqdm bar on stderr fed by training `Progress` callbacks; a new `label` closes the previous bar.

    When stderr is not a terminal (a log file, a pipe) it prints one plain line per finished epoch instead."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.label, self.last = quiet, None, None, 0
        self.tty = sys.stderr.isatty()

    def __call__(self, progress: Any, label: str = "train") -> None:
        if self.quiet:
            return
        if not self.tty:
            self._log_line(progress, label)
            return
        from tqdm import tqdm

        if self.bar is None or label != self.label:
            self.close()
            self.bar = tqdm(total=progress.total_steps, desc=label, file=sys.stderr, leave=False)
            self.label, self.last = label, 0
        self.bar.update(progress.step - self.last)
        self.last = progress.step
        self.bar.set_postfix(epoch=f"{progress.epoch}/{progress.epochs}", loss=f"{progress.loss:.4f}")

    def _log_line(self, progress: Any, label: str) -> None:
        per_epoch = max(1, -(-progress.total_steps // max(1, progress.epochs)))
        if progress.step == progress.total_steps or progress.step % per_epoch == 0:
            print(
                f"{label}: epoch {progress.epoch}/{progress.epochs} step {progress.step}/{progress.total_steps} "
                f"loss {progress.loss:.4f}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def read_state(path: str) -> dict:
    """A checkpoint (.safetensors or reference .pth) as a state dict."""
    from app.io.checkpoints import read_checkpoint

    if not Path(path).is_file():
        raise CliError(f"checkpoint {Path(path).name!r} does not exist (looked for {path})")
    return read_checkpoint(path, display_name=Path(path).name)


def load_family(base_path: str) -> tuple[dict, Any, list[float]]:
    """(θ₀, dims, bin edges) of a base checkpoint; bin edges are the default 365-day bins."""
    from app.domain.mil import infer_dims
    from app.domain.survival import default_bin_edges

    base = read_state(base_path)
    try:
        dims = infer_dims(base)
    except KeyError as exc:
        raise CliError(f"{Path(base_path).name}: {exc.args[0]}") from None
    return base, dims, default_bin_edges(dims.n_bins)


def load_model(path: str) -> Any:
    """A SurvivalModel from a model artifact or a plain ABMIL checkpoint (.safetensors / .pth)."""
    from app.io.artifacts import load_any_model

    if not Path(path).is_file():
        raise CliError(f"model {Path(path).name!r} does not exist (looked for {path})")
    loaded = load_any_model(path)
    model = getattr(loaded, "model", loaded)
    model.eval()
    return model


def cohort_samples(cohort_dir: str, split: str | None, dim: int) -> Any:
    """The patients of `split` ("all" or None = every labelled patient), bags checked against D = dim."""
    from app.io.cohort import open_cohort

    if not Path(cohort_dir).is_dir():
        raise CliError(f"cohort directory {Path(cohort_dir).name!r} does not exist (looked for {cohort_dir})")
    cohort = open_cohort(cohort_dir)
    split = None if split in (None, "all") else split
    samples = cohort.samples(split, expected_dim=dim)
    if len(samples) == 0:
        hint = (
            ""
            if cohort.has_splits
            else " (it has no splits.csv: add one with train,test columns, or pass --split all)"
        )
        raise CliError(f"cohort {Path(cohort_dir).name!r} has no patients in split {split!r}{hint}")
    return samples


def topk_arg(value: str) -> int | None:
    """--topk: a positive integer, or all/none/null for every source."""
    if value.lower() in ("all", "none", "null"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {value!r}") from None


def train_config_from(args: argparse.Namespace) -> Any:
    from app.domain.training import TrainConfig

    keys = ("epochs", "lr", "accum", "seed", "weight_decay", "max_patches")
    return TrainConfig(**{k: getattr(args, k) for k in keys if getattr(args, k, None) is not None})


# ---------------------------------------------------------------- commands


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
    model = train_cancer_specific(
        base, samples, train_config_from(args), dims=dims, bin_edges=edges, progress=bar
    )
    bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_state(
        out, model.abmil.state_dict(), {"dims": json.dumps(dims.to_dict()), "bin_edges": json.dumps(edges)}
    )
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
    from app.domain.task_vectors import check_compatible
    from app.io.artifacts import save_model

    base, dims, edges = load_family(args.base)
    target = read_state(args.target)
    check_compatible(base, target, name=Path(args.target).name)
    sources = []
    for path in args.source:
        sources.append(read_state(path))
        check_compatible(base, sources[-1], name=Path(path).name)
    train_config, params = split_params(merge_params(args))
    inputs = MergeInputs(
        base=base, target=target, sources=sources, source_names=[Path(p).stem for p in args.source],
        target_name=Path(args.target).stem, dims=dims, bin_edges=edges,
    )  # fmt: skip
    bar = ProgressBar(args.quiet)
    run = run_merge(
        method=args.method, inputs=inputs, params=params, train_config=train_config,
        train_samples=cohort_samples(args.cohort, "train", dims.in_dim),
        test_samples=cohort_samples(args.cohort, "test", dims.in_dim),
        reference=StaticModel(target, dims, edges), progress=bar,
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
        "test_metrics": run.test_metrics,
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


def predict_bag(model: Any, path: str) -> dict[str, Any]:
    """risk, survival curve at the bin edges and (STEPH) the selected sources of one bag."""
    import torch

    from app.domain.survival import risk_score, survival_curve
    from app.io.bags import read_bag

    bag = read_bag(path, expected_dim=model.dims.in_dim, display_name=Path(path).name)
    with torch.no_grad():
        out = model(bag.features)
    doc = {
        "bag": Path(path).name, "patches": int(bag.features.shape[0]), "method": model.method,
        "risk": float(risk_score(out.logits)),
        "survival": {"times_days": model.bin_edges[1:], "probabilities": survival_curve(out.logits).tolist()},
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


# ---------------------------------------------------------------- parser


SPEC_TRAINING = {"epochs": None, "lr": None, "accum": None, "seed": None}  # None = TrainConfig default
# `steph synth` trains its small demo models with the settings the reproduction table uses (BENCHMARKS.md):
# the paper's lr 1e-4 / 16 bags per step leaves a 64-wide ABMIL on 60-150 patients under-trained.
SYNTH_TRAINING = {"epochs": 20, "lr": 4e-3, "accum": 8, "seed": 0}


def _training_flags(p: argparse.ArgumentParser, defaults: dict[str, Any] = SPEC_TRAINING) -> None:
    def shown(key: str, spec: str) -> str:
        return f"(default {defaults[key] if defaults[key] is not None else spec})"

    g = p.add_argument_group(
        "training (raise epochs/lr or lower accum for tiny cohorts: few optimiser steps)"
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=defaults["epochs"],
        help="passes over the train split " + shown("epochs", "20"),
    )
    g.add_argument(
        "--lr", type=float, default=defaults["lr"], help="AdamW learning rate " + shown("lr", "1e-4")
    )
    g.add_argument(
        "--accum", type=int, default=defaults["accum"], help="bags per optimiser step " + shown("accum", "16")
    )
    g.add_argument(
        "--seed", type=int, default=defaults["seed"], help="shuffle/dropout seed " + shown("seed", "42")
    )


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
    p.add_argument(
        "--max-patches", dest="patch_max", type=int, default=64, help="most patches per slide (default 64)"
    )
    p.add_argument("--shared-fraction", type=float, default=0.8, help="shared part of the prognostic weights")
    p.add_argument("--control", action="store_true", help="control world: no shared prognostic structure")
    p.add_argument("--hidden", type=int, default=64, help="ABMIL hidden width (default 64)")
    p.add_argument("--attn", type=int, default=32, help="ABMIL attention width (default 32)")
    p.add_argument("--bins", type=int, default=32, help="365-day time bins (default 32)")
    p.add_argument("--no-train", action="store_true", help="write base and cohorts only, no checkpoints")
    _training_flags(p, SYNTH_TRAINING)
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
    p.add_argument(
        "--split", default="train", help="split to train on (default train; 'all' = every patient)"
    )
    _training_flags(p)
    p.set_defaults(func=cmd_train)


def _add_merge(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="merge checkpoints for a target cohort and compare with the target model",
        description="Build (and train, for learned methods) a merged model on the cohort's train "
        "split, compare it with the target checkpoint on the test split, write the artifact; "
        "prints a JSON summary. See `steph methods` for every method's parameters.",
    )
    p.add_argument("--method", required=True, help="merge method (steph, average, task_arithmetic, ...)")
    p.add_argument("--base", required=True, help="base θ₀ (.safetensors or .pth)")
    p.add_argument("--target", required=True, help="the target cancer's checkpoint (.safetensors or .pth)")
    p.add_argument("--source", required=True, nargs="+", action="extend", help="source checkpoints")
    p.add_argument("--cohort", required=True, help="the target cohort directory")
    p.add_argument("--out", required=True, help="output model artifact (.safetensors)")
    p.add_argument("--topk", type=topk_arg, default=UNSET, help="sources kept per bag (an integer, or 'all')")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter, value as JSON")
    _training_flags(p)
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
    p = sub.add_parser("methods", help="list merge methods and their parameters (JSON)")
    p.set_defaults(func=cmd_methods)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steph", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    parser.add_argument("--version", action="version", version=f"steph {app.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_synth, _add_train, _add_merge, _add_evaluate_predict):
        add(sub)
    try:
        from app import cli_service
    except ImportError:
        cli_service = None
    if cli_service is not None:
        cli_service.register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [CliError, ValueError, OSError, KeyError]
    try:
        from app.io.errors import InputFileError

        errors.insert(0, InputFileError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `steph` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `steph worker ARGS...` hands every argument after `worker` to `celery worker`, in order.
    worker_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    rest = argv[worker_at + 1 :] if worker_at is not None else []
    if worker_at is not None and argv[worker_at] == "worker" and rest and "-h" not in rest:
        args = parser.parse_args(argv[: worker_at + 1])
        args.celery_args = rest
    else:
        args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("steph: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if os.environ.get("STEPH_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"steph {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (STEPH_DEBUG=1 shows it)
        if os.environ.get("STEPH_DEBUG"):
            raise
        print(
            f"steph {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set STEPH_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
