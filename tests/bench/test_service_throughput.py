"""Smoke test of bench.service_throughput: a real `steph serve` + `steph-client score`, tiny dims."""

from __future__ import annotations

import re

import pytest

from bench.service_throughput import main


@pytest.mark.slow
def test_quick_run_scores_every_patient_and_reports_rates(capsys):
    assert main(["--quick", "--workers", "1", "2"]) == 0
    out = capsys.readouterr().out
    rates = re.findall(r"\| `steph-client score --workers (\d)` → `steph serve` \| ([\d.]+) \| ([\d.]+) \|", out)
    assert [w for w, _, _ in rates] == ["1", "2"] and all(float(r) > 0 for _, _, r in rates)
    assert "in-process: read_bag + forward" in out
