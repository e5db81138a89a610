"""Worker health check for containers: `python -m workers.health [--name celery] [--timeout 5]`.

Healthy (exit 0) when this host's worker `<name>@<hostname>` answers a Celery ping: it is connected to the
broker and its consumer loop runs. A solo-pool worker cannot answer while it runs a job, so a worker that
does not answer is still healthy when a job it claimed (MergeJob.worker = "<name>@<hostname>:<pid>:<thread>")
is running with a heartbeat younger than STEPH_JOB_LEASE_S; another worker's job on the same host does not
count. Otherwise exit 1, with the reason on stderr.
Redis being up is not enough: a worker that lost its broker connection or hangs fails this check.
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import UTC, datetime
from typing import Any


def answers_ping(settings: Any, destination: str, timeout: float) -> bool:
    """Whether the Celery worker named `destination` (e.g. celery@host) answers a broadcast ping."""
    from workers.celery_app import make_celery

    try:
        replies = make_celery(settings).control.ping(destination=[destination], timeout=timeout) or []
    except Exception:  # noqa: BLE001 (broker down: not healthy)
        return False
    return any(destination in reply for reply in replies)


def busy_job(settings: Any, node: str) -> str | None:
    """The id of a running job claimed by the worker `node` (its Celery node name, e.g. celery@host) whose
    heartbeat is fresher than the lease, else None."""
    from sqlalchemy import select

    from app.db.models import MergeJob
    from app.db.session import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(MergeJob.id, MergeJob.heartbeat_at).where(
                    MergeJob.status == "running", MergeJob.worker.startswith(f"{node}:", autoescape=True)
                )
            ).all()
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    for job_id, beat in rows:
        if beat is not None:
            beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
            if (now - beat).total_seconds() < float(settings.job_lease_s):
                return str(job_id)
    return None


def check(settings: Any, *, name: str = "celery", host: str | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, reason) for the worker `name@host` (host: this machine's hostname)."""
    host = host or socket.gethostname()
    destination = f"{name}@{host}"
    if answers_ping(settings, destination, timeout):
        return True, f"{destination} answered a Celery ping"
    try:
        job = busy_job(settings, destination)
    except Exception as exc:  # noqa: BLE001 (database down)
        return False, f"{destination} did not answer a Celery ping and the database is unreachable ({exc})"
    if job is not None:
        return True, f"{destination} is busy with job {job} (fresh heartbeat)"
    return False, f"{destination} did not answer a Celery ping within {timeout:g} s and runs no job"


def main(argv: list[str] | None = None) -> int:
    from app.settings import get_settings

    p = argparse.ArgumentParser(prog="python -m workers.health", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="celery", help="the worker's node name before '@' (default celery)")
    p.add_argument("--host", default=None, help="the worker's host name (default: this machine's)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the ping reply")
    args = p.parse_args(argv)
    ok, reason = check(get_settings(), name=args.name, host=args.host, timeout=args.timeout)
    print(reason, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
