"""bench.large_eval: the tables from synthetic rows, and one real run on a tiny regime world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.domain.data import Sample
from app.domain.merging.base import ModelOutput
from bench.large_eval import (
    AUTO,
    AUTO_ENS,
    BM,
    OWN,
    SOURCES_ENSEMBLE,
    STEPH,
    STEPH_ENSEMBLE,
    TRUE,
    _scores,
    noise,
    table,
)  # fmt: skip


def _row(seed: int, test: tuple[float, ...], new: tuple[float, ...]) -> dict:
    return {"regime": "paper", "world": "shared", "seed": seed, "target": "BLCA", "n_train": 50, "n_eval": 4000,
            "test": dict(zip((OWN, BM, STEPH, AUTO), test, strict=True)),
            "eval": {**dict(zip((OWN, BM, STEPH, AUTO), new, strict=True)), TRUE: 0.8}}  # fmt: skip


def _cells(text: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in text.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[(cells[3], cells[4].split(" (")[0])] = cells
    return out


def test_table_and_noise_separate_the_test_split_from_the_new_cohort(tmp_path: Path) -> None:
    rows = [  # STEPH gains 0.06 / 0.00 on the test split, a steady 0.03 on the large cohort
        _row(0, (0.60, 0.61, 0.66, 0.62), (0.60, 0.60, 0.63, 0.62)),
        _row(1, (0.60, 0.59, 0.60, 0.60), (0.60, 0.60, 0.63, 0.61)),
        _row(2, (0.60, 0.60, 0.63, 0.63), (0.60, 0.60, 0.63, 0.62)),
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cells = _cells(table(tmp_path))
    test, new = cells[(STEPH, "test split")], cells[(STEPH, "new cohort")]
    assert test[5] == "+0.030 ± 0.017" and test[6] == "0.030" and test[7] == "+0.000" and test[8] == "2/3"
    assert new[5] == "+0.030 ± 0.000" and new[6] == "0.000" and new[8] == "3/3"
    assert test[9] == "+0.030 ± 0.012" and cells[(BM, "test split")][9] == ""
    assert cells[(AUTO, "new cohort")][8] == "0/3"  # +0.02, +0.01, +0.02
    lines = noise(tmp_path).splitlines()
    steph = [c.strip() for c in lines[2].strip("|").split("|")]
    assert steph[2] == STEPH and steph[3] == "0.030" and steph[4] == "0.000" and steph[5] == "0.030"


@pytest.mark.slow
def test_run_writes_both_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.regimes as regimes
    from bench.large_eval import run

    tiny = regimes.Regime("tiny", 3, 8, patients_range=(30, 40), target_train=(20, 24), target_test=20)
    monkeypatch.setitem(regimes.REGIMES, "tiny", tiny)
    monkeypatch.setattr(regimes, "MERGE", {"lr": 1e-3, "accum": 4, "epochs": 1})
    monkeypatch.setattr(regimes, "CACHE", str(tmp_path / "cache"))
    run("tiny", "shared", [0], tmp_path / "out", n_eval=30)
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    every = {OWN, BM, STEPH, AUTO, AUTO_ENS, SOURCES_ENSEMBLE, STEPH_ENSEMBLE}
    assert set(row["test"]) == every and set(row["eval"]) == every | {TRUE}
    assert row["n_eval"] == 30 and 0 < row["eval_events"] <= 30 and row["auto_winner"] and row["auto_ens_winner"]
    assert all(0.0 <= v <= 1.0 for v in [*row["test"].values(), *row["eval"].values()])
    assert row["test"][OWN] != row["eval"][OWN]  # two different cohorts
    from bench.large_eval import calibration, calibration_table

    calibration("tiny", "shared", [0], tmp_path / "out", n_eval=30)
    (cal,) = [json.loads(line) for line in (tmp_path / "out" / "calibration.jsonl").read_text().splitlines()]
    assert cal[STEPH]["c"] == pytest.approx(row["eval"][STEPH])  # the same STEPH, the same new patients
    assert all(0.0 < cal[m]["ibs"] < 0.5 for m in (STEPH, "ensemble", BM))
    lines = calibration_table(tmp_path / "out").splitlines()
    ens = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert ens[3] == "ensemble" and ens[8] == f"{cal['ensemble']['c'] - cal[STEPH]['c']:+.3f} ± 0.000"
    from bench.large_eval import sources, sources_table

    sources("tiny", "shared", [0], tmp_path / "out", n_eval=30)
    (src,) = [json.loads(line) for line in (tmp_path / "out" / "sources.jsonl").read_text().splitlines()]
    assert src["sources"] == 2 and src["eval"]["steph"] == pytest.approx(row["eval"][STEPH])
    assert src["eval"]["k=3"] == src["eval"]["k=all"]  # 3 ≥ the 2 sources: every source
    assert src["eval"]["k=all"] == pytest.approx(cal["ensemble"]["c"])  # the same ensemble as `calibration`'s
    counts = [line.split("|")[4].strip() for line in sources_table(tmp_path / "out").splitlines()[2:]]
    assert counts == ["2", "3", "3", "3"]  # models per bag: min(k, M) + 1


def test_gate_table_scores_the_gate_against_both_truths(tmp_path: Path) -> None:
    from bench.large_eval import gate_table

    rows = [  # (own, steph) on the test split and on the new cohort
        _row(0, (0.60, 0.6, 0.58, 0.6), (0.60, 0.6, 0.65, 0.6)),  # truly better by 0.05, "worse" on the test split
        _row(1, (0.60, 0.6, 0.62, 0.6), (0.60, 0.6, 0.59, 0.6)),  # truly worse
        _row(2, (0.60, 0.6, 0.64, 0.6), (0.60, 0.6, 0.61, 0.6)),  # truly better by 0.01
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert gate_table(tmp_path) == ""  # no gate run yet
    gates = [{"regime": "paper", "world": "shared", "seed": s, "target": "BLCA", "status": st}
             for s, st in ((0, "not_promoted"), (1, "not_promoted"), (2, "promoted"))]  # fmt: skip
    (tmp_path / "gate.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gates))
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in gate_table(tmp_path).splitlines()[2:]]
    new, test, bm = lines
    assert new[3] == "own, new cohort" and new[4:7] == ["1/1", "1/2", "1/1"]
    assert new[7] == "+0.003 ± 0.003" and new[8] == "+0.000" and new[9] == "0/3"  # user gets own, own, steph +0.01
    assert bm[3] == "budget-matched, new cohort" and bm[4:7] == ["1/1", "1/2", "1/1"] and bm[7] == ""
    assert test[3] == "own, test split" and test[4:7] == ["1/1", "1/2", "0/1"]  # +0.04 at seed 2, promoted


class _Feature(torch.nn.Module):
    """A fake model whose risk rises with scale · (the bag's mean of feature `col`) + shift."""

    bin_edges = [0.0, 1.0, 2.0]

    def __init__(self, col: int, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.col, self.scale, self.shift = col, scale, shift

    def forward(self, bag: torch.Tensor) -> ModelOutput:
        v = self.scale * bag[:, self.col].mean() + self.shift
        return ModelOutput(logits=v * torch.ones(2), aux_loss=torch.zeros(()))


def test_scores_z_score_each_risk_on_the_train_bags_before_combining() -> None:
    from app.domain.evaluation import score_split
    from app.domain.metrics import harrell_c_index

    g = torch.Generator().manual_seed(0)

    def split(n: int, tag: str) -> list[Sample]:
        bags = torch.randn(n, 3, 2, generator=g)
        times = (10 - bags[:, :, 0].mean(1) - bags[:, :, 1].mean(1) + 0.5 * torch.randn(n, generator=g)).tolist()
        return [Sample(f"{tag}{i}", bags[i], 1.0 + abs(t), i % 3 != 0) for i, t in enumerate(times)]

    train, test = split(40, "a"), split(60, "b")
    models = {OWN: _Feature(0), BM: _Feature(1), STEPH: _Feature(1, 3.0), AUTO: _Feature(0)}
    # the two sources: feature 0 on very different scales (z-scoring makes their scale irrelevant)
    sources = [_Feature(0, 4.0, 1.0), _Feature(0, 0.5)]
    out = _scores(models, sources, train, {"test": test})["test"]
    scored = score_split([STEPH_M := models[STEPH], *sources], test)
    ref = score_split([STEPH_M, *sources], train).risks
    c = lambda r: float(harrell_c_index(scored.times, scored.events, r).c_index)  # noqa: E731
    zs = [(r - q.mean()) / q.std() for r, q in zip(scored.risks, ref, strict=True)]
    assert out[SOURCES_ENSEMBLE] == pytest.approx(c(scored.risks[1])) == pytest.approx(out[OWN])
    assert out[STEPH_ENSEMBLE] == pytest.approx(c(zs[0] + (zs[1] + zs[2]) / 2))
    assert out[STEPH_ENSEMBLE] not in (out[STEPH], out[OWN])  # a combination of the two features
    assert out[STEPH] == pytest.approx(out[BM])  # C is rank-based: the scale of feature 1 does not matter


def test_repeats_table_averages_the_gate_over_fold_seeds(tmp_path: Path) -> None:
    from bench.large_eval import repeats_table

    rows = [  # STEPH − own on the new cohort: +0.05, −0.01, +0.01
        _row(0, (0.6, 0.6, 0.6, 0.6), (0.60, 0.6, 0.65, 0.6)),
        _row(1, (0.6, 0.6, 0.6, 0.6), (0.60, 0.6, 0.59, 0.6)),
        _row(2, (0.6, 0.6, 0.6, 0.6), (0.60, 0.6, 0.61, 0.6)),
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def gates(name: str, diffs: tuple[float, ...]) -> None:
        lines = [{"regime": "paper", "world": "shared", "seed": s, "target": "BLCA", "difference": d, "se": 0.04}
                 for s, d in enumerate(diffs)]  # fmt: skip
        (tmp_path / name).write_text("".join(json.dumps(g) + "\n" for g in lines))

    gates("gate.jsonl", (-0.01, 0.02, 0.01))
    assert repeats_table(tmp_path) == ""  # no repeat yet
    gates("gate-r1.jsonl", (0.05, -0.04, 0.03))
    cells = [c.strip() for c in repeats_table(tmp_path).splitlines()[2].strip("|").split("|")]
    # sd across the two repeats per case: |a − b| / √2 = 0.0424, 0.0424, 0.0141 -> mean 0.033
    assert cells[2:6] == ["3", "2", "0.033", "0.040"]
    # one gate blocks seed 0 (truly better) only; the mean (+0.02, −0.01, +0.02) blocks seed 1 (truly worse) only
    assert cells[6] == "0/1 / 1/2" and cells[7] == "1/1 / 0/2"


def test_holdout_checks_build_auto2_from_its_rows_and_judge_the_plan(tmp_path: Path) -> None:
    from bench.large_eval import AUTO2, ENS_WINNER, holdout_checks

    def row(world: str, seed: int, winner: str, steph: float, auto: float, ens: float) -> dict:
        scores = {OWN: 0.58, BM: 0.60, STEPH: steph, AUTO: auto, AUTO_ENS: ens}
        return {"regime": "paper", "world": world, "seed": seed, "target": "BLCA", "auto_ens_winner": winner,
                "test": scores, "eval": scores}  # fmt: skip

    retrain = "cancer-specific (retrained)"
    rows = [  # shared: the ensemble wins at one seed; control: the sources fail, auto2 = STEPH (+0.02 over BM)
        row("shared", 0, ENS_WINNER, 0.63, 0.62, 0.65),
        row("shared", 1, retrain, 0.62, 0.60, 0.60),
        row("control", 0, retrain, 0.62, 0.60, 0.60),
        row("control", 1, retrain, 0.61, 0.60, 0.58),  # the retrain of the steph_ensemble run: −0.02
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = holdout_checks(tmp_path)
    cells = {(c[1], c[3]): c for c in ([x.strip() for x in line.strip("|").split("|")] for line in text.splitlines()
                                        if line.startswith("| paper"))}  # fmt: skip
    assert cells[("shared", AUTO2)][4] == "+0.035 ± 0.015"  # (0.65 − 0.60 + 0.62 − 0.60) / 2
    assert cells[("shared", AUTO)][4] == "+0.010 ± 0.010"
    assert cells[("control", AUTO2)][4] == "+0.015 ± 0.005" and cells[("control", AUTO2)][7] == "2/2"
    assert "1. (b) shared: auto (steph_ensemble) ≥ auto + 0.005: **holds** (paper shared: yes)" in text  # .025 vs .01
    assert "2. control worlds: auto (steph_ensemble) ≥ BM − 0.005: **fails** (paper control: no)" in text  # −0.01
    assert "3. (a), (c) shared: auto (steph_ensemble) ≥ auto − 0.005: **no rows**" in text
    assert "4. every world: auto2 ≥ BM − 0.005: **holds**" in text
    assert (
        "5. (b) shared: auto2 ≥ auto + 0.005: **holds**" in text
        and "6. control worlds: auto2 ≥ auto: **holds**" in text
    )
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rows.jsonl").write_text(json.dumps(_row(0, (0.6,) * 4, (0.6,) * 4)) + "\n")
    assert holdout_checks(tmp_path / "old") == ""  # rows without the steph_ensemble run: no table
