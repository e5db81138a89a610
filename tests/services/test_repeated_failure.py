"""app.observability.RepeatedFailure: a failure that repeats many times a second logs a traceback once."""

from __future__ import annotations

import logging

from app.observability import RepeatedFailure


def test_one_traceback_then_a_line_a_minute_then_recovery(caplog, monkeypatch) -> None:
    import app.observability as obs

    clock = [1000.0]
    monkeypatch.setattr(obs.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("test.repeated")
    failures = RepeatedFailure(log, "heartbeat of job j1")
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        for _ in range(300):  # 30 s of failures every 100 ms: one record
            failures.failed(ConnectionError("server closed the connection\nmore detail"))
            clock[0] += 0.1
        assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
        for _ in range(400):  # past a minute since the first: one more line, no traceback
            failures.failed(ConnectionError("server closed the connection"))
            clock[0] += 0.1
        assert len(caplog.records) == 2 and caplog.records[1].exc_info is None
        assert "still failing (" in caplog.records[1].getMessage()
        failures.succeeded()
        failures.succeeded()
    assert [r.getMessage() for r in caplog.records[2:]] == ["heartbeat of job j1 works again after 700 failure(s)"]
