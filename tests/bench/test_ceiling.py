"""bench.ceiling: the oracle featurisation, the ridge Cox fit around a prior, and the table's counts."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.ceiling import BAG, IDEAL, IDEAL_FIXED, NO_SOURCES, OWN, SOURCES, cox_ridge, proportions, table


def test_proportions_recover_the_tissue_mix_through_the_shift_and_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.randn(4, 32, generator=gen)
    shift = 0.5 * torch.randn(32, generator=gen)
    kinds = torch.tensor([0, 0, 0, 1, 3, 3])
    bag = prototypes[kinds] + shift + 0.3 * torch.randn(6, 32, generator=gen)
    p = proportions([bag[:2], bag[2:]], prototypes, shift)  # two slides of one patient
    assert torch.allclose(p, torch.tensor([0.5, 1 / 6, 0.0, 1 / 3], dtype=torch.float64))


def _cox_data(n: int, beta: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(beta), generator=gen, dtype=torch.float64)
    t = -torch.log(torch.rand(n, generator=gen, dtype=torch.float64)) * torch.exp(-(x @ beta))
    return x, t, torch.ones(n, dtype=torch.long)


def test_cox_ridge_recovers_the_rule_and_shrinks_to_the_prior() -> None:
    beta = torch.tensor([1.0, -0.5, 0.0, 0.25], dtype=torch.float64)
    x, t, e = _cox_data(2000, beta, seed=1)
    free = cox_ridge(x, t, e, torch.zeros(4), lam=1e-4)
    assert torch.allclose(free, beta, atol=0.1)  # the partial likelihood's maximum is the true β
    prior = torch.tensor([1.0, 0.0, 0.0, 0.0])
    held = cox_ridge(x, t, e, prior, lam=1e4)  # δ penalised away: only the prior's direction, with a fitted scale
    assert abs(held[1:]).max() < 1e-3 and held[0] > 0.5
    wrong = cox_ridge(x, t, e, -prior, lam=1e4)  # the free scale turns a prior of the wrong sign around
    assert wrong[0] > 0.5


def test_table_counts_seeds_and_names_those_even_the_ideal_learner_misses(tmp_path: Path) -> None:
    rows = []
    for seed, own, ideal in ((0, 0.60, 0.64), (1, 0.65, 0.67), (2, 0.55, 0.62)):
        rows.append({"regime": "paper", "world": "shared", "seed": seed, "target": "BLCA", OWN: own,
                     NO_SOURCES: own + 0.01, SOURCES: ideal - 0.01, IDEAL_FIXED: ideal - 0.005, IDEAL: ideal,
                     BAG: ideal + 0.02})  # fmt: skip
    rows.append({**rows[1], IDEAL: 0.66})  # a rerun of seed 1 replaces its first row (+0.02 → +0.01)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = table(tmp_path)
    lines = {line.split("|")[4].strip(): line for line in text.splitlines() if line.startswith("| paper")}
    cells = [c.strip() for c in lines[IDEAL].strip("|").split("|")]
    assert cells[:4] == ["paper", "shared", "3", IDEAL]
    assert cells[5].startswith("+0.040 ±") and cells[6] == "2/3" and cells[7] == "+0.010"
    assert [c.strip() for c in lines[NO_SOURCES].strip("|").split("|")][6] == "0/3"
    assert "seed 1 BLCA: own 0.650, ideal 0.660 (+0.010)" in text and "seed 0" not in text.split("Seeds where")[1]
