"""Production database: the same API flow and the Alembic history on a real PostgreSQL server.

A throw-away server is started from the installed PostgreSQL binaries (`make test` installs the `postgresql`
Debian package; without it these tests skip, saying so). PostgreSQL refuses to run as root, so under root the
server runs as `nobody`. Every test gets a fresh database.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from tests.api.conftest import upload
from tests.fixtures import free_port
from tests.workers.api_helpers import job_body, register_cohort, wait_job

pytestmark = pytest.mark.integration


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    """Start a PostgreSQL server on a free local port; yields its URL prefix (no database name)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql, as `make test` does)")
    root = Path(tempfile.mkdtemp(prefix="steph-pg-"))
    data = root / "data"
    data.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: run it as nobody
        root.chmod(0o755)
        shutil.chown(data, user="nobody")
        run_as = ["runuser", "-u", "nobody", "--"]
    port = free_port()

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=120, cwd=root)

    init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "steph", "--auth=trust", "-E", "UTF8")
    assert init.returncode == 0, init.stderr
    start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"), "-o",
               f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
    assert start.returncode == 0, start.stderr + (data / "server.log").read_text(errors="replace")
    try:
        yield f"postgresql+psycopg://steph@127.0.0.1:{port}"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as conn:  # fmt: skip
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:  # overrides tests/api/conftest.py: PostgreSQL
    (tmp_path / "data").mkdir()
    return Settings(
        home=tmp_path / "home", data_root=tmp_path / "data", database_url=pg_url, auto_migrate=True,
        device="cpu", queue="embedded", bootstrap_admin_key=True,
    )  # fmt: skip


def test_migrations_from_empty_match_the_models_on_postgres(pg_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from app.db.migrate import current_revision, upgrade
    from app.db.models import ALL_TABLES, OrmBase
    from app.db.session import make_engine

    assert current_revision(pg_url) is None
    upgrade(pg_url)
    upgrade(pg_url)  # idempotent
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, OrmBase.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diffs == []
    assert tables == set(ALL_TABLES) | {"alembic_version"}


def test_register_merge_and_predict_on_postgres(client, admin, family, world, settings):
    assert client.app.state.ctx.settings.database_url.startswith("postgresql")
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    body = job_body(family, cohort["id"])
    r = client.post("/merge-jobs", headers={**admin, "Idempotency-Key": "pg-1"}, json=body)
    assert r.status_code == 202, r.text
    again = client.post("/merge-jobs", headers={**admin, "Idempotency-Key": "pg-1"}, json=body)
    assert again.json()["id"] == r.json()["id"]
    done = wait_job(client, admin, r.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["comparison"]["verdict"] in ("better", "worse", "inconclusive")
    model = client.get(f"/models/{done['model_id']}", headers=admin).json()
    assert model["metrics"]["test_metrics"]["merged"]["patients"] == done["comparison"]["patients"]
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream"))
             for p in sorted((world.cohort / "bags").iterdir())[:2]]  # fmt: skip
    pred = client.post("/predict", headers=admin, data={"model_id": done["model_id"]}, files=files)
    assert pred.status_code == 200, pred.text
    assert all(isinstance(x["risk"], float) for x in pred.json()["results"])
    # a duplicate checkpoint is found by the unique lookup on PostgreSQL too
    ck = family["checkpoints"]["brca"]
    dup = client.post("/checkpoints", headers=admin, files=upload(world.checkpoints["brca"]),
                      data={"cancer": "brca", "base_id": family["base"]["id"]})  # fmt: skip
    assert dup.status_code == 200 and dup.json()["id"] == ck["id"]
