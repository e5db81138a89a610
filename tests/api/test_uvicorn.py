"""A real `steph serve` (uvicorn) process on a free port with a temp STEPH_HOME: readiness, the bootstrap key,
an authenticated GET, and a 401 without the key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_real_uvicorn_process(tmp_path):
    port = free_port()
    env = {**os.environ, "STEPH_HOME": str(tmp_path / "home"), "STEPH_LOG_LEVEL": "WARNING"}
    env.pop("STEPH_DATABASE_URL", None)
    env.pop("STEPH_STORE_ROOT", None)
    cmd = [
        sys.executable,
        "-c",
        "from app.cli import main; raise SystemExit(main())",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ready = None
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                ready = httpx.get(f"{base}/health/ready", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.25)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert ready.json()["checks"] == {"database": True, "store": True, "queue": True}
        key = (tmp_path / "home" / "admin.key").read_text().strip()
        r = httpx.get(f"{base}/bases", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert r.status_code == 200 and r.json()["total"] == 0
        r = httpx.get(f"{base}/bases", timeout=5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert (tmp_path / "home" / "steph.db").is_file()
        assert (tmp_path / "home" / "models_store").is_dir()
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert key in err  # the bootstrap key was printed once, to stderr
    assert err.count(key) == 1
