"""What start-up does with what a crash left: pure decisions over a snapshot.

The daemon restores what its store says lives (networks, running containers' sandboxes
and endpoints), then compares the kernel with it. These functions decide, from plain
data only (no I/O: unit-tested without root):

- `endpoint_fate`: an endpoint of a running container is kept, repaired (its
  interface is gone but the container still asks for the network: re-plugged) or
  released (its network is gone, or the container no longer asks for it);
- `sweep`: which kernel objects have no owner any more, and may be removed because
  they are provably ours: anything in a place only this daemon uses (its run
  directory: sandbox and overlay namespaces and the links inside the latter,
  container directories), and, in the daemon's network namespace (which other tools
  may share), links carrying our mark *and* naming an id this daemon's store knew
  (a record, an intent). A marked link naming an id we never recorded is someone
  else's (another daemon's, a `net plugin serve`): left alone, and counted;
- `orphan_pools`: address pools of our own (local) IPAM spaces no network or
  intent holds.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cnm import marks


class Fate(enum.Enum):
    KEEP = "keep"
    REPAIR = "repair"
    RELEASE = "release"


def endpoint_fate(*, network_known: bool, interface_present: bool, wanted: bool) -> tuple[Fate, str]:
    """An endpoint of a running container after a restart, and why (for the log).
    `interface_present`: its interface is in the sandbox; `wanted`: the container
    still asks to be on its network (a crash in the middle of a disconnect leaves
    the endpoint without its interface while the container's record still lists the
    network: the disconnect never answered, so the container stays connected)."""
    if not network_known:
        return Fate.RELEASE, "its network no longer exists"
    if interface_present:
        return Fate.KEEP, ""
    if wanted:
        return Fate.REPAIR, "its interface was gone"
    return Fate.RELEASE, "its interface was gone and its container no longer asks for the network"


class ServedFate(enum.Enum):
    """What a restarted `net plugin serve` does with an endpoint the engine made."""

    KEEP = "keep"  # joined, its interface there: re-learned
    UNJOIN = "unjoin"  # recorded joined, interface gone: recorded as left, made known again
    UNPLUG = "unplug"  # not joined, but the driver found its interface: what a Join made is undone
    REGISTER = "register"  # not joined, nothing in the kernel: made known to the driver again


def served_endpoint_fate(*, joined: bool, restored: bool) -> ServedFate:
    """`restored`: the driver re-learned the endpoint from the kernel (its interface is
    there). A Docker engine whose Join failed (the plugin died) tries Join again or
    deletes the endpoint; either needs the endpoint known and not plugged in."""
    if joined:
        return ServedFate.KEEP if restored else ServedFate.UNJOIN
    return ServedFate.UNPLUG if restored else ServedFate.REGISTER


# --------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class LinkFact:
    """A link found in the daemon's namespace ("") or in an overlay namespace (its path)."""

    netns: str
    name: str
    alias: str | None = None


@dataclass(frozen=True)
class NsFile:
    """A file under the run directory's namespace directories (netns/, overlay/)."""

    path: str
    mounted: bool  # a namespace is mounted there, in the daemon's mount namespace


@dataclass(frozen=True)
class ForeignMount:
    """A namespace mounted under our namespace directories in another mount namespace:
    that of an earlier life of the daemon (started by `ip netns exec`), kept alive by
    the container supervisors it started. `holder` is a pid inside it."""

    holder: int
    path: str


@dataclass(frozen=True)
class KernelFacts:
    links: tuple[LinkFact, ...] = ()
    ns_files: tuple[NsFile, ...] = ()
    foreign_mounts: tuple[ForeignMount, ...] = ()
    container_dirs: tuple[str, ...] = ()  # container ids with a directory under run/containers


@dataclass(frozen=True)
class Owners:
    """What lives, once start-up restored it, and what the store knew at start."""

    networks: frozenset[str] = frozenset()  # network ids
    endpoints: frozenset[str] = frozenset()  # ids of endpoints joined to a live sandbox
    namespaces: Mapping[str, str] = field(default_factory=dict)  # live netns path -> its owner's id
    containers: frozenset[str] = frozenset()  # container ids with a record
    known: frozenset[str] = frozenset()  # every network/endpoint id the store named
    leave_alone: frozenset[str] = frozenset()  # ids another part of start-up owns (retiring)


@dataclass(frozen=True)
class Action:
    kind: str  # delete-link, remove-netns, unmount-foreign, remove-container, release-pool
    target: str  # link name, path, container id, pool id
    why: str
    netns: str = ""  # delete-link: where ("" = the daemon's namespace)
    alias: str | None = None  # delete-link: the mark it must still carry when deleted
    holder: int = 0  # unmount-foreign: a pid in that mount namespace

    def describe(self) -> str:
        where = f" in {self.netns}" if self.netns else ""
        holder = f" (mount namespace of pid {self.holder})" if self.holder else ""
        return f"{self.kind} {self.target}{where}{holder}: {self.why}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    foreign: tuple[LinkFact, ...]  # marked links naming ids we never recorded: left alone


DELETE_LINK = "delete-link"
REMOVE_NETNS = "remove-netns"
UNMOUNT_FOREIGN = "unmount-foreign"
REMOVE_CONTAINER = "remove-container"
RELEASE_POOL = "release-pool"


