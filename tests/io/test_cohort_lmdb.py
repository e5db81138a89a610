"""A cohort whose bags sit in one reference LMDB (SPEC §4) instead of one file per slide."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from app.io.cohort import open_cohort
from app.io.errors import CohortError
from tests.io.conftest import D, make_features
from tests.io.test_cohort import LABELS
from tests.io.test_lmdb_bags import write_lmdb


def lmdb_cohort(root: Path, *, where: str = "bags.lmdb", values: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "labels.csv").write_text(LABELS)
    (root / "splits.csv").write_text("train,test\nP1,P2\nP3,\n")
    if values is None:
        sizes = {"S1": 3, "S2": 2, "S3": 4, "S4": 1}
        values = {s: pickle.dumps(torch.from_numpy(make_features(n, seed=i)).unsqueeze(0))
                  for i, (s, n) in enumerate(sizes.items(), start=1)}  # fmt: skip
    write_lmdb((root / where) if where else root, values)
    return root


@pytest.mark.parametrize("where", ["bags.lmdb", "bags", ""])
def test_lmdb_cohort_reads_and_concatenates_slides(tmp_path: Path, where: str) -> None:
    cohort = open_cohort(lmdb_cohort(tmp_path / "c", where=where))
    summary = cohort.validate(expected_dim=D)
    assert summary.patients == 3 and summary.slides == 4 and summary.dim == D
    assert summary.patches == {"min": 1, "median": 4.0, "max": 5, "total": 10}
    assert not any("not referenced" in w for w in summary.warnings)
    first = cohort.samples("train", expected_dim=D)[0]
    expected = np.concatenate([make_features(3, seed=1), make_features(2, seed=2)])
    assert first.patient_id == "P1" and torch.equal(first.bag, torch.from_numpy(expected))
    assert cohort.samples("test")[0].bag.shape == (4, D)


def test_lmdb_cohort_validation_lists_every_problem(tmp_path: Path) -> None:
    values = {
        "S1": pickle.dumps(torch.randn(1, 3, D)),
        "S2": pickle.dumps(torch.full((2, D), float("nan"))),
        "S3": pickle.dumps(torch.randn(4, D + 1)),
        "EXTRA": pickle.dumps(torch.randn(2, D)),
    }  # S4 missing
    cohort = open_cohort(lmdb_cohort(tmp_path / "c", values=values))
    with pytest.raises(CohortError) as exc:
        cohort.validate(expected_dim=D)
    msg = str(exc.value)
    assert "3 problem(s)" in msg and "NaN" in msg and f"expected D = {D}" in msg and "no slide 'S4'" in msg


def test_lmdb_cohort_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    values = {s: pickle.dumps(torch.randn(2, D)) for s in ("S1", "S2", "S3")}
    values["S4"] = pickle.dumps(Evil())
    cohort = open_cohort(lmdb_cohort(tmp_path / "c", values=values))
    with pytest.raises(CohortError, match="S4"):
        cohort.validate(expected_dim=D)


def test_lmdb_cohort_unreferenced_slides_give_a_warning(tmp_path: Path) -> None:
    values = {s: pickle.dumps(torch.randn(2, D)) for s in ("S1", "S2", "S3", "S4", "S9")}
    summary = open_cohort(lmdb_cohort(tmp_path / "c", values=values)).validate(expected_dim=D)
    assert any("not referenced" in w and "S9" in w for w in summary.warnings)


def test_the_lmdb_is_opened_once_for_validation_and_every_epoch(tmp_path: Path, monkeypatch) -> None:
    import app.io.lmdb_bags as lmdb_bags

    opened = []
    original = lmdb_bags.LmdbBags.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(lmdb_bags.LmdbBags, "__init__", counting_init)
    cohort = open_cohort(lmdb_cohort(tmp_path / "c"))
    cohort.validate(expected_dim=D)
    train = cohort.samples("train", expected_dim=D)
    for _ in range(3):  # three "epochs"
        assert [s.bag.shape[0] for s in train] == [5, 1]
    assert len(opened) == 1
