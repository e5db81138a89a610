"""Smoke test of bench.inference_cost: tiny dims, 2 repeats; every method is timed, every timing is sane."""

from __future__ import annotations

import math

from app.domain.mil import FamilyDims
from bench.inference_cost import COMPONENTS, MODELS, measure, render

TINY = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)


def test_measure_times_every_method_with_positive_finite_timings():
    rows = measure(ns=(5, 20), dims=TINY, n_sources=3, repeats=2, warmup=1, device="cpu")
    expected = [key for key, _, _, _ in MODELS] + [key for key, _ in COMPONENTS]
    for n in (5, 20):
        per_n = [r for r in rows if r.n == n]
        assert [r.key for r in per_n] == expected
        for r in per_n:
            assert r.repeats == 2 and len(r.times_ms) == 2
            for value in (r.median_ms, r.p90_ms, r.min_ms, r.ratio, r.gflops):
                assert value is not None and math.isfinite(value) and value > 0
            assert r.p90_ms >= r.median_ms >= r.min_ms
        assert next(r for r in per_n if r.key == "abmil").ratio == 1.0
    meta = {"uname": "test", "cpu_count": 1, "torch": "x", "threads": 1, "wall_s": 0.1}
    table = render(rows, meta)
    assert "| steph (top-k 5) |" in table and "N = 20: ms (p90)" in table
