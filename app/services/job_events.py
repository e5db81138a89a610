"""What happens when a merge job ends (issue 9): its progress becomes final, and its webhook is sent.

final_progress(progress, status)   succeeded → stage "done", eta_s 0; failed / cancelled → stage = status,
                                   eta_s None (no running stage or ETA is ever shown on a finished job)
notify_finished(ctx, job_id)       deliver the job's completion webhook in the background (services.webhooks)
"""

from __future__ import annotations

from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


def final_progress(progress: dict[str, Any] | None, status: str) -> dict[str, Any] | None:
    """The progress to show for a job in `status`; unchanged while the job is queued or running."""
    if status not in TERMINAL:
        return progress
    out = dict(progress or {})
    if status == "succeeded":
        out.update(stage="done", eta_s=0.0)
    else:
        out.update(stage=status, eta_s=None)
    return out


def notify_finished(ctx: Any, job_id: str) -> None:
    """Send the job's webhook (if it has a URL); never raises: a failed delivery is logged and recorded."""
    import logging

    from app.services.webhooks import notify_finished as send

    try:
        send(ctx, job_id)
    except Exception:
        logging.getLogger(__name__).warning("webhook of job %s could not be started", job_id, exc_info=True)
