"""Folder discovery and manifest parsing."""

from __future__ import annotations

import pytest

from app.client.inputs import InputError, discover_folder, load_inputs, read_manifest


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
    patients = discover_folder(tmp_path)
    assert [p.patient_id for p in patients] == ["P1", "P2", "P3"]
    assert patients[1].files == (tmp_path / "a" / "P2.h5",)


def test_duplicate_stems_are_refused_with_advice(tmp_path):
    _touch(tmp_path / "x" / "P1.h5")
    _touch(tmp_path / "y" / "P1.pt")
    with pytest.raises(InputError, match="manifest"):
        discover_folder(tmp_path)


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


def test_load_inputs_rejects_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_inputs(tmp_path / "nope")
    with pytest.raises(InputError, match="no bag files"):
        load_inputs(tmp_path)
