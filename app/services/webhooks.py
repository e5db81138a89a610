"""Job-completion webhooks: when a merge job with a `webhook_url` ends, POST a JSON summary to that URL.

Body (JSON, UTF-8): {"event": "merge_job.finished", "job_id", "status", "model_id", "error", "comparison",
"comparison_skipped", "finished_at"}. Headers:

    X-STEPH-Event:      merge_job.finished
    X-STEPH-Delivery:   a fresh id per job (the same on every retry of that job's delivery)
    X-STEPH-Signature:  sha256=<hex HMAC-SHA256(settings.webhook_secret, "<timestamp>." + body)>
    X-STEPH-Timestamp:  unix seconds the signature covers (reject old ones to stop replays)

Only public addresses are reached, plus the networks listed in STEPH_WEBHOOK_ALLOWED_NETWORKS (checked when the
job is submitted and again before each delivery). The signature header is sent only when STEPH_WEBHOOK_SECRET is
set. A delivery is retried on connection errors,
timeouts, 429 and 5xx, `webhook_max_attempts` times in all, waiting webhook_backoff_s · 2^(n−1) between tries;
4xx other than 429 is final. The outcome is stored on the job (`webhook`: {url, delivered, attempts,
last_status, last_error}). Delivery runs on a daemon thread so a slow receiver never holds the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlparse

from app.services.errors import UnprocessableInput

log = logging.getLogger(__name__)
EVENT = "merge_job.finished"


def allowed_networks(settings: Any) -> list[IPv4Network | IPv6Network]:
    """settings.webhook_allowed_networks parsed (parse_networks)."""
    return parse_networks(str(getattr(settings, "webhook_allowed_networks", "") or ""))


def parse_networks(text: str) -> list[IPv4Network | IPv6Network]:
    """Comma-separated CIDRs → networks; ValueError names a bad entry."""
    out = []
    for part in text.split(","):
        if part.strip():
            try:
                out.append(ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"STEPH_WEBHOOK_ALLOWED_NETWORKS: {part.strip()!r} is not a network; give CIDRs such as "
                    "10.20.0.0/16,192.168.5.7/32"
                ) from None
    return out


def refused_address(host: str, settings: Any) -> str | None:
    """The first address `host` resolves to that a webhook may not reach (not public and not in
    STEPH_WEBHOOK_ALLOWED_NETWORKS), or None. A host that does not resolve now is not refused here: its
    delivery fails with a connection error instead. (SSRF: a merge job must not make the server POST to its
    own loopback, the cloud metadata address or the internal network unless the operator allowed it.)"""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    allowed = allowed_networks(settings)
    for info in infos:
        address = ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global and not any(address in net for net in allowed):
            return str(address)
    return None


def _refusal(url: str, host: str, address: str) -> str:
    return (
        f"webhook_url {url!r}: {host} is {address}, a non-public address (loopback, private, link-local or "
        "reserved); webhooks go to public addresses unless the operator lists the network in "
        "STEPH_WEBHOOK_ALLOWED_NETWORKS (e.g. 10.20.0.0/16)"
    )


def check_webhook_url(url: str | None, settings: Any = None) -> str | None:
    """An http(s) URL with a host, or None; UnprocessableInput otherwise. With `settings`, also refused when
    the host resolves to an address a webhook may not reach (refused_address)."""
    if url is None or not url.strip():
        return None
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username or parsed.password:
        raise UnprocessableInput(
            f"webhook_url {url!r} must be an http:// or https:// URL with a host and without credentials"
        )
    if settings is not None and (address := refused_address(parsed.hostname, settings)) is not None:
        raise UnprocessableInput(_refusal(url.strip(), parsed.hostname, address))
    return url.strip()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body): what X-STEPH-Signature carries."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def payload(job: Any) -> dict[str, Any]:
    """The JSON body for a finished job row."""
    return {
        "event": EVENT,
        "job_id": job.id,
        "status": job.status,
        "model_id": job.model_id,
        "error": job.error,
        "comparison": job.comparison,
        "comparison_skipped": job.comparison_skipped,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def deliver(
    url: str, body: dict[str, Any], *, settings: Any, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """POST `body` to `url` with retries and back-off; returns the delivery record (never raises)."""
    import httpx

    data = json.dumps(body, default=str, sort_keys=True).encode("utf-8")
    delivery = uuid.uuid4().hex
    attempts = int(getattr(settings, "webhook_max_attempts", 5))
    backoff = float(getattr(settings, "webhook_backoff_s", 1.0))
    record: dict[str, Any] = {"url": url, "delivered": False, "attempts": 0, "last_status": None, "last_error": None}
    host = urlparse(url).hostname or ""
    if (address := refused_address(host, settings)) is not None:  # checked again: DNS may have changed
        record["last_error"] = "not sent: " + _refusal(url, host, address)
        return record
    for n in range(1, attempts + 1):
        record["attempts"] = n
        headers = _headers(settings, delivery, data)
        try:
            r = httpx.post(url, content=data, headers=headers, timeout=float(settings.webhook_timeout_s))
            record["last_status"], record["last_error"] = r.status_code, None
            if r.status_code < 300:
                record["delivered"] = True
                return record
            if r.status_code < 500 and r.status_code != 429:
                record["last_error"] = f"the receiver answered {r.status_code}; not retried"
                return record
            record["last_error"] = f"the receiver answered {r.status_code}"
        except httpx.HTTPError as exc:
            record["last_error"] = f"{type(exc).__name__}: {exc}"
        if n < attempts:
            sleep(backoff * 2 ** (n - 1))
    return record


def _headers(settings: Any, delivery: str, data: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-STEPH-Event": EVENT, "X-STEPH-Delivery": delivery,
               "X-STEPH-Timestamp": ts, "User-Agent": "steph-service-webhook"}  # fmt: skip
    secret = getattr(settings, "webhook_secret", None)
    if secret:
        headers["X-STEPH-Signature"] = sign(secret, ts, data)
    return headers


def notify_finished(ctx: Any, job_id: str, *, background: bool = True) -> threading.Thread | None:
    """Deliver the webhook of job `job_id` if it has one and is finished; record the outcome on the job."""
    from app.db.models import MergeJob

    with ctx.session() as s:
        job = s.get(MergeJob, job_id)
        if job is None or not job.webhook_url or job.status not in ("succeeded", "failed", "cancelled"):
            return None
        url, body = job.webhook_url, payload(job)

    def run() -> None:
        record = deliver(url, body, settings=ctx.settings)
        if not record["delivered"]:
            log.warning("webhook of job %s not delivered after %d attempt(s): %s", job_id, record["attempts"],
                        record["last_error"])  # fmt: skip
        try:
            with ctx.session() as s:
                row = s.get(MergeJob, job_id)
                if row is not None:
                    row.webhook = record
        except Exception:  # the context may be closing; the log line above is the record then
            log.warning("could not record the webhook outcome of job %s", job_id, exc_info=True)

    if not background:
        run()
        return None
    thread = threading.Thread(target=run, name=f"webhook-{job_id}", daemon=True)
    thread.start()
    return thread
