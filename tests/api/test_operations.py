"""Health, readiness, /metrics, /methods, upload caps (413), the error shape and the catch-all 500."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import assert_error, snapshot, upload


def test_live_and_ready(client):
    assert client.get("/health/live").json() == {"status": "alive"}
    r = client.get("/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": True, "store": True, "queue": True}}


def test_ready_reports_a_dead_queue_with_503(client):
    from app.services.queue import UnavailableQueue

    ctx = client.app.state.ctx
    real, ctx.queue = ctx.queue, UnavailableQueue("test: no broker")
    try:
        r = client.get("/health/ready")
    finally:
        ctx.queue = real
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "checks": {"database": True, "store": True, "queue": False}}


def test_a_hung_store_reads_as_down_within_seconds_and_blocks_nothing(client, admin, monkeypatch):
    """A stopped (not refusing) object store: each readiness probe answers 503 after the probe limit, all
    probes share the one hung check, and /health/live and the API routes keep answering."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import app.api.routes.health as health

    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.5)
    release, calls = threading.Event(), []
    ctx = client.app.state.ctx

    def hung() -> bool:
        calls.append(1)
        release.wait(30)
        return True

    monkeypatch.setattr(ctx.store, "is_writable", hung)
    try:
        t0 = time.monotonic()
        r = client.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"] == {"database": True, "store": False, "queue": True}
        assert time.monotonic() - t0 < 3
        with ThreadPoolExecutor(24) as pool:  # more probes than the server's worker threads could hold before
            answers = list(pool.map(lambda _: client.get("/health/ready").status_code, range(48)))
            assert client.get("/health/live").status_code == 200
            assert client.get("/bases", headers=admin).status_code == 200
        assert set(answers) == {503} and len(calls) == 1  # one hung check, not one per probe
    finally:
        release.set()
    for _ in range(50):  # once the store answers again, so does readiness
        if client.get("/health/ready").status_code == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("readiness did not recover")


def test_a_database_behind_the_code_is_refused_at_start_and_not_ready(tmp_path):
    import pytest

    from app.db.migrate import SchemaNotCurrent, head_revision, upgrade

    settings = Settings(home=tmp_path / "h", auto_migrate=False)
    upgrade(settings.database_url, "0003")  # one migration behind (as `steph migrate --revision 0003` leaves it)
    needs = f"is at migration 0003.*needs migration {head_revision()}.*steph migrate"
    with pytest.raises(SchemaNotCurrent, match=needs):
        with TestClient(create_app(settings)):
            pass
    empty = Settings(home=tmp_path / "e", auto_migrate=False)
    with pytest.raises(SchemaNotCurrent, match="has no STEPH tables"):
        with TestClient(create_app(empty)):
            pass


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_template_and_jobs_by_status(client, admin, family):
    for _ in range(3):
        client.get(f"/bases/{family['base']['id']}", headers=admin)
    client.get("/bases/base_nope", headers=admin)
    text = client.get("/metrics", headers=admin).text
    assert _sample(text, "steph_http_requests_total", route="/bases/{base_id}", status="200") == 3
    assert _sample(text, "steph_http_requests_total", route="/bases/{base_id}", status="404") == 1
    assert _sample(text, "steph_http_requests_total", route="/checkpoints", method="POST", status="201") == 3
    assert _sample(text, "steph_http_request_duration_seconds_count", route="/bases/{base_id}", status="200") == 3
    assert _sample(text, "steph_merge_jobs", status="queued") == 0
    assert 'steph_merge_jobs{status="succeeded"} 0.0' in text
    assert "steph_merge_job_duration_seconds" in text


def test_job_duration_histogram_is_shared(client, admin):
    from app.observability import observe_job

    before = _sample(
        client.get("/metrics", headers=admin).text,
        "steph_merge_job_duration_seconds_count",
        method="unit-test",
        status="succeeded",
    )
    observe_job(method="unit-test", status="succeeded", seconds=2.0)
    text = client.get("/metrics", headers=admin).text
    assert _sample(text, "steph_merge_job_duration_seconds_count", method="unit-test", status="succeeded") == before + 1


def test_methods_lists_the_registry(client, predict):
    from app.domain.merging.registry import METHODS

    body = client.get("/methods", headers=predict).json()
    names = [m["name"] for m in body["items"]]
    assert names == list(METHODS) and "steph" in names
    steph = next(m for m in body["items"] if m["name"] == "steph")
    assert steph["learned"] is True and any(p["name"] for p in steph["params"])


