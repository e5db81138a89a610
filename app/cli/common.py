"""Shared helpers of the `steph` commands: JSON output, progress, reading checkpoints, models and cohorts."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

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
        self.quiet, self.last = quiet, 0
        self.bar: tqdm | None = None
        self.label: str | None = None
        self.tty = sys.stderr.isatty()

    def __call__(self, progress: Any, label: str = "train") -> None:
        if self.quiet:
            return
        if progress.total_steps == 0:  # a stage before training (e.g. the relevance pre-check): one line
            self.close()
            print(f"{label}: {getattr(progress, 'stage', 'preparing')}", file=sys.stderr, flush=True)
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


def load_model(path: str, *, what: str = "model") -> Any:
    """A SurvivalModel from a model artifact or a plain ABMIL checkpoint (.safetensors / .pth); `what` names the
    argument in the error ("model", "target checkpoint")."""
    from app.io.artifacts import load_any_model

    if not Path(path).is_file():
        raise CliError(f"{what} {Path(path).name!r} does not exist (looked for {path})")
    model = load_any_model(path).model
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
            "" if cohort.has_splits else " (it has no splits.csv: add one with train,test columns, or pass --split all)"
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
    from app.domain.pipeline import preset_config
    from app.domain.training import TrainConfig

    keys = ("epochs", "lr", "accum", "seed", "weight_decay", "max_patches")
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return TrainConfig(**preset_config(given)).resolved()  # unset keys: the default (tuned) training preset


# ---------------------------------------------------------------- commands


SPEC_TRAINING = {"epochs": None, "lr": None, "accum": None, "seed": None}  # None = the default (tuned) preset
# `steph synth` trains its small demo models with the settings the reproduction table uses (BENCHMARKS.md):
# the paper's lr 1e-4 / 16 bags per step leaves a 64-wide ABMIL on 60-150 patients under-trained.
SYNTH_TRAINING = {"epochs": 20, "lr": 4e-3, "accum": 8, "seed": 0}


def training_flags(p: argparse.ArgumentParser, defaults: dict[str, Any] = SPEC_TRAINING) -> None:
    def shown(key: str, spec: str) -> str:
        return f"(default {defaults[key] if defaults[key] is not None else spec})"

    g = p.add_argument_group("training (raise epochs/lr or lower accum for tiny cohorts: few optimiser steps)")
    g.add_argument(
        "--epochs",
        type=int,
        default=defaults["epochs"],
        help="passes over the train split " + shown("epochs", "40: the tuned preset; the paper's 20"),
    )
    g.add_argument(
        "--lr",
        type=float,
        default=defaults["lr"],
        help="AdamW learning rate " + shown("lr", "1e-3: tuned; the paper's 1e-4"),
    )
    g.add_argument(
        "--accum", type=int, default=defaults["accum"], help="bags per optimiser step " + shown("accum", "16")
    )
    g.add_argument("--seed", type=int, default=defaults["seed"], help="shuffle/dropout seed " + shown("seed", "42"))
