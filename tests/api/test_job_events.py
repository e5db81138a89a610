"""HTTP: a finished job's progress is final, a skipped comparison says why, completion webhooks are signed and
retried (against a small local HTTP server)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.services.webhooks import deliver, sign
from tests.api.conftest import assert_error
from tests.fixtures import free_port
from tests.workers.api_helpers import job_body, register_cohort, register_cohort_without_test_split, wait_job


class Receiver:
    """A local webhook receiver: answers the statuses in `script` in turn (then 200), records every request."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script, self.requests = list(script or []), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.script.pop(0) if receiver.script else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver([500])
    yield r
    r.close()


def wait_for(predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_webhook_signed_and_retried_and_skipped_comparison(client, admin, ctx, world, family, receiver, tmp_path):
    ctx.settings.webhook_secret = "s3cret"
    ctx.settings.webhook_backoff_s = 0.01
    ctx.settings.webhook_allowed_networks = "127.0.0.1/32"  # the receiver is on loopback: refused otherwise
    cohort = register_cohort_without_test_split(client, admin, family["base"]["id"], tmp_path)  # no comparison
    r = client.post("/merge-jobs", headers=admin, json={**job_body(family, cohort["id"]), "webhook_url": receiver.url})
    assert r.status_code == 202, r.text
    job = wait_job(client, admin, r.json()["id"])
    assert job["status"] == "succeeded" and job["comparison"] is None
    assert job["comparison_skipped"] and "test" in job["comparison_skipped"].lower()
    model = client.get(f"/models/{job['model_id']}", headers=admin).json()
    assert job["comparison_skipped"] == model["metrics"]["comparison_skipped"]
    assert job["progress"]["stage"] == "done" and job["progress"]["eta_s"] == 0.0

    record = wait_for(lambda: client.get(f"/merge-jobs/{job['id']}", headers=admin).json()["webhook"])
    assert record == {"url": receiver.url, "delivered": True, "attempts": 2, "last_status": 200, "last_error": None}
    assert len(receiver.requests) == 2  # the 500 was retried
    headers, body = receiver.requests[-1]
    expected = "sha256=" + hmac.new(b"s3cret", headers["X-STEPH-Timestamp"].encode() + b"." + body,
                                    hashlib.sha256).hexdigest()  # fmt: skip
    assert headers["X-STEPH-Signature"] == expected
    assert receiver.requests[0][0]["X-STEPH-Delivery"] == headers["X-STEPH-Delivery"]
    sent = json.loads(body)
    assert (sent["job_id"], sent["status"], sent["model_id"]) == (job["id"], "succeeded", job["model_id"])
    assert sent["comparison_skipped"] == job["comparison_skipped"]


def test_cancelled_jobs_have_final_progress(client, admin, family, world) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    body = job_body(family, cohort["id"], params={"epochs": 500, "accum": 1, "topk": 2, "hyper_hidden": 8})
    job_id = client.post("/merge-jobs", headers=admin, json=body).json()["id"]
    wait_for(lambda: (client.get(f"/merge-jobs/{job_id}", headers=admin).json().get("progress") or {}).get("eta_s"))
    assert client.post(f"/merge-jobs/{job_id}/cancel", headers=admin).status_code == 200
    job = wait_job(client, admin, job_id)
    assert job["status"] == "cancelled", job
    assert job["progress"]["stage"] == "cancelled" and job["progress"]["eta_s"] is None
    assert job["progress"]["step"] >= 1  # the last real progress is kept, only the running parts are cleared


def test_bad_webhook_url_is_refused(client, admin, family, world) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    body = {**job_body(family, cohort["id"]), "webhook_url": "ftp://example.org/x"}
    assert_error(client.post("/merge-jobs", headers=admin, json=body), 422, contains="webhook_url")


def test_deliver_gives_up_with_backoff_and_does_not_retry_4xx() -> None:
    waits: list[float] = []

    class S:
        webhook_timeout_s, webhook_max_attempts, webhook_backoff_s, webhook_secret = 1.0, 3, 0.5, None
        webhook_allowed_networks = "127.0.0.0/8"

    record = deliver(f"http://127.0.0.1:{free_port()}/x", {"a": 1}, settings=S(), sleep=waits.append)
    assert record["delivered"] is False and record["attempts"] == 3 and "Connect" in record["last_error"]
    assert waits == [0.5, 1.0]
    r = Receiver([404])
    try:
        record = deliver(r.url, {"a": 1}, settings=S(), sleep=waits.append)
    finally:
        r.close()
    assert record["attempts"] == 1 and record["last_status"] == 404 and "X-STEPH-Signature" not in r.requests[0][0]
    assert sign("k", "1", b"x") == "sha256=" + hmac.new(b"k", b"1.x", hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin/gc",  # the service itself
        "http://localhost/x",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://10.1.2.3/hook",  # the internal network
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",  # IPv4 loopback written as IPv6
        "http://0.0.0.0/x",
    ],
)
def test_webhooks_to_non_public_addresses_are_refused_unless_allowed(client, admin, ctx, family, world, url) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    before_jobs = len(client.get("/merge-jobs", headers=admin).json()["items"])
    body = {**job_body(family, cohort["id"]), "webhook_url": url}
    assert_error(client.post("/merge-jobs", headers=admin, json=body), 422, contains="STEPH_WEBHOOK_ALLOWED_NETWORKS")
    assert len(client.get("/merge-jobs", headers=admin).json()["items"]) == before_jobs
    ctx.settings.webhook_allowed_networks = "127.0.0.0/8,::1/128,10.0.0.0/8,169.254.0.0/16,0.0.0.0/32"
    r = client.post("/merge-jobs", headers=admin, json=body)
    assert r.status_code == 202, r.text


def test_delivery_checks_the_address_again() -> None:
    """A URL that passed at submission but resolves to a refused address when the job ends is not sent."""

    class S:
        webhook_timeout_s, webhook_max_attempts, webhook_backoff_s, webhook_secret = 1.0, 3, 0.0, None
        webhook_allowed_networks = ""

    r = Receiver()
    try:
        record = deliver(r.url, {"a": 1}, settings=S(), sleep=lambda _: None)
    finally:
        r.close()
    assert record["delivered"] is False and record["attempts"] == 0 and not r.requests
    assert record["last_error"].startswith("not sent:") and "127.0.0.1" in record["last_error"]


def test_a_bad_allowed_network_stops_the_settings() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="'10.0.0.300/8' is not a network"):
        Settings(webhook_allowed_networks="10.0.0.0/8, 10.0.0.300/8")
    assert Settings(webhook_allowed_networks=" 10.0.0.0/8 , fd00::/8").webhook_allowed_networks
