"""bench.gpu_check stays runnable: its dry run on the CPU executes every check and reports no failure (the real
run needs a CUDA device: `python -m bench.gpu_check` on the device machine)."""

from __future__ import annotations

import json

import pytest

from bench.gpu_check import main


def test_the_dry_run_executes_every_check(tmp_path):
    assert main(["--device", "cpu", "--n", "300", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["failures"] == [] and report["device"] == "cpu (dry run)"
    assert report["forward"]["steph"]["float32_max_abs_dlogit"] == 0.0  # the same device: bit-identical
    assert report["training"]["finite"] and report["training"]["parameters_moved"] > 0
    assert report["service"]["same_top_patches"] and report["service"]["max_abs_dhazard_float32"] == 0.0
    cost = report["epoch_cost"]
    assert cost["steph_float32_ms"] > 0 and cost["steph_default_ratio"] > 0


def test_without_a_gpu_it_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        (tmp_path / "gpu-check.json").read_text()
