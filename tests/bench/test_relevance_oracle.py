"""bench.relevance oracle: per regime × world, the seeds where even the best row stays under the margin."""

from __future__ import annotations

import json
from pathlib import Path

from bench.relevance import OWN, oracle_table


def _write(run: Path, rows: list[dict]) -> None:
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_oracle_counts_reachable_seeds(tmp_path: Path) -> None:
    common = {"regime": "paper", "world": "shared", "target": "BLCA"}
    rows = []
    for seed, own, steph, best in ((0, 0.60, 0.65, 0.66), (1, 0.60, 0.61, 0.62), (2, 0.60, 0.50, 0.64)):
        rows += [
            {**common, "seed": seed, "method": OWN, "c_index": own},
            {**common, "seed": seed, "method": "steph", "c_index": steph},
            {**common, "seed": seed, "method": "average", "c_index": best},
            {**common, "seed": seed, "method": "relevance", "c_index": None},  # not a scored row: ignored
        ]
    _write(tmp_path / "runs" / "paper-shared", rows)
    table = oracle_table([tmp_path / "runs"]).splitlines()
    assert len(table) == 3
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:5] == ["paper", "shared", "3", "1", "2"]  # STEPH ≥ +0.03 at seed 0 only; the best row at 0 and 2
    assert cells[5] == "1: +0.0200 (average)"  # seed 1: even the best row is +0.02
