"""bench.finite_check runs end to end, and its reference check agrees with the service's on good and bad bags."""

from __future__ import annotations

import pytest
import torch

from app.io.limits import all_finite
from bench.finite_check import chunked_sum_all_finite, main


def test_reference_and_service_checks_agree() -> None:
    x = torch.randn(5_000, 8).half()
    assert chunked_sum_all_finite(x) and all_finite(x)
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[4_999, 7] = bad
        assert not chunked_sum_all_finite(y) and not all_finite(y)


def test_bench_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "300", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("check: float32 sum (before)", "check: aminmax (now)", "forward alone", "score_patient, aminmax check"):
        assert f"| {row}" in out
