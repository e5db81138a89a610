"""Admission control for model forwards: at most `slots` run at once per process, at most `queue` wait.

    a request   → a free slot                → runs now
                → all slots busy, queue < max → waits (asynchronously: no thread is held) in FIFO order
                → all slots busy, queue full  → ServerBusy (HTTP 503 with Retry-After)

Retry-After = ceil(mean service time · (waiting + 1) / slots), at least 1 s (the mean is an exponential moving
average of the recent forwards' wall time). A finished request hands its slot straight to the oldest waiter.
Thread-safe and independent of the event loop (waiters from any loop are woken with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.services.errors import ServiceUnavailable
from app.services.model_cache import resolve_predict_device


class ServerBusy(ServiceUnavailable):
    """Every forward slot is busy and the wait queue is full (503); `retry_after_s` goes in Retry-After."""

    code = "server_busy"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # app.api.errors sends it as the Retry-After header


def default_slots(cpu_count: int | None = None, device_type: str = "cpu") -> int:
    """Concurrent forwards when the setting is 0 (auto). On the CPU one forward already uses every core (torch
    intra-op threads): 1 up to 8 cores, else one per 8 cores, at most 4. On a GPU 2: while one forward runs on
    the device, the next request's bag is read and cast on the host."""
    if device_type == "cuda":
        return 2
    cores = cpu_count or os.cpu_count() or 1
    return 1 if cores <= 8 else min(4, cores // 8)


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Admission:
    """`async with admission.slot(): …` runs the body in one of `slots` slots, or raises ServerBusy."""

    def __init__(self, slots: int, queue: int, *, initial_service_s: float = 1.0) -> None:
        if slots < 1 or queue < 0:
            raise ValueError(f"slots must be ≥ 1 and queue ≥ 0; got slots={slots}, queue={queue}")
        self.slots, self.queue = slots, queue
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[_Waiter] = deque()
        self._service_s = initial_service_s
        self.rejected = 0  # requests answered 503 (for tests and metrics)
        self.peak_running = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds after which a slot is likely free: mean service time · (waiting + 1) / slots, ≥ 1."""
        return max(1, math.ceil(self._service_s * (len(self._waiters) + 1) / self.slots))

    def _enter(self) -> asyncio.Future[None] | None:
        """Take a slot now (None), or join the queue (a future resolved when a slot is handed over)."""
        with self._lock:
            if self._running < self.slots and not self._waiters:
                self._running += 1
                self.peak_running = max(self.peak_running, self._running)
                return None
            if len(self._waiters) >= self.queue:
                self.rejected += 1
                raise ServerBusy(
                    f"the server is busy: {self.slots} prediction(s) running and {len(self._waiters)} waiting "
                    f"(STEPH_PREDICT_CONCURRENCY, STEPH_PREDICT_QUEUE); retry after the Retry-After delay",
                    retry_after_s=self.retry_after(),
                )
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
            return future

    def release(self) -> None:
        """Give the slot to the oldest waiter, or free it."""
        with self._lock:
            if self._waiters:
                loop, future = self._waiters.popleft()
                loop.call_soon_threadsafe(self._hand_over, future)
            else:
                self._running -= 1

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():  # the waiter gave up after it was picked: pass the slot on
            self.release()
        else:
            future.set_result(None)

    async def _wait(self, future: asyncio.Future[None]) -> None:
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                waiting = any(f is future for _, f in self._waiters)
                if waiting:
                    self._waiters = deque(w for w in self._waiters if w[1] is not future)
            if not waiting and future.done() and not future.cancelled():
                self.release()  # the slot arrived together with the cancellation
            raise

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; ServerBusy when every slot is busy and the queue is full."""
        future = self._enter()
        if future is not None:
            await self._wait(future)
        start = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - start
            self._service_s = 0.8 * self._service_s + 0.2 * elapsed
            self.release()


_ADMISSION_LOCK = threading.Lock()


def get_admission(ctx: Any) -> Admission:
    """The context's Admission (ctx.extras["admission"]), sized by settings.predict_concurrency (0 = auto,
    see default_slots: by the prediction device) and settings.predict_queue."""
    with _ADMISSION_LOCK:
        found = ctx.extras.get("admission")
        if found is None:
            settings = ctx.settings
            slots = int(getattr(settings, "predict_concurrency", 0)) or default_slots(
                device_type=resolve_predict_device(settings).type
            )
            queue = int(getattr(settings, "predict_queue", 16))
            found = ctx.extras["admission"] = Admission(slots, queue)
        return found
