"""Containers: the runtime's processes joined to the controller's networks.

`ContainerService` turns a `ContainerCreate` into a sandbox (network namespace),
endpoints on networks, published ports and a supervised process — in that order,
with every step undone in reverse if a later one fails. It also handles exits
(releasing network resources, auto-remove), live connect/disconnect, and re-adoption
after a daemon restart.
"""
from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from cnm.container_requests import ContainerCreate, EndpointRequest, check_ip
from cnm.controller import Controller
from cnm.driverapi import JoinResult
from cnm.errors import CNMError, Conflict, Forbidden, InvalidParameter, NotFound
from cnm.ids import check_name, new_id
from cnm.model import Endpoint, Network
from cnm.ports import PROTOCOL_NUMBERS, PortAllocator, PortBinding
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger(__name__)

CT_PREFIX = "container/"
EXIT_CODES_KEPT = 1024      # exit codes of removed --rm containers, for a late `wait`


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Container:
    """The daemon's record of a container (the runtime holds the process state)."""

    id: str
    name: str
    created: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    network_mode: str = "bridge"          # as the user gave it: bridge, host, none, container:X, NET
    shared_with: str | None = None        # container:X -> X's id
    sandbox_id: str | None = None
    sandbox_key: str | None = None
    endpoint_ids: list[str] = field(default_factory=list)   # attach order
    ports: list[dict] = field(default_factory=list)         # allocated PortBinding records
    requested_ports: list[dict] = field(default_factory=list)
    rootfs: str | None = None
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    auto_remove: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    released: bool = False                # network resources given back after exit
    gateway_endpoint: str | None = None   # endpoint on the gateway bridge (overlay's way out)

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict) -> "Container":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in rec.items() if k in names})


def hosts_file(hostname: str, addresses: list[str], extra: list[tuple[str, str]] = ()) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
    for addr in addresses:
        lines.append(f"{addr.split('/')[0]}\t{hostname}")
    for addr, name in extra:
        lines.append(f"{addr}\t{name}")
    return "\n".join(lines) + "\n"


def container_resolv_conf(host_text: str) -> str:
    """The host's resolv.conf minus loopback nameservers (unreachable from a sandbox);
    Docker's fallback to public resolvers when nothing is left."""
    out, servers = [], 0
    for line in host_text.splitlines():
        parts = line.split()
        if parts[:1] == ["nameserver"] and len(parts) > 1:
            if parts[1].startswith("127.") or parts[1] == "::1":
                continue
            servers += 1
        out.append(line)
    if not servers:
        out += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(out) + "\n"


