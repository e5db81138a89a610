"""Prometheus metrics: per-app request metrics, jobs by status (computed on scrape), job durations
(app.observability), served by GET /metrics (any valid key; give the scraper a predict-scope key)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app import observability
from app.api.deps import PredictKey
from app.db import repositories as repo

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


class JobsByStatus(Collector):
    """steph_merge_jobs{status=…}: the number of merge jobs in each status, read from the ledger on scrape."""

    def __init__(self, get_ctx: Callable[[], Any]) -> None:
        self.get_ctx = get_ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("steph_merge_jobs", "Merge jobs by status", labels=["status"])
        ctx = self.get_ctx()
        if ctx is not None:
            try:
                with ctx.session() as s:
                    counts = repo.jobs_by_status(s)
                for status, n in counts.items():
                    family.add_metric([status], n)
            except Exception as exc:  # a scrape must not fail because the database blinked
                log.warning("jobs-by-status gauge unavailable: %s", exc)
        yield family


class AppMetrics:
    """The metric objects of one app, on their own registry (several apps can live in one process)."""

    def __init__(self, get_ctx: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "steph_http_requests",
            "HTTP requests by route template and status",
            labelnames=labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "steph_http_request_duration_seconds",
            "HTTP request latency",
            labelnames=labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(JobsByStatus(get_ctx))

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(observability.REGISTRY)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
)  # fmt: skip
def metrics(request: Request, _key: PredictKey) -> Response:
    app_metrics: AppMetrics = request.app.state.metrics
    return Response(app_metrics.render(), media_type=CONTENT_TYPE_LATEST)
