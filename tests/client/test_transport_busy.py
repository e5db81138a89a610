"""503 server_busy (the server's forward slots and wait queue are full): the client waits at least Retry-After
(spread up to 1.5×) and keeps trying past its usual retry budget; --retries 0 still fails fast."""

from __future__ import annotations

import pytest

from app.client import Client, ClientError
from tests.client.httpstubs import ScriptedServer

KEY = "sk-test-busy-0123456789"
BUSY = (503, {"Retry-After": "2"}, {"error": {"code": "server_busy", "message": "the server is busy"}})
OK = (200, {}, {"status": "ok", "checks": {}})


def _client(url, sleeps, retries):
    return Client(url, KEY, retries=retries, backoff=0.5, sleep=sleeps.append, timeout=5)


def test_busy_answers_are_retried_past_the_retry_budget_after_retry_after():
    sleeps: list[float] = []
    with ScriptedServer([BUSY] * 6 + [OK]) as srv:
        assert _client(srv.url, sleeps, retries=2).health().ok
    assert len(srv.requests) == 7 and len(sleeps) == 6
    assert all(2.0 <= s <= 3.0 for s in sleeps) and len(set(sleeps)) > 1  # never early, jittered


def test_plain_503_keeps_the_normal_budget_and_retries_0_fails_fast_even_when_busy():
    sleeps: list[float] = []
    plain = (503, {"Retry-After": "1"}, {"error": {"code": "service_unavailable", "message": "db down"}})
    with ScriptedServer([plain]) as srv, pytest.raises(ClientError) as err:
        _client(srv.url, sleeps, retries=2).health()
    assert err.value.status == 503 and len(srv.requests) == 3 and sleeps == [1.0, 1.0]
    with ScriptedServer([BUSY]) as srv, pytest.raises(ClientError) as err:
        _client(srv.url, sleeps := [], retries=0).health()
    assert err.value.code == "server_busy" and len(srv.requests) == 1 and sleeps == []
