"""Tasks run on a few threads: NumPy and TensorFlow let go of the GIL in their long calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


def run_tasks(tasks: Sequence[Callable[[], None]], workers: int) -> None:
    """Run every task, started in order, ``workers`` at a time (all in this thread when ``workers`` is 1).

    The first error is raised once the tasks already running have ended; tasks not started by
    then are not run.
    """
    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
