"""The shared off-loop runtime: bounded queue, priority, deadline, cancel, supervision."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime import (
    Channel,
    DeadlinePassed,
    JobCancelled,
    Loader,
    ProcessWorker,
    Ticket,
    Worker,
    WorkerBusy,
    WorkerPool,
    WorkerStalled,
)


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


async def test_a_job_nobody_waits_for_gives_its_place_in_the_queue_back() -> None:
    """An attacker pass filled the text reader's queue with readings it had asked for
    again (each new one cancels the last): the cancelled ones kept their places until the
    thread reached them, and another user's reading was refused as busy."""
    worker = Worker("t", max_pending=2)
    gate, first = await occupy(worker)
    ran: list[str] = []
    waiting = [
        asyncio.ensure_future(worker.submit(lambda n=n: ran.append(n)))  # type: ignore[misc]
        for n in ("old", "other")
    ]
    await asyncio.sleep(0)  # both queued
    assert worker.pending == 2
    waiting[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert worker.pending == 1
    again = asyncio.ensure_future(worker.submit(lambda: ran.append("new")))  # not busy
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, waiting[1], again)
    assert ran == ["other", "new"]
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


# --- ProcessWorker: a real child process per worker -----------------------------------


def serve_test_jobs(channel: Channel) -> None:
    """The child these tests run (imported by name in the spawned process):
    ``("echo", x)`` sends ``x`` back; ``("hang", _)`` never answers (a wedged engine);
    ``("count", n)`` sends 0..n-1, counting each, until told to stop."""
    channel.ready()
    for job_id, (kind, arg) in channel.jobs():
        if kind == "echo":
            channel.send(job_id, arg)
        elif kind == "hang":
            time.sleep(3600)
        else:
            for i in range(arg):
                if channel.stopped(job_id):
                    break
                channel.send(job_id, i)
                channel.count(1)
        channel.done(job_id)


async def run_job(
    worker: ProcessWorker, payload: object, *, priority: int = 0, first: asyncio.Event | None = None
) -> tuple[Ticket, asyncio.Future[tuple[list[object], BaseException | None]]]:
    """Submit ``payload``; the future resolves to (messages, error) on the event loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[list[object], BaseException | None]] = loop.create_future()
    got: list[object] = []

    def on_message(message: object) -> None:
        got.append(message)
        if first is not None:
            loop.call_soon_threadsafe(first.set)

    def on_done(error: BaseException | None) -> None:
        loop.call_soon_threadsafe(done.set_result, (got, error))

    ticket = worker.submit(payload, priority=priority, on_message=on_message, on_done=on_done)
    return ticket, done


async def test_process_worker_fault_a_hung_job_is_killed_and_a_spare_serves_in_order() -> None:
    worker = ProcessWorker("t", "tests.test_runtime:serve_test_jobs", max_pending=2, stall_s=0.5)
    assert await asyncio.to_thread(worker.wait_ready, 60) is None
    hung_pid = worker.pid
    _, hung = await run_job(worker, ("hang", None))
    await asyncio.sleep(0)  # let the dispatcher take it (not synchronisation: order below)
    while worker.pending:
        await asyncio.sleep(0.01)
    order: list[object] = []
    _, late = await run_job(worker, ("echo", "b"), priority=5)
    _, soon = await run_job(worker, ("echo", "a"), priority=1)
    # In the order they finish: callbacks added before either can (the hung job holds the
    # worker for 0.5 s). as_completed on two futures already done yields them in list
    # order, which failed a CI run under load with ['b', 'a'].
    for job in (late, soon):
        job.add_done_callback(lambda f: order.extend(f.result()[0]))
    with pytest.raises(WorkerBusy):
        await run_job(worker, ("echo", "c"))
    started = time.monotonic()
    _, error = await asyncio.wait_for(hung, 10)
    stalled_after = time.monotonic() - started
    assert isinstance(error, WorkerStalled)
    for job in (late, soon):
        _, error = await asyncio.wait_for(job, 10)
        assert error is None
    assert order == ["a", "b"]  # each callback ran before the await on its job returned
    assert worker.restarts == 1 and worker.pid != hung_pid
    assert stalled_after < 3, stalled_after
    worker.close()


async def test_process_worker_stop_reaches_the_running_job_at_once() -> None:
    worker = ProcessWorker("t", "tests.test_runtime:serve_test_jobs", stall_s=5)
    assert await asyncio.to_thread(worker.wait_ready, 60) is None
    first = asyncio.Event()
    ticket, done = await run_job(worker, ("count", 10_000_000), first=first)
    await first.wait()
    worker.stop(ticket)
    messages, error = await asyncio.wait_for(done, 10)
    assert error is None and 0 < len(messages) < 10_000_000
    assert worker.counted >= len(messages)
    stopped = worker.submit(
        ("echo", "x"), on_message=lambda m: None, on_done=lambda e: None, stopped=lambda: True
    )
    assert stopped.is_stopped()
    _, after = await run_job(worker, ("echo", "next"))
    assert (await asyncio.wait_for(after, 10)) == (["next"], None)
    worker.close()


async def test_a_pool_sends_work_to_the_free_worker_and_is_bounded() -> None:
    pool = WorkerPool("pool", size=2, max_pending=1)
    gate, held = await occupy(pool.workers[0])
    # The first worker is busy: the next job goes to the other one and runs at once.
    name = await asyncio.wait_for(pool.submit(lambda: threading.current_thread().name), 5)
    assert name.endswith("pool-1")
    gate2, held2 = await occupy(pool.workers[1])
    waiting = [asyncio.ensure_future(pool.submit(lambda: 1)) for _ in range(2)]
    for _ in range(100):  # until both have queued (one per worker): bounded polling
        if [w.pending for w in pool.workers] == [1, 1]:
            break
        await asyncio.sleep(0.01)
    assert [w.pending for w in pool.workers] == [1, 1]
    with pytest.raises(WorkerBusy):  # every worker busy with one waiting: full
        await pool.submit(lambda: 2)
    gate.set()
    gate2.set()
    assert await asyncio.gather(held, held2, *waiting) == [True, True, 1, 1]
    pool.close()
