"""`inference.threads.run_tasks`: every task run, in order of start, the first error raised, the rest not started."""

from __future__ import annotations

import threading

import pytest

from inference.threads import run_tasks


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_task_runs_once(workers: int) -> None:
    started: list[int] = []
    lock = threading.Lock()

    def task(index: int):
        def run() -> None:
            with lock:
                started.append(index)

        return run

    run_tasks([task(i) for i in range(12)], workers)
    assert sorted(started) == list(range(12))
    if workers == 1:  # in the calling thread: one after the other, in order
        assert started == list(range(12))


def test_one_worker_runs_in_the_calling_thread() -> None:
    threads: set[int] = set()
    run_tasks([lambda: threads.add(threading.get_ident()) for _ in range(3)], 1)
    assert threads == {threading.get_ident()}


def test_several_workers_run_tasks_at_the_same_time() -> None:
    barrier = threading.Barrier(2, timeout=5)  # breaks (BrokenBarrierError) unless two tasks wait on it at once
    run_tasks([barrier.wait, barrier.wait], 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_first_error_is_raised_and_tasks_not_started_are_not_run(workers: int) -> None:
    ran: list[int] = []
    gate = threading.Event()  # holds every task a worker starts, until the error has reached run_tasks

    def failing() -> None:
        raise ValueError("batch 0 failed")

    def waiting(index: int):
        def run() -> None:
            gate.wait(timeout=10)
            ran.append(index)

        return run

    if workers > 1:
        threading.Timer(1.0, gate.set).start()
    else:
        gate.set()
    with pytest.raises(ValueError, match="batch 0 failed"):
        run_tasks([failing, *(waiting(i) for i in range(1, 20))], workers)
    # One worker: nothing after the failing task. Two: at most the task each worker had started.
    assert (ran == []) if workers == 1 else set(ran) <= {1, 2}
