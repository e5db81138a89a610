"""Prometheus metric objects that services may update without importing FastAPI.

`REGISTRY` is this module's own CollectorRegistry (not the global default, so re-imports and several apps in
one test process never register twice). The API's /metrics serves it together with the app's own registry
(request counts and latencies, jobs by status computed on scrape). In a Celery worker process the
job-duration histogram lives in that process only.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

JOB_DURATION = Histogram(
    "steph_merge_job_duration_seconds",
    "Wall time of merge-job attempts, by method and final status",
    labelnames=("method", "status"),
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)


def observe_job(*, method: str, status: str, seconds: float) -> None:
    """Record one finished job attempt (called by the merge-job runner)."""
    JOB_DURATION.labels(method=method, status=status).observe(max(0.0, float(seconds)))


class RepeatedFailure:
    """Logs a failure that repeats every few hundred milliseconds (a heartbeat or a reaper pass while the
    database is down) without flooding the log: the first failure with its traceback, then one line with the
    count at most every `every_s` seconds, and one line when it works again."""

    def __init__(self, logger: logging.Logger, what: str, every_s: float = 60.0) -> None:
        self.logger, self.what, self.every_s = logger, what, every_s
        self.failures, self._last = 0, 0.0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            now = time.monotonic()
            if self.failures == 1:
                self._last = now
                self.logger.warning("%s failed; retrying (later failures: one line a minute)", self.what,
                                    exc_info=exc)  # fmt: skip
            elif now - self._last >= self.every_s:
                self._last = now
                self.logger.warning("%s still failing (%d failures so far): %s: %s", self.what, self.failures,
                                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")  # fmt: skip

    def succeeded(self) -> None:
        with self._lock:
            if self.failures:
                self.logger.warning("%s works again after %d failure(s)", self.what, self.failures)
            self.failures = 0