def test_oversize_upload_is_413_before_and_while_copying(tmp_path, world):
    settings = Settings(home=tmp_path / "h", max_upload_mb=0.001)  # ~1 KiB; the tiny base file (~1.8 KiB) is larger
    assert world.base.stat().st_size > settings.max_upload_bytes
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (settings.max_upload_bytes + (2 << 20)))  # past the body cap (file cap + 1 MiB)
    with TestClient(create_app(settings)) as c:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        before = snapshot(c.app.state.ctx)
        r = c.post("/bases", headers=admin, files=upload(big), data={"name": "b", "encoder": "e"})
        assert_error(r, 413, "payload_too_large", contains=("0.001 MiB", "STEPH_MAX_UPLOAD_MB"))
        r = c.post("/bases", headers=admin, files=upload(world.base), data={"name": "b", "encoder": "e"})
        assert_error(r, 413, "payload_too_large", contains=("0.001 MiB", "STEPH_MAX_UPLOAD_MB"))
        r = c.post(
            "/checkpoints",
            headers=admin,
            files=upload(world.checkpoints["brca"]),
            data={"cancer": "brca", "base_id": "base_x"},
        )
        assert_error(r, 413, "payload_too_large")
        assert snapshot(c.app.state.ctx) == before
        assert list(c.app.state.ctx.store.tmp_dir().iterdir()) == []


