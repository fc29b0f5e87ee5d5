"""A sandbox after a daemon restart: its namespace found at its key again (held alive by
the container), each endpoint re-learnt by the drivers, ports, names and peers, and an
endpoint whose interface is gone repaired or released (cnm.reconcile.decide).

A mixin of cnm.sandbox.sandbox.Sandbox (kept apart: the sandbox is long enough).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from cnm.errors import CNMError
from cnm.model import Endpoint, Network
from cnm.model import Sandbox as SandboxRecord
from cnm.naming import GATEWAY_BRIDGE
from cnm.ports import PortBinding
from cnm.reconcile.decide import Fate, endpoint_fate
from cnm.sandbox import rules
from cnm.sandbox.seams import EndpointControl
from cnm.undo import Undo

log = logging.getLogger(__name__)


class SandboxRestore:
    _ctl: EndpointControl
    _env: Any  # the Sandboxes that made it (typed there: it imports this module)
    record: SandboxRecord

    if TYPE_CHECKING:  # Sandbox's own

        @property
        def id(self) -> str: ...
        @property
        def key(self) -> str: ...
        def _announce(self, net: Network, ep: Endpoint, undo: Undo | None = None) -> None: ...
        def _apply_rules(self, undo: Undo, routed: str | None) -> Callable[[], None]: ...
        def _detach(self, ep: Endpoint, *, namespace_going: bool = False) -> None: ...
        def _route_holder(self) -> str | None: ...
        def _views(self) -> list[rules.EndpointView]: ...
        def endpoints(self) -> list[Endpoint]: ...
        def save(self) -> None: ...

    def restore(self, pid: int, wanted: Collection[str] | None = None) -> None:
        """After a daemon restart, for a container still running: the namespace bound
        at its key again, the drivers, ports, names and peers re-learned. An endpoint
        whose interface is gone is repaired (plugged in again, same address) while the
        container still asks for its network (`wanted`: network ids; None = all),
        released otherwise or when its network is gone (cnm.reconcile.decide); each
        said once in the log. One broken endpoint does not cost the others theirs."""
        self.record.key = self._env.os.adopt(self.id, pid)
        self._env.ports.restore([PortBinding.from_record(p) for p in self.record.ports], owner=self.id)
        present = self._env.os.interfaces(self.key)
        holder = self._route_holder()
        released: list[str] = []
        for ep in self.endpoints():
            net = self._ctl.network(ep.network_id)
            fate, why = endpoint_fate(
                network_known=net is not None,
                interface_present=not ep.ifname or ep.ifname in present,
                wanted=self._wanted(ep, net, wanted),
            )
            try:
                if fate is Fate.KEEP:
                    assert net is not None
                    self._ctl.restore_endpoint(ep)
                    self._announce(net, ep)
                    continue
                if fate is Fate.REPAIR:
                    assert net is not None
                    try:
                        self._repair(ep, net, routed=ep.id == holder)
                        log.warning(
                            "sandbox %s: endpoint %s on network %s repaired: %s; %s plugged in again with its address",
                            self.id[:12],
                            ep.id[:12],
                            net.name,
                            why,
                            ep.ifname,
                        )
                        continue
                    except CNMError as exc:
                        why = f"{why} and could not be plugged in again ({exc})"
                log.warning("sandbox %s: endpoint %s released: %s", self.id[:12], ep.id[:12], why)
                self._detach(ep)
                released.append(ep.id)
            except CNMError as exc:
                log.error("sandbox %s: endpoint %s: %s", self.id[:12], ep.id[:12], exc)
        # Endpoints a crash deleted after the record last listed them are forgotten;
        # the rules are applied again (as after a leave): the gateway bridge, default
        # route and published ports where they belong, even if a crash stopped a move.
        self.record.endpoint_ids = [ep.id for ep in self.endpoints()]
        try:
            with Undo() as undo:
                finish = self._apply_rules(undo, holder if holder not in released else None)
                undo.commit()
            finish()
        except CNMError as exc:
            log.warning("sandbox %s: applying its rules after a restart: %s", self.id[:12], exc)
        self.save()

    def _wanted(self, ep: Endpoint, net: Network | None, wanted: Collection[str] | None) -> bool:
        if wanted is None or net is None:
            return True
        if net.name == GATEWAY_BRIDGE:  # the sandbox's own: wanted while the rules need it
            return rules.needs_gateway_bridge([v for v in self._views() if v.id != ep.id])
        return net.id in wanted

    def _repair(self, ep: Endpoint, net: Network, routed: bool) -> None:
        """Make the endpoint's interface again (its driver's objects, the join, the
        plug), with its addresses, name, routes and published ports."""
        bindings = list(ep.port_bindings)
        ifname = ep.ifname or rules.next_ifname(self._views())
        self._ctl.recreate_endpoint(ep)
        result = self._ctl.join(ep, self.id, self.key, ifname)
        try:
            self._env.os.plug(self.key, result, ifname, ep.address, ep.address_v6, default_gateway=routed)
        except BaseException:
            self._ctl.leave(ep)
            raise
        if bindings:
            self._ctl.program_external_connectivity(ep, bindings)
        self._announce(net, ep)