class ContainerService:
    def __init__(self, controller: Controller, runtime, ports: PortAllocator, store: Store,
                 host_resolv: Callable[[], str] = lambda: open("/etc/resolv.conf").read(),
                 host_hosts: Callable[[], str] = lambda: open("/etc/hosts").read(),
                 discovery=None) -> None:
        self.ctl = controller
        self.discovery = discovery             # cnm.naming.ServiceDiscovery, or None
        self.runtime = runtime
        self.ports = ports
        self.store = store
        self.lock = controller.lock          # one lock for networks and containers: no lock ordering bugs
        self._containers: dict[str, Container] = {}
        # Exit codes of auto-removed containers, for a `wait` that arrives after removal.
        self.exit_codes: dict[str, int] = {}
        self._host_resolv = host_resolv
        self._host_hosts = host_hosts
        self.on_started: Callable[[str], None] = lambda cid: None   # the daemon watches for the exit
        self.events = None                     # cnm.events.EventBus: the daemon's, or None
        for kv in store.list(CT_PREFIX):
            ct = Container.from_record(kv.value)
            self._containers[ct.id] = ct

    # ---------------------------------------------------------------- lookup
    def get(self, ref: str) -> Container:
        with self.lock:
            if not ref:
                raise InvalidParameter("container name or ID must not be empty")
            ref = ref.lstrip("/")
            for ct in self._containers.values():
                if ct.name == ref:
                    return ct
            if ref in self._containers:
                return self._containers[ref]
            matches = [c for c in self._containers.values() if c.id.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidParameter(f"container ID prefix {ref} is ambiguous: {len(matches)} containers match")
            raise NotFound(f"no such container: {ref}")

    def list(self) -> list[Container]:
        with self.lock:
            return sorted(self._containers.values(), key=lambda c: c.created, reverse=True)

    def state(self, ct: Container):
        return self.runtime.state(ct.id)

    def is_running(self, ct: Container) -> bool:
        try:
            return self.runtime.state(ct.id).status == "running"
        except NotFound:
            return False

    def endpoints(self, ct: Container) -> list[Endpoint]:
        out = []
        for eid in ct.endpoint_ids:
            try:
                out.append(self.ctl.get_endpoint(eid))
            except NotFound:
                pass
        return out

    def _save(self, ct: Container) -> None:
        self.store.put(CT_PREFIX + ct.id, ct.to_record())

    def _event(self, action: str, ct: Container, **extra: str) -> None:
        """Docker's container event: the actor's attributes are its labels, name and
        image, plus the action's own (exitCode, signal)."""
        if self.events is not None:
            attrs = {**ct.labels, "image": getattr(ct, "image", None) or "", "name": ct.name, **extra}
            self.events.publish("container", action, ct.id, attrs)

    # ------------------------------------------------------------------- run
    def run(self, req: ContainerCreate) -> Container:
        with self.lock:
            cid = new_id()
            name = req.name or _generated_name(cid, {c.name for c in self._containers.values()})
            check_name(name, "container")
            if any(c.name == name for c in self._containers.values()):
                raise Conflict(f'the container name "/{name}" is already in use; remove that container '
                               f"or choose another name")
            if req.rootfs and not os.path.isdir(req.rootfs):
                raise InvalidParameter(f"--rootfs {req.rootfs}: no such directory")
            ct = Container(id=cid, name=name, created=_now(), argv=list(req.argv), env=dict(req.env),
                           hostname=req.hostname or cid[:12], network_mode=req.network_mode,
                           rootfs=req.rootfs, memory=req.memory, cpus=req.cpus, pids_limit=req.pids_limit,
                           auto_remove=req.auto_remove, labels=dict(req.labels),
                           requested_ports=[p.to_record() for p in req.ports])
            mode = req.network_mode
            with Undo() as undo:
                if mode == "host":
                    netns_path, hosts, resolv = "host", self._host_hosts(), self._host_resolv()
                elif mode.startswith("container:"):
                    other = self.get(mode.split(":", 1)[1])
                    if not self.is_running(other):
                        raise Conflict(f"cannot join the network of container {other.name}: it is not running")
                    if other.shared_with or other.network_mode == "host":
                        target = self._containers.get(other.shared_with or "", other)
                        raise InvalidParameter(f"container {other.name} shares another container's or the "
                                               f"host's network; use network mode of {target.name} directly")
                    ct.shared_with = other.id
                    ct.hostname = other.hostname
                    netns_path = other.sandbox_key or f"/proc/{self.state(other).pid}/ns/net"
                    addrs = [ep.address for ep in self.endpoints(other) if ep.address]
                    hosts = hosts_file(other.hostname, addrs)
                    resolv = self._resolv_conf([self.ctl.get_network(ep.network_id)
                                                for ep in self.endpoints(other)])
                else:
                    net = None if mode == "none" else self.ctl.get_network(mode)
                    if net is not None and net.driver in ("host", "null"):
                        mode = ct.network_mode = "host" if net.driver == "host" else "none"
                        net = None
                        ep = req.endpoint
                        if req.ports or ep.ip or ep.ip6 or ep.mac or ep.aliases:
                            raise InvalidParameter(f"published ports, --ip, --ip6, --mac-address and "
                                                   f"--network-alias need a bridge or user network, not "
                                                   f"network mode {mode}")
                        if mode == "host":
                            return self._finish_run(ct, req, "host", self._host_hosts(), self._host_resolv(), undo)
                    ct.sandbox_id = cid
                    ct.sandbox_key = self.ctl.sandboxes.create(cid)
                    undo.push(self.ctl.sandboxes.destroy, ct.sandbox_key)
                    addrs: list[str] = []
                    if net is not None:
                        ep = self._attach(ct, net, req.endpoint, req.ports, undo)
                        addrs = [a for a in (ep.address, ep.address_v6) if a]
                    netns_path = ct.sandbox_key
                    hosts = hosts_file(ct.hostname, addrs)
                    resolv = self._resolv_conf([self.ctl.get_network(e.network_id) for e in self.endpoints(ct)])
                return self._finish_run(ct, req, netns_path, hosts, resolv, undo)

    def _resolv_conf(self, nets: list[Network]) -> str:
        if self.discovery is None:
            return container_resolv_conf(self._host_resolv())
        return self.discovery.resolv_conf(nets, self._host_resolv(), container_resolv_conf)

    def _finish_run(self, ct: Container, req: ContainerCreate, netns_path: str, hosts: str,
                    resolv: str, undo: Undo) -> Container:
        from cnm.runtime.spec import ContainerSpec
        spec = ContainerSpec(id=ct.id, argv=ct.argv, name=ct.name, env=ct.env, hostname=ct.hostname,
                             netns=netns_path, rootfs=ct.rootfs, hosts=hosts, resolv_conf=resolv,
                             memory=ct.memory, cpus=ct.cpus, pids_limit=ct.pids_limit)
        self._save(ct)
        undo.push(self.store.delete, CT_PREFIX + ct.id)
        self.runtime.start(spec)
        undo.push(self.runtime.remove, ct.id, True)
        self._containers[ct.id] = ct
        undo.commit()
        self._event("create", ct)
        self._event("start", ct)
        log.info("started container %s (%s) on %s", ct.name, ct.id[:12], ct.network_mode)
        self.on_started(ct.id)
        return ct

    def _attach(self, ct: Container, net: Network, epreq: EndpointRequest, port_reqs: list[PortBinding],
                undo: Undo) -> Endpoint:
        """Endpoint on `net` joined into ct's sandbox, ports published; undo registered.
        A network whose driver gives no gateway (overlay, some plugins) also gets the
        container an endpoint on the local gateway bridge, for traffic leaving the host
        and for published ports (Docker's docker_gwbridge)."""
        needs_gw_bridge = self._needs_gateway_bridge(ct, net)
        ep = self.ctl.create_endpoint(net, ct.name, container_id=ct.id, ip=epreq.ip, ip6=epreq.ip6,
                                      mac=epreq.mac, aliases=epreq.aliases)
        undo.push(self.ctl.delete_endpoint, ep)
        bindings = [] if needs_gw_bridge else self._allocate_ports(ep, port_reqs, undo)
        has_default = any(e.gateway for e in self.endpoints(ct))
        result = self.ctl.join(ep, ct.sandbox_id, ct.sandbox_key, f"eth{_free_index(self.endpoints(ct))}",
                               default_gateway=not has_default,
                               port_bindings=[_docker_binding(b, ep) for b in bindings])
        undo.push(self.ctl.leave, ep, ct.sandbox_key)
        if not needs_gw_bridge and self._join_leaves_no_way_out(net, result):
            # Docker's rule for any driver (plugins above all): a join with no gateway
            # and no default route gets the gateway bridge too. Ports stay where they
            # were published, on this network's endpoint.
            needs_gw_bridge, port_reqs = True, []
        ct.endpoint_ids.append(ep.id)
        undo.push(ct.endpoint_ids.remove, ep.id)
        if bindings:
            ct.ports = [b.to_record() for b in bindings]
        if self.discovery is not None:
            self.discovery.endpoint_joined(net, ep)
            undo.push(self.discovery.endpoint_left, ep)
        if net.scope == "global" and self.ctl.cluster is not None:
            self.ctl.cluster.publish(net, ep)
            undo.push(self.ctl.cluster.unpublish, ep)
        if needs_gw_bridge and ct.gateway_endpoint is None:
            gw = self._attach(ct, self._gateway_bridge(), EndpointRequest(), port_reqs, undo)
            ct.gateway_endpoint = gw.id
            undo.push(setattr, ct, "gateway_endpoint", None)
        return ep

    def _allocate_ports(self, ep: Endpoint, port_reqs: list[PortBinding], undo: Undo) -> list[PortBinding]:
        bindings = []
        for pb in port_reqs:
            port = self.ports.allocate(pb.proto, pb.host_ip, pb.host_port, pb.host_port_end, owner=ep.id)
            undo.push(self.ports.release, pb.proto, pb.host_ip, port)
            bindings.append(pb.allocated(port))
        return bindings

    @staticmethod
    def _join_leaves_no_way_out(net: Network, result: JoinResult | None) -> bool:
        return (result is not None and not net.internal and net.driver not in ("null", "host")
                and not result.disable_gateway_service and not result.gives_a_way_out())

    def _still_needs_gateway_bridge(self, ct: Container, ep: Endpoint) -> bool:
        """After a disconnect: does this remaining endpoint need the gateway bridge?
        (by its driver, or because its join gave it no gateway)"""
        net = self.ctl.get_network(ep.network_id)
        return self._needs_gateway_bridge(ct, net) or (
            not net.internal and net.driver not in ("null", "host") and not (ep.gateway or ep.gateway_v6))

    def _needs_gateway_bridge(self, ct: Container, net: Network) -> bool:
        if net.internal:
            return False
        try:
            return self.ctl.drivers.get(net.driver).capabilities().gateway_bridge
        except CNMError:
            return False

    def _gateway_bridge(self) -> Network:
        from cnm import labels
        from cnm.naming import GATEWAY_BRIDGE
        from cnm.requests import NetworkCreate
        try:
            return self.ctl.get_network(GATEWAY_BRIDGE)
        except NotFound:
            return self.ctl.create_network(NetworkCreate(
                name=GATEWAY_BRIDGE, driver="bridge",
                options={labels.BRIDGE_NAME: GATEWAY_BRIDGE, labels.ENABLE_ICC: "false",
                         labels.ENABLE_IP_MASQUERADE: "true"}))

    # ------------------------------------------------------- connect / leave
    def connect(self, net_ref: str, ct_ref: str, epreq: EndpointRequest) -> Endpoint:
        with self.lock:
            net = self.ctl.get_network(net_ref)
            ct = self.get(ct_ref)
            self._check_connectable(ct, net)
            if not self.is_running(ct):
                raise Conflict(f"container {ct.name} is not running: start a new one with --net {net.name}")
            if any(ep.network_id == net.id for ep in self.endpoints(ct)):
                raise Conflict(f"endpoint with name {ct.name} already exists in network {net.name}")
            with Undo() as undo:
                ep = self._attach(ct, net, epreq, [], undo)
                self._save(ct)
                undo.commit()
            return ep

    def _check_connectable(self, ct: Container, net: Network) -> None:
        if ct.network_mode == "host" or net.driver == "host":
            raise Forbidden("container cannot be disconnected from host network or connected to host network")
        if ct.shared_with:
            raise Forbidden(f"container {ct.name} shares the network namespace of another container "
                            "and cannot be connected to any other network")
        if ct.network_mode == "none" or net.driver == "null":
            raise Forbidden(f"container {ct.name} is in network mode none and cannot be connected to other networks")

    def disconnect(self, net_ref: str, ct_ref: str, force: bool = False) -> None:
        with self.lock:
            net = self.ctl.get_network(net_ref)
            ct = self.get(ct_ref)
            eps = [ep for ep in self.endpoints(ct) if ep.network_id == net.id]
            if not eps:
                raise NotFound(f"container {ct.name} is not connected to network {net.name}")
            self._detach(ct, eps[0])
            self._save(ct)
            self._ensure_default_route(ct)

    def _ensure_default_route(self, ct: Container) -> None:
        """After a disconnect: if the endpoint that held the default route is gone (it
        may have taken the gateway-bridge endpoint with it), route via the first
        remaining endpoint that has a gateway, as Docker does."""
        if not ct.sandbox_key:
            return
        remaining = self.endpoints(ct)
        if not remaining:
            return
        try:
            routes = self.ctl.sandboxes.default_routes(ct.sandbox_key)
        except CNMError as exc:
            log.warning("container %s: reading routes: %s", ct.name, exc)
            return
        if routes:
            return
        nxt = next((e for e in remaining if e.gateway or e.gateway_v6), None)
        if nxt is not None and nxt.ifname:
            try:
                self.ctl.sandboxes.set_default_route(ct.sandbox_key, nxt.ifname, nxt.gateway, nxt.gateway_v6)
            except CNMError as exc:
                log.warning("container %s: default route via %s: %s", ct.name, nxt.ifname, exc)

    def _detach(self, ct: Container, ep: Endpoint) -> None:
        if self.discovery is not None:
            self.discovery.endpoint_left(ep)
        if self.ctl.cluster is not None:
            self.ctl.cluster.unpublish(ep)
        self.ctl.leave(ep, ct.sandbox_key)
        self.ports.release_owner(ep.id)
        self.ctl.delete_endpoint(ep)
        if ep.id in ct.endpoint_ids:
            ct.endpoint_ids.remove(ep.id)
        if ep.port_bindings or ct.ports and not any(e.port_bindings for e in self.endpoints(ct)):
            ct.ports = []
        if ep.id == ct.gateway_endpoint:
            ct.gateway_endpoint = None
        elif ct.gateway_endpoint and not any(
                self._still_needs_gateway_bridge(ct, e) for e in self.endpoints(ct) if e.id != ct.gateway_endpoint):
            try:
                gw = self.ctl.get_endpoint(ct.gateway_endpoint)
            except NotFound:
                ct.gateway_endpoint = None
            else:
                self._detach(ct, gw)

    # ---------------------------------------------------------- stop / exit
    def stop(self, ref: str, timeout: float = 10) -> Container:
        ct = self.get(ref)
        if self.is_running(ct):
            self._event("kill", ct, signal="15")
        self.runtime.stop(ct.id, timeout)
        self.handle_exit(ct.id)
        self._event("stop", ct)
        return ct

    def kill(self, ref: str, sig: int) -> Container:
        """Signal the container's PID 1; Conflict if it is not running."""
        ct = self.get(ref)
        self.runtime.kill(ct.id, sig)
        self._event("kill", ct, signal=str(sig))
        return ct

    def handle_exit(self, cid: str) -> None:
        """The container's process ended: give back its network resources (Docker
        releases them at stop), and remove it if it was started with --rm."""
        with self.lock:
            ct = self._containers.get(cid)
            if ct is None or self.is_running(ct):
                return
            if not ct.released:      # first notice of this exit
                try:
                    code = self.runtime.state(ct.id).exit_code
                except NotFound:
                    code = None
                self._event("die", ct, exitCode=str(code if code is not None else -1))
            self._release_network(ct)
            if ct.auto_remove:
                self._remove(ct)

    def _release_network(self, ct: Container) -> None:
        if ct.released:
            return
        for ep in self.endpoints(ct):
            if ep.id not in ct.endpoint_ids:
                continue   # went with the endpoint it served (the gateway-bridge one)
            try:
                self._detach(ct, ep)
            except CNMError as exc:
                log.warning("container %s: releasing endpoint %s: %s", ct.name, ep.id[:12], exc)
        if ct.sandbox_key:
            try:
                self.ctl.sandboxes.destroy(ct.sandbox_key)
            except CNMError as exc:
                log.warning("container %s: removing sandbox: %s", ct.name, exc)
        ct.ports = []
        ct.released = True
        self._save(ct)

    def remove(self, ref: str, force: bool = False) -> Container:
        with self.lock:
            ct = self.get(ref)
            if self.is_running(ct):
                if not force:
                    raise Conflict(f"you cannot remove a running container {ct.name}: stop it first "
                                   "or use --force")
                dependants = [c.name for c in self._containers.values() if c.shared_with == ct.id
                              and self.is_running(c)]
                if dependants:
                    raise Conflict(f"container {ct.name} shares its network with running container(s) "
                                   f"{', '.join(dependants)}: stop them first")
            self._remove(ct)
            return ct

    def _remove(self, ct: Container) -> None:
        try:
            st = self.runtime.state(ct.id)
            if st.exit_code is not None:
                self.exit_codes[ct.id] = st.exit_code
                while len(self.exit_codes) > EXIT_CODES_KEPT:   # oldest first (dicts keep order)
                    self.exit_codes.pop(next(iter(self.exit_codes)))
        except NotFound:
            pass
        self.runtime.remove(ct.id, True)
        self._release_network(ct)
        self.store.delete(CT_PREFIX + ct.id)
        self._containers.pop(ct.id, None)
        self._event("destroy", ct)
        log.info("removed container %s", ct.name)

    # --------------------------------------------------------------- restart
    def _adopt_one(self, ct: Container) -> None:
        try:
            st = self.runtime.state(ct.id)
        except NotFound:
            st = None
        if st is None or st.status != "running":
            self._release_network(ct)
            if ct.auto_remove:
                self._remove(ct)
            return
        if ct.sandbox_id:
            ct.sandbox_key = self.ctl.sandboxes.adopt(ct.sandbox_id, st.pid)
        for ep in self.endpoints(ct):
            try:   # one broken endpoint must not cost the others their ports and names
                if ep.port_bindings:
                    self.ports.restore([PortBinding.from_record(p) for p in ct.ports], owner=ep.id)
                net = self.ctl.get_network(ep.network_id)
                self.ctl.restore_endpoint(ep)
                if self.discovery is not None:
                    self.discovery.endpoint_joined(net, ep)
                if net.scope == "global" and self.ctl.cluster is not None:
                    self.ctl.cluster.publish(net, ep)
            except CNMError as exc:
                log.error("container %s: endpoint %s: %s", ct.name, ep.id[:12], exc)
        self.on_started(ct.id)

    def adopt(self) -> None:
        """After a daemon restart: running containers keep their sandboxes, endpoints
        and ports (re-learned); ended ones are cleaned up; orphans are released."""
        with self.lock:
            self.runtime.adopt()
            for ct in list(self._containers.values()):
                try:
                    self._adopt_one(ct)
                except CNMError as exc:   # one broken container must not keep the daemon down
                    log.error("re-adopting container %s: %s", ct.name, exc)
            owned = {eid for ct in self._containers.values() for eid in ct.endpoint_ids}
            for ep in self.ctl.all_endpoints():
                if ep.id not in owned:
                    log.info("releasing orphaned endpoint %s on network %s", ep.name, ep.network_id[:12])
                    self.ctl.leave(ep, None)
                    self.ctl.delete_endpoint(ep)


def _free_index(eps: list[Endpoint]) -> int:
    used = {int(e.ifname[3:]) for e in eps if e.ifname and e.ifname.startswith("eth") and e.ifname[3:].isdigit()}
    i = 0
    while i in used:
        i += 1
    return i


def _docker_binding(b: PortBinding, ep: Endpoint) -> dict:
    """libnetwork's PortBinding shape (Proto as the IP protocol number, as on Docker's
    wire), handed to the driver's ProgramExternalConnectivity."""
    return {"Proto": PROTOCOL_NUMBERS[b.proto], "IP": (ep.address or "").split("/")[0], "Port": b.container_port,
            "HostIP": b.host_ip or "", "HostPort": b.host_port, "HostPortEnd": b.host_port}


_ADJ = ["brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quirky", "sharp", "vivid"]
_NOUN = ["babbage", "curie", "hopper", "lovelace", "noether", "pike", "ritchie", "shannon", "turing", "wozniak"]


def _generated_name(cid: str, taken: set[str]) -> str:
    n = int(cid[:8], 16)
    name = f"{_ADJ[n % 10]}_{_NOUN[(n // 10) % 10]}"
    return name if name not in taken else f"{name}_{cid[:6]}"