def test_streamed_body_without_length_is_capped(tmp_path):
    """Chunked bodies (no Content-Length) are cut off at the cap, JSON and multipart alike."""
    settings = Settings(home=tmp_path / "h", max_upload_mb=0.01)
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--{boundary}\r\n'
        'Content-Disposition: form-data; name="file"; filename="a.safetensors"\r\n\r\n'
    ).encode()

    def chunks(first: bytes = b""):
        yield first
        for _ in range(40):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    with TestClient(create_app(settings)) as c:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        before = snapshot(c.app.state.ctx)
        r = c.post("/cohorts", headers={**admin, "Content-Type": "application/json"}, content=chunks())
        assert_error(r, 413, "payload_too_large", contains="STEPH_MAX_UPLOAD_MB")
        multipart = {**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        r = c.post("/bases", headers=multipart, content=chunks(head))
        assert_error(r, 413, "payload_too_large", contains=("0.01 MiB", "STEPH_MAX_UPLOAD_MB"))
        assert snapshot(c.app.state.ctx) == before


def test_empty_upload_is_400(client, admin, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    r = client.post("/bases", headers=admin, files=upload(empty), data={"name": "b", "encoder": "e"})
    assert_error(r, 400, "invalid_input", contains="empty")


def test_unknown_route_and_method_use_the_error_shape(client, admin):
    assert_error(client.get("/nope", headers=admin), 404, "not_found", contains="/docs")
    assert_error(client.put("/bases", headers=admin), 405, "method_not_allowed")
    assert_error(client.get("/bases", headers=admin, params={"limit": 0}), 422, "validation_error", contains="limit")


def test_unexpected_errors_are_generic_500(tmp_path):
    settings = Settings(home=tmp_path / "h")
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail at /srv/steph/internal.py")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    err = assert_error(r, 500, "internal_error", contains="error id")
    assert "secret" not in err["message"] and not re.search(r"/srv|\.py", err["message"])


def test_openapi_docs_served(client, admin):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/bases" in schema["paths"] and "HTTPBearer" in schema["components"]["securitySchemes"]
    text = client.get("/metrics", headers=admin).text  # counted under their own routes, not <unmatched>
    assert _sample(text, "steph_http_requests_total", route="/openapi.json", status="200") == 1
    assert _sample(text, "steph_http_requests_total", route="/docs", status="200") == 1
    # the contract says what the non-JSON routes send
    assert (
        "image/png"
        in schema["paths"]["/models/{model_id}/report/figures/{name}.{fmt}"]["get"]["responses"]["200"]["content"]
    )
    assert "application/json" in schema["paths"]["/models/{model_id}/report"]["get"]["responses"]["404"]["content"]
    assert "409" in schema["paths"]["/registered-models/{name}/aliases/{alias}"]["put"]["responses"]
    assert "200" in schema["paths"]["/bases"]["post"]["responses"]


def test_bootstrap_key_written_once_with_0600(tmp_path):
    settings = Settings(home=tmp_path / "h")
    with TestClient(create_app(settings)):
        key = settings.admin_key_path.read_text().strip()
        assert key.startswith("steph_admin_") and (settings.admin_key_path.stat().st_mode & 0o777) == 0o600
    settings.admin_key_path.unlink()
    with TestClient(create_app(settings)) as c:  # keys exist: no second bootstrap key
        assert not settings.admin_key_path.exists()
        assert c.get("/bases", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    other = Settings(home=tmp_path / "h2", bootstrap_admin_key=False)
    with TestClient(create_app(other)):
        assert not other.admin_key_path.exists()


def test_a_500_keeps_the_connection_for_the_next_request(tmp_path):
    """Two pipelined requests on one socket against a real uvicorn: the first fails unexpectedly (500 JSON),
    the second is still answered (Starlette's own 500 path re-raised, and uvicorn then closed the connection)."""
    import socket
    import threading
    import time

    import uvicorn

    app = create_app(Settings(home=tmp_path / "h"))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1 ") < 2:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 500") and b"internal_error" in data
        assert b"HTTP/1.1 200" in data, data  # the second request was answered on the same connection
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_client_that_disconnects_mid_upload_is_not_a_server_error(tmp_path, caplog, monkeypatch):
    """A raw-body upload cut off by the client: no 'unhandled error' log line and no 500 attempt."""
    import asyncio
    import logging

    import app.api.routes.predict as predict_routes

    monkeypatch.setattr(predict_routes, "resolve_model_id", lambda ctx, ref: ref)  # any model: the upload matters

    app = create_app(Settings(home=tmp_path / "h"))
    sent: list[dict] = []

    async def run() -> None:
        async with app.router.lifespan_context(app):
            ctx = app.state.ctx
            from app.services.auth import create_api_key

            with ctx.session() as s:
                _, key = create_api_key(s, scope="predict", name="t")
            messages = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}, {"type": "http.disconnect"}]

            async def receive() -> dict:
                return messages.pop(0) if messages else {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/predict/bag", "raw_path": b"/predict/bag",
                     "query_string": b"model_id=m&filename=a.h5", "root_path": "", "server": ("t", 80),
                     "client": ("c", 1), "app": app,
                     "headers": [(b"host", b"t"), (b"authorization", f"Bearer {key}".encode()),
                                 (b"content-type", b"application/octet-stream"),
                                 (b"content-length", b"100000")]}  # fmt: skip
            await app(scope, receive, send)

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    assert not any("unhandled error" in r.getMessage() for r in caplog.records)
    assert any("client disconnected during POST /predict/bag" in r.getMessage() for r in caplog.records)
    assert not any(m.get("status") == 500 for m in sent)
    # /metrics: a client that went away is counted as 499 (client closed), not as a server error (was 500)
    counted = {s.labels["status"]: s.value for m in app.state.metrics.requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["route"] == "/predict/bag"}  # fmt: skip
    assert counted == {"499": 1.0}


def test_a_multipart_upload_cut_off_by_its_client_is_counted_as_client_closed(client, predict, ctx):
    """Starlette answers a multipart body cut off mid-way with a 400 nobody receives: /metrics says 499."""
    import asyncio

    app = client.app
    sent: list[dict] = []
    body = b'--xx\r\nContent-Disposition: form-data; name="files"; filename="a.h5"\r\n\r\n' + b"x" * 500
    messages = [{"type": "http.request", "body": body, "more_body": True}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "server": ("t", 80), "client": ("c", 1), "app": app,
             "headers": [(b"host", b"t"), (b"authorization", predict["Authorization"].encode()),
                         (b"content-type", b"multipart/form-data; boundary=xx"),
                         (b"content-length", b"100000")]}  # fmt: skip

    def count() -> dict:
        return {s.labels["status"]: s.value for m in app.state.metrics.requests.collect() for s in m.samples
                if s.name.endswith("_total") and s.labels["route"] == "/predict"}  # fmt: skip

    before = count()
    asyncio.run(app(scope, receive, send))
    after = count()
    assert {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)} == {"499": 1.0}


def test_405_lists_every_method_of_the_path(client, admin):
    r = client.delete("/bases", headers=admin)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert_error(r, 405, contains="use GET, POST")
    r = client.put("/bases/base_1", headers=admin)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
