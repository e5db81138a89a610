"""Safe extraction of zip / tar(.gz) cohort archives.

Refused (UnsafeArchive, 422): absolute member names, '..' components, backslashes or drive letters,
symlinks, hard links, devices and FIFOs, paths nested deeper than MAX_DEPTH or longer than MAX_NAME_CHARS.
Capped (PayloadTooLarge, 413): the number of members and the total
uncompressed bytes — counted while writing, so a header that lies about sizes (a zip bomb) is caught too.
Only regular files and directories are created, under generated parent directories; macOS metadata
(`__MACOSX/`, `._*`) is skipped.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from app.services.errors import PayloadTooLarge, UnprocessableInput, UnsafeArchive
from app.services.uploads import mib

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
CHUNK = 1 << 20
MAX_DEPTH = 32  # directory levels of a member path (a cohort needs 3: root/bags/slide.h5)
MAX_NAME_CHARS = 1024  # characters of a member path (Linux PATH_MAX is 4096 for the whole target path)
MAX_PART_CHARS = 255  # characters of one path component (NAME_MAX)


class _Budget:
    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes, self.max_files = max_bytes, max_files
        self.bytes = 0
        self.files = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise PayloadTooLarge(
                f"the archive holds more than {self.max_files} files; split the cohort or raise STEPH_MAX_ARCHIVE_FILES"
            )

    def expect(self, n: int) -> None:
        """Fail early when a member's declared size alone would pass the cap."""
        if self.bytes + n > self.max_bytes:
            self.add_bytes(n)

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise PayloadTooLarge(
                f"the archive expands to more than {mib(self.max_bytes)} MiB; register a "
                "large cohort by server-side path, or raise STEPH_MAX_ARCHIVE_MB"
            )


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path of an archive member, None for entries to skip; UnsafeArchive for dangerous names."""
    shown = name[:200]
    if "\\" in name or "\x00" in name or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(
            f"archive member {shown!r} has a backslash, NUL or drive letter in its name; "
            "create the archive with forward-slash relative paths"
        )
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UnsafeArchive(f"archive member {shown!r} is an absolute path; archive the cohort with relative paths")
    if ".." in path.parts:
        raise UnsafeArchive(f"archive member {shown!r} climbs out of the archive with '..'; remove it")
    parts = [p for p in path.parts if p not in ("", ".")]
    if len(parts) > MAX_DEPTH or len(name) > MAX_NAME_CHARS or any(len(p) > MAX_PART_CHARS for p in parts):
        raise UnsafeArchive(
            f"archive member {shown[:80]!r}… is nested {len(parts)} levels deep or has a {len(name)}-character name; "
            f"at most {MAX_DEPTH} levels, {MAX_NAME_CHARS} characters and {MAX_PART_CHARS} per component are "
            "accepted — archive the cohort directory as it is (labels.csv, splits.csv, bags/)"
        )
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def _copy(src: IO[bytes], dest: Path, budget: _Budget) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, bool]]:
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the creator recorded no Unix file type
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(
                f"archive member {info.filename[:200]!r} is a link or special file; archive only regular files"
            )
        yield info, info.is_dir()


def _extract_zip(archive: Path, out_dir: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info, is_dir in _zip_members(zf):
            rel = safe_member_path(info.filename)
            if rel is None:
                continue
            budget.add_file()
            if is_dir:
                (out_dir / rel).mkdir(parents=True, exist_ok=True)
                continue
            budget.expect(info.file_size)
            with zf.open(info) as src:
                _copy(src, out_dir / rel, budget)


def _extract_tar(archive: Path, out_dir: Path, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        for member in tf:
            rel = safe_member_path(member.name)
            if rel is None:
                continue
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchive(
                    f"archive member {member.name[:200]!r} is a link, device or FIFO; "
                    "archive only regular files and directories"
                )
            budget.add_file()
            if member.isdir():
                (out_dir / rel).mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            if src is None:
                raise UnprocessableInput(f"archive member {member.name[:200]!r} cannot be read")
            with src:
                _copy(src, out_dir / rel, budget)


def extract_archive(archive: Path, suffix: str, out_dir: Path, *, max_bytes: int, max_files: int) -> Path:
    """Extract `archive` (kind from `suffix`) into the existing empty `out_dir`; returns the cohort root:
    `out_dir`,
    or its single top-level directory when the archive wraps everything in one folder."""
    budget = _Budget(max_bytes, max_files)
    try:
        if suffix == ".zip":
            _extract_zip(archive, out_dir, budget)
        else:
            _extract_tar(archive, out_dir, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RecursionError, ValueError) as exc:
        kind = "zip" if suffix == ".zip" else "tar"
        raise UnprocessableInput(
            f"the upload is not a readable {kind} archive ({exc.__class__.__name__}); "
            "send a zip or tar(.gz) of the cohort directory"
        ) from None
    entries = [p for p in out_dir.iterdir()]
    if not entries:
        raise UnprocessableInput("the archive is empty; it must hold labels.csv, splits.csv and the bags")
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return out_dir
