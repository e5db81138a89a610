"""A full or read-only store answers 507 / 503 with what to do, and leaves nothing behind (no temp file, no
object, no row).

The real mechanism is a tiny tmpfs mounted as the store root (the tests run as root, where chmod does not
block writes): filled to leave less room than the request needs, or remounted read-only. Where mounting is not
permitted those tests skip, and the `injected` tests still cover the mapping by raising OSError(ENOSPC / EROFS)
at the store's own write call.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.domain.mil import FamilyDims
from app.main import create_app
from app.settings import Settings
from app.storage import store as store_module
from app.storage.errors import StoreFull, StoreReadOnly, storage_error
from app.storage.store import ArtifactStore
from tests.fixtures import base_state, write_safetensors

PAGE = 4096
WIDE = FamilyDims(in_dim=2048, hidden_dim=8, attn_dim=4, n_bins=4)  # θ₀ of ~66 KB: far above a page


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (skipped when this process may not mount)."""
    where = tmp_path / "fs"
    where.mkdir()
    if shutil.which("mount") is None or not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); the injected tests cover the mapping")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path, leave: int) -> None:
    """Write a filler file so that about `leave` bytes stay free on `fs`."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    st = os.statvfs(fs)
    assert abs(st.f_bavail * st.f_frsize - leave) <= 2 * PAGE


@pytest.fixture
def app_on(tmp_path: Path):
    """start(store_root) → (TestClient, admin headers) with the database outside the store."""
    clients: list[TestClient] = []

    def start(store_root: Path) -> tuple[TestClient, dict[str, str]]:
        settings = Settings(home=tmp_path / f"home-{uuid.uuid4().hex[:6]}", store_root=store_root, device="cpu")
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client, {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def post_base(client: TestClient, admin: dict, path: Path):
    return client.post(
        "/bases",
        headers=admin,
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
        data={"name": "wide", "encoder": "test-2048"},
    )


def assert_nothing_stored(client: TestClient, admin: dict, store_root: Path) -> None:
    ctx = client.app.state.ctx
    assert ctx.store.count_objects() == 0
    assert [p.name for p in (store_root / "tmp").iterdir()] == []
    assert client.get("/bases", headers=admin).json()["total"] == 0


@pytest.fixture
def wide_base(tmp_path: Path) -> Path:
    return write_safetensors(tmp_path / "wide.safetensors", base_state(WIDE))


@pytest.mark.parametrize("room", ["less than the upload", "the upload but not its stored copy"])
def test_a_full_store_answers_507_and_keeps_nothing(small_fs, app_on, wide_base, room) -> None:
    client, admin = app_on(small_fs)
    size = wide_base.stat().st_size
    fill(small_fs, size // 2 if room.startswith("less") else size + size // 2)
    r = post_base(client, admin, wide_base)
    assert r.status_code == 507, r.text
    body = r.json()["error"]
    assert body["code"] == "insufficient_storage" and "no space left" in body["message"]
    assert str(small_fs) not in r.text
    assert_nothing_stored(client, admin, small_fs)
    (small_fs / "filler").unlink()  # room again: the same request now succeeds
    assert post_base(client, admin, wide_base).status_code == 201


def test_a_read_only_store_answers_503_and_readiness_says_so(small_fs, app_on, wide_base) -> None:
    client, admin = app_on(small_fs)
    assert client.get("/health/ready").json()["checks"]["store"] is True
    assert _mount("-o", "remount,ro", str(small_fs))
    try:
        r = post_base(client, admin, wide_base)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_read_only" and "read-only" in r.json()["error"]["message"]
        assert client.get("/health/ready").json()["checks"]["store"] is False
    finally:
        assert _mount("-o", "remount,rw", str(small_fs))
    assert_nothing_stored(client, admin, small_fs)


def test_injected_enospc_in_the_store_copy_is_a_store_full(tmp_path, monkeypatch) -> None:
    store = ArtifactStore(tmp_path / "s")
    src = tmp_path / "x.bin"
    src.write_bytes(b"payload")

    def no_space(a, b, *args, **kw):
        Path(b).write_bytes(b"pay")  # a partial temp file, as a real ENOSPC leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(b))

    monkeypatch.setattr(store_module.shutil, "copyfile", no_space)
    with pytest.raises(StoreFull, match="no space left"):
        store.put_file(src)
    assert store.count_objects() == 0 and list(store.tmp_dir().iterdir()) == [] and src.exists()


def test_injected_erofs_over_http_is_a_503(app_on, wide_base, tmp_path, monkeypatch) -> None:
    root = tmp_path / "store"
    client, admin = app_on(root)

    def read_only(a, b, *args, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(b))

    monkeypatch.setattr(store_module.shutil, "copyfile", read_only)
    r = post_base(client, admin, wide_base)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_read_only", r.text
    assert_nothing_stored(client, admin, root)


@pytest.mark.parametrize(
    ("code", "permissions", "expected"),
    [
        (errno.ENOSPC, False, StoreFull),
        (errno.EDQUOT, False, StoreFull),
        (errno.EROFS, False, StoreReadOnly),
        (errno.EACCES, True, StoreReadOnly),
        (errno.EACCES, False, None),  # a permission error outside the store is not a store problem
        (errno.ENOENT, True, None),
    ],
)
def test_which_os_errors_are_store_errors(code, permissions, expected) -> None:
    mapped = storage_error(OSError(code, os.strerror(code), "/srv/store/tmp/x"), permissions=permissions)
    assert (type(mapped) if mapped is not None else None) is expected
    assert mapped is None or "/srv/store" not in str(mapped)
