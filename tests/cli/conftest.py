"""A tiny synthetic world written once per session by `steph synth` (D = 16, hidden 8, attn 4, 4 bins)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli import main

SYNTH_OPTS = [
    "--cancers", "3", "--dim", "16", "--prototypes", "6", "--patients", "24",
    "--target-patients", "20", "--min-patches", "2", "--max-patches", "24", "--hidden", "8", "--attn", "4",
    "--bins", "4", "--epochs", "1", "--accum", "4", "--seed", "5",
]  # fmt: skip


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    def lines(self):
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_cli(capsys, *argv: str) -> CliResult:
    """main([...]) in-process; returns exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(["--quiet", *argv])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


@dataclass
class TinyWorld:
    root: Path
    summary: dict

    @property
    def base(self) -> str:
        return str(self.root / "base.safetensors")

    def ckpt(self, cancer: str) -> str:
        return str(self.root / "checkpoints" / f"{cancer}.safetensors")

    def cohort(self, cancer: str) -> str:
        return str(self.root / "cohorts" / cancer)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    import contextlib
    import io

    root = tmp_path_factory.mktemp("synth") / "world"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--quiet", "synth", str(root), *SYNTH_OPTS])
    assert code == 0
    return TinyWorld(root, json.loads(out.getvalue()))


@pytest.fixture(scope="session")
def merged_models(tiny_world, tmp_path_factory) -> dict:
    """`steph merge` summaries for steph and average on the target BLCA (sources BRCA, CESC), run once."""
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("models")
    results = {}
    for method, extra in (("steph", ["--topk", "1"]), ("average", [])):
        out = io.StringIO()
        argv = [
            "--quiet", "merge", "--method", method, "--base", tiny_world.base,
            "--target", tiny_world.ckpt("BLCA"), "--source", tiny_world.ckpt("BRCA"), tiny_world.ckpt("CESC"),
            "--cohort", tiny_world.cohort("BLCA"),
            "--out", str(out_dir / f"{method}.safetensors"), "--epochs", "2", "--accum", "4", "--lr", "1e-3",
            *extra,
        ]  # fmt: skip
        with contextlib.redirect_stdout(out):
            code = main(argv)
        assert code == 0, f"steph merge --method {method} exited {code}"
        results[method] = json.loads(out.getvalue())
    return results
