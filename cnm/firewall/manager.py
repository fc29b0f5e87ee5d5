"""Firewall: holds the current FirewallState; every change re-renders the whole table
and applies it as one nft transaction. If the apply fails, the previous state stays,
so memory and kernel agree (nft transactions are all-or-nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from cnm.errors import NotFound
from cnm.firewall.model import FirewallState, NetworkRules, PortMapping
from cnm.firewall.render import TABLES, render, required_sysctls
from cnm.osl import nft, sysctl

ApplyFn = Callable[[str], None]
SysctlFn = Callable[[str, str], None]
DeleteFn = Callable[[], None]


def _default_apply(script: str) -> None:
    nft.apply(script)


def _default_sysctl(key: str, value: str) -> None:
    sysctl.write(key, value)


def _default_delete() -> None:
    nft.delete_tables(TABLES)


class Firewall:
    """The daemon's one firewall. Thread-safe; every method is one atomic apply."""

    def __init__(
        self, apply: ApplyFn | None = None, sysctl: SysctlFn | None = None, delete: DeleteFn | None = None
    ) -> None:
        self._apply = apply or _default_apply
        self._sysctl = sysctl or _default_sysctl
        self._delete = delete or _default_delete
        self._state = FirewallState()
        self._lock = threading.Lock()

    @property
    def state(self) -> FirewallState:
        return self._state

    def _commit(self, new: FirewallState) -> None:
        # Everything that can fail happens before the state is swapped (render validates).
        script = render(new)
        for key, value in required_sysctls(new).items():
            self._sysctl(key, value)
        self._apply(script)
        self._state = new

    def set_network(self, rules: NetworkRules) -> None:
        """Add or replace a network's rules. Idempotent."""
        with self._lock:
            s = self._state
            self._commit(FirewallState({**s.networks, rules.id: rules}, s.ports))

    def remove_network(self, network_id: str) -> None:
        """Forget a network and any port mappings still pointing at its bridge. Idempotent."""
        with self._lock:
            s = self._state
            net = s.networks.get(network_id)
            if net is None:
                return
            networks = {k: v for k, v in s.networks.items() if k != network_id}
            ports = {ep: m for ep, m in s.ports.items() if all(pm.bridge != net.bridge for pm in m)}
            self._commit(FirewallState(networks, ports))

    def add_ports(self, endpoint_id: str, mappings: Sequence[PortMapping]) -> None:
        """Publish the endpoint's ports, replacing any it had. Raises NotFound if a
        mapping names a bridge with no network, Conflict if a host port is taken."""
        with self._lock:
            s = self._state
            for pm in mappings:
                if s.network_by_bridge(pm.bridge) is None:
                    raise NotFound(f"no network on bridge {pm.bridge}: set the network's rules before publishing ports")
            ports = dict(s.ports)
            if mappings:
                ports[endpoint_id] = tuple(mappings)
            else:
                ports.pop(endpoint_id, None)
            self._commit(FirewallState(s.networks, ports))

    def remove_ports(self, endpoint_id: str) -> None:
        """Unpublish the endpoint's ports. Idempotent."""
        with self._lock:
            s = self._state
            if endpoint_id not in s.ports:
                return
            self._commit(FirewallState(s.networks, {k: v for k, v in s.ports.items() if k != endpoint_id}))

    def restore(self, networks: Iterable[NetworkRules], ports: Mapping[str, Sequence[PortMapping]]) -> None:
        """After a daemon restart: load the stored inputs and apply once."""
        with self._lock:
            self._commit(FirewallState({n.id: n for n in networks}, {ep: tuple(m) for ep, m in ports.items() if m}))

    def reapply(self) -> None:
        """Re-render and re-apply the current state, e.g. after `nft flush ruleset`."""
        with self._lock:
            self._commit(self._state)

    def teardown(self) -> None:
        """Delete our tables (only ours) and forget the state. Idempotent."""
        with self._lock:
            self._delete()
            self._state = FirewallState()
