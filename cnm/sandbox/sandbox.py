"""CNM's Sandbox: one container's network stack and the endpoints joined into it.

A `Sandbox` owns its endpoints and their order (eth0, eth1, … as joined), and after
every join or leave brings the rest in line with them, by the rules of
cnm.sandbox.rules computed from all of them at once: an endpoint on the gateway bridge
when no other gives a way out, the default route via the first endpoint that does,
published ports on that same endpoint. Names (DNS) and cluster peers are announced
at join and withdrawn at leave, here and nowhere else. Kernel work goes through the
sandbox's OS side (cnm.sandbox.osl.SandboxOS); endpoints through the controller.

`Sandboxes` builds a sandbox for a container's networks, finds it again (also after a
daemon restart, from the store) and releases it: build and release are whole
operations that can be repeated for the same container (stop, start again).

Not thread-safe on their own: callers hold the one lock (the controller's) around
every call, as cnm.containers.ContainerService does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cnm import labels
from cnm.container_requests import EndpointRequest
from cnm.driverapi import GLOBAL
from cnm.errors import CNMError, Conflict, InvalidParameter, NotFound
from cnm.model import Endpoint, Network
from cnm.model import Sandbox as SandboxRecord
from cnm.naming import GATEWAY_BRIDGE
from cnm.ports import PROTOCOL_NUMBERS, PortBinding
from cnm.requests import NetworkCreate
from cnm.sandbox import rules
from cnm.sandbox.files import container_resolv_conf, hosts_file
from cnm.sandbox.restore import SandboxRestore
from cnm.sandbox.seams import EndpointControl, HostPorts, NameRegistry, PeerPublisher, SandboxKernel
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger(__name__)

SANDBOX_PREFIX = "sandbox/"


def docker_binding(b: PortBinding, ep: Endpoint) -> dict:
    """libnetwork's PortBinding shape (Proto as the IP protocol number, as on Docker's
    wire), handed to the driver's ProgramExternalConnectivity."""
    return {
        "Proto": PROTOCOL_NUMBERS[b.proto],
        "IP": str(ep.address.ip) if ep.address else "",
        "Port": b.container_port,
        "HostIP": b.host_ip or "",
        "HostPort": b.host_port,
        "HostPortEnd": b.host_port,
    }


