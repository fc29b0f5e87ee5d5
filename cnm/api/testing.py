"""Test helpers for the API: an in-memory controller and a server run in a thread.

    with ServerThread(make_app(FakeController()), tmp_path / "cnm.sock") as srv:
        APIClient(srv.host).networks()

Not used by the daemon itself.
"""
from __future__ import annotations

import asyncio
import ipaddress
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from cnm.api.server import Server, start_server
from cnm.errors import Conflict, Forbidden, InvalidParameter, NotFound
from cnm.ids import new_id
from cnm.model import Network, PoolConfig
from cnm.requests import NetworkCreate


@dataclass
class FakeController:
    """Imitates the controller's network behaviour with no IPAM, driver or kernel.

    `fail` maps a method name to an exception that method raises (to test error paths);
    `containers` maps a network id to its endpoint data."""

    networks: dict[str, Network] = field(default_factory=dict)
    containers: dict[str, dict[str, dict]] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    _next_pool: int = 18
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
            net = Network(id=new_id(), name=name, driver=driver, created="2024-01-01T00:00:00Z", builtin=True)
            if name == "bridge":
                net.pools = [PoolConfig(subnet="172.17.0.0/16", pool_id="p0", gateway="172.17.0.1")]
            self.networks[net.id] = net

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def create_network(self, req: NetworkCreate) -> Network:
        self._maybe_fail("create_network")
        with self._lock:
            if any(n.name == req.name for n in self.networks.values()):
                raise Conflict(f"network with name {req.name} already exists")
            pools = [PoolConfig(subnet=c.subnet, pool_id=new_id()[:8], ip_range=c.ip_range,
                                gateway=c.gateway or _first_host(c.subnet), aux_addresses=dict(c.aux_addresses),
                                v6=c.v6) for c in req.ipam_configs if c.subnet]
            if not any(not p.v6 for p in pools):
                subnet = f"172.{self._next_pool}.0.0/16"
                self._next_pool += 1
                pools.insert(0, PoolConfig(subnet=subnet, pool_id=new_id()[:8], gateway=_first_host(subnet)))
            net = Network(id=new_id(), name=req.name, driver=req.driver, created="2024-01-02T03:04:05.123456789Z",
                          internal=req.internal, attachable=req.attachable, enable_ipv6=req.enable_ipv6,
                          ipam_driver=req.ipam_driver, ipam_options=dict(req.ipam_options), pools=pools,
                          options=dict(req.options), labels=dict(req.labels))
            self.networks[net.id] = net
            return net

    def list_networks(self) -> list[Network]:
        self._maybe_fail("list_networks")
        with self._lock:
            return list(self.networks.values())

    def get_network(self, ref: str) -> Network:
        self._maybe_fail("get_network")
        with self._lock:
            for net in self.networks.values():
                if ref in (net.id, net.name):
                    return net
            found = [n for n in self.networks.values() if n.id.startswith(ref)] if ref else []
            if len(found) > 1:
                raise InvalidParameter(f"network id prefix {ref} is ambiguous ({len(found)} matches): give more of the id")
            if not found:
                raise NotFound(f"network {ref} not found")
            return found[0]

    def delete_network(self, ref: str) -> None:
        self._maybe_fail("delete_network")
        net = self.get_network(ref)
        with self._lock:
            if net.builtin:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            if self.containers.get(net.id):
                raise Conflict(f"network {net.name} has active endpoints")
            del self.networks[net.id]

    def prune_networks(self, select=lambda net: True) -> list[str]:
        self._maybe_fail("prune_networks")
        with self._lock:
            gone = [n for n in self.networks.values()
                    if not n.builtin and not self.containers.get(n.id) and select(n)]
            for net in gone:
                del self.networks[net.id]
            return [n.name for n in gone]

    def network_containers(self, network_id: str) -> dict[str, dict]:
        with self._lock:
            return dict(self.containers.get(network_id, {}))


def _first_host(subnet: str) -> str:
    return str(next(ipaddress.ip_network(subnet).hosts()))


