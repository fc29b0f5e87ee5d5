"""A daemon killed at any instant, without root: the FakeHost's world (kernel, store,
processes) with a fuse on every change to it.

`Fuse(at=k)` lets k-1 changes through and "kills the daemon" at the k-th: that change
does not happen, and from then on every change raises `Killed` (a BaseException, as
SIGKILL stops everything: rollbacks do not run, best-effort loops do not continue).
Restarting is `host.restarted()` over the same world with the fuse off. Counting the
changes an operation makes (`Fuse(at=None)`) gives every instant to kill it at.

`problems(host)` lists everything that has no owner or lost its interface, as the
issue demands after a restart (empty = consistent).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from cnm import marks
from cnm.naming import GATEWAY_BRIDGE, uses_embedded_dns
from cnm.osl.fake import FakeNamespaces, FakeNetlink
from cnm.runtime.fake import FakeRuntime
from cnm.store.memory import MemoryStore
from tests.unit.fakehost import NETNS_DIR, FakeHost, RecordingFirewall


class Killed(BaseException):
    """The daemon was killed here."""


MUTATORS: dict[type, tuple[str, ...]] = {
    FakeNetlink: (
        "create_bridge",
        "create_veth",
        "delete_link",
        "set_link_up",
        "rename_link",
        "set_master",
        "move_link_to_netns",
        "add_address",
        "del_address",
        "add_route",
        "del_route",
        "sysctl_write",
        "park_link",
        "retire_link",
        "delete_link_group",
    ),
    FakeNamespaces: ("create", "delete", "bind"),
    MemoryStore: ("atomic",),
    FakeRuntime: ("start", "remove", "stop", "kill"),
    RecordingFirewall: ("ports_published", "ports_revoked"),
}


class Fuse:
    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.count = 0
        self.blown = False
        self.where = ""

    def check(self, what: str) -> None:
        if self.blown:
            raise Killed(f"dead since {self.where}")
        self.count += 1
        if self.at is not None and self.count >= self.at:
            self.blown = True
            self.where = f"change {self.count} ({what})"
            raise Killed(f"killed before {self.where}")


@contextlib.contextmanager
def fuse(at: int | None) -> Iterator[Fuse]:
    """Every change to the world goes through the fuse while the block runs."""
    f = Fuse(at)
    saved = []
    for cls, names in MUTATORS.items():
        for name in names:
            original = cls.__dict__.get(name)
            if original is None:
                continue

            def wrapped(*args, __original=original, __what=f"{cls.__name__}.{name}", **kwargs):
                f.check(__what)
                return __original(*args, **kwargs)

            saved.append((cls, name, original))
            setattr(cls, name, functools.wraps(original)(wrapped))
    try:
        yield f
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


def problems(host: FakeHost) -> list[str]:
    """Everything inconsistent between the world (kernel, processes) and the store, as
    one line each, once the deferred teardown has run (the daemon's graveyard does in
    the background what FakeHost.settle does at once)."""
    host.settle()
    out: list[str] = []
    ctl, world = host.controller, host.world
    nets = {n.id: n for n in ctl.list_networks()}
    eps = {ep.id: ep for ep in ctl.all_endpoints()}
    sandboxes = {sb.id: sb for sb in host.sandboxes.all()}
    containers = {ct.id: ct for ct in host.containers.list_containers()}
    out += [f"intent left: {kv.key}" for kv in host.store.list("intent/")]
    # links of ours in the host namespace
    bridges = {}
    for link in world.host.links():
        mark = marks.parse(link.alias)
        if mark is None:
            continue
        kind, id_ = mark
        if kind == "network":
            bridges[id_] = link.name
            if id_ not in nets:
                out.append(f"bridge {link.name} of no network ({id_[:12]})")
        elif id_ not in eps or eps[id_].sandbox_id not in sandboxes:
            out.append(f"veth {link.name} of no joined endpoint ({id_[:12]})")
    for net in nets.values():
        if net.driver in ("bridge", "nogw") and net.id not in bridges:
            out.append(f"network {net.name} has no bridge")
    # namespaces
    keys = {sb.key for sb in sandboxes.values()}
    out += [f"namespace {p} of no sandbox" for p in world.namespaces if p.startswith(NETNS_DIR) and p not in keys]
    for sb in sandboxes.values():
        ct = containers.get(sb.container_id)
        if ct is None or not host.containers.is_running(ct):
            out.append(f"sandbox {sb.id[:12]} of no running container")
        if not world.exists(sb.key):
            out.append(f"sandbox {sb.id[:12]} has no namespace")
            continue
        inside = set(world.handle(sb.key).link_names())
        for eid in sb.record.endpoint_ids:
            ep = eps.get(eid)
            if ep is None:
                out.append(f"sandbox {sb.id[:12]} lists endpoint {eid[:12]}, which does not exist")
            elif ep.ifname and ep.ifname not in inside:
                out.append(f"endpoint {eid[:12]} has no interface ({ep.ifname}) in its sandbox")
    owned = {eid for sb in sandboxes.values() for eid in sb.record.endpoint_ids}
    out += [f"endpoint {eid[:12]} in no sandbox" for eid in eps if eid not in owned]
    # containers
    for ct in containers.values():
        running = host.containers.is_running(ct)
        if (
            running
            and ct.network_mode not in ("host", "none")
            and not ct.shared_with
            and ct.sandbox_id not in sandboxes
        ):
            out.append(f"running container {ct.name} has no sandbox")
        if not running and not ct.released:
            out.append(f"stopped container {ct.name} still holds its network")
    # IPAM: pools and addresses
    default = host.ipams.get("default")
    held = {p.pool_id for n in nets.values() for p in n.pools}
    out += [f"pool {pid} ({subnet}) of no network" for pid, subnet in default.local_pools() if pid not in held]
    for net in nets.values():
        for pool in net.pools:
            want = {str(a) for a in (pool.gateway, *pool.aux_addresses.values()) if a is not None}
            want |= {
                str(a.ip)
                for ep in eps.values()
                if ep.network_id == net.id
                for a in ep.addresses()
                if a.ip in pool.subnet
            }
            got = set(default.allocated(pool.pool_id))
            out += [f"address {a} in {pool.subnet} held by no one" for a in sorted(got - want)]
            out += [f"address {a} in {pool.subnet} in use but not allocated" for a in sorted(want - got)]
    # ports, firewall, names
    out += [
        f"host port {port}/{proto} held for {owner[:12]}, which is gone"
        for proto, _ip, port, owner in host.ports.allocations()
        if owner not in sandboxes
    ]
    publishing = {eid for eid, ep in eps.items() if ep.port_bindings}
    out += [
        f"firewall publishes ports of {eid[:12]}, which publishes none"
        for eid in host.firewall.published
        if eid not in publishing
    ]
    out += [
        f"endpoint {eid[:12]} publishes ports the firewall lacks"
        for eid in publishing
        if eid not in host.firewall.published
    ]
    named = sum(
        1
        for ep in eps.values()
        if ep.network_id in nets
        and (uses_embedded_dns(nets[ep.network_id]) or nets[ep.network_id].name == GATEWAY_BRIDGE)
    )
    if len(host.discovery.table) != named:
        out.append(f"DNS holds {len(host.discovery.table)} endpoint(s), {named} live")
    return out
