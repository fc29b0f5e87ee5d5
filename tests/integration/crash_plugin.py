"""The crash test's Docker engine for `net plugin serve`: threads that create and delete
networks, endpoints, joins and leaves through the served bridge driver and IPAM (as
Docker's engine calls a plugin), and the checks of the served bridge against its state
file after each restart.

The engine keeps a ledger of everything it asked for; an operation cut short by the kill
stays "uncertain" and is retried or undone once the plugin is back (a careful engine's
behaviour), so at the end the engine can remove all it made and nothing may be left."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cnm import marks
from cnm.driverapi import DriverRegistry, EndpointInterface, IPAMData, NetworkSpec
from cnm.errors import CNMError, InternalError
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, IpamRegistry
from cnm.plugins.discovery import Discovery
from drivers.remote import resolver
from ipam.remote import resolver as ipam_resolver
from tests.integration import crash_checks

GW = {GATEWAY_REQUEST: GATEWAY_TYPE}


@dataclass
class Net:
    nid: str
    subnet: str
    pool_id: str = ""
    gateway: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)  # endpoint id -> address
    joined: set[str] = field(default_factory=set)


@dataclass
class Engine:
    plugin: str
    plugin_dir: Path
    seed: int
    threads: int = 2
    nets: dict[str, Net] = field(default_factory=dict)
    subnets: set[str] = field(default_factory=set)
    server_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        disc = Discovery([str(self.plugin_dir)])
        self.drv = DriverRegistry(fallback=resolver(disc, timeout=5)).get(self.plugin)
        self.ipam = IpamRegistry(fallback=ipam_resolver(disc, timeout=5)).get(self.plugin)
        self.lock = threading.Lock()
        self.in_flight: dict[int, str] = {}
        self.counter = 0

    def _id(self) -> str:
        with self.lock:
            self.counter += 1
            return f"{self.counter:012x}{self.seed % 2**32:08x}".ljust(64, "0")

    def _step(self, t: int, what: str, fn) -> bool:
        self.in_flight[t] = what
        try:
            fn()
            return True
        except InternalError as exc:
            self.server_errors.append(f"{what}: {exc}")
            return False
        except (CNMError, OSError):
            return False
        finally:
            self.in_flight.pop(t, None)

    # -- one operation of thread t ---------------------------------------------------------
    def create_network(self, t: int, rng: random.Random) -> None:
        net = Net(self._id(), f"10.{170 + t}.{rng.randrange(200)}.0/24")
        with self.lock:
            if any(n.subnet == net.subnet for n in self.nets.values()):
                return
            self.nets[net.nid] = net  # in the ledger before anything is asked
        self.subnets.add(net.subnet)

        def go() -> None:
            space, _ = self.ipam.default_address_spaces()
            net.pool_id = self.ipam.request_pool(space, net.subnet, None, {}, False).pool_id
            net.gateway = self.ipam.request_address(net.pool_id, None, GW)
            self.drv.create_network(NetworkSpec(net.nid, net.nid[:12], {}, ipv4=(IPAMData(net.subnet, net.gateway),)))

        self._step(t, f"create network {net.nid[:12]} {net.subnet}", go)

    def delete_network(self, t: int, net: Net) -> None:
        def go() -> None:
            for eid in list(net.endpoints):
                self.delete_endpoint(t, net, eid, quiet=True)
            if net.endpoints:
                raise CNMError("endpoints left")
            self.drv.delete_network(net.nid)
            if net.gateway:
                self.ipam.release_address(net.pool_id, net.gateway)
            if net.pool_id:
                self.ipam.release_pool(net.pool_id)
            with self.lock:
                self.nets.pop(net.nid, None)

        self._step(t, f"delete network {net.nid[:12]}", go)

    def create_endpoint(self, t: int, net: Net) -> None:
        eid = self._id()

        def go() -> None:
            addr = self.ipam.request_address(net.pool_id, None, {})
            net.endpoints[eid] = addr
            self.drv.create_endpoint(net.nid, eid, EndpointInterface(addr), {})

        self._step(t, f"create endpoint {eid[:12]} on {net.nid[:12]}", go)

    def join(self, t: int, net: Net, eid: str) -> None:
        def go() -> None:
            net.joined.add(eid)  # uncertain until it answers: left again if it fails
            self.drv.join(net.nid, eid, "/var/run/docker/netns/none", {})

        if not self._step(t, f"join {eid[:12]}", go):
            self.leave(t, net, eid)

    def leave(self, t: int, net: Net, eid: str) -> None:
        def go() -> None:
            self.drv.leave(net.nid, eid)
            net.joined.discard(eid)

        self._step(t, f"leave {eid[:12]}", go)

    def delete_endpoint(self, t: int, net: Net, eid: str, quiet: bool = False) -> None:
        def go() -> None:
            if eid in net.joined:
                self.drv.leave(net.nid, eid)
                net.joined.discard(eid)
            self.drv.delete_endpoint(net.nid, eid)
            self.ipam.release_address(net.pool_id, net.endpoints[eid])
            net.endpoints.pop(eid, None)

        if quiet:
            go()
        else:
            self._step(t, f"delete endpoint {eid[:12]}", go)

    def one(self, t: int, rng: random.Random) -> None:
        with self.lock:
            mine = [n for n in self.nets.values() if n.subnet.startswith(f"10.{170 + t}.") and n.pool_id]
        if not mine or (len(mine) < 3 and rng.random() < 0.3):
            return self.create_network(t, rng)
        net = rng.choice(mine)
        r = rng.random()
        if r < 0.1:
            return self.delete_network(t, net)
        eps = list(net.endpoints)
        if r < 0.4 or not eps:
            return self.create_endpoint(t, net) if len(eps) < 4 else self.delete_endpoint(t, net, rng.choice(eps))
        eid = rng.choice(eps)
        if r < 0.75:
            return self.join(t, net, eid) if eid not in net.joined else self.leave(t, net, eid)
        return self.delete_endpoint(t, net, eid)

    def run_for(self, seconds: float, kill, round_: int) -> str:
        stop = threading.Event()

        def loop(t: int) -> None:
            rng = random.Random(self.seed * 1000 + round_ * 10 + t)
            while not stop.is_set():
                self.one(t, rng)

        threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(self.threads)]
        for th in threads:
            th.start()
        time.sleep(seconds)
        flying = "; ".join(f"thread {t}: {w}" for t, w in sorted(self.in_flight.items())) or "nothing"
        kill()
        stop.set()
        for th in threads:
            th.join(60)
        return flying

    def remove_everything(self) -> list[str]:
        """Everything the engine ever asked for, removed (what failed is retried here)."""
        out = []
        for net in list(self.nets.values()):
            try:
                for eid in list(net.endpoints):
                    self.delete_endpoint(0, net, eid, quiet=True)
                self.drv.delete_network(net.nid)
                if net.gateway:
                    self.ipam.release_address(net.pool_id, net.gateway)
                if net.pool_id:
                    self.ipam.release_pool(net.pool_id)
                else:
                    # The pool may have been reserved and the answer lost in the kill:
                    # the served default IPAM names a pool "<space>/<subnet>".
                    space, _ = self.ipam.default_address_spaces()
                    self.ipam.release_pool(f"{space}/{net.subnet}")
                self.nets.pop(net.nid, None)
            except CNMError as exc:
                out.append(f"removing network {net.nid[:12]}: {exc}")
        return out


def records(root: Path) -> dict[str, dict]:
    db = sqlite3.connect(str(root / "plugin-state.db"), timeout=10)
    try:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM kv")}
    finally:
        db.close()


def problems(ns: str, root: Path, tally: Counter | None = None) -> list[str]:
    """The served bridge against its state file: every bridge of ours recorded and every
    recorded network with its bridge; a veth exactly for every joined endpoint; the
    plugin's nft table holding the recorded bridges; no intent left. `tally` counts
    what was checked."""
    kv = records(root)
    out = [f"intent left: {k}" for k in kv if k.startswith("intent/")]
    nets = {k.split("/")[2]: v for k, v in kv.items() if k.startswith("served/net/")}
    eps = {tuple(k.split("/")[2:4]): v for k, v in kv.items() if k.startswith("served/ep/")}
    bridges, veths = {}, set()
    for link in crash_checks.links(ns):
        mark = marks.parse(link.get("ifalias"))
        if mark and mark[0] == "network":
            bridges[mark[1]] = link["ifname"]
        elif mark:
            veths.add(mark[1])
    out += [f"bridge {b} of no recorded network" for nid, b in bridges.items() if nid not in nets]
    out += [f"network {nid[:12]} recorded without its bridge" for nid in nets if nid not in bridges]
    joined = {eid for (_nid, eid), v in eps.items() if v.get("joined")}
    out += [f"veth of endpoint {eid[:12]}, which is not joined" for eid in sorted(veths - joined)]
    out += [f"joined endpoint {eid[:12]} has no veth" for eid in sorted(joined - veths)]
    table_bridges = crash_checks._set(crash_checks.nft_table(ns), "bridges")
    if tally is not None:
        tally.update(
            {
                "networks": len(nets),
                "bridges": len(bridges),
                "endpoints": len(eps),
                "joined endpoints": len(joined),
                "veths": len(veths),
                "nft bridge elements": len(table_bridges),
            }
        )
    out += [f"nft set bridges holds {b}, no recorded network's" for b in sorted(table_bridges - set(bridges.values()))]
    out += [f"nft set bridges lacks {b}" for b in sorted(set(bridges.values()) - table_bridges)]
    return out
