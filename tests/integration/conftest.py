"""Integration fixtures: a real redis-server on a free port, real `steph worker` (Celery) processes, and the
API in-process (TestClient) on the same STEPH_HOME (SQLite + artifact store shared with the workers)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.fixtures import free_port

REPO = Path(__file__).resolve().parents[2]


def _ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://127.0.0.1:<free port>/0 served by a fresh redis-server (no persistence) for this session."""
    exe = shutil.which("redis-server")
    if exe is None:
        reason = "redis-server is not installed (`make test` installs it with apt)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; integration tests must run in CI")
        pytest.skip(reason)
    port = free_port()
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        end = time.monotonic() + 10
        while not _ping(url):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"redis-server did not start on port {port} (exit code {proc.poll()})")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Workers:
    """Starts and kills `steph worker` processes (or any `steph` command: `args`, e.g. an API server) with the
    integration settings in their environment (plus `env`); each logs to <log_dir>/<name>.log."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, args: Sequence[str] = ("worker",), *, name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        name = name or f"worker{len(self.procs)}"
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture
def celery_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """STEPH_* settings shared by the API (TestClient) and the worker processes; a fresh Redis db per test."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPH_")}
    env.update(
        {
            "STEPH_HOME": str(tmp_path / "home"),
            "STEPH_QUEUE": "celery",
            "STEPH_REDIS_URL": redis_url,
            "STEPH_DEVICE": "cpu",
            "STEPH_JOB_LEASE_S": "2",
            "STEPH_CELERY_VISIBILITY_TIMEOUT_S": "3",
            "STEPH_MAX_JOB_ATTEMPTS": "3",
            "STEPH_BOOTSTRAP_ADMIN_KEY": "false",
            "STEPH_AUTO_MIGRATE": "true",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    if os.environ.get("STEPH_TEST_PG"):  # API and workers on a PostgreSQL database instead of SQLite
        from tests.fixtures import fresh_pg_database

        env["STEPH_DATABASE_URL"] = fresh_pg_database()
    return env


@pytest.fixture
def workers(celery_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(celery_env, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def api(celery_env: dict[str, str]):
    """(TestClient, admin headers, predict headers) on the celery settings (migrated at start-up)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.auth import create_api_key
    from app.settings import Settings

    settings = Settings(**{k[len("STEPH_") :].lower(): v for k, v in celery_env.items() if k.startswith("STEPH_")})
    with TestClient(create_app(settings)) as client:
        ctx = client.app.state.ctx
        with ctx.session() as s:
            _, admin = create_api_key(s, scope="admin", name="it admin")
            _, pred = create_api_key(s, scope="predict", name="it predict")
        yield client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {pred}"}
