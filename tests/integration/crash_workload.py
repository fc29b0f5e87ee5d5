"""A mixed workload of several clients against one daemon, for the crash test: each
client works on its own networks (IPv4, dual-stack, internal) and containers (published
ports, restart policies, connect/disconnect, create then start, stop, rm -f), chosen by a seeded random
generator, until told to stop. What each client has in flight is kept, so a kill can be
described ("killed while client 2 was connecting ct-2-5 to net-2-3").

Failures are expected while the daemon is killed (connection reset, refused, 4xx for a
name that a crash left taken); a 5xx answer from a live daemon is a bug and is kept."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from cnm.api.client import APIClient
from cnm.errors import CNMError, InternalError

BB = "/bin/busybox"


@dataclass
class Client:
    index: int
    seed: int
    sock: str
    subnets: set[str] = field(default_factory=set)  # every subnet this client used
    in_flight: str = ""
    done: int = 0
    server_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed * 1000 + self.index)
        self.api = APIClient(f"unix://{self.sock}")
        self.counter = 0

    # -- what this client owns, as the daemon says ----------------------------------
    def _mine(self, kind: str) -> list[dict]:
        prefix = f"{kind}-{self.index}-"
        if kind == "net":
            return [n for n in self.api.networks() if n["Name"].startswith(prefix)]
        return [c for c in self.api.containers(all=True) if c["Names"][0].lstrip("/").startswith(prefix)]

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{self.index}-{self.counter}"

    # -- operations --------------------------------------------------------------------
    def create_network(self) -> None:
        if len(self._mine("net")) >= 3:
            return self.remove_network()
        k = self.rng.randrange(64)
        v4 = f"10.{160 + self.index}.{k}.0/24"
        configs = [{"Subnet": v4}]
        ipv6 = self.rng.random() < 0.35
        if ipv6:
            configs.append({"Subnet": f"fd00:c{self.index}:{k}::/64"})
        internal = self.rng.random() < 0.2
        name = self._name("net")
        self.subnets |= {c["Subnet"] for c in configs}
        self._do(
            f"create network {name} {v4}{' +v6' if ipv6 else ''}{' internal' if internal else ''}",
            lambda: self.api.network_create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "EnableIPv6": ipv6,
                    "Internal": internal,
                    "IPAM": {"Config": configs},
                }
            ),
        )

    def remove_network(self) -> None:
        nets = self._mine("net")
        if nets:
            net = self.rng.choice(nets)
            self._do(f"rm network {net['Name']}", lambda: self.api.network_remove(net["Id"]))

    def run(self, start: bool = True) -> None:
        if len(self._mine("ct")) >= 4:
            return self.remove_container()
        nets = [n["Name"] for n in self._mine("net")] + ["bridge"]
        net = self.rng.choice(nets)
        name = self._name("ct")
        body: dict = {"Cmd": [BB, "sleep", "3600"], "HostConfig": {"NetworkMode": net}}
        if self.rng.random() < 0.5:
            body["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostPort": ""}], "53/udp": [{"HostPort": ""}]}
        if self.rng.random() < 0.3:  # restarted at the daemon's start if it ended while it was down
            body["HostConfig"]["RestartPolicy"] = {"Name": self.rng.choice(["always", "on-failure", "unless-stopped"])}
        what = f"{'run' if start else 'create'} {name} on {net}"

        def go() -> None:
            cid = self.api.request("POST", "/containers/create", body, query={"name": name})["Id"]
            if start:
                self.in_flight = f"start {name} on {net}"
                self.api.request("POST", f"/containers/{cid}/start")

        self._do(what, go)

    def start(self) -> None:
        stopped = [c for c in self._mine("ct") if c["State"] != "running"]
        if stopped:
            c = self.rng.choice(stopped)
            self._do(f"start {c['Names'][0]}", lambda: self.api.request("POST", f"/containers/{c['Id']}/start"))
        else:
            self.run(start=False)

    def stop(self) -> None:
        running = [c for c in self._mine("ct") if c["State"] == "running"]
        if running:
            c = self.rng.choice(running)
            self._do(f"stop {c['Names'][0]}", lambda: self.api.container_stop(c["Id"], timeout=1))

    def remove_container(self) -> None:
        cts = self._mine("ct")
        if cts:
            c = self.rng.choice(cts)
            self._do(f"rm -f {c['Names'][0]}", lambda: self.api.container_remove(c["Id"], force=True))

    def connect(self) -> None:
        cts = [c for c in self._mine("ct") if c["State"] == "running"]
        nets = self._mine("net")
        if cts and nets:
            c, n = self.rng.choice(cts), self.rng.choice(nets)
            self._do(
                f"connect {c['Names'][0]} to {n['Name']}",
                lambda: self.api.network_connect(n["Id"], c["Id"], {"Aliases": ["x"]}),
            )

    def disconnect(self) -> None:
        cts = [c for c in self._mine("ct") if c["State"] == "running"]
        if cts:
            c = self.rng.choice(cts)
            nets = list((c.get("NetworkSettings") or {}).get("Networks") or {})
            if nets:
                n = self.rng.choice(nets)
                self._do(f"disconnect {c['Names'][0]} from {n}", lambda: self.api.network_disconnect(n, c["Id"]))

    OPS = (
        ("create_network", 3),
        ("remove_network", 1),
        ("run", 4),
        ("start", 2),
        ("stop", 1),
        ("remove_container", 2),
        ("connect", 2),
        ("disconnect", 2),
    )

    def _do(self, what: str, fn) -> None:
        self.in_flight = what
        try:
            fn()
            self.done += 1
        except InternalError as exc:  # a 500 from a daemon that is alive is a bug
            self.server_errors.append(f"client {self.index}: {what}: {exc}")
        except CNMError:
            pass  # refused (4xx) or the daemon is gone
        finally:
            self.in_flight = ""

    def loop(self, stop: threading.Event) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        while not stop.is_set():
            op = self.rng.choices(names, weights)[0]
            try:
                getattr(self, op)()
            except (CNMError, OSError):
                time.sleep(0.05)  # listing failed: the daemon is down


@dataclass
class Workload:
    seed: int
    sock: str
    clients: int = 4
    members: list[Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [Client(i, self.seed, self.sock) for i in range(self.clients)]

    def run_for(self, seconds: float, kill) -> str:
        """Run the clients, call `kill()` after `seconds` while they work; returns what
        was in flight at that instant."""
        stop = threading.Event()
        threads = [threading.Thread(target=c.loop, args=(stop,), daemon=True) for c in self.members]
        for t in threads:
            t.start()
        time.sleep(seconds)
        flying = "; ".join(f"client {c.index}: {c.in_flight}" for c in self.members if c.in_flight) or "nothing"
        kill()
        stop.set()
        for t in threads:
            t.join(60)
        return flying

    @property
    def subnets(self) -> set[str]:
        return set().union(*(c.subnets for c in self.members))

    @property
    def server_errors(self) -> list[str]:
        return [e for c in self.members for e in c.server_errors]
