"""The snapshot the start-up decisions are made over: what the store knew at start, and
what the kernel holds (read through the OS layer)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Protocol

from cnm import marks
from cnm.osl import mounts
from cnm.reconcile.decide import ForeignMount, KernelFacts, LinkFact, NsFile, under
from cnm.store import Store

# Where records naming networks, endpoints, sandboxes and containers live in the local
# store: their last key component is the id.
ID_PREFIXES = ("network/", "endpoint/", "sandbox/", "container/", "globalcache/network/", "retiring/")
INTENT_PREFIX = "intent/"
NETNS_SUBDIRS = ("netns", "overlay")  # sandboxes (cnm.sandbox.osl), overlay networks (drivers.overlay)


class LinkLister(Protocol):
    def links(self) -> list: ...  # cnm.osl.netlink.Link: .name, .alias
    def close(self) -> None: ...
    def __enter__(self) -> LinkLister: ...
    def __exit__(self, *exc: object) -> None: ...


def known_ids(store: Store, extra: Iterable[str] = ()) -> frozenset[str]:
    """Every id the local store names now: records, intents and what they hold (a
    network intent's endpoints or pools are not ids of links). Read once, before
    start-up changes anything, so ids of records it then releases still count as ours."""
    ids = set(extra)
    for prefix in ID_PREFIXES:
        ids |= {kv.key[len(prefix) :].rsplit("/", 1)[-1] for kv in store.list(prefix)}
    for kv in store.list(INTENT_PREFIX):
        if isinstance(kv.value, dict) and isinstance(kv.value.get("id"), str):
            ids.add(kv.value["id"])
    ids.discard("")
    return frozenset(ids)


def _marked(links: Iterable, netns: str) -> list[LinkFact]:
    """Links with our mark, or a name that may be a provisional one (cnm.marks)."""
    return [
        LinkFact(netns, link.name, link.alias)
        for link in links
        if marks.parse(link.alias) is not None
        or (not link.alias and link.name.startswith(marks.PROVISIONAL) and len(link.name) == 15)
    ]


def entries(directory: str) -> list[str]:
    """Names in `directory`, sorted; none if it does not exist."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def read_kernel(
    *,
    host: LinkLister,
    netlink_for: Callable[[str], LinkLister],
    is_netns: Callable[[str], bool],
    run_dir: str,
    containers_dir: str,
    supervisors: Iterable[int],
    is_container_id: Callable[[str], bool],
    ns_entries: Callable[[str], list[str]] = entries,
) -> KernelFacts:
    """Links of ours in the daemon's namespace and in every overlay namespace; the
    files under run/netns and run/overlay; namespaces mounted there in the mount
    namespaces of our supervisors (an earlier life's); container directories."""
    links = _marked(host.links(), "")
    ns_files: list[NsFile] = []
    for sub in NETNS_SUBDIRS:
        d = os.path.join(run_dir, sub)
        for name in ns_entries(d):
            path = os.path.join(d, name)
            mounted = is_netns(path)
            ns_files.append(NsFile(path, mounted))
            if sub == "overlay" and mounted:
                with netlink_for(path) as nl:
                    links += _marked(nl.links(), path)
    foreign: list[ForeignMount] = []
    ours = mounts.mount_namespace()
    seen = {ours}
    for pid in supervisors:
        mnt = mounts.mount_namespace(pid)
        if mnt is None or mnt in seen:
            continue
        seen.add(mnt)
        info = mounts.mountinfo(pid)
        for sub in NETNS_SUBDIRS:
            for point, fstype in mounts.points_under(info, os.path.join(run_dir, sub)):
                if fstype == "nsfs" and under(point, os.path.join(run_dir, sub)):
                    foreign.append(ForeignMount(pid, point))
    dirs = tuple(n for n in entries(containers_dir) if is_container_id(n))
    return KernelFacts(links=tuple(links), ns_files=tuple(ns_files), foreign_mounts=tuple(foreign), container_dirs=dirs)
