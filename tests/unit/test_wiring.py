"""Wiring by construction: the controller hands itself to its cluster member, asks the
cluster store outside its lock, and exit watches wait for the event loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading

import pytest

import ipam
from cnm.controller import Controller
from cnm.driverapi import GLOBAL, DriverRegistry
from cnm.errors import NotFound
from cnm.exits import ExitWatcher
from cnm.ipamapi import IpamRegistry
from cnm.model import Network
from cnm.store.memory import MemoryStore
from tests.unit.fakes import FakeDriver

REMOTE = Network(id="f" * 64, name="elsewhere", driver="fake", scope=GLOBAL)


class FakeCluster:
    """GlobalNetworks over a dict of records 'in the cluster store'."""

    def __init__(self, controller: Controller, records: dict[str, dict]) -> None:
        self.controller = controller
        self.records = records
        self.lock_free_during_lookup: list[bool] = []

    def allocate_network(self, net: Network) -> dict[str, str]:
        return {}

    def release_network(self, net: Network) -> None:
        pass

    def find_network(self, ref: str) -> dict | None:
        got: list[bool] = []

        def try_lock() -> None:  # from another thread: is the lock free?
            got.append(self.controller.lock.acquire(timeout=0))
            if got[0]:
                self.controller.lock.release()

        t = threading.Thread(target=try_lock)
        t.start()
        t.join()
        self.lock_free_during_lookup.append(got[0])
        return self.records.get(ref)

    def remote_endpoints(self, network_id: str) -> list[str]:
        return []


def controller_with(records: dict[str, dict], events: list) -> tuple[Controller, FakeCluster]:
    store = MemoryStore()
    drivers = DriverRegistry()
    drivers.register(FakeDriver("fake", scope=GLOBAL))
    ipams = IpamRegistry()
    ipam.register(ipams, stores={"LocalDefault": store, "GlobalDefault": store})
    made: list[FakeCluster] = []

    def join(ctl: Controller) -> FakeCluster:
        made.append(FakeCluster(ctl, records))
        return made[0]

    ctl = Controller(
        drivers,
        ipams,
        {"local": store, "global": MemoryStore("global")},
        cluster=join,
        network_listeners=[lambda ev, net: events.append((ev, net.name))],
    )
    return ctl, made[0]


def test_the_controller_hands_itself_to_its_cluster_member_and_asks_outside_the_lock():
    events: list = []
    ctl, cluster = controller_with({"elsewhere": REMOTE.to_record()}, events)
    assert cluster.controller is ctl and ctl.cluster is cluster
    net = ctl.get_network("elsewhere")
    assert net.id == REMOTE.id and ctl.network(REMOTE.id) is net
    assert events == [("create", "elsewhere")]  # listeners given at construction hear it
    with pytest.raises(NotFound):
        ctl.get_network("nowhere")
    assert cluster.lock_free_during_lookup == [True, True]
    assert ctl.get_network("elsewhere") is net  # known now: no second lookup
    assert len(cluster.lock_free_during_lookup) == 2


def run_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    return loop, t


def test_exit_watches_wait_for_the_loop_then_fire_once_the_process_ends():
    proc = subprocess.Popen(["sleep", "0.3"])
    ended = threading.Event()
    exited: list[str] = []

    def exit_fd(cid: str) -> int | None:
        if cid == "gone":
            return None
        return os.pidfd_open(proc.pid)

    def on_exit(cid: str) -> None:
        exited.append(cid)
        if len(exited) == 2:
            ended.set()

    watcher = ExitWatcher(exit_fd)
    watcher.watch("sleeper", on_exit)  # before the loop runs: kept
    loop, t = run_loop()
    try:
        loop.call_soon_threadsafe(watcher.start, loop)
        watcher.watch("gone", on_exit)  # already ended: reported at once
        assert ended.wait(5), exited
        assert exited == ["gone", "sleeper"] and proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()
