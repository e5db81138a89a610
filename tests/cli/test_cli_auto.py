"""`steph merge --method auto` and the promotion gate from the CLI (issue 12)."""

from __future__ import annotations

import contextlib
import io
import json

from app.cli import main


def _merge_auto(world, out_file, extra: list[str]) -> dict:
    """`steph merge --method auto` of BLCA with sources BRCA and CESC (1 epoch) → its JSON summary."""
    argv = [
        "--quiet", "merge", "--method", "auto", "--base", world.base, "--target", world.ckpt("BLCA"),
        "--source", world.ckpt("BRCA"), world.ckpt("CESC"), "--cohort", world.cohort("BLCA"),
        "--out", str(out_file), "--epochs", "1", "--accum", "4", "--lr", "1e-3", *extra,
    ]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


def test_merge_auto_reports_the_winner_the_gate_and_saves_a_loadable_model(tiny_world, tmp_path):
    from app.io.artifacts import load_model_file

    out_file = tmp_path / "auto.safetensors"
    summary = _merge_auto(tiny_world, out_file, [
        "--param", 'candidates=["steph", "base_head"]', "--param", 'steph_params={"topk": 1}',
        "--param", "gate=fast", "--param", "choose=cv", "--param", "relevance_z=null",
    ])  # fmt: skip
    evidence = summary["notes"]["auto"]
    assert evidence["rule"] == "cv" and "relevance" not in evidence  # the inner CV alone, as asked
    assert set(evidence["candidates"]) == {"steph", "θ₀ encoder + retrained head", "target's own model"}
    kept = evidence["winner"] == "target's own model"  # the checkpoint unchanged: nothing to promote it over
    assert summary["promotion"]["status"] in (("unchecked",) if kept else ("promoted", "not_promoted"))
    model = load_model_file(out_file).model
    expected = {"steph": "steph", "θ₀ encoder + retrained head": "task_arithmetic"}
    assert model.method == expected.get(evidence["winner"], "cancer_specific")


def test_merge_auto_by_default_asks_the_sources_first(tiny_world, tmp_path):
    from app.io.artifacts import load_model_file

    out_file = tmp_path / "auto.safetensors"
    evidence = _merge_auto(tiny_world, out_file, [])["notes"]["auto"]
    rel = evidence["relevance"]
    assert evidence["rule"] == "relevance" and set(rel["per_source"]) == {"BRCA", "CESC"}
    assert rel["passed"] == (rel["z"] >= 1.645) and rel["threshold_z"] == 1.645
    # sources passing: STEPH plus the sources' ensemble; failing: the default fallback, STEPH with β = 0
    winner = "steph + sources' ensemble" if rel["passed"] else "steph β = 0 (fallback)"
    assert evidence["winner"] == winner
    model = load_model_file(out_file).model
    assert model.method == ("ensemble" if rel["passed"] else "steph")
    steph = model.main if rel["passed"] else model
    assert steph.params.beta == (0.05 if rel["passed"] else 0.0) and steph.params.beta_rule == "fixed"
