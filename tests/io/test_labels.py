"""labels.csv and splits.csv: parsing, first-row-wins patient labels, and errors naming line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.io.errors import LabelError
from app.io.labels import read_labels, read_splits


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_labels_group_slides_by_patient(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "\ufeffpatient_id,pathology_id,project,t,e\n"
                 "P1,S1,BRCA,100.5,1\nP2,S2,BRCA,20,0\nP1,S3,BRCA,999,0\n\n")  # fmt: skip
    labels = read_labels(path)
    assert [p.patient_id for p in labels] == ["P1", "P2"]
    p1 = labels[0]
    assert p1.slide_ids == ["S1", "S3"] and p1.time == 100.5 and p1.event == 1 and p1.project == "BRCA"
    assert labels[1].event == 0 and labels[1].time == 20.0
    no_project = write(tmp_path / "b.csv", "pathology_id,patient_id,e,t\nS1,P1,1.0,5\n")
    assert read_labels(no_project)[0].project == "" and read_labels(no_project)[0].event == 1


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("patient_id,pathology_id,t\nP1,S1,5\n", ["missing column 'e'", "patient_id, pathology_id, t, e"]),
        ("patient_id,pathology_id,t,e\nP1,S1,abc,1\n", ["line 2", "column 't'", "'abc'", "positive"]),
        ("patient_id,pathology_id,t,e\nP1,S1,5,1\nP2,S2,-3,0\n", ["line 3", "column 't'", "'-3'"]),
        ("patient_id,pathology_id,t,e\nP1,S1,0,1\n", ["line 2", "column 't'", "'0'"]),
        (
            "patient_id,pathology_id,t,e\nP1,S1,5,1\nP2,S2,1e300,0\n",
            ["line 3", "'1e300'", "century", "hours or seconds"],
        ),
        ("patient_id,pathology_id,t,e\nP1,S1,5,2\n", ["line 2", "column 'e'", "'2'", "0 or 1"]),
        ("patient_id,pathology_id,t,e\nP1,,5,1\n", ["line 2", "column 'pathology_id'", "empty"]),
        ("patient_id,pathology_id,t,e\nP1,S1,5,1\nP2,S1,5,1\n", ["line 3", "'S1'", "line 2"]),
        ("patient_id,pathology_id,t,e\n", ["no data rows"]),
        ("", ["empty"]),
        ("patient_id\tpathology_id\tt\te\n", ["comma-separated"]),
    ],
)
def test_label_errors(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path / "labels.csv", text)
    with pytest.raises(LabelError) as ei:
        read_labels(path)
    msg = str(ei.value)
    assert msg.startswith("labels.csv: ") and ei.value.file_name == "labels.csv"
    for needle in needles:
        assert needle in msg, msg


def test_splits_padded_columns_and_index_column(tmp_path: Path) -> None:
    path = write(tmp_path / "splits.csv", ",train,val,test\n0,P1,P4,P2\n1,P3,,\n2,P5,,\n")
    assert read_splits(path) == {"train": ["P1", "P3", "P5"], "val": ["P4"], "test": ["P2"]}
    only_train = write(tmp_path / "s2.csv", "train\nP1\n")
    assert read_splits(only_train) == {"train": ["P1"], "test": []}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("test\nP1\n", ["no 'train' column"]),
        ("train,test\nP1,P2\nP3,P1\n", ["line 3", "column 'test'", "'P1'", "split 'train'"]),
        ("train,holdout\nP1,P2\n", ["unknown split column 'holdout'"]),
        ("", ["empty"]),
    ],
)
def test_split_errors(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(LabelError) as ei:
        read_splits(write(tmp_path / "splits.csv", text))
    assert str(ei.value).startswith("splits.csv: ")
    for needle in needles:
        assert needle in str(ei.value), str(ei.value)
