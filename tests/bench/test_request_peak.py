"""bench.request_peak runs both modes in fresh processes and reports a peak for every request."""

from __future__ import annotations

import re

import pytest

from bench.request_peak import main


def test_both_modes_report_six_peaks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "500", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for mode in ("in place", "copy"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {mode} |"))
        peaks = [float(x) for x in re.findall(r"\d+", row.split("|")[2])]
        assert len(peaks) == 6 and all(p >= 0 for p in peaks) and peaks == sorted(peaks)  # a high-water mark