class ServerThread:
    """Runs an aiohttp app on a unix socket in a background thread with its own loop."""

    def __init__(self, app: web.Application, socket_path: str | Path) -> None:
        self.app = app
        self.path = Path(socket_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cnm-api-test", daemon=True)
        self._server: Server | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> "ServerThread":
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(start_server(self.app, self.path), self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- containers -------------------------------------------------------------------------
# Container routes are tested against real processes (plain subprocesses, no namespaces,
# no root) so that logs, exit codes, signals and exit notification are genuine.

def _rfc3339_now() -> str:
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class SubprocessRuntime:
    """The runtime's interface (state, logs_paths, kill, stop, remove, wait, exit_fd)
    over plain child processes; output goes to per-container log files under `root`.
    `on_exit(cid)` is called from a watcher thread when a process ends, like the
    daemon's exit handling."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.procs: dict[str, object] = {}
        self.started: dict[str, str] = {}
        self.finished: dict[str, str] = {}
        self.on_exit = lambda cid: None
        self._lock = threading.Lock()

    def start(self, cid: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        cdir = self.root / cid
        cdir.mkdir(parents=True)
        out, err = self.logs_paths(cid)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            try:
                proc = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **(env or {})}, start_new_session=True)
            except OSError as exc:
                raise InvalidParameter(f"cannot run {argv[0]}: {exc.strerror}") from exc
        with self._lock:
            self.procs[cid] = proc
            self.started[cid] = _rfc3339_now()
        threading.Thread(target=self._watch, args=(cid, proc), daemon=True).start()

    def _watch(self, cid: str, proc) -> None:
        proc.wait()
        self.state(cid)
        self.on_exit(cid)

    def _proc(self, cid: str):
        with self._lock:
            proc = self.procs.get(cid)
        if proc is None:
            raise NotFound(f"no such container: {cid}")
        return proc

    def state(self, cid: str):
        from cnm.runtime.state import ContainerState
        proc = self._proc(cid)
        rc = proc.poll()
        if rc is None:
            return ContainerState(cid, "running", proc.pid, None, None, self.started[cid])
        with self._lock:
            finished = self.finished.setdefault(cid, _rfc3339_now())
        return ContainerState(cid, "exited", proc.pid, None, rc if rc >= 0 else 128 - rc,
                              self.started[cid], finished)

    def logs_paths(self, cid: str) -> tuple[str, str]:
        cdir = self.root / cid
        return str(cdir / "stdout.log"), str(cdir / "stderr.log")

    def exit_fd(self, cid: str) -> int | None:
        import os
        proc = self._proc(cid)
        if proc.poll() is not None:
            return None
        try:
            return os.pidfd_open(proc.pid)
        except ProcessLookupError:
            return None

    def kill(self, cid: str, sig: int = 9) -> None:
        proc = self._proc(cid)
        if proc.poll() is not None:
            raise Conflict(f"container {cid} is not running")
        proc.send_signal(sig)

    def wait(self, cid: str, timeout: float | None = None) -> int:
        self._proc(cid).wait(timeout)
        return self.state(cid).exit_code

    def stop(self, cid: str, timeout: float = 10) -> int | None:
        import subprocess
        proc = self._proc(cid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.state(cid).exit_code

    def remove(self, cid: str, force: bool = False) -> None:
        import shutil
        with self._lock:
            proc = self.procs.get(cid)
        if proc is None:
            return
        if proc.poll() is None:
            if not force:
                raise Conflict(f"cannot remove running container {cid}: stop it first or force remove")
            proc.kill()
            proc.wait()
        with self._lock:
            self.procs.pop(cid, None)
        shutil.rmtree(self.root / cid, ignore_errors=True)

    def kill_all(self) -> None:
        """Test teardown: kill every process this runtime started (by its Popen)."""
        with self._lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class FakeContainerService:
    """Imitates `cnm.containers.ContainerService` over a FakeController and a
    SubprocessRuntime: endpoints get addresses from the network's first pool, published
    ports get host ports from 32768 up; no kernel objects."""

    def __init__(self, ctl: FakeController, runtime: SubprocessRuntime) -> None:
        self.ctl = ctl
        self.runtime = runtime
        self.lock = threading.RLock()
        self.containers: dict[str, object] = {}
        self.eps: dict[str, object] = {}
        self.exit_codes: dict[str, int] = {}   # of removed containers, for wait
        self._next_host = 2
        self._next_port = 32768
        runtime.on_exit = self.handle_exit

    def get(self, ref: str):
        with self.lock:
            ref = ref.lstrip("/")
            for ct in self.containers.values():
                if ref in (ct.name, ct.id):
                    return ct
            found = [c for c in self.containers.values() if ref and c.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if found:
                raise InvalidParameter(f"container ID prefix {ref} is ambiguous")
            raise NotFound(f"no such container: {ref}")

    def list_containers(self) -> list:
        with self.lock:
            return sorted(self.containers.values(), key=lambda c: c.created, reverse=True)

    def is_running(self, ct) -> bool:
        try:
            return self.runtime.state(ct.id).status == "running"
        except NotFound:
            return False

    def endpoints(self, ct) -> list:
        with self.lock:
            return [self.eps[e] for e in ct.endpoint_ids if e in self.eps]

    def run(self, req):
        from cnm.containers import Container
        with self.lock:
            cid = new_id()
            name = req.name or f"ct_{cid[:6]}"
            if any(c.name == name for c in self.containers.values()):
                raise Conflict(f'the container name "/{name}" is already in use')
            ct = Container(id=cid, name=name, created=_rfc3339_now(), argv=list(req.argv), env=dict(req.env),
                           hostname=req.hostname or cid[:12], network_mode=req.network_mode,
                           memory=req.memory, cpus=req.cpus, pids_limit=req.pids_limit,
                           auto_remove=req.auto_remove, rootfs=req.rootfs,
                           requested_ports=[p.to_record() for p in req.ports])
            ct.endpoint_ids = []   # type: ignore[attr-defined]  # this fake's own bookkeeping
            mode = req.network_mode
            if mode.startswith("container:"):
                other = self.get(mode.split(":", 1)[1])
                if not self.is_running(other):
                    raise Conflict(f"cannot join the network of container {other.name}: it is not running")
                ct.shared_with = other.id
            elif mode not in ("host", "none"):
                net = self.ctl.get_network(mode)
                if net.driver in ("host", "null"):
                    ct.network_mode = "host" if net.driver == "host" else "none"
                else:
                    ct.sandbox_id, ct.sandbox_key = cid, f"/run/fake/netns/{cid[:12]}"
                    self._attach(ct, net, req.endpoint, req.ports)
            self.runtime.start(cid, ct.argv, ct.env)
            self.containers[cid] = ct
            return ct

    def _attach(self, ct, net, epreq, ports) -> None:
        from cnm.model import Endpoint
        pool = net.v4_pools()[0]
        subnet = ipaddress.ip_network(pool.subnet)
        addr = epreq.ip or str(subnet.network_address + self._next_host)
        self._next_host += 1
        ep = Endpoint(id=new_id(), name=ct.name, network_id=net.id, address=f"{addr}/{subnet.prefixlen}",
                      mac=epreq.mac or "02:42:ac:11:00:%02x" % (self._next_host % 256), container_id=ct.id,
                      ifname=f"eth{len(ct.endpoint_ids)}", aliases=list(epreq.aliases),
                      gateway=None if ct.endpoint_ids else pool.gateway)
        self.eps[ep.id] = ep
        ct.endpoint_ids.append(ep.id)
        if ports:
            allocated = []
            for pb in ports:
                port = pb.host_port
                if port is None:
                    port, self._next_port = self._next_port, self._next_port + 1
                allocated.append(pb.allocated(port).to_record())
            ct.ports = allocated
        self.ctl.containers.setdefault(net.id, {})[ct.id] = {
            "Name": ct.name, "EndpointID": ep.id, "MacAddress": ep.mac, "IPv4Address": ep.address, "IPv6Address": ""}

    def _detach(self, ct, ep) -> None:
        self.eps.pop(ep.id, None)
        ct.endpoint_ids.remove(ep.id)
        self.ctl.containers.get(ep.network_id, {}).pop(ct.id, None)

    def stop(self, ref: str, timeout: float = 10):
        ct = self.get(ref)
        self.runtime.stop(ct.id, timeout)
        self.handle_exit(ct.id)
        return ct

    def kill(self, ref: str, sig: int):
        ct = self.get(ref)
        self.runtime.kill(ct.id, sig)
        return ct

    def handle_exit(self, cid: str) -> None:
        with self.lock:
            ct = self.containers.get(cid)
            if ct is None or self.is_running(ct):
                return
            for ep in self.endpoints(ct):
                self._detach(ct, ep)
            ct.ports = []
            ct.released = True
            if ct.auto_remove:
                self._remove(ct)

    def remove(self, ref: str, force: bool = False):
        with self.lock:
            ct = self.get(ref)
            if self.is_running(ct) and not force:
                raise Conflict(f"you cannot remove a running container {ct.name}: stop it first or use --force")
            self._remove(ct)
            return ct

    def _remove(self, ct) -> None:
        if not self.is_running(ct):
            self.exit_codes[ct.id] = self.runtime.state(ct.id).exit_code
        self.runtime.remove(ct.id, True)
        for ep in self.endpoints(ct):
            self._detach(ct, ep)
        self.containers.pop(ct.id, None)

    def connect(self, net_ref: str, ct_ref: str, epreq):
        with self.lock:
            net = self.ctl.get_network(net_ref)
            ct = self.get(ct_ref)
            if ct.network_mode in ("host", "none") or ct.shared_with or net.driver in ("host", "null"):
                raise Forbidden(f"container {ct.name} cannot be connected to network {net.name}")
            if not self.is_running(ct):
                raise Conflict(f"container {ct.name} is not running")
            if any(ep.network_id == net.id for ep in self.endpoints(ct)):
                raise Conflict(f"endpoint with name {ct.name} already exists in network {net.name}")
            self._attach(ct, net, epreq, [])
            return self.eps[ct.endpoint_ids[-1]]

    def disconnect(self, net_ref: str, ct_ref: str, force: bool = False) -> None:
        with self.lock:
            net = self.ctl.get_network(net_ref)
            ct = self.get(ct_ref)
            eps = [ep for ep in self.endpoints(ct) if ep.network_id == net.id]
            if not eps:
                raise NotFound(f"container {ct.name} is not connected to network {net.name}")
            self._detach(ct, eps[0])
