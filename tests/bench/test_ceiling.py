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


def test_table_joins_the_methods_scored_on_the_same_patients(tmp_path: Path) -> None:
    rows = [{"regime": "paper", "world": "shared", "seed": s, "target": "BLCA", OWN: 0.60, NO_SOURCES: 0.62,
             SOURCES: 0.64, IDEAL_FIXED: 0.65, IDEAL: 0.66, BAG: 0.68} for s in (0, 1)]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    methods = tmp_path / "large.jsonl"
    scored = [{"regime": "paper", "world": "shared", "seed": s, "target": "BLCA",
               "eval": {"own": 0.60, "steph": steph, "steph + sources' ensemble": 0.64}}
              for s, steph in ((0, 0.62), (1, 0.65))]  # fmt: skip
    other_own = {**scored[0], "regime": "mixed"}  # another cell: ignored
    methods.write_text("".join(json.dumps(r) + "\n" for r in [*scored, other_own]))
    text = table(tmp_path, [methods, tmp_path / "missing.jsonl"])
    steph = next(line for line in text.splitlines() if "default STEPH" in line)
    cells = [c.strip() for c in steph.strip("|").split("|")]
    assert cells[4] == "0.635" and cells[5].startswith("+0.035 ±") and cells[6] == "1/2"
    scored[1]["eval"]["own"] = 0.61  # a row of other patients (own differs) is not joined: the column goes
    methods.write_text("".join(json.dumps(r) + "\n" for r in scored))
    assert "default STEPH" not in table(tmp_path, [methods])


def test_sources_table_averages_the_source_checkpoints(tmp_path: Path) -> None:
    from bench.ceiling import sources_table

    assert sources_table(tmp_path) == ""  # not run: nothing printed
    rows = [{"regime": "paper", "world": "shared", "seed": seed, "target": "BLCA", "source": src, "n_train": 300,
             "own_cancer": own, "own_cancer_bag_ceiling": 0.70, "on_target": 0.55}
            for seed, src, own in ((0, "BRCA", 0.60), (0, "CESC", 0.64), (1, "BRCA", 0.62))]  # fmt: skip
    (tmp_path / "sources.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = sources_table(tmp_path).splitlines()[2]
    assert [c.strip() for c in line.strip("|").split("|")] == ["paper", "shared", "2", "3", "0.620", "0.700", "0.550"]
