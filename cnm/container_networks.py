"""A container's networks: the one its network mode names, its sandbox built from what it asked for and released, live connect and disconnect, another container's namespace joined (container:NAME).

A mixin of cnm.containers.ContainerService (kept apart: the service is long enough), on
its controller, sandboxes, records and lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING

from cnm.container_deps import NetworkLookup
from cnm.container_record import (
    Attachment,
    Container,
    check_connectable,
)
from cnm.container_requests import EndpointRequest
from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.model import Endpoint, Network
from cnm.ports import PortBinding
from cnm.sandbox.sandbox import Sandbox, Sandboxes
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger("cnm.containers")


class ContainerNetworking:
    ctl: NetworkLookup
    sandboxes: Sandboxes
    store: Store
    lock: threading.RLock
    _containers: dict[str, Container]

    if TYPE_CHECKING:  # the service's own

        def get(self, ref: str) -> Container: ...
        def is_running(self, ct: Container) -> bool: ...
        def sandbox(self, ct: Container) -> Sandbox | None: ...
        def endpoints(self, ct: Container) -> list[Endpoint]: ...
        def _save(self, ct: Container) -> None: ...

    def _mode_network(self, mode: str) -> Network | None:
        """The network a network mode names (bridge, or a user network's name or ID).
        Looked up before the lock is taken: it may ask the cluster store."""
        if mode in ("host", "none") or mode.startswith("container:"):
            return None
        return self.ctl.get_network(mode)

    def _known(self, net: Network) -> Network:
        """`net` if it still exists (it was looked up before the lock was taken)."""
        if self.ctl.network(net.id) is None:
            raise NotFound(f"network {net.name} not found")
        return net

    def _joinable(self, ref: str) -> Container:
        other = self.get(ref)
        if not self.is_running(other):
            raise Conflict(f"cannot join the network of container {other.name}: it is not running")
        if other.shared_with or other.network_mode == "host":
            target = self._containers.get(other.shared_with or "", other)
            raise InvalidParameter(
                f"container {other.name} shares another container's or the "
                f"host's network; use network mode of {target.name} directly"
            )
        return other

    def _build_sandbox(self, ct: Container) -> Sandbox:
        networks = []
        for a in ct.attachments():
            net = self.ctl.network(a.network)
            if net is None:
                raise NotFound(f"network {a.network[:12]} of container {ct.name} not found")
            networks.append((net, a.request()))
        sb = self.sandboxes.build(
            ct.id, ct.id, ct.name, ct.hostname, networks, [PortBinding.from_record(p) for p in ct.requested_ports]
        )
        ct.sandbox_id, ct.sandbox_key = sb.id, sb.key
        self._settle(ct, sb)
        return sb

    @staticmethod
    def _settle(ct: Container, sb: Sandbox) -> None:
        """The record shows the ports its sandbox publishes now."""
        ct.ports = [p.to_record() for p in sb.published_ports()]

    def connect(self, net_ref: str, ct_ref: str, epreq: EndpointRequest) -> Endpoint | None:
        """A running container joins `net` now; a created or stopped one has it added to
        the networks it will join at its start (Docker's rule; returns None)."""
        net = self.ctl.get_network(net_ref)
        with self.lock:  # no transaction: records before kernel objects (see start)
            self._known(net)
            ct = self.get(ct_ref)
            check_connectable(ct, net)
            if not self.is_running(ct):
                if any(a.network == net.id for a in ct.attachments()):
                    raise Conflict(f"endpoint with name {ct.name} already exists in network {net.name}")
                ct.networks.append(asdict(Attachment.of(net.id, epreq)))
                self._save(ct)
                return None
            if any(ep.network_id == net.id for ep in self.endpoints(ct)):
                raise Conflict(f"endpoint with name {ct.name} already exists in network {net.name}")
            sb = self.sandbox(ct)
            if sb is None:
                raise Conflict(f"container {ct.name} has no network sandbox: start a new one with --net {net.name}")
            with Undo() as undo:
                ep = sb.join(net, epreq)
                undo.push(sb.leave, ep)
                ct.networks.append(asdict(Attachment.of(net.id, epreq)))
                self._settle(ct, sb)
                self._save(ct)
                undo.commit()
            return ep

    def disconnect(self, net_ref: str, ct_ref: str, force: bool = False) -> None:
        net = self.ctl.get_network(net_ref)
        with self.lock, self.store.transaction():
            ct = self.get(ct_ref)
            sb = self.sandbox(ct)
            eps = [ep for ep in self.endpoints(ct) if ep.network_id == net.id]
            if sb is None or not eps:
                if self.is_running(ct) or not any(a.network == net.id for a in ct.attachments()):
                    raise NotFound(f"container {ct.name} is not connected to network {net.name}")
                ct.networks = [a for a in ct.networks if a.get("network") != net.id]  # not running:
                self._save(ct)  # the config only
                return
            sb.leave(eps[0])
            ct.networks = [a for a in ct.networks if a.get("network") != net.id]
            self._settle(ct, sb)
            self._save(ct)

    def _release_network(self, ct: Container) -> None:
        """The sandbox released; the record keeps what was asked for. Idempotent."""
        if ct.released:
            return
        sb = self.sandbox(ct)
        if sb is not None:
            sb.release()
        ct.sandbox_id = ct.sandbox_key = None
        ct.ports = []
        ct.released = True
        if ct.id in self._containers:
            self._save(ct)
