"""Cohort directories: lazy samples concatenating slides, and validate() collecting every problem at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.domain.data import Sample
from app.io.cohort import open_cohort
from app.io.errors import CohortError, InputFileError
from tests.io.conftest import D, make_features, write_bag

LABELS = "patient_id,pathology_id,t,e\nP1,S1,100,1\nP1,S2,100,1\nP2,S3,400,0\nP3,S4,50,1\n"


def make_cohort(root: Path, *, splits: str | None = "train,test\nP1,P2\nP3,\n", bags: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(LABELS)
    if splits is not None:
        (root / "splits.csv").write_text(splits)
    folder = root / "bags" if bags else root
    folder.mkdir(exist_ok=True)
    write_bag(folder / "S1.h5", make_features(3, seed=1))
    write_bag(folder / "S2.pt", make_features(2, seed=2))
    write_bag(folder / "S3.npy", make_features(4, seed=3))
    write_bag(folder / "S4.safetensors", make_features(1, seed=4))
    return root


def test_samples_are_lazy_and_concatenate_slides(tmp_path: Path) -> None:
    cohort = open_cohort(make_cohort(tmp_path / "c"))
    train = cohort.samples("train", expected_dim=D)
    assert len(train) == 2 and train.patient_ids == ["P1", "P3"]
    (tmp_path / "c" / "bags" / "S4.safetensors").unlink()  # nothing was read yet: open/samples are lazy
    first = train[0]
    assert isinstance(first, Sample) and first.patient_id == "P1" and first.time == 100.0 and first.event == 1
    expected = np.concatenate([make_features(3, seed=1), make_features(2, seed=2)])
    assert torch.equal(first.bag, torch.from_numpy(expected))
    with pytest.raises(InputFileError, match=r"S4\.safetensors: bag file not found"):
        train[1]  # the file vanished after open_cohort indexed it
    test = cohort.samples("test")
    assert [s.patient_id for s in test] == ["P2"] and test[0].bag.shape == (4, D)
    assert len(cohort.samples()) == 3
    assert len(cohort.samples("val")) == 0


def test_without_splits_all_train_and_bags_in_root(tmp_path: Path) -> None:
    cohort = open_cohort(make_cohort(tmp_path / "flat", splits=None, bags=False))
    assert len(cohort.samples("train")) == 3 and len(cohort.samples("test")) == 0
    summary = cohort.validate(expected_dim=D).to_dict()
    assert summary["patients"] == 3 and summary["events"] == 2 and summary["slides"] == 4 and summary["dim"] == D
    assert summary["patches"] == {"min": 1, "median": 4.0, "max": 5, "total": 10}
    assert summary["splits"] == {"train": 3, "test": 0} and not summary["has_splits"]
    assert any("no splits.csv" in w for w in summary["warnings"])


def test_validate_summary_with_splits(tmp_path: Path) -> None:
    summary = open_cohort(make_cohort(tmp_path / "c")).validate(expected_dim=D)
    assert summary.splits == {"train": 2, "test": 1} and summary.split_events == {"train": 2, "test": 0}
    assert any("test split has no events" in w for w in summary.warnings)


def test_validate_collects_all_problems(tmp_path: Path) -> None:
    root = make_cohort(tmp_path / "broken", splits="train,test\nP1,P9\nP2,\n")
    bags = root / "bags"
    (bags / "S1.h5").unlink()  # missing bag
    write_bag(bags / "S2.pt", make_features(2, d=8))  # wrong D
    data = (bags / "S3.npy").read_bytes()
    (bags / "S3.npy").write_bytes(data[: len(data) // 2])  # truncated
    feats = make_features(1)
    feats[0, 0] = np.nan
    write_bag(bags / "S4.safetensors", feats)
    cohort = open_cohort(root)
    with pytest.raises(CohortError) as ei:
        cohort.validate(expected_dim=D)
    msg = str(ei.value)
    assert msg.startswith("broken: 5 problem(s) found")
    for needle in [
        "'P9'",
        "pathology_id 'S1'",
        "S2.pt",
        "D = 8",
        "S3.npy",
        "truncated",
        "S4.safetensors",
        "NaN",
    ]:
        assert needle in msg, msg
    with pytest.raises(CohortError, match="'P9'"):
        cohort.samples("train")


def test_a_train_split_without_events_is_refused(tmp_path: Path) -> None:
    root = make_cohort(tmp_path / "censored", splits="train,test\nP2,P1\n,P3\n")  # train = P2 only: e = 0
    with pytest.raises(CohortError, match=r"none of the 1 patient\(s\) of the 'train' split has an event"):
        open_cohort(root).validate(expected_dim=D)
    assert open_cohort(make_cohort(tmp_path / "ok")).validate(expected_dim=D).split_events["train"] == 2


def test_a_small_cohort_is_warned_about(tmp_path: Path) -> None:
    summary = open_cohort(make_cohort(tmp_path / "c", splits="train,test\nP1,P3\nP2,\n")).validate(expected_dim=D)
    assert any("only 2 train patients" in w and "promotion gate" in w for w in summary.warnings)
    assert any("the test split has only 1 event(s)" in w for w in summary.warnings)


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="nowhere: cohort directory not found"):
        open_cohort(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortError, match="empty: no labels.csv"):
        open_cohort(tmp_path / "empty")
    cohort = open_cohort(make_cohort(tmp_path / "c"))
    with pytest.raises(CohortError, match="unknown split 'dev'"):
        cohort.samples("dev")
