"""Content-addressed artifact store on a local directory (the default, embedded adapter).

`app.storage.open_store(settings)` picks this class or its S3 subclass (`app.storage.s3.S3ArtifactStore`,
which keeps the same layout on local disk as a scratch cache). Both offer the same primitives:
put_file / put_bytes / path / verify / read_verified / exists / size / delete / list_keys (garbage
collection), add_cohort_dir / cohort_dir / delete_cohort, is_writable / clear_tmp.

Layout under `root`:
    objects/<aa>/<sha256>.safetensors   immutable objects named by their bytes' sha256 (aa = first 2 hex)
    cohorts/<cohort_id>/                extracted cohort directories (uploads)
    tmp/                                staging area (same filesystem, so rename is atomic)

Objects are written to a temp file in `tmp/` and renamed into place; `read_verified` / `verify` re-hash on
load. The `.safetensors` suffix lets suffix-dispatching readers (read_checkpoint, load_model_file) open
objects directly. A write that fails because the disk is full or read-only raises StoreFull / StoreReadOnly
(app.storage.errors) after removing its temp file: nothing half-written is ever visible under objects/.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.storage.errors import StoreError, StoreFull, StoreReadOnly, StoreUnavailable, reraise_storage

__all__ = ["ArtifactStore", "StoreError", "StoreFull", "StoreReadOnly", "StoreUnavailable", "sha256_file"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_CHUNK = 1 << 20
OBJECT_SUFFIX = ".safetensors"


@contextmanager
def writing() -> Iterator[None]:
    """Turn ENOSPC / EDQUOT / EROFS / EACCES raised inside the block into StoreFull / StoreReadOnly."""
    try:
        yield
    except OSError as exc:
        reraise_storage(exc)
        raise


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    """put_file / put_bytes -> sha256; path(sha256) -> Path; verify / read_verified re-hash the bytes."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    # --- layout ---------------------------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """Where object `sha256` lives (whether or not it exists). Raises StoreError for a malformed key."""
        if not isinstance(sha256, str) or not _HEX64.match(sha256):
            raise StoreError("a store key must be 64 lowercase hex characters (a sha256)")
        return self.root / "objects" / sha256[:2] / f"{sha256}{OBJECT_SUFFIX}"

    def tmp_dir(self) -> Path:
        d = self.root / "tmp"
        with writing():
            d.mkdir(parents=True, exist_ok=True)
        return d

    def new_tmp_path(self, suffix: str = "") -> Path:
        """A fresh, unused path in tmp/ with a generated name (nothing user-supplied)."""
        if suffix and not re.match(r"^\.[A-Za-z0-9.]{1,16}$", suffix):
            raise StoreError(f"unsafe temp suffix {suffix!r}")
        return self.tmp_dir() / f"{uuid.uuid4().hex}{suffix}"

    def cohort_dir(self, cohort_id: str) -> Path:
        """The directory of an uploaded cohort (not created here)."""
        if not _SAFE_ID.match(cohort_id):
            raise StoreError(f"unsafe cohort id {cohort_id!r}")
        return self.root / "cohorts" / cohort_id

    # --- objects --------------------------------------------------------------------------------------------
    def put_file(self, src_path: str | Path, *, move: bool = False) -> str:
        """Store a file by content; returns its sha256. `move=True` consumes `src_path` (same filesystem:
        rename). Storing bytes the store already holds refreshes the object's time, so garbage collection's
        grace period also spares an old unreferenced object that a new row is about to reference."""
        src = Path(src_path)
        sha = sha256_file(src)
        dest = self.path(sha)
        if dest.is_file():
            with writing():
                os.utime(dest)
            if move:
                src.unlink(missing_ok=True)
            return sha
        self._publish_local(src, dest, move=move)
        return sha

    def _publish_local(self, src: Path, dest: Path, *, move: bool) -> None:
        """Copy (or move) `src` to a temp file in tmp/ and rename it to `dest`; the temp file never stays."""
        tmp = self.new_tmp_path()
        try:
            with writing():
                dest.parent.mkdir(parents=True, exist_ok=True)
                if move:
                    shutil.move(str(src), tmp)
                else:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        """Store bytes by content; returns their sha256."""
        tmp = self.new_tmp_path()
        try:
            with writing():
                tmp.write_bytes(data)
            return self.put_file(tmp, move=True)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        """The object's size in bytes, None when the store does not hold it."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def list_keys(self) -> Iterator[str]:
        """Every stored object's key (sha256), in no particular order (for garbage collection)."""
        objects = self.root / "objects"
        if not objects.is_dir():
            return
        for p in objects.glob(f"??/*{OBJECT_SUFFIX}"):
            key = p.name[: -len(OBJECT_SUFFIX)]
            if _HEX64.match(key) and p.parent.name == key[:2]:
                yield key

    def modified_at(self, sha256: str) -> float | None:
        """When the object was written (epoch seconds), None when absent (GC spares young objects)."""
        try:
            return self.path(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def verify(self, sha256: str) -> Path:
        """The object's path after checking that its bytes still hash to `sha256` (StoreError otherwise)."""
        path = self.path(sha256)
        if not path.is_file():
            raise StoreError(f"store object {sha256[:12]}… is missing; restore the store from a backup")
        actual = sha256_file(path)
        if actual != sha256:
            raise StoreError(f"store object {sha256[:12]}… is corrupt (its bytes hash to {actual[:12]}…)")
        return path

    def read_verified(self, sha256: str) -> bytes:
        """The object's bytes, checked against its sha256."""
        data = self.verify(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"store object {sha256[:12]}… changed while being read")
        return data

    def delete(self, sha256: str) -> bool:
        """Remove an object; True when it existed."""
        path = self.path(sha256)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed

    # --- cohorts --------------------------------------------------------------------------------------------
    def add_cohort_dir(self, src: Path, cohort_id: str) -> Path:
        """Move a validated, extracted cohort directory (on the store's file system) to cohorts/<id>."""
        final = self.cohort_dir(cohort_id)
        with writing():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, final)
        return final

    def list_cohort_ids(self) -> list[str]:
        """Ids of the uploaded cohort directories under cohorts/ (for garbage collection)."""
        cohorts = self.root / "cohorts"
        if not cohorts.is_dir():
            return []
        return sorted(p.name for p in cohorts.iterdir() if p.is_dir() and _SAFE_ID.match(p.name))

    def cohort_modified_at(self, cohort_id: str) -> float | None:
        """When an uploaded cohort directory was published (epoch seconds), None when absent."""
        try:
            return self.cohort_dir(cohort_id).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete_cohort(self, cohort_id: str) -> None:
        shutil.rmtree(self.cohort_dir(cohort_id), ignore_errors=True)

    # --- health and accounting ------------------------------------------------------------------------------
    def is_writable(self) -> bool:
        """Whether a file can be created, written and removed under tmp/ (readiness probe)."""
        try:
            probe = self.new_tmp_path(".probe")
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False

    def count_objects(self) -> int:
        """Number of stored objects (tests: a refused request adds none)."""
        return sum(1 for _ in self.list_keys())

    def count_cohorts(self) -> int:
        cohorts = self.root / "cohorts"
        return sum(1 for p in cohorts.iterdir() if p.is_dir()) if cohorts.is_dir() else 0

    def clear_tmp(self, *, older_than_s: float = 3600.0) -> int:
        """Remove leftovers of interrupted writes older than `older_than_s` (start-up); returns how many."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in tmp.iterdir():
            try:
                if entry.lstat().st_mtime < cutoff:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                    removed += 1
            except OSError:
                continue
        return removed
