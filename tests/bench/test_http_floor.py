"""bench.predict_load_http's HTTP floor: the bare app receives the whole body, and the measurement runs it."""

from __future__ import annotations

import os

from starlette.testclient import TestClient

from bench.http_floor_app import app
from bench.predict_load_http import _http_floor
from bench.service_throughput import REPO


def test_floor_app_receives_every_byte() -> None:
    body = bytes(range(256)) * 4099  # ≈ 1 MiB, several receive chunks
    with TestClient(app) as client:
        r = client.post("/sink", content=body)
    assert r.status_code == 200 and r.json() == {"bytes": len(body)}


def test_http_floor_spawns_uvicorn_and_times_the_post() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seconds = _http_floor(env, b"\0" * 2_000_000, reps=2)
    assert 0.0 < seconds < 10.0
