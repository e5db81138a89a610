"""`steph report` offline: the HTML report and the figures of a merged model file, against the merge's numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli


@pytest.mark.parametrize("method", ["steph", "average"])
def test_steph_report_offline(capsys, tiny_world, merged_models, tmp_path, method) -> None:
    doc = merged_models[method]
    out, figs = tmp_path / "report.html", tmp_path / "figs"
    res = run_cli(
        capsys,
        "report",
        "--model",
        doc["artifact"]["path"],
        "--target",
        tiny_world.ckpt("BLCA"),
        "--cohort",
        tiny_world.cohort("BLCA"),
        "--out",
        str(out),
        "--figures",
        str(figs),
        "--groups",
        "3",
    )  # fmt: skip  (no --seed: the model's own seed, from its provenance, as the service's report uses)
    assert res.code == 0, res.err
    summary = res.json()
    # the same held-out patients, models, seed and resamples as the merge's own comparison
    assert summary["comparison"] == pytest.approx(doc["comparison"])
    html = out.read_text()
    shown = set(re.findall(r'data-figure="([a-z-]+)"', html))
    assert {"km", "calibration", "comparison", "sources", "patient"} <= shown  # average: its fixed weights
    assert set(summary["figures"]) == shown
    for name in shown:
        assert (figs / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (figs / f"{name}.svg").read_bytes()[:400]
    assert "intermediate risk" in html and Path(doc["artifact"]["path"]).name in html


def test_steph_report_user_errors(capsys, tiny_world, merged_models, tmp_path) -> None:
    doc = merged_models["steph"]
    base = ["report", "--target", tiny_world.ckpt("BLCA"), "--cohort", tiny_world.cohort("BLCA")]
    res = run_cli(capsys, *base, "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "r.html"))
    assert res.code == 2 and "nope.safetensors" in res.err
    res = run_cli(capsys, *base, "--model", doc["artifact"]["path"], "--out", str(tmp_path / "r.html"), "--groups", "9")
    assert res.code == 2 and "tertiles" in res.err
