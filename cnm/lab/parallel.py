"""Run a phase's steps on a few threads: steps of one chain in order (a host's
containers), chains side by side; the first failure stops the rest from starting.

Threads, not processes: each step mostly waits on a subprocess or a daemon, and the
machine has few cores (labs default to 2 × CPUs + 2 workers: enough to keep the cores
busy while some steps wait, few enough not to thrash them)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


def default_workers() -> int:
    """CNM_LAB_WORKERS, else 2 × CPUs + 2."""
    try:
        return max(1, int(os.environ["CNM_LAB_WORKERS"]))
    except (KeyError, ValueError):
        return 2 * (os.cpu_count() or 1) + 2


class StepFailed(Exception, Generic[T]):
    """The first step that failed, and why."""

    def __init__(self, step: T, error: BaseException) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


def run_chains(
    steps: Sequence[T],
    fn: Callable[[T], None],
    chain_of: Callable[[T], Hashable],
    workers: int,
    on_done: Callable[[T], None] | None = None,
) -> None:
    """fn(step) for every step; raises StepFailed for the first failure (in time)
    after the steps already running have finished. `on_done` is called (under a
    lock) after each step that succeeded."""
    chains: dict[Hashable, list[T]] = {}
    for s in steps:
        chains.setdefault(chain_of(s), []).append(s)
    failed: list[StepFailed[T]] = []
    lock = threading.Lock()

    def run(chain: list[T]) -> None:
        for step in chain:
            if failed:
                return
            try:
                fn(step)
            except BaseException as exc:
                with lock:
                    failed.append(StepFailed(step, exc))
                return
            if on_done is not None:
                with lock:
                    on_done(step)

    if workers <= 1 or len(chains) <= 1:
        for chain in chains.values():
            run(chain)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(chains)), thread_name_prefix="lab") as pool:
            list(pool.map(run, chains.values()))
    if failed:
        raise failed[0]
