"""A container's end, on the runtime's side: waited for, signalled, stopped (SIGTERM, then
SIGKILL after the timeout), removed with its directory, mounts and cgroups.

A mixin of cnm.runtime.runtime.Runtime (kept apart: the runtime is long enough).
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import TYPE_CHECKING

from cnm.errors import Conflict, InternalError, Unavailable
from cnm.runtime import cgroups as cg
from cnm.runtime import files, teardown
from cnm.runtime.state import (
    EXITED,
    RUNNING,
    ContainerState,
    read_dir,
    supervisor_alive,
    supervisor_ident,
)


class RuntimeStop:
    boot_id: str
    cgroups: cg.Cgroups

    if TYPE_CHECKING:  # Runtime's own

        def _dir(self, cid: str) -> str: ...
        def exit_fd(self, cid: str) -> int | None: ...
        def state(self, cid: str) -> ContainerState: ...

    def wait(self, cid: str, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code. Unavailable on timeout."""
        fd = self.exit_fd(cid)
        if fd is not None:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
                while True:
                    # poll() takes at most INT_MAX milliseconds (~24 days): wait in slices.
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if poller.poll(None if left is None else min(int(left * 1000), 2**31 - 1)):
                        break
                    if left is not None and left * 1000 < 2**31 - 1:
                        raise Unavailable(f"timed out after {timeout}s waiting for container {cid} to exit")
            finally:
                os.close(fd)
        st = self.state(cid)
        if st.status != EXITED or st.exit_code is None:
            raise Conflict(f"container {cid} was never started")
        return st.exit_code

    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the container's PID 1. Note: PID 1 of a PID namespace ignores
        signals it has no handler for, except SIGKILL. Conflict if it is not running."""
        st = self.state(cid)
        if st.status != RUNNING or not teardown.signal_pid(st.pid, st.pid_start, sig):
            raise Conflict(f"container {cid} is not running")

    def stop(self, cid: str, timeout: float | None = 10) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; return the exit code.
        Idempotent: stopping a stopped container returns its exit code."""
        st = self.state(cid)
        if st.status != RUNNING:
            return st.exit_code
        teardown.signal_pid(st.pid, st.pid_start, signal.SIGTERM)
        try:
            return self.wait(cid, timeout)
        except Unavailable:
            pass
        teardown.signal_pid(st.pid, st.pid_start, signal.SIGKILL)
        return self.wait(cid, 10)

    def remove(self, cid: str, force: bool = False) -> None:
        """Remove the container's directory (logs, overlay upper layer), cgroups and any
        mount left under it. Conflict while it runs unless `force` (then SIGKILL first).
        Idempotent: removing an absent container does nothing."""
        cdir = self._dir(cid)
        if not os.path.isdir(cdir):
            return
        if os.path.isfile(os.path.join(cdir, files.SPEC)):
            st = self.state(cid)
            d = read_dir(cdir)
            if supervisor_alive(d, self.boot_id):
                if not force:
                    raise Conflict(
                        f"cannot remove running container {cid}: stop the container before removing or force remove"
                    )
                if st.status == RUNNING:
                    teardown.signal_pid(st.pid, st.pid_start, signal.SIGKILL)
                elif ident := supervisor_ident(d):  # still starting: the child dies with it (pdeathsig)
                    teardown.signal_pid(ident[0], ident[1], signal.SIGKILL)
                try:
                    self.wait(cid, 10)
                except (Unavailable, Conflict):
                    pass
        errs = teardown.discard(cdir, self.cgroups, self.boot_id)
        if errs:
            raise InternalError(f"container {cid} removed incompletely: {'; '.join(errs)}")
