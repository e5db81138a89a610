"""Retries, error messages and key hygiene of the SDK, against real local HTTP servers."""

from __future__ import annotations

import socket

import pytest

from app.client import AuthError, Client, ClientError, ConnectionFailed
from app.client.transport import retry_after_seconds, server_message
from tests.client.httpstubs import ScriptedServer

KEY = "sk-test-SECRET-0123456789"


def _client(url, sleeps, retries=3, backoff=0.5):
    return Client(url, KEY, retries=retries, backoff=backoff, sleep=sleeps.append, timeout=5)


def test_503_then_success_honours_retry_after_and_sends_bearer():
    sleeps = []
    ok = {"status": "ok", "checks": {"database": "ok"}}
    with ScriptedServer([(503, {"Retry-After": "0"}, {}), (429, {"Retry-After": "2"}, {}), (200, {}, ok)]) as srv:
        health = _client(srv.url, sleeps).health()
    assert health.ok and health.checks == {"database": "ok"}
    assert sleeps == [0.0, 2.0]
    assert len(srv.requests) == 3
    assert all(r[2]["Authorization"] == f"Bearer {KEY}" for r in srv.requests)


def test_5xx_without_retry_after_backs_off_exponentially_then_gives_up():
    sleeps = []
    with ScriptedServer([(502, {}, {"detail": "bad gateway"})]) as srv, pytest.raises(ClientError) as err:
        _client(srv.url, sleeps, retries=3, backoff=0.5).list_models()
    assert err.value.status == 502 and err.value.message == "bad gateway"
    assert len(srv.requests) == 4 and len(sleeps) == 3
    for n, s in enumerate(sleeps):
        assert 0.5 * 2**n * 0.5 <= s <= 0.5 * 2**n


def test_4xx_is_not_retried_and_carries_the_server_message_without_the_key():
    sleeps = []
    detail = {"detail": f"bag has D=8 but the base expects D=16 (you sent {KEY})"}
    with ScriptedServer([(422, {}, detail)]) as srv, pytest.raises(ClientError) as err:
        _client(srv.url, sleeps).get_model("m1")
    assert len(srv.requests) == 1 and sleeps == []
    assert err.value.status == 422 and "D=8" in err.value.message
    assert KEY not in str(err.value) and KEY not in repr(err.value.message)


def test_auth_errors_are_typed():
    with ScriptedServer([(403, {}, {"detail": "needs admin scope"})]) as srv, pytest.raises(AuthError) as err:
        _client(srv.url, []).list_bases()
    assert err.value.status == 403 and "admin" in err.value.message


def test_unreachable_server_raises_connection_failed_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    client = _client(f"http://127.0.0.1:{port}", sleeps, retries=2)
    with pytest.raises(ConnectionFailed) as err:
        client.health()
    assert len(sleeps) == 2 and err.value.status == 0
    assert KEY not in str(err.value) and KEY not in repr(client)


def test_multipart_upload_is_resent_whole_on_retry(tmp_path):
    f = tmp_path / "BRCA.safetensors"
    f.write_bytes(b"z" * 10000)
    created = {"id": "ckpt_1", "cancer": "BRCA", "sha256": "ab", "tv_norms": {"feat_proj.0.weight": 1.5}}
    with ScriptedServer([(500, {}, {}), (201, {}, created)]) as srv:
        ckpt = _client(srv.url, []).register_checkpoint(f, cancer="BRCA", base_id="base_1")
    assert ckpt.id == "ckpt_1" and ckpt.tv_norms == {"feat_proj.0.weight": 1.5}
    bodies = [r[3] for r in srv.requests]
    assert len(bodies) == 2 and len(bodies[0]) == len(bodies[1])  # same size (the multipart boundary differs)
    assert all(b.count(b"z" * 10000) == 1 for b in bodies)
    assert b'name="cancer"' in bodies[0] and b"base_1" in bodies[0]


def test_merge_submit_sends_an_idempotency_key_and_lists_follow_pages():
    job = {"id": "job_1", "status": "queued"}
    with ScriptedServer([(202, {}, job)]) as srv:
        c = _client(srv.url, [])
        c.submit_merge_job("steph", "b", "t", "c", params={"epochs": 1})
        c.submit_merge_job("steph", "b", "t", "c", idempotency_key="fixed")
    keys = [r[2]["Idempotency-Key"] for r in srv.requests]
    assert len(keys[0]) == 32 and keys[1] == "fixed"
    page1 = {"items": [{"id": "m1"}, {"id": "m2"}], "total": 3, "limit": 2, "offset": 0}
    page2 = {"items": [{"id": "m3"}], "total": 3, "limit": 2, "offset": 2}
    with ScriptedServer([(200, {}, page1), (200, {}, page2)]) as srv:
        assert [m.id for m in _client(srv.url, []).list_models()] == ["m1", "m2", "m3"]
    assert "offset=2" in srv.requests[1][1]


def test_download_checks_sha256(tmp_path):
    import hashlib

    data = b"artifact-bytes" * 100
    good = hashlib.sha256(data).hexdigest()
    with ScriptedServer([(200, {"X-Content-SHA256": good}, data), (200, {"ETag": '"' + "0" * 64 + '"'}, data)]) as s:
        c = _client(s.url, [])
        path = c.download_artifact("m1", tmp_path)
        assert path.name == "m1.safetensors" and path.read_bytes() == data
        with pytest.raises(ClientError, match="sha256 mismatch"):
            c.download_artifact("m1", tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def test_header_and_message_parsing():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    import httpx

    r = httpx.Response(422, json={"detail": [{"loc": ["body", "model_id"], "msg": "Field required"}]})
    assert server_message(r)[0] == "body.model_id: Field required"
    assert server_message(httpx.Response(500, text="boom"))[0] == "boom"
    assert server_message(httpx.Response(409, json={"error": {"message": "in use"}}))[0] == "in use"


def test_predictions_carry_the_model_type_and_an_ensembles_score(tmp_path):
    bag = tmp_path / "caseA.h5"
    bag.write_bytes(b"h" * 100)
    result = {"patient_id": "caseA", "risk": -2.5, "survival": {"times_days": [0, 365], "probabilities": [1.0, 0.8]},
              "ensemble": {"score": 1.25, "members": [{"name": "main", "z": 1.0, "weight": 1.0}]}}  # fmt: skip
    body = {"model_id": "model_1", "model_sha256": "ab", "method": "auto", "model_type": "ensemble",
            "promotion_status": "not_promoted",
            "results": [result, {**result, "patient_id": "caseB", "ensemble": None}]}  # fmt: skip
    with ScriptedServer([(200, {}, body)]) as srv:
        a, b = Client(srv.url, KEY, raw_predict=False, timeout=5).predict("model_1", [bag])
    assert (a.model_type, a.ensemble_score, a.model_sha256) == ("ensemble", 1.25, "ab")
    assert a.promotion_status == b.promotion_status == "not_promoted"
    assert (b.patient_id, b.model_type, b.ensemble_score) == ("caseB", "ensemble", None)
