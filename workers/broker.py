"""What the Redis broker still holds for the merge queue: the job ids of messages waiting in the queue's lists
or delivered to a worker and not yet acknowledged (kombu's `unacked` hash, which also holds a worker's
prefetched and countdown messages). The reaper re-sends a queued job only when its id is not among them."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from kombu.transport.redis import PRIORITY_STEPS, Channel

_JOB_ID = re.compile(rb"job_[0-9a-f]{32}")


def queue_keys(queue_name: str) -> list[str]:
    """The Redis lists of `queue_name`, one per kombu priority step (priority 0 is the plain name)."""
    return [queue_name] + [f"{queue_name}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]


def held_job_ids(client: Any, queue_name: str, task_name: str) -> set[str]:
    """Job ids of `task_name` messages in `queue_name`'s lists and in the unacked hash (one MULTI snapshot)."""
    pipe = client.pipeline(transaction=True)
    for key in queue_keys(queue_name):
        pipe.lrange(key, 0, -1)
    pipe.hvals(Channel.unacked_key)
    *lists, unacked = pipe.execute()
    ids: set[str] = set()
    for raw in (item for items in lists for item in items):
        ids.update(_ids_in(raw, task_name, unacked=False))
    for raw in unacked:
        ids.update(_ids_in(raw, task_name, unacked=True))
    return ids


def _ids_in(raw: bytes | str, task_name: str, *, unacked: bool) -> set[str]:
    """The job id a stored message carries (Celery protocol 2: body = [args, kwargs, embed], args = [job_id]).

    A message that does not parse counts by every job id its bytes contain (keeping a job is safe; re-sending
    one that is still held would only cost a duplicate delivery)."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        payload = json.loads(data)
        if unacked:
            payload = payload[0]  # [message, exchange, routing_key]
        if (payload.get("headers") or {}).get("task") != task_name:
            return set()
        body = payload["body"]
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return {str(args[0])}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {m.decode() for m in _JOB_ID.findall(data)}
