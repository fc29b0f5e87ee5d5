"""Restart policies at work: after an exit, a container whose policy says so is started
again once its back-off has passed (cnm.restart_policy has the rules).

One `Restarts` per ContainerService. Per container it keeps, in memory, what moby's
restart manager keeps: the back-off, whether a stop cancelled restarts until the next
start by a user, and the pending restart (a timer). The record keeps what must outlive
the daemon: the policy, the restart count and whether a user stopped it (Docker's
HasBeenManuallyStopped, which `unless-stopped` reads after a daemon restart).

    restarts = Restarts(start=service.start_by_policy)
    restarts.user_started(cid)                  # a user's start: a fresh back-off
    restarts.cancel(cid)                        # docker stop: no restart after this exit
    restarts.after_exit(ct, state)              # True if a restart is scheduled
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cnm.restart_policy import RestartPolicy, decide, run_length

log = logging.getLogger(__name__)


class Restarts:
    def __init__(self, start: Callable[[str], None], changed: Callable[[str], None] | None = None) -> None:
        """`start(cid)`: the policy's start. `changed(cid)`: told (outside this object's
        lock) when a container stops being "restarting" other than by a change the
        container service records anyway: a stop calling the restart off, a failed start."""
        self._start = start
        self._changed = changed or (lambda cid: None)
        self._lock = threading.Lock()
        self._delay: dict[str, float] = {}  # the back-off after the last restart
        self._cancelled: set[str] = set()
        self._pending: dict[str, threading.Timer] = {}
        self._closed = False
        self._open = threading.Event()  # cleared by hold(): no restart starts
        self._open.set()

    def hold(self) -> None:
        """Until release(): a restart whose back-off has passed waits (it stays
        "restarting"). The daemon's start-up holds them while it adopts, gives back
        addresses nothing holds and sweeps what no record owns: a start in between
        would race those (its new namespace swept, its address given back)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def user_started(self, cid: str) -> None:
        """A start by a user (not by the policy): the back-off starts over, a stop's
        cancellation ends, a pending restart is dropped (the user's start did it)."""
        with self._lock:
            self._delay.pop(cid, None)
            self._cancelled.discard(cid)
            self._drop(cid)

    def cancel(self, cid: str) -> bool:
        """No restart after the container's current (or last) run, until a user starts
        it (moby's ExitOnNext: docker stop, or a kill with the stop signal). True if a
        restart was pending."""
        with self._lock:
            self._cancelled.add(cid)
            dropped = self._drop(cid)
        if dropped:
            self._changed(cid)
        return dropped

    def cancelled(self, cid: str) -> bool:
        with self._lock:
            return cid in self._cancelled

    def pending(self, cid: str) -> bool:
        """A restart is waiting out its back-off (Docker's status "restarting")."""
        with self._lock:
            return cid in self._pending

    def forget(self, cid: str) -> None:
        """The container is gone."""
        with self._lock:
            self._drop(cid)
            self._delay.pop(cid, None)
            self._cancelled.discard(cid)

    def after_exit(self, ct: Any, state: Any, fresh: bool = False) -> bool:
        """The container `ct` (its record) exited with `state` (the runtime's): schedule
        its restart if its policy says so, and count it in `ct.restart_count` (the
        caller saves the record). `fresh`: after a daemon restart (a new back-off, and
        no stop's cancellation survives it: Docker's rule)."""
        policy = RestartPolicy.from_record(ct.restart_policy)
        if policy.is_none:
            return False
        code = state.exit_code if state is not None and state.exit_code is not None else -1
        ran_for = run_length(state.started_at, state.finished_at) if state is not None else None
        cid = ct.id
        with self._lock:
            if self._closed or (cid in self._cancelled and not fresh):
                return False
            if fresh:
                self._delay.pop(cid, None)
                self._cancelled.discard(cid)
            d = decide(policy, code, ct.manually_stopped, ran_for, ct.restart_count, self._delay.get(cid, 0.0))
            self._delay[cid] = d.delay
            if not d.restart:
                return False
            self._drop(cid)
            timer = threading.Timer(d.delay, self._fire, (cid,))
            timer.daemon = True
            self._pending[cid] = timer
            timer.start()
        ct.restart_count += 1
        log.info(
            "container %s exited (%s): restart %d in %.1f s (policy %s)",
            ct.name,
            code,
            ct.restart_count,
            d.delay,
            policy.name,
        )
        return True

    def close(self) -> None:
        """The daemon is stopping: no more restarts."""
        with self._lock:
            self._closed = True
            for cid in list(self._pending):
                self._drop(cid)
        self._open.set()  # timers waiting on a hold end (closed)

    def _drop(self, cid: str) -> bool:
        timer = self._pending.pop(cid, None)
        if timer is not None:
            timer.cancel()
        return timer is not None

    def _fire(self, cid: str) -> None:
        self._open.wait()
        with self._lock:
            if self._closed or self._pending.get(cid) is not threading.current_thread():
                return  # cancelled, or replaced, meanwhile
        # Still pending while it starts: listed as "restarting" until it runs, as Docker's
        # (`docker ps` and compose's stop would otherwise miss it in between).
        try:
            self._start(cid)
        except Exception as exc:  # the container stays exited (Docker logs it, too)
            log.error("restarting container %s by its restart policy: %s", cid[:12], exc)
        finally:
            with self._lock:
                ours = self._pending.get(cid) is threading.current_thread()
                if ours:
                    del self._pending[cid]
            if ours:
                self._changed(cid)