class Sandbox(SandboxRestore):
    def __init__(self, record: SandboxRecord, env: Sandboxes) -> None:
        self.record = record
        self._env = env
        self._ctl = env.ctl
        # Interface names of endpoints removed in the open store transaction: their
        # interface is put out of the way once it commits, not before.
        self._parking: set[str] = set()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def container_id(self) -> str:
        return self.record.container_id

    # ---------------------------------------------------------------- queries
    def endpoints(self) -> list[Endpoint]:
        """The live endpoints, in attach order."""
        out = []
        for eid in self.record.endpoint_ids:
            try:
                out.append(self._ctl.get_endpoint(eid))
            except NotFound:
                pass
        return out

    def networks(self) -> list[Network]:
        return [n for n in (self._ctl.network(ep.network_id) for ep in self.endpoints()) if n is not None]

    def published_ports(self) -> list[PortBinding]:
        """The host ports published for the container (none while no endpoint holds them)."""
        if not any(ep.port_bindings for ep in self.endpoints()):
            return []
        return [PortBinding.from_record(p) for p in self.record.ports]

    def hosts(self) -> str:
        """/etc/hosts: the hostname on the first endpoint's addresses."""
        eps = self.endpoints()
        return hosts_file(self.record.hostname, [a.ip for a in eps[0].addresses()] if eps else [])

    def resolv_conf(self) -> str:
        return self._env.resolv_conf(self.networks())

    def _views(self) -> list[rules.EndpointView]:
        views = []
        for ep in self.endpoints():
            net = self._ctl.network(ep.network_id)
            views.append(
                rules.EndpointView(
                    id=ep.id,
                    ifname=ep.ifname,
                    driver=net.driver if net else "",
                    internal=net.internal if net else False,
                    on_gateway_bridge=net is not None and net.name == GATEWAY_BRIDGE,
                    gateway=ep.gateway,
                    gateway_v6=ep.gateway_v6,
                    static_default_route=ep.static_default_route,
                    disable_gateway_service=ep.disable_gateway_service,
                    holds_ports=bool(ep.port_bindings),
                )
            )
        return views

    # ------------------------------------------------------------ join / leave
    def join(self, net: Network, req: EndpointRequest) -> Endpoint:
        """A new endpoint on `net`, joined as the next interface, then the gateway
        bridge, default route and ports brought in line. All or nothing."""
        with Undo() as undo:
            ep, _ = self._join_one(net, req, undo)
            # A join installs the default route only on the first endpoint with a way
            # out, so the holder by the rules is the one whose route is in place.
            finish = self._apply_rules(undo, self._route_holder())
            self.save()
            undo.commit()
        finish()
        return ep

    def leave(self, ep: Endpoint) -> None:
        """Take the endpoint out and delete it, then bring the rest in line (the
        gateway bridge may go or come, the default route and ports may move).
        Best effort: every step runs; failures are logged."""
        holder = self._route_holder()
        self._detach(ep)
        self.save()
        routed = holder if holder != ep.id else None
        try:
            with Undo() as undo:
                finish = self._apply_rules(undo, routed)
                self.save()
                undo.commit()
            finish()
        except CNMError as exc:
            log.warning("sandbox %s: after leaving %s: %s", self.id[:12], ep.name, exc)

    def _route_holder(self) -> str | None:
        holder = rules.gateway_endpoint(self._views())
        return holder.id if holder is not None else None

    def _join_one(self, net: Network, req: EndpointRequest, undo: Undo) -> tuple[Endpoint, str | None]:
        """One endpoint created, joined, plugged in and announced; undo registered.
        Returns it and, if its plug installed the default route, its id."""
        views = self._views()
        ifname = rules.next_ifname(views, taken=self._parking)
        ep = self._ctl.create_endpoint(
            net,
            self.record.name,
            container_id=self.container_id,
            ip=req.ip,
            ip6=req.ip6,
            mac=req.mac,
            aliases=req.aliases,
        )
        undo.push(self._ctl.delete_endpoint, ep)
        result = self._ctl.join(ep, self.id, self.key, ifname)
        undo.push(self._ctl.leave, ep)
        first_way_out = rules.gateway_endpoint(views) is None
        self._env.os.plug(self.key, result, ifname, ep.address, ep.address_v6, default_gateway=first_way_out)
        undo.push(self._env.os.unplug, self.key, ifname)
        self.record.endpoint_ids.append(ep.id)
        undo.push(self.record.endpoint_ids.remove, ep.id)
        self._announce(net, ep, undo)
        routed = first_way_out and bool(result.gateway or result.gateway_v6) and bool(result.src_ifname)
        return ep, (ep.id if routed else None)

    def _apply_rules(self, undo: Undo, routed: str | None) -> Callable[[], None]:
        """The gateway bridge joined if now needed; ports placed where they belong
        (undo registered). Returns the steps that only take away — the default route
        moved, an unneeded gateway-bridge endpoint left — to run after commit.
        `routed`: the endpoint whose default route is installed now, if any."""
        views = self._views()
        if rules.needs_gateway_bridge(views) and rules.gateway_bridge_endpoint(views) is None:
            _, gw_routed = self._join_one(self._env.gateway_bridge(), EndpointRequest(), undo)
            routed = gw_routed or routed
            views = self._views()
        keep = rules.without_unneeded_gateway_bridge(views)
        self._place_ports(views, keep, undo)
        route_to = rules.gateway_endpoint(keep)
        dropped = [v.id for v in views if v not in keep]

        def finish() -> None:
            if (
                route_to is not None
                and route_to.id != routed
                and route_to.ifname
                and (route_to.gateway or route_to.gateway_v6)
            ):
                try:
                    self._env.os.set_default_route(self.key, route_to.ifname, route_to.gateway, route_to.gateway_v6)
                except CNMError as exc:
                    log.warning("sandbox %s: default route via %s: %s", self.id[:12], route_to.ifname, exc)
            for eid in dropped:
                try:
                    self._detach(self._ctl.get_endpoint(eid))
                except CNMError as exc:
                    log.warning("sandbox %s: leaving the gateway bridge: %s", self.id[:12], exc)
            if dropped:
                self.save()

        return finish

    def _place_ports(self, views: list[rules.EndpointView], keep: list[rules.EndpointView], undo: Undo) -> None:
        """Published ports follow the endpoint with the way out (Docker moves the
        sandbox's external connectivity the same way)."""
        if not self.record.ports:
            return
        target = rules.port_endpoint(keep)
        current = rules.ports_holder(views)
        if (target.id if target else None) == (current.id if current else None):
            return
        if current is not None:
            old = self._ctl.get_endpoint(current.id)
            before = list(old.port_bindings)
            self._ctl.revoke_external_connectivity(old)
            undo.push(self._ctl.program_external_connectivity, old, before)
        if target is not None:
            self._program_ports(self._ctl.get_endpoint(target.id), undo)

    def _program_ports(self, ep: Endpoint, undo: Undo) -> None:
        bindings = [docker_binding(PortBinding.from_record(p), ep) for p in self.record.ports]
        self._ctl.program_external_connectivity(ep, bindings)
        undo.push(self._ctl.revoke_external_connectivity, ep)

    def _detach(self, ep: Endpoint, *, namespace_going: bool = False) -> None:
        """Withdraw, unplug, leave and delete one endpoint. Best effort, idempotent.
        An interface its driver deletes later is put out of use (down) and out of the
        way (renamed) once the store transaction commits; it is gone with the
        namespace anyway when `namespace_going`."""
        self._withdraw(ep)
        if self._ctl.defers_teardown(ep):
            if ep.ifname and not namespace_going:
                self._park_after_commit(ep.ifname, rules.parked_ifname(ep.id))
        elif ep.ifname:
            self._env.os.unplug(self.key, ep.ifname)
        try:
            self._ctl.remove_endpoint(ep)
        except CNMError as exc:
            log.warning("sandbox %s: endpoint %s: %s", self.id[:12], ep.name, exc)
        if ep.id in self.record.endpoint_ids:
            self.record.endpoint_ids.remove(ep.id)

    def _park_after_commit(self, ifname: str, new_name: str) -> None:
        self._parking.add(ifname)

        def park() -> None:
            self._parking.discard(ifname)
            self._env.os.park(self.key, ifname, new_name)

        self._env.store.after_commit(park)

    # --------------------------------------------------- names and cluster peers
    def _announce(self, net: Network, ep: Endpoint, undo: Undo | None = None) -> None:
        names, peers = self._env.names, self._env.peers
        if names is not None:
            names.endpoint_joined(net, ep)
            if undo is not None:
                undo.push(names.endpoint_left, ep)
        if peers is not None and net.scope == GLOBAL:
            peers.publish(net, ep)
            if undo is not None:
                undo.push(peers.unpublish, ep)

    def _withdraw(self, ep: Endpoint) -> None:
        if self._env.names is not None:
            self._env.names.endpoint_left(ep)
        if self._env.peers is not None:
            self._env.peers.unpublish(ep)

    def rename(self, name: str) -> None:
        """The container was renamed: its endpoints carry the new name, in DNS and to
        the other hosts at once."""
        for ep in self.endpoints():
            net = self._ctl.network(ep.network_id)
            self._withdraw(ep)
            ep.name = name
            self._ctl.save_endpoint(ep)
            if net is not None:
                self._announce(net, ep)

    # ------------------------------------------------------------------ ports
    def publish(self, requests: Sequence[PortBinding]) -> None:
        """Allocate host ports for `requests` and program them on the endpoint that
        holds the way out. All or nothing."""
        if not requests:
            return
        target = rules.port_endpoint(self._views())
        if target is None:
            raise InvalidParameter("published ports need a bridge or user network")
        with Undo() as undo:
            allocated = []
            for pb in requests:
                port = self._env.ports.allocate(pb.proto, pb.host_ip, pb.host_port, pb.host_port_end, owner=self.id)
                undo.push(self._env.ports.release, pb.proto, pb.host_ip, port)
                allocated.append(pb.allocated(port).to_record())
            self.record.port_requests = [p.to_record() for p in requests]
            self.record.ports = allocated
            undo.push(setattr, self.record, "ports", [])
            self._program_ports(self._ctl.get_endpoint(target.id), undo)
            self.save()
            undo.commit()

    # ------------------------------------------------------------- life cycle
    def save(self) -> None:
        self._env.store.put(SANDBOX_PREFIX + self.id, self.record.to_record())

    def release(self) -> None:
        """Every endpoint left and deleted, ports given back, the namespace and the
        record removed. Best effort and idempotent."""
        for ep in reversed(self.endpoints()):
            self._detach(ep, namespace_going=True)
        self.record.endpoint_ids.clear()
        self._env.ports.release_owner(self.id)
        try:
            self._env.os.destroy(self.key)
        except CNMError as exc:
            log.warning("sandbox %s: removing its namespace: %s", self.id[:12], exc)
        self._env.forget(self)


