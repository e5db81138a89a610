"""bench/report.py: the summary numbers of the reproduction table and the in-place BENCHMARKS.md update."""

from __future__ import annotations

import pytest

from bench.report import END, START, render_table, summarise, update_benchmarks


def rows_for(values: dict[tuple[str, int, str], float], world: str = "shared") -> list[dict]:
    return [
        {"world": world, "method": m, "seed": s, "target": t, "c_index": c, "n_train": 10, "pairs": 5}
        for (m, s, t), c in values.items()
    ]


ROWS = rows_for(
    {
        ("cancer_specific", 0, "A"): 0.60, ("cancer_specific", 0, "B"): 0.50,
        ("cancer_specific", 1, "A"): 0.70, ("cancer_specific", 1, "B"): 0.60,
        ("steph", 0, "A"): 0.65, ("steph", 0, "B"): 0.50,
        ("steph", 1, "A"): 0.80, ("steph", 1, "B"): 0.55,
    }
)  # fmt: skip


def test_summarise_means_paired_deltas_and_wins():
    s = summarise(ROWS, "shared", "steph")
    assert s["mean"] == pytest.approx((0.65 + 0.50 + 0.80 + 0.55) / 4)
    assert s["delta"] == pytest.approx((0.05 + 0.0 + 0.10 - 0.05) / 4)
    assert s["wins"] == 2 and s["n"] == 4  # a tie is not a win
    assert s["sd_seeds"] == pytest.approx(abs(0.575 - 0.675) / 2**0.5)
    assert summarise(ROWS, "control", "steph") is None


def test_update_benchmarks_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Latency\n\nkeep me\n")
    update_benchmarks(path, "table one")
    update_benchmarks(path, "table two")
    text = path.read_text()
    assert "keep me" in text and "table two" in text and "table one" not in text
    assert text.count(START) == 1 and text.count(END) == 1 and text.count("## Reproduction table") == 1


def test_render_table_lists_every_method_row():
    meta = {
        "command": "python -m bench.reproduction", "wall_s": 60.0, "seeds": [0, 1], "targets": ["A", "B"],
        "out": "bench/out/x", "machine": {"uname": "Linux", "cpus": "2", "torch": "2", "threads": "1"},
        "config": {"dim": 8, "patients": [60, 150], "patches": [1, 2], "shared_fraction": 0.8, "hidden": 4,
                   "attn": 2, "n_bins": 4, "lr": 0.1, "weight_decay": 0.0, "epochs": 1, "accum": 2},
    }  # fmt: skip
    table = render_table(ROWS, meta, ["cancer_specific", "steph"])
    assert "| steph | 0.6250 |" in table and "+0.0250" in table and "2/4" in table


def test_update_benchmarks_appends_to_an_existing_section_without_markers(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# B\n\n## Reproduction table\n\nintro\n\n## Latency\n\nfast\n")
    update_benchmarks(path, "the table")
    text = path.read_text()
    assert text.index("intro") < text.index("the table") < text.index("## Latency") < text.index("fast")
