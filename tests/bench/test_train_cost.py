"""Smoke test of bench.train_cost: tiny dims, 2 repeats; gradients reach what each method trains."""

from __future__ import annotations

import math

import torch

from app.domain.mil import FamilyDims
from bench.inference_cost import random_inputs
from bench.train_cost import MODELS, build, measure, render, step_calls

TINY = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)


def test_measure_times_every_method_and_counts_trainable_parameters():
    rows = measure([5, 20], n_sources=3, repeats=2, dims=TINY)
    for n in (5, 20):
        per_n = [r for r in rows if r["n"] == n]
        assert [r["key"] for r in per_n] == [key for key, _ in MODELS]
        assert all(math.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in per_n)
    trainable = {r["key"]: r["trainable"] for r in rows if r["n"] is None}
    assert trainable["head_only"] == TINY.hidden_dim * TINY.n_bins + TINY.n_bins  # the fresh Linear head only
    assert trainable["cancer_specific"] > trainable["head_only"]
    assert "cancer-specific ABMIL" in render(rows, {"command": "x", "machine": "m", "cpus": 2, "torch": "t",
                                                   "threads": 1, "dim": 16, "sources": 3, "repeats": 2,
                                                   "wall_s": 1.0})  # fmt: skip


def test_a_step_puts_gradients_on_every_trainable_parameter():
    inputs = random_inputs(TINY, 3)
    for key, _ in MODELS:
        model = build(key, inputs).train()
        step_calls({key: model}, torch.randn(7, TINY.in_dim))[key]()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), key