def _host_link(link: LinkFact, owners: Owners) -> Action | None | bool:
    """Decision for a marked link in the daemon's namespace: an Action, None (keep),
    or False (foreign: not ours to touch)."""
    mark = marks.parse(link.alias)
    if mark is None:
        return None
    kind, id_ = mark
    if id_ in owners.leave_alone:
        return None
    if id_ not in owners.known:
        return False
    if kind == "network":
        # An overlay's devices live in its own namespace once made: one still here is
        # left over from a crash between creation and the move.
        overlay = link.alias is not None and link.alias.startswith(marks.OVERLAY)
        if id_ in owners.networks and not overlay:
            return None
        why = (
            "a device of an overlay network left in the host namespace"
            if overlay and id_ in owners.networks
            else f"network {id_[:12]} no longer exists"
        )
        return Action(DELETE_LINK, link.name, why, alias=link.alias)
    if id_ in owners.endpoints:
        return None
    return Action(DELETE_LINK, link.name, f"endpoint {id_[:12]} is not joined to any live sandbox", alias=link.alias)


def _overlay_link(link: LinkFact, owners: Owners) -> Action | None:
    """A link inside one of our live overlay namespaces (all of it is ours)."""
    mark = marks.parse(link.alias)
    if mark is None:
        return None
    kind, id_ = mark
    if id_ in owners.leave_alone:
        return None
    if kind == "network":
        if owners.namespaces.get(link.netns) == id_:
            return None
        return Action(
            DELETE_LINK,
            link.name,
            f"a device of network {id_[:12]} in another network's namespace",
            netns=link.netns,
            alias=link.alias,
        )
    if id_ in owners.endpoints:
        return None
    return Action(
        DELETE_LINK,
        link.name,
        f"endpoint {id_[:12]} is not joined to any live sandbox",
        netns=link.netns,
        alias=link.alias,
    )


def provisional(ids: Iterable[str]) -> dict[str, str]:
    """Provisional link name -> the mark it was made for, for every mark these ids
    could carry (cnm.marks.provisional_name)."""
    return {marks.provisional_name(prefix + id_): prefix + id_ for id_ in ids for prefix in marks.KINDS}


def sweep(kernel: KernelFacts, owners: Owners) -> Plan:
    """The kernel objects to remove, in the order to remove them."""
    actions: list[Action] = []
    foreign: list[LinkFact] = []
    dead_ns = {f.path for f in kernel.ns_files if f.path not in owners.namespaces}
    made_for = (
        provisional(owners.known)
        if any(link.name.startswith(marks.PROVISIONAL) and not link.alias for link in kernel.links)
        else {}
    )
    for link in kernel.links:
        if not link.alias and link.name in made_for:
            # A creation a crash interrupted: the name says for which of our ids.
            actions.append(
                Action(
                    DELETE_LINK, link.name, f"left half-made (for {made_for[link.name]})", netns=link.netns, alias=None
                )
            )
            continue
        if link.netns == "":
            got = _host_link(link, owners)
            if got is False:
                foreign.append(link)
            elif isinstance(got, Action):
                actions.append(got)
        elif link.netns in dead_ns:
            # Going with its namespace; an overlay's VXLAN device first, so its socket
            # closes now even if the namespace lingers (held by another mount).
            if marks.parse(link.alias) is not None:
                actions.append(
                    Action(DELETE_LINK, link.name, "its namespace has no owner", netns=link.netns, alias=link.alias)
                )
        else:
            got_ov = _overlay_link(link, owners)
            if got_ov is not None:
                actions.append(got_ov)
    for f in sorted(kernel.ns_files, key=lambda f: f.path):
        if f.path in dead_ns:
            what = "a namespace" if f.mounted else "a stale mount point"
            actions.append(Action(REMOVE_NETNS, f.path, f"{what} no sandbox or network owns"))
    for m in sorted(kernel.foreign_mounts, key=lambda m: (m.holder, m.path)):
        if m.path not in owners.namespaces:
            actions.append(
                Action(
                    UNMOUNT_FOREIGN,
                    m.path,
                    "a namespace no sandbox or network owns, mounted in an earlier life's mount namespace",
                    holder=m.holder,
                )
            )
    for cid in sorted(kernel.container_dirs):
        if cid not in owners.containers:
            actions.append(Action(REMOVE_CONTAINER, cid, "a container directory with no container record"))
    return Plan(tuple(actions), tuple(foreign))


def orphan_pools(pools: Iterable[tuple[str, str]], held: Iterable[str]) -> list[Action]:
    """Pools (pool id, subnet) of our own IPAM spaces that nothing holds: a crash after
    the pool was reserved and before the network (or its intent) recorded it."""
    held_ids = set(held)
    return [
        Action(RELEASE_POOL, pool_id, f"subnet {subnet} is reserved but no network holds it")
        for pool_id, subnet in sorted(pools)
        if pool_id not in held_ids
    ]


def under(path: str, directory: str) -> bool:
    """`path` is inside `directory` (not the directory itself)."""
    d = os.path.normpath(directory) + "/"
    return os.path.normpath(path).startswith(d)