class Sandboxes:
    """The host's sandboxes: built, found, restored after a restart, released."""

    def __init__(
        self,
        ctl: EndpointControl,
        os: SandboxKernel,
        ports: HostPorts,
        store: Store,
        *,
        host_resolv: Callable[[], str],
        names: NameRegistry | None = None,
        peers: PeerPublisher | None = None,
    ) -> None:
        self.ctl = ctl
        self.os = os
        self.ports = ports
        self.store = store
        self.names = names
        self.peers = peers
        self._host_resolv = host_resolv
        self._sandboxes: dict[str, Sandbox] = {}
        for kv in store.list(SANDBOX_PREFIX):
            rec = SandboxRecord.from_record(kv.value)
            self._sandboxes[rec.id] = Sandbox(rec, self)

    def get(self, sandbox_id: str | None) -> Sandbox | None:
        return self._sandboxes.get(sandbox_id or "")

    def all(self) -> list[Sandbox]:
        return list(self._sandboxes.values())

    def build(
        self,
        sandbox_id: str,
        container_id: str,
        name: str,
        hostname: str,
        networks: Sequence[tuple[Network, EndpointRequest]],
        ports: Sequence[PortBinding] = (),
    ) -> Sandbox:
        """A namespace with an endpoint on each network, in order, and the ports
        published. All or nothing: on failure, whatever was built is released."""
        if sandbox_id in self._sandboxes:
            raise Conflict(f"sandbox {sandbox_id[:12]} exists already: release it first")
        sb = Sandbox(
            SandboxRecord(
                id=sandbox_id,
                container_id=container_id,
                key=self.os.key_for(sandbox_id),
                hostname=hostname,
                name=name,
                port_requests=[p.to_record() for p in ports],
            ),
            self,
        )
        self._sandboxes[sandbox_id] = sb
        try:
            # The record before the namespace: a crash in between leaves a record whose
            # container is not running, which start-up releases (namespace and all).
            sb.save()
            sb.record.key = self.os.create(sandbox_id)
            for net, req in networks:
                sb.join(net, req)
            sb.publish(ports)
        except BaseException:
            sb.release()
            raise
        return sb

    def forget(self, sb: Sandbox) -> None:
        self._sandboxes.pop(sb.id, None)
        try:
            self.store.delete(SANDBOX_PREFIX + sb.id)
        except CNMError as exc:
            log.warning("sandbox %s: removing its record: %s", sb.id[:12], exc)

    def resolv_conf(self, nets: list[Network]) -> str:
        if self.names is None:
            return container_resolv_conf(self._host_resolv())
        return self.names.resolv_conf(nets, self._host_resolv(), container_resolv_conf)

    def gateway_bridge(self) -> Network:
        """The local bridge that gives overlay (and gateway-less plugin) endpoints
        their way out: Docker's docker_gwbridge, made on first use."""
        try:
            return self.ctl.get_network(GATEWAY_BRIDGE)
        except NotFound:
            return self.ctl.create_network(
                NetworkCreate(
                    name=GATEWAY_BRIDGE,
                    driver="bridge",
                    options={
                        labels.BRIDGE_NAME: GATEWAY_BRIDGE,
                        labels.ENABLE_ICC: "false",
                        labels.ENABLE_IP_MASQUERADE: "true",
                    },
                )
            )
