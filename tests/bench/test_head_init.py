"""bench.head_init tables from synthetic rows: Δs, the paired head difference, the λ difference."""

from __future__ import annotations

import json
from pathlib import Path

from bench.head_init import BM, OWN, VARIANTS, lam_table, table


def _rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_table_reports_differences_and_paired_head_gain(tmp_path: Path) -> None:
    rows = []
    for seed, gain in ((0, 0.01), (1, 0.03)):
        c = {OWN: 0.60, BM: 0.62, **{label: 0.64 for label in VARIANTS}}
        c["steph β rule, target head"] = 0.64 + gain
        rows.append({"regime": "paper", "world": "shared", "seed": seed, "target": "BLCA", "c": c})
    _rows(tmp_path / "rows.jsonl", rows)
    lines = {line.split("|")[4].strip(): line for line in table(tmp_path).splitlines()[2:]}
    target = [c.strip() for c in lines["β rule, target head"].strip("|").split("|")]
    assert target[4] == "+0.040 ± 0.010 (2/2)"  # vs budget-matched: 0.02 + (0.01, 0.03)
    assert target[6] == "2" and target[7] == "+0.020 ± 0.010 (2/2)"  # ≥ +0.03 over own; target − fresh head
    fresh = [c.strip() for c in lines["β rule, fresh head"].strip("|").split("|")]
    assert fresh[4] == "+0.020 ± 0.000 (2/2)" and fresh[7] == ""


def test_lam_table_pairs_worlds(tmp_path: Path) -> None:
    rows = [
        {"regime": "paper", "world": w, "seed": s, "target": "BLCA", "lam": lam}
        for s, (sh, co) in enumerate(((0.6, 0.8), (0.7, 0.8)))
        for w, lam in (("shared", sh), ("control", co))
    ]
    _rows(tmp_path / "lam.jsonl", rows)
    assert lam_table(tmp_path).splitlines()[2] == "| paper | 2 | 0.65 | 0.80 | -0.15 ± 0.05 |"
