"""Folder discovery and manifest parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.client.inputs import InputError, read_manifest, scan_folder, scan_inputs


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_searched_recursively_for_bag_suffixes_only(tmp_path):
    _touch(tmp_path / "a" / "P2.h5")
    _touch(tmp_path / "P1.NPY")
    _touch(tmp_path / "b" / "c" / "P3.safetensors")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden.h5")
    patients, _ = scan_folder(tmp_path)
    assert [p.patient_id for p in patients] == ["P1", "P2", "P3"]
    assert patients[1].files == (tmp_path / "a" / "P2.h5",)


def test_duplicate_stems_are_refused_with_advice(tmp_path):
    _touch(tmp_path / "x" / "P1.h5")
    _touch(tmp_path / "y" / "P1.pt")
    with pytest.raises(InputError, match="manifest"):
        scan_folder(tmp_path)


def test_manifest_groups_slides_and_resolves_relative_paths(tmp_path):
    m = tmp_path / "sub" / "manifest.csv"
    m.parent.mkdir()
    m.write_text("Patient_ID,path\nP1,s1.h5\nP2,/abs/s2.h5\n\nP1,deeper/s3.h5\n")
    patients = read_manifest(m)
    assert [p.patient_id for p in patients] == ["P1", "P2"]
    assert patients[0].files == (m.parent / "s1.h5", m.parent / "deeper" / "s3.h5")
    assert str(patients[1].files[0]) == "/abs/s2.h5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,file\nP1,a.h5\n", "patient_id,path"),
        ("patient_id,path\nP1,\n", "line 2"),
        ("patient_id,path\n", "no patients"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path, text, message):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(m)


def test_scan_inputs_rejects_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan_inputs(tmp_path / "nope")
    with pytest.raises(InputError, match="no bag files"):
        scan_inputs(tmp_path)


def test_folder_scan_reports_non_bags_and_keeps_broken_bag_links(tmp_path):

    _touch(tmp_path / "A.h5")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / "sub" / "labels.csv")
    (tmp_path / "C.h5").symlink_to("/nonexistent/C.h5")  # a dangling link is a patient (whose bag is missing)
    (tmp_path / "D.txt").symlink_to("/nonexistent/D.txt")
    patients, not_bags = scan_folder(tmp_path)
    assert [p.patient_id for p in patients] == ["A", "C"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in not_bags) == ["D.txt", "notes.txt", "sub/labels.csv"]
    empty = tmp_path / "only_other"
    _touch(empty / "readme.md")
    with pytest.raises(InputError, match=r"no bag files .*only other files: readme\.md"):
        scan_inputs(empty)


def test_input_problems_are_found_before_anything_is_sent(tmp_path, monkeypatch):
    import os

    from app.client.inputs import PatientInput, input_problem

    good = _touch(tmp_path / "good.h5")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    dangling = tmp_path / "C.h5"
    dangling.symlink_to("/nonexistent/C.h5")
    assert input_problem(PatientInput("P1", (good,))) is None
    assert input_problem(PatientInput("P1", (empty,))) == "empty.h5: the file is empty (0 bytes)"
    broken = input_problem(PatientInput("C", (dangling,)))
    assert broken == "C.h5 is a broken symbolic link (its target /nonexistent/C.h5 does not exist)"
    assert input_problem(PatientInput("P1", (tmp_path / "gone.h5",))) == "file not found: gone.h5"
    assert "is not a regular file" in input_problem(PatientInput("P1", (tmp_path,)))
    message = input_problem(PatientInput("pat\nient", (good,)))
    assert message == (
        "patient id 'pat\\nient' contains a control character (newline); rename the file or fix the manifest"
    )
    assert "(tab, U+2028)" in input_problem(PatientInput("a\tb\u2028c", (good,)))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != good and real_access(p, mode))  # root reads all
    assert input_problem(PatientInput("P1", (good,))) == "cannot read good.h5: permission denied"
