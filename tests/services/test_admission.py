"""Admission control of model forwards (app.services.admission): slots, FIFO wait queue, 503 past it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.services.admission import Admission, ServerBusy, default_slots, get_admission


def test_slots_queue_and_busy_answer_in_order():
    async def scenario() -> tuple[list[str], int, int]:
        adm = Admission(slots=2, queue=2)
        log: list[str] = []
        gate = asyncio.Event()

        async def job(name: str) -> None:
            async with adm.slot():
                log.append(f"start {name}")
                await gate.wait()
                log.append(f"end {name}")

        tasks = [asyncio.create_task(job(n)) for n in "abcd"]
        await asyncio.sleep(0.01)
        assert (adm.running, adm.waiting) == (2, 2)
        with pytest.raises(ServerBusy) as busy:
            async with adm.slot():
                pass
        gate.set()
        await asyncio.gather(*tasks)
        return log, busy.value.retry_after_s, adm.peak_running

    log, retry_after, peak = asyncio.run(scenario())
    assert log[:2] == ["start a", "start b"] and peak == 2
    assert log.index("start c") > log.index("end a") and log.index("start d") > log.index("start c")
    assert retry_after >= 1


def test_a_cancelled_waiter_leaves_the_queue_and_the_slot_is_not_lost():
    async def scenario() -> tuple[int, int, int]:
        adm = Admission(slots=1, queue=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with adm.slot():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold())
        await asyncio.sleep(0.01)
        assert adm.waiting == 1
        waiter.cancel()
        await asyncio.sleep(0.01)
        waiting_after_cancel = adm.waiting
        release.set()
        await holder
        async with adm.slot():  # the slot came back: the next request runs at once
            running_inside = adm.running
        return waiting_after_cancel, running_inside, adm.running

    assert asyncio.run(scenario()) == (0, 1, 0)


def test_retry_after_grows_with_the_queue_and_the_service_time():
    adm = Admission(slots=2, queue=10, initial_service_s=3.0)
    assert adm.retry_after() == 2  # ceil(3 · 1 / 2)
    with pytest.raises(ValueError, match="slots must be ≥ 1"):
        Admission(slots=0, queue=1)


def test_defaults_follow_the_cpu_and_the_settings():
    assert default_slots(2) == 1 and default_slots(8) == 1 and default_slots(32) == 4 and default_slots(16) == 2
    assert default_slots(2, device_type="cuda") == 2  # a GPU: the next bag is read while one forward runs
    ctx = SimpleNamespace(settings=SimpleNamespace(predict_concurrency=3, predict_queue=5), extras={})
    adm = get_admission(ctx)
    assert (adm.slots, adm.queue) == (3, 5) and get_admission(ctx) is adm
    auto = get_admission(SimpleNamespace(settings=SimpleNamespace(predict_concurrency=0, predict_queue=0), extras={}))
    assert auto.slots == default_slots() and auto.queue == 0
