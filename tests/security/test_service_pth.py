"""Class 5c (issue 8): .pth conversions are bounded (STEPH_PTH_CONCURRENCY; past it a wait of STEPH_PTH_WAIT_S,
then 503 + Retry-After), the conversion child dies with the API process and removes the upload, and a failed
conversion leaves nothing in the store's tmp directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.services.bases import pth_slots
from tests.api.conftest import admin, assert_error, client, ctx, settings, snapshot, world  # noqa: F401
from tests.fixtures import base_state, write_pth

REPO = Path(__file__).resolve().parents[2]


def _post_base(client, admin, path: Path):  # noqa: F811
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    return client.post("/bases", headers=admin, files=files, data={"name": "b", "encoder": "e"})


def _tmp_files(ctx) -> list[Path]:  # noqa: F811
    tmp = Path(ctx.store.root) / "tmp"
    return sorted(tmp.rglob("*")) if tmp.is_dir() else []


def test_conversions_past_the_limit_wait_then_get_503_with_retry_after(client, admin, ctx, tmp_path):  # noqa: F811
    ctx.settings.pth_concurrency, ctx.settings.pth_wait_s = 1, 0.3
    pth = write_pth(tmp_path / "theta0.pth", base_state())
    slots = pth_slots(1)
    assert slots.acquire(timeout=30)  # another conversion is running
    try:
        before = snapshot(ctx)
        started = time.monotonic()
        r = _post_base(client, admin, pth)
        assert time.monotonic() - started >= 0.3  # it waited for a slot first
        assert_error(r, 503, contains=("STEPH_PTH_CONCURRENCY", ".safetensors"))
        assert r.headers["retry-after"] == "5"
        assert snapshot(ctx) == before and _tmp_files(ctx) == []
        ctx.settings.pth_wait_s = 30
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(r=_post_base(client, admin, pth)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # queued behind the running conversion
    finally:
        slots.release()
    waiter.join(timeout=120)
    assert result["r"].status_code == 201, result["r"].text


def test_a_failed_conversion_leaves_no_upload_behind(client, admin, ctx, tmp_path):  # noqa: F811
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"\x80\x02" + os.urandom(4096))
    before = snapshot(ctx)
    assert_error(_post_base(client, admin, bad), 422, "bad_checkpoint")
    assert snapshot(ctx) == before and _tmp_files(ctx) == []


def _children_reading(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if any(marker.encode() in c for c in cmd) and b"_pth_child.py" in b" ".join(cmd) and state != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_the_child_dies_with_the_api_process_and_removes_the_upload(tmp_path):
    upload = tmp_path / "upload-in-store-tmp.pth"
    os.mkfifo(upload)  # torch.load blocks on it forever: a conversion that never ends by itself
    work = tmp_path / "work"
    work.mkdir()
    parent_code = (
        "import sys; from pathlib import Path; from app.io.checkpoints import _run_child; "
        f"_run_child(Path({str(upload)!r}), Path({str(work / 'state.safetensors')!r}), 'u.pth', 600, 512, True)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        deadline = time.monotonic() + 60
        while not _children_reading(str(upload)) and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _children_reading(str(upload))
        assert children, "the conversion child did not start"
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)  # the API dies without any cleanup of its own
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while (_children_reading(str(upload)) or upload.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _children_reading(str(upload)) == [], "the child outlived the API process"
        assert not upload.exists() and not work.exists()
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _children_reading(str(upload)):
            os.kill(pid, signal.SIGKILL)
