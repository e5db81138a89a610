"""The embedded in-process job runner: a daemon thread that runs merge jobs one at a time.

Used by the embedded default (`steph serve` on SQLite, no Redis). The SQL table stays the ledger: the
queue only carries job ids; `run_merge_job` is safe to run twice, so a duplicate id costs nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class EmbeddedQueue:
    """In-process `JobQueue`: `enqueue(job_id)` puts the id on a queue.Queue read by daemon threads.

    get_ctx: returns the ServiceContext handed to `run` (called lazily, so the context may hold this queue).
    run: the job function, `run(ctx=..., job_id=...)` (default: app.services.merge_jobs.run_merge_job).
    """

    def __init__(
        self,
        get_ctx: Callable[[], Any],
        *,
        run: Callable[..., object] | None = None,
        workers: int = 1,
        name: str = "steph-embedded",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._get_ctx = get_ctx
        self._run = run
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._idle = threading.Condition()
        self._busy = 0
        self._running: set[str] = set()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def enqueue(self, job_id: str) -> None:
        if self._closed:
            raise RuntimeError("the embedded job queue is closed; restart the service to run jobs")
        with self._idle:
            self._busy += 1
        self._queue.put(str(job_id))

    def ping(self) -> bool:
        return not self._closed and all(t.is_alive() for t in self._threads)

    def known_job_ids(self) -> set[str]:
        """Ids waiting in this process's queue or running in its threads (the job reaper's question)."""
        with self._queue.mutex:
            waiting = {item for item in self._queue.queue if isinstance(item, str)}
        with self._idle:
            return waiting | self._running

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued job has been processed; True when idle (for tests and shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting jobs; a running job stops at its next training step and goes back to `queued`
        without spending an attempt (app.services.job_runner.request_shutdown); queued ids stay in the ledger,
        and the next start runs them."""
        if self._closed:
            return
        self._closed = True
        with self._idle:
            running = bool(self._running)
        if running:  # tell the running job the service is stopping (it is handed back, not waited for)
            from app.services.job_runner import request_shutdown

            try:
                request_shutdown(self._get_ctx())
            except Exception:  # noqa: BLE001 - the context is going away; the job then finishes as before
                log.warning("could not signal the running job to stop", exc_info=True)
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def _job_fn(self) -> Callable[..., object]:
        if self._run is None:
            from app.services.merge_jobs import run_merge_job

            self._run = run_merge_job
        return self._run

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            with self._idle:
                self._running.add(item)
            try:
                if not self._closed:
                    self._job_fn()(ctx=self._get_ctx(), job_id=item)
            except Exception:  # a job failure is recorded on the job row; the runner must keep going
                log.exception("merge job %s raised in the embedded runner", item)
            finally:
                with self._idle:
                    self._running.discard(item)
                    self._busy -= 1
                    self._idle.notify_all()
