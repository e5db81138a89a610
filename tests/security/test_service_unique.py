"""Class 5d (issue 8): duplicate registrations are prevented by the DATABASE (unique bases.family_key, and the
existing unique checkpoints (base_id, sha256)), not only by a read-then-write: 20 parallel identical POST /bases
make one row, on SQLite and on PostgreSQL; a lost race returns the winner; migration 0002 keys existing rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from app.db import repositories as repo
from app.main import create_app
from app.services import bases as bases_svc
from app.settings import Settings
from tests.api.conftest import admin, client, ctx, settings, snapshot, world  # noqa: F401
from tests.api.test_postgres import pg_server, pg_url  # noqa: F401


def _parallel_posts(client, headers: dict, files: dict, data: dict, n: int = 20) -> list:  # noqa: F811
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: client.post("/bases", headers=headers, files=files, data=data), range(n)))


def _run_parallel(settings: Settings, world) -> None:  # noqa: F811
    with TestClient(create_app(settings)) as c:
        headers = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        files = {"file": ("base.safetensors", world.base.read_bytes(), "application/octet-stream")}
        for round_ in range(3):
            data = {"name": "tiny", "encoder": f"enc-{round_}"}
            replies = _parallel_posts(c, headers, files, data)
            assert all(r.status_code in (200, 201) for r in replies), [r.text for r in replies][:3]
            assert sorted(r.status_code for r in replies).count(201) == 1
            assert len({r.json()["id"] for r in replies}) == 1
        with c.app.state.ctx.session() as s:
            assert repo.count_rows(s)["bases"] == 3
        assert c.app.state.ctx.store.count_objects() == 1  # the same bytes: one stored object


def test_parallel_identical_bases_make_one_row_sqlite(settings, world):  # noqa: F811
    _run_parallel(settings, world)


@pytest.mark.integration
def test_parallel_identical_bases_make_one_row_postgres(tmp_path: Path, pg_url, world):  # noqa: F811
    (tmp_path / "data").mkdir()
    pg = Settings(home=tmp_path / "home", data_root=tmp_path / "data", database_url=pg_url, auto_migrate=True,
                  device="cpu", queue="embedded", bootstrap_admin_key=True)  # fmt: skip
    _run_parallel(pg, world)


def test_the_database_itself_refuses_a_duplicate_family(ctx):  # noqa: F811
    key = bases_svc.family_key("a" * 64, "enc", [0.0, 365.0])
    fields = {"name": "n", "encoder": "enc", "dims": {}, "bin_edges": [0.0, 365.0], "sha256": "a" * 64,
              "artifact_key": "b" * 64, "family_key": key}  # fmt: skip
    with ctx.session() as s:
        repo.add_base(s, **fields)
    with pytest.raises(IntegrityError):
        with ctx.session() as s:
            repo.add_base(s, **fields)
    with ctx.session() as s:
        assert repo.count_rows(s)["bases"] == 1


def test_a_lost_race_returns_the_winner(client, admin, ctx, world, monkeypatch):  # noqa: F811
    """The read-then-write window forced open: the lookup misses, the insert collides, the winner comes back."""
    files = {"file": ("base.safetensors", world.base.read_bytes(), "application/octet-stream")}
    data = {"name": "tiny", "encoder": "e"}
    first = client.post("/bases", headers=admin, files=files, data=data)
    assert first.status_code == 201
    real = bases_svc._find_base
    calls = {"n": 0}

    def miss_once(*args, **kwargs):
        calls["n"] += 1
        return None if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(bases_svc, "_find_base", miss_once)
    before = snapshot(ctx)
    again = client.post("/bases", headers=admin, files=files, data=data)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and calls["n"] == 2
    assert snapshot(ctx) == before


def test_migration_0002_keys_existing_rows_and_keeps_duplicates(tmp_path):
    from alembic import command

    from app.db.migrate import alembic_config, upgrade
    from app.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001_initial")
    engine = make_engine(url)
    row = {"name": "n", "encoder": "enc", "dims": "{}", "bin_edges": "[0, 365]", "sha256": "c" * 64,
           "artifact_key": "d" * 64, "created_at": "2026-01-01 00:00:00"}  # fmt: skip
    try:
        with engine.begin() as conn:
            for i in range(2):  # two identical families, as the old read-then-write could make
                conn.execute(sa.text("INSERT INTO bases (id, name, encoder, dims, bin_edges, sha256, artifact_key, "
                                     "created_at) VALUES (:id, :name, :encoder, :dims, :bin_edges, :sha256, "
                                     ":artifact_key, :created_at)"), {**row, "id": f"base_{i}"})  # fmt: skip
        upgrade(url)
        with engine.connect() as conn:
            keys = dict(conn.execute(sa.text("SELECT id, family_key FROM bases ORDER BY id")).all())
        assert keys == {"base_0": bases_svc.family_key("c" * 64, "enc", [0.0, 365.0]), "base_1": None}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("UPDATE bases SET family_key = :k WHERE id = 'base_1'"), {"k": keys["base_0"]})
    finally:
        engine.dispose()
