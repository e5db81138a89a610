"""Safe archive extraction, unit level."""

from __future__ import annotations

import tarfile
import zipfile

import pytest

from app.services.archives import extract_archive, safe_member_path
from app.services.errors import PayloadTooLarge, UnprocessableInput, UnsafeArchive
from tests.fixtures import tar_dir, tar_with_member, write_cohort, zip_dir


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cohort/labels.csv", "cohort/labels.csv"),
        ("./a/./b.h5", "a/b.h5"),
        ("__MACOSX/x", None),
        ("a/._b", None),
    ],
)
def test_safe_member_path_accepts(name, expected):
    got = safe_member_path(name)
    assert (None if got is None else got.as_posix()) == expected


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", "a\\b", "C:/x", "a\x00b"])
def test_safe_member_path_refuses(name):
    with pytest.raises(UnsafeArchive):
        safe_member_path(name)


def test_wrapped_zip_and_flat_tar_give_the_cohort_root(tmp_path):
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    for archive, suffix in (
        (zip_dir(cohort, tmp_path / "c.zip"), ".zip"),
        (tar_dir(cohort, tmp_path / "c.tar.gz"), ".tar.gz"),
    ):
        out = tmp_path / f"out{suffix}"
        out.mkdir()
        root = extract_archive(archive, suffix, out, max_bytes=10**7, max_files=100)
        assert (root / "labels.csv").read_bytes() == (cohort / "labels.csv").read_bytes()
        assert sorted(p.name for p in (root / "bags").iterdir()) == ["S000.h5", "S001.h5", "S002.h5"]


def test_lying_zip_header_still_capped(tmp_path):
    """A member whose declared size is small but which expands more is stopped by the byte counter."""
    archive = tmp_path / "lie.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 300_000)
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(PayloadTooLarge, match="STEPH_MAX_ARCHIVE_MB"):
        extract_archive(archive, ".zip", out, max_bytes=100_000, max_files=10)


def test_symlink_in_zip_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("cohort/link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(UnsafeArchive, match="link"):
        extract_archive(archive, ".zip", out, max_bytes=10**6, max_files=10)
    assert list(out.rglob("*")) == []


def test_fifo_in_tar_refused_and_empty_archive(tmp_path):
    archive = tar_with_member(tmp_path / "fifo.tar.gz", "cohort/pipe", kind=tarfile.FIFOTYPE)
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(UnsafeArchive, match="FIFO"):
        extract_archive(archive, ".tar.gz", out, max_bytes=10**6, max_files=10)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    out2 = tmp_path / "o2"
    out2.mkdir()
    with pytest.raises(UnprocessableInput, match="empty"):
        extract_archive(empty, ".zip", out2, max_bytes=10**6, max_files=10)
