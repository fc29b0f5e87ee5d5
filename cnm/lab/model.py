"""A lab as data: frozen dataclasses the schema fills in (cnm.lab.schema) and the
realiser, checks and graph read. Pure: nothing here touches the system."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_MTU = 1500
DEFAULT_COMMAND = ("busybox", "sleep", "1d")
# etcd's own defaults. A lab on a loaded machine (dozens of daemons on two cores) may
# need more: a heartbeat that misses its slot while etcd waits for a core costs an
# election (see cluster_store.heartbeat / election in lab files).
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000

UNDERLAY_IFACE = "ul0"  # the host-side underlay link (containers use ethN)
SWITCH_BRIDGE = "br0"


@dataclass(frozen=True)
class Link:
    """One host's underlay link: MTU and impairments (None = not impaired)."""

    mtu: int = DEFAULT_MTU
    rate: str | None = None  # tc rate, e.g. "10mbit"
    loss: float | None = None  # percent, each direction
    delay: float | None = None  # milliseconds


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # underlay IPv4 address
    link: Link


@dataclass(frozen=True)
class Underlay:
    subnet: str

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class ClusterStore:
    """etcd members, one per listed host (hosts[i] runs member i). Empty = none.
    heartbeat_ms / election_ms: etcd's --heartbeat-interval / --election-timeout."""

    hosts: tuple[str, ...] = ()
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    election_ms: int = DEFAULT_ELECTION_MS

    @property
    def members(self) -> int:
        return len(self.hosts)


@dataclass(frozen=True)
class Network:
    name: str
    driver: str
    subnet: str | None
    options: tuple[tuple[str, str], ...]
    internal: bool
    hosts: tuple[str, ...]  # bridge: the hosts it is created on; overlay: all hosts

    @property
    def is_overlay(self) -> bool:
        return self.driver == "overlay"


@dataclass(frozen=True)
class Container:
    name: str
    host: str
    networks: tuple[str, ...]
    command: tuple[str, ...]  # with an image, () = the image's CMD
    ip: str | None
    ports: tuple[str, ...]
    image: str = ""  # "" = the host's filesystem
    cap_add: tuple[str, ...] = ()  # capabilities beyond Docker's default set
    privileged: bool = False
    group: str | None = None  # the `group:` entry that generated it, if any


@dataclass(frozen=True)
class Check:
    """One probe from a container: ping TARGET, tcp TARGET:PORT, or mtu of an interface.
    `spec` is the index of the lab file's `checks` entry it comes from (a group entry
    expands to many probes); `spec_label` describes that entry."""

    kind: str  # ping | tcp | mtu
    source: str  # container name
    target: str | None  # container, host name or IPv4 address (ping, tcp)
    port: int | None = None  # tcp
    mtu: int | None = None  # mtu
    iface: str = "eth0"  # mtu
    network: str | None = None  # which of the target container's addresses
    expect_pass: bool = True
    spec: int = 0
    spec_label: str = ""

    @property
    def label(self) -> str:
        if self.kind == "mtu":
            what = f"mtu {self.source}:{self.iface} == {self.mtu}"
        else:
            dest = f"{self.target}:{self.port}" if self.kind == "tcp" else self.target
            via = f" via {self.network}" if self.network else ""
            what = f"{self.kind} {self.source} -> {dest}{via}"
        return what + ("" if self.expect_pass else " (expect fail)")


@dataclass(frozen=True)
class Lab:
    name: str
    hosts: tuple[Host, ...]
    underlay: Underlay
    cluster: ClusterStore
    networks: tuple[Network, ...]
    containers: tuple[Container, ...]
    checks: tuple[Check, ...]
    source: str = "<lab>"
    images: tuple[str, ...] = ()  # absolute paths of docker-save tarballs for every daemon

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def namespace(self, host: str) -> str:
        return namespace(self.name, host)

    @property
    def switch_namespace(self) -> str:
        return namespace(self.name, "sw")


def namespace(lab: str, host: str) -> str:
    """The network namespace of a lab host (`sw` is the underlay switch)."""
    return f"lab-{lab}-{host}"


def switch_port(host: str) -> str:
    """The switch-side veth of a host's underlay link."""
    return f"p-{host}"
