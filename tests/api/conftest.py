"""API fixtures: a started app on a temp STEPH_HOME (TestClient), keys, tiny world, registered family."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import repositories as repo
from app.main import create_app
from app.services.auth import create_api_key
from app.settings import Settings
from tests.fixtures import TinyWorld, fresh_pg_database, make_tiny_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return make_tiny_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(
        home=tmp_path / "home",
        data_root=tmp_path / "data",
        device="cpu",
        pth_timeout_s=60,
        queue="embedded",
        bootstrap_admin_key=True,
        **({"database_url": fresh_pg_database(), "auto_migrate": True} if os.environ.get("STEPH_TEST_PG") else {}),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def ctx(client: TestClient):
    return client.app.state.ctx


@pytest.fixture
def admin(client: TestClient, settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}


@pytest.fixture
def predict(ctx) -> dict[str, str]:
    with ctx.session() as s:
        _, key = create_api_key(s, scope="predict", name="test predict")
    return {"Authorization": f"Bearer {key}"}


def upload(path: Path, name: str | None = None) -> dict:
    return {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}


def snapshot(ctx) -> tuple[dict[str, int], int, int]:
    """(row counts per table, store objects, stored cohort dirs): equal before/after a refused request."""
    with ctx.session() as s:
        rows = repo.count_rows(s)
    return rows, ctx.store.count_objects(), ctx.store.count_cohorts()


def assert_error(response, status: int, code: str | None = None, *, contains: str | tuple[str, ...] = ()) -> dict:
    """The one error shape: {"error": {"code", "message"}}; no server paths in the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    if code is not None:
        assert err["code"] == code, err
    for part in (contains,) if isinstance(contains, str) else contains:
        assert part.lower() in err["message"].lower(), err["message"]
    assert "/tmp/" not in err["message"] and "Traceback" not in err["message"], err["message"]
    return err


@pytest.fixture
def family(client: TestClient, admin: dict, world: TinyWorld) -> dict:
    """A registered base and the three checkpoints: {"base": {...}, "checkpoints": {cancer: {...}}}."""
    r = client.post("/bases", headers=admin, files=upload(world.base), data={"name": "tiny", "encoder": "test-16"})
    assert r.status_code == 201, r.text
    base = r.json()
    ckpts = {}
    for cancer, path in world.checkpoints.items():
        r = client.post(
            "/checkpoints", headers=admin, files=upload(path), data={"cancer": cancer, "base_id": base["id"]}
        )
        assert r.status_code == 201, r.text
        ckpts[cancer] = r.json()
    return {"base": base, "checkpoints": ckpts}


@pytest.fixture
def model_id(client, admin, world, family) -> str:
    """A STEPH model merged through the API (POST /predict tests)."""
    from tests.workers.api_helpers import register_cohort, run_job

    cohort = register_cohort(client, admin, world, family["base"]["id"])
    return run_job(client, admin, family, cohort["id"])["model_id"]


@pytest.fixture
def bags(tmp_path):
    """Small .h5 bags (D = 16): two good cases, one of the wrong width, one with a NaN."""
    from tests.fixtures import write_bag

    d = tmp_path / "bags"
    return {
        "a": write_bag(d / "caseA.h5", 10, 16, seed=1),
        "b": write_bag(d / "caseB.h5", 6, 16, seed=2),
        "wide": write_bag(d / "wide.h5", 4, 18, seed=3),
        "nan": write_bag(d / "nanbag.h5", 4, 16, seed=4, nan=True),
    }
