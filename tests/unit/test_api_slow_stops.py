"""Slow stops do not freeze the API: `POST /containers/{id}/stop` (and restart, rm -f)
wait on a container's exit for up to their timeout, for ever with t=-1. They used to
run on one of the API's 4 worker threads each: four of them and every route that calls
the controller waited. Now each waits on a thread of its own; the workers, /_ping and
the other routes stay free."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cnm.api import containers
from cnm.api.common import WAITS
from cnm.api.listener import Limits
from cnm.api.server import make_app, start_server
from tests.unit.test_api_limits import StubController, read_all, request

STOPS = 8  # twice the API's workers


class SlowStops:
    """A container service whose containers take until `release` to stop (SIGTERM
    ignored, t=-1)."""

    ctl = None
    runtime = None

    def __init__(self) -> None:
        self.release = threading.Event()
        self.stopping = 0
        self.lock = threading.Lock()

    def stop(self, ref: str, timeout: float | None = 10) -> bool:
        with self.lock:
            self.stopping += 1
        self.release.wait(60)
        return True

    def restart(self, ref: str, timeout: float | None = 10) -> None:
        self.stop(ref, timeout)

    def remove(self, ref: str, force: bool = False) -> None:
        self.stop(ref)


class Served:
    def __init__(self, service: SlowStops) -> None:
        self.dir = tempfile.mkdtemp(prefix="cnm-stops-", dir="/tmp")
        self.path = os.path.join(self.dir, "api.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = make_app(StubController(), extra_routes=containers.routes(service), limits=Limits())
        self.server = asyncio.run_coroutine_threadsafe(start_server(self.app, self.path), self.loop).result(10)

    def ask(self, method: str, path: str, timeout: float = 60) -> tuple[int, float]:
        t = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            s.sendall(request(method, path))
            head = read_all(s).partition(b"\r\n\r\n")[0]
        return int(head.split()[1]), time.monotonic() - t

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def served():
    service = SlowStops()
    srv = Served(service)
    try:
        yield srv, service
    finally:
        service.release.set()
        srv.close()


@pytest.mark.parametrize(
    "how", ["POST /containers/c{}/stop?t=-1", "POST /containers/c{}/restart?t=-1", "DELETE /containers/c{}?force=1"]
)
def test_slow_stops_leave_the_api_free(served, how):
    srv, service = served
    method, path = how.split()
    with ThreadPoolExecutor(STOPS) as pool:
        stops = [pool.submit(srv.ask, method, path.format(i)) for i in range(STOPS)]
        deadline = time.monotonic() + 20
        while service.stopping < STOPS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.stopping == STOPS  # all of them are waiting at once
        # /_ping, and a route that needs a worker thread (the controller's network list)
        pings = [srv.ask("GET", "/_ping", timeout=10) for _ in range(5)]
        lists = [srv.ask("GET", "/networks", timeout=10) for _ in range(5)]
        assert all(code == 200 for code, _ in pings + lists)
        # bounds for a loaded 2-core machine; before, the list waited for the stops (60 s)
        assert max(t for _, t in pings + lists) < 5
        assert not any(f.done() for f in stops)
        service.release.set()
        assert sorted(f.result(30)[0] for f in stops) == [204] * STOPS


def test_waiting_calls_beyond_the_cap_queue_without_threads(served):
    srv, service = served
    gate = srv.app[WAITS]
    threads_before = threading.active_count()
    for _ in range(gate._value - 2):  # fill the gate but two places (no threads for them)
        asyncio.run_coroutine_threadsafe(gate.acquire(), srv.loop).result(5)
    with ThreadPoolExecutor(4) as pool:
        stops = [pool.submit(srv.ask, "POST", f"/containers/c{i}/stop") for i in range(4)]
        deadline = time.monotonic() + 20
        while service.stopping < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert service.stopping == 2  # two ran, two queue on the event loop
        assert srv.ask("GET", "/_ping", timeout=10)[0] == 200
        service.release.set()
        assert sorted(f.result(30)[0] for f in stops) == [204] * 4
    assert service.stopping == 4
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before + 4 and time.monotonic() < deadline:  # + the pool's
        time.sleep(0.01)
    assert threading.active_count() <= threads_before + 4
