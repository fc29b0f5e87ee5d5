"""The start-up reconcile carried out: after the daemon restored what its store says
lives, remove what has no owner (cnm.reconcile.decide says what), through the OS layer
and the services that own each thing. Every action is logged once, at warning level,
with its reason; afterwards the state is consistent, so the next start says nothing.

The daemon builds a `Reconciler` before start-up changes anything (it remembers every
id the store knew), lets the services finish their part (intents, restore, adopt:
endpoints repaired or released), then calls `sweep()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cnm import marks
from cnm.errors import CNMError
from cnm.reconcile import decide
from cnm.reconcile.decide import Action, KernelFacts, Owners, Plan
from cnm.reconcile.facts import LinkLister, entries, known_ids, read_kernel
from cnm.store import Store

log = logging.getLogger("cnm.reconcile")

RETIRING_PREFIX = "retiring/"  # cnm.retiring (deferred endpoint teardown): finished by its owner


class Handle(LinkLister, Protocol):
    def link(self, name: str): ...  # -> object with .alias
    def delete_link(self, name: str) -> bool: ...
    def __enter__(self) -> Handle: ...


@dataclass
class Services:
    """What the sweep asks of the daemon's parts (plain callables: the composition root
    wires them; unit tests pass fakes)."""

    networks: Callable[[], Iterable]  # live cnm.model.Network
    endpoints: Callable[[], Iterable]  # live cnm.model.Endpoint
    sandboxes: Callable[[], Iterable]  # live cnm.sandbox.Sandbox (.id, .key)
    containers: Callable[[], Iterable[str]]  # container ids with a record
    overlay_netns: Callable[[str], str | None]  # network id -> its namespace path, if it has one
    remove_container: Callable[[str], None]  # the runtime's forced remove
    supervisors: Callable[[], Iterable[int]] = lambda: ()  # pids of running container supervisors
    pools: Callable[[], Iterable[tuple[str, str]]] = lambda: ()  # (pool id, subnet) of our own IPAM spaces
    release_pool: Callable[[str], None] = lambda pool_id: None
    held_pools: Callable[[], Iterable[str]] = lambda: ()  # pool ids of unfinished intents
    port_owners: Callable[[], Iterable[str]] = lambda: ()  # owners of allocated host ports
    release_ports: Callable[[str], int] = lambda owner: 0
    after: list[Callable[[set[str]], None]] = field(default_factory=list)  # given the live container ids


@dataclass
class Report:
    actions: list[Action] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: int = 0

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.kind] = counts.get(a.kind, 0) + 1
        done = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to remove"
        extra = f"; {len(self.failed)} failed" if self.failed else ""
        alone = f"; left alone {self.foreign} link(s) marked for ids this daemon never recorded" if self.foreign else ""
        return f"start-up reconcile: {done}{extra}{alone}"


class Reconciler:
    def __init__(
        self,
        store: Store,
        *,
        run_dir: str,
        containers_dir: str,
        host: Handle,
        netlink_for: Callable[[str], Handle],
        is_netns: Callable[[str], bool],
        delete_netns: Callable[[str], None],
        unmount_in: Callable[[int, str], None],
        is_container_id: Callable[[str], bool],
        extra_known: Iterable[str] = (),
        ns_entries: Callable[[str], list[str]] = entries,
    ) -> None:
        """Remembers the ids the store names now: build it before start-up changes anything."""
        self.store = store
        self.run_dir = run_dir
        self.containers_dir = containers_dir
        self.host = host
        self.netlink_for = netlink_for
        self.is_netns = is_netns
        self.delete_netns = delete_netns
        self.unmount_in = unmount_in
        self.is_container_id = is_container_id
        self.ns_entries = ns_entries
        self.known = known_ids(store, extra_known)

    # ------------------------------------------------------------------ facts
    def owners(self, svc: Services) -> Owners:
        networks = list(svc.networks())
        sandboxes = list(svc.sandboxes())
        live_sb = {sb.id for sb in sandboxes}
        namespaces: dict[str, str] = {sb.key: sb.id for sb in sandboxes if sb.key}
        for net in networks:
            path = svc.overlay_netns(net.id)
            if path:
                namespaces[path] = net.id
        retiring = {kv.key[len(RETIRING_PREFIX) :] for kv in self.store.list(RETIRING_PREFIX)}
        return Owners(
            networks=frozenset(n.id for n in networks),
            endpoints=frozenset(ep.id for ep in svc.endpoints() if ep.sandbox_id in live_sb),
            namespaces=namespaces,
            containers=frozenset(svc.containers()),
            known=self.known,
            leave_alone=frozenset(retiring),
        )

    def kernel(self, svc: Services) -> KernelFacts:
        return read_kernel(
            host=self.host,
            netlink_for=self.netlink_for,
            is_netns=self.is_netns,
            run_dir=self.run_dir,
            containers_dir=self.containers_dir,
            supervisors=svc.supervisors(),
            is_container_id=self.is_container_id,
            ns_entries=self.ns_entries,
        )

    # ------------------------------------------------------------------ sweep
    def sweep(self, svc: Services) -> Report:
        report = Report()
        # The kernel first, then the owners: an object made meanwhile (its record
        # written first) is either unseen or owned, never swept as an orphan.
        kernel = self.kernel(svc)
        plan: Plan = decide.sweep(kernel, self.owners(svc))
        report.foreign = len(plan.foreign)
        for link in plan.foreign:
            log.debug(
                "left alone: %s%s (%s): its id was never this daemon's",
                link.name,
                f" in {link.netns}" if link.netns else "",
                link.alias,
            )
        actions = list(plan.actions)
        held = {p.pool_id for n in svc.networks() for p in getattr(n, "pools", ())} | set(svc.held_pools())
        actions += decide.orphan_pools(svc.pools(), held)
        for action in actions:
            try:
                if self._do(action, svc):
                    report.actions.append(action)
                    log.warning("reconcile: %s", action.describe())
            except CNMError as exc:
                report.failed.append(f"{action.describe()}: {exc}")
                log.error("reconcile: could not %s: %s", action.describe(), exc)
        live_sandboxes = {sb.id for sb in svc.sandboxes()}
        for owner in sorted(set(svc.port_owners()) - live_sandboxes):
            n = svc.release_ports(owner)
            if n:
                log.warning("reconcile: released %d host port(s) of sandbox %s, which is gone", n, owner[:12])
        containers = set(svc.containers())
        for step in svc.after:
            try:
                step(containers)
            except CNMError as exc:
                report.failed.append(str(exc))
                log.error("reconcile: %s", exc)
        if report.actions or report.failed or report.foreign:
            log.info("%s", report.summary())
        return report

    def _do(self, action: Action, svc: Services) -> bool:
        """Carry one action out; False when there was nothing left to do."""
        if action.kind == decide.DELETE_LINK:
            return self._delete_link(action)
        if action.kind == decide.REMOVE_NETNS:
            self.delete_netns(action.target)  # unmount and unlink; idempotent
            return True
        if action.kind == decide.UNMOUNT_FOREIGN:
            self.unmount_in(action.holder, action.target)
            return True
        if action.kind == decide.REMOVE_CONTAINER:
            svc.remove_container(action.target)
            return True
        if action.kind == decide.RELEASE_POOL:
            svc.release_pool(action.target)
            return True
        raise ValueError(f"unknown reconcile action {action.kind}")

    def _delete_link(self, action: Action) -> bool:
        def delete(nl: Handle) -> bool:
            from cnm.errors import NotFound

            try:
                alias = nl.link(action.target).alias
            except NotFound:
                return False
            # Checked again right before: only a link still carrying the mark decided on
            # (or, half-made, still none).
            if alias != action.alias or (action.alias is not None and marks.parse(alias) is None):
                return False
            return nl.delete_link(action.target)

        if not action.netns:
            return delete(self.host)
        if not self.is_netns(action.netns):
            return False
        with self.netlink_for(action.netns) as nl:
            return delete(nl)
