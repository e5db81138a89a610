"""Prometheus metric objects that services may update without importing FastAPI.

`REGISTRY` is this module's own CollectorRegistry (not the global default, so re-imports and several apps in
one test process never register twice). The API's /metrics serves it together with the app's own registry
(request counts and latencies, jobs by status computed on scrape). In a Celery worker process the
job-duration histogram lives in that process only.
"""

from __future__ import annotations

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
