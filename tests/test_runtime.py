"""The shared off-loop runtime: bounded queue, priority, deadline, cancel, supervision."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime import DeadlinePassed, JobCancelled, Loader, Worker, WorkerBusy, WorkerStalled


async def occupy(worker: Worker) -> tuple[threading.Event, asyncio.Future[bool]]:
    """Hold the worker's thread until the returned gate is set."""
    gate, running = threading.Event(), threading.Event()

    def hold() -> bool:
        running.set()
        return gate.wait()

    job = asyncio.ensure_future(worker.submit(hold))
    await asyncio.to_thread(running.wait)
    return gate, job


async def test_lower_priority_runs_first_and_the_queue_is_bounded() -> None:
    worker = Worker("t", max_pending=3)
    gate, first = await occupy(worker)
    order: list[str] = []

    def record(name: str) -> None:
        order.append(name)

    jobs = [
        asyncio.ensure_future(worker.submit(lambda n=n: record(n), priority=p))  # type: ignore[misc]
        for n, p in (("scene", 3), ("hazard", 0), ("answer", 1))
    ]
    await asyncio.sleep(0)
    with pytest.raises(WorkerBusy):
        await worker.submit(lambda: None)
    gate.set()
    await asyncio.gather(first, *jobs)
    assert order == ["hazard", "answer", "scene"]
    worker.close()


async def test_deadline_and_cancel_before_start_skip_the_job() -> None:
    worker = Worker("t")
    gate, first = await occupy(worker)
    ran: list[str] = []
    # Its deadline passes while it waits behind the running job.
    late = asyncio.ensure_future(
        worker.submit(lambda: ran.append("late"), deadline=time.monotonic())
    )
    cancel = threading.Event()
    cancelled = asyncio.ensure_future(worker.submit(lambda: ran.append("x"), cancel=cancel))
    cancel.set()
    await asyncio.sleep(0)  # both are queued
    gate.set()
    await first
    with pytest.raises(DeadlinePassed):
        await late
    with pytest.raises(JobCancelled):
        await cancelled
    assert ran == []
    worker.close()


async def test_a_stalled_job_is_abandoned_and_the_next_one_runs() -> None:
    worker = Worker("t", stall_s=0.2)
    wedge = threading.Event()
    started = time.monotonic()
    with pytest.raises(WorkerStalled):
        await worker.submit(wedge.wait)  # a model call that never returns
    assert time.monotonic() - started < 2
    assert await worker.submit(lambda: 42) == 42  # a fresh thread serves the next caller
    assert worker.restarts == 1
    wedge.set()
    worker.close()


async def test_an_exception_reaches_the_caller_only() -> None:
    worker = Worker("t")

    def oom() -> None:
        raise MemoryError("CUDA out of memory (simulated)")

    with pytest.raises(MemoryError):
        await worker.submit(oom)
    assert await worker.submit(lambda: "next") == "next"
    worker.close()


async def test_loader_reports_ready_and_failed_to_listeners() -> None:
    seen: list[str] = []

    def broken() -> None:
        raise RuntimeError("no weights")

    ok, bad = Loader("ok", lambda: None), Loader("bad", broken)
    for loader in (ok, bad):
        loader.on_change(lambda ld: seen.append(f"{ld.name}:{ld.status}"))
    await asyncio.gather(ok.load(), bad.load())
    assert ok.ready and bad.status == "failed" and "no weights" in bad.reason()
    assert sorted(seen) == ["bad:failed", "bad:loading", "ok:loading", "ok:ready"]
