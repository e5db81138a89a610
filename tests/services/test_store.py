"""ArtifactStore: content addressing, atomic put, sha256 verification, safe names."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from app.storage.store import ArtifactStore, StoreError


def test_put_bytes_and_file_are_content_addressed(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    data = b"tensor bytes"
    sha = store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path(sha) == store.root / "objects" / sha[:2] / f"{sha}.safetensors"
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    assert store.put_file(src) == sha and src.exists()  # copy keeps the source
    assert store.put_file(src, move=True) == sha and not src.exists()  # move consumes it
    assert store.count_objects() == 1 and list(store.tmp_dir().iterdir()) == []
    assert store.read_verified(sha) == data


def test_corruption_and_absence_detected(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    sha = store.put_bytes(b"original")
    store.path(sha).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupt"):
        store.verify(sha)
    assert store.delete(sha) is True and store.delete(sha) is False
    with pytest.raises(StoreError, match="missing"):
        store.read_verified(sha)


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABC", "a" * 63, "g" * 64, ""])
def test_malformed_keys_refused(tmp_path, key):
    with pytest.raises(StoreError, match="64 lowercase hex"):
        ArtifactStore(tmp_path).path(key)


def test_cohort_dirs_and_tmp_names_are_generated(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    assert store.cohort_dir("coh_abc123") == store.root / "cohorts" / "coh_abc123"
    for bad in ("../x", "a/b", ""):
        with pytest.raises(StoreError):
            store.cohort_dir(bad)
    with pytest.raises(StoreError):
        store.new_tmp_path("/../../x")
    p = store.new_tmp_path(".tar.gz")
    assert p.parent == store.tmp_dir() and p.name.endswith(".tar.gz") and len(p.name) == 32 + 7


def test_is_writable_and_clear_tmp(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    assert store.is_writable()
    old, new = store.new_tmp_path(), store.new_tmp_path()
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.clear_tmp(older_than_s=3600) == 1
    assert not old.exists() and new.exists()
    os.chmod(store.tmp_dir(), 0o500)
    try:
        assert store.is_writable() is (os.geteuid() == 0)  # root ignores permissions
    finally:
        os.chmod(store.tmp_dir(), 0o700)
