"""Lab topology files: YAML -> frozen dataclasses, strictly validated (pure).

Every error is one line naming the file and the field, e.g.
`labs/x.yaml: containers[2].networks[0]: unknown network 'fronted' (known: back, front)`.

Schema (see README, "Labs (`net lab`)"):

    name: demo                          # lab name: [a-z][a-z0-9-]*, at most 24 characters
    hosts: [h1, h2]                     # host names: [a-z][a-z0-9-]*, at most 12 characters
                                        # or generated: {count: 100, prefix: h} -> h1 … h100
    underlay:                           # optional
      subnet: 198.18.0.0/24             # inside 198.18.0.0/15 (default 198.18.0.0/24)
      mtu: 1500                         # default for every link
      rate: 100mbit                     # default rate limit for every link (tbf)
      loss: 0.5                         # default loss, percent, each direction (nftables)
      delay: 10                         # default delay, ms (needs the kernel's netem)
      links:                            # per-host overrides
        h2: {address: 198.18.0.20, mtu: 1400, rate: 10mbit, loss: 1, delay: 0}
    cluster_store:                      # optional; etcd: 0 (the default) = none
      etcd: 3
      hosts: [h1, h2, h3]               # default: the first `etcd` hosts
      heartbeat: 100                    # ms, etcd's --heartbeat-interval (default 100)
      election: 1000                    # ms, --election-timeout (default max(1000, 10 heartbeats))
    networks:
      - name: ov
        driver: overlay                 # bridge (default) | overlay
        subnet: 10.10.0.0/24
        options: {com.docker.network.driver.mtu: "1400"}
        internal: false
        hosts: [h1]                     # bridge only: the hosts to create it on (default all)
    images: [../build/images/busybox.tar]   # docker-save tarballs loaded into every host's daemon
    containers:
      - name: c1
        host: h1
        networks: [ov]                  # or `network: ov`; default: the host's `bridge`
        command: busybox httpd -f -p 80 # string (split like a shell) or list; default busybox sleep 1d
        image: busybox:latest           # optional: run on this image (its tarball under `images:`);
                                        # without, on the host's filesystem (command found on PATH)
        ip: 10.10.0.10                  # on the first network
        ports: ["8080:80"]
        cap_add: [NET_ADMIN]            # beyond Docker's default 14 capabilities
        privileged: false               # every capability, no seccomp filter, the host's devices
      - group: red                      # generated: red-h1 … (red-<host>-<i> with per_host > 1)
        per_host: 1                     # on each of `hosts` (default: every host)
        network: red                    # and any field of a single container but name/host/ip
    checks:
      - {from: c1, ping: c2}            # container, group, host name or IPv4 address
      - {from: red, ping: red, sample: 20}   # groups: see cnm.lab.checkspec
      - {from: c1, tcp: "c2:80", expect: fail, network: ov}
      - {from: c1, mtu: 1450}           # MTU of the container's eth0 (or `iface:`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnm.errors import InvalidParameter
from cnm.lab import checkspec, schema
from cnm.lab.fields import LAB_NAME, Ctx, rate_bits
from cnm.lab.model import (
    DEFAULT_COMMAND,
    SWITCH_BRIDGE,
    UNDERLAY_IFACE,
    Check,
    ClusterStore,
    Container,
    Host,
    Lab,
    Link,
    Network,
    Underlay,
    namespace,
    switch_port,
)

TOP_FIELDS = ("name", "hosts", "underlay", "cluster_store", "networks", "images", "containers", "checks")


def parse(data: Any, source: str = "<lab>") -> Lab:
    """A parsed YAML document -> Lab, or InvalidParameter naming file and field."""
    ctx = Ctx(source)
    data = ctx.mapping(data, "", TOP_FIELDS, ("name", "hosts"))
    name = ctx.name(data["name"], "name", LAB_NAME, "use [a-z][a-z0-9-]*, at most 24 characters")
    hosts, underlay = schema.hosts_and_underlay(ctx, data)
    host_names = [h.name for h in hosts]
    store = schema.cluster(ctx, data, host_names)
    networks = schema.networks(ctx, data, host_names, store)
    containers = schema.containers(ctx, data, host_names, networks)
    checks = checkspec.checks(ctx, data, name, host_names, containers, networks)
    return Lab(
        name=name,
        hosts=hosts,
        underlay=underlay,
        cluster=store,
        networks=networks,
        containers=containers,
        checks=checks,
        source=source,
        images=schema.images(ctx, data, source),
    )


def load_text(text: str, source: str = "<lab>") -> tuple[Lab, Any]:
    """YAML text -> (Lab, the raw document, kept in the lab's record)."""
    import yaml  # lazy: the CLI starts without it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise InvalidParameter(f"{source}: not valid YAML: {first}") from None
    return parse(data, source), data


def load(path: str | Path) -> tuple[Lab, Any]:
    """A lab file -> (Lab, raw document)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InvalidParameter(f"{path}: cannot read the lab file: {exc.strerror}") from None
    return load_text(text, str(path))


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One unit of `up`: kind in STEP_KINDS, `host` where it runs, `name` what it makes."""

    kind: str
    name: str
    host: str | None = None

    @property
    def label(self) -> str:
        where = f" on {self.host}" if self.host and self.host != self.name else ""
        return f"{self.kind} {self.name}{where}"


STEP_KINDS = ("switch", "host", "impair", "etcd", "daemon", "network", "container")


def plan(lab: Lab) -> list[Step]:
    """The ordered steps of `up`: the underlay switch, each host and its link, link
    impairments, the etcd cluster, the daemons (which need etcd), networks (an overlay
    once, on the first host; a bridge network on each of its hosts), then containers."""
    steps = [Step("switch", "underlay")]
    steps += [Step("host", h.name, h.name) for h in lab.hosts]
    steps += [Step("impair", h.name, h.name) for h in lab.hosts if h.link.rate or h.link.loss or h.link.delay]
    if lab.cluster.members:
        steps.append(Step("etcd", f"{lab.cluster.members} member(s)", None))
    steps += [Step("daemon", h.name, h.name) for h in lab.hosts]
    for n in lab.networks:
        if n.is_overlay:
            steps.append(Step("network", n.name, lab.hosts[0].name))
        else:
            steps += [Step("network", n.name, h) for h in n.hosts]
    steps += [Step("container", c.name, c.host) for c in lab.containers]
    return steps


__all__ = [
    "Lab",
    "Host",
    "Link",
    "Underlay",
    "ClusterStore",
    "Network",
    "Container",
    "Check",
    "Step",
    "parse",
    "load",
    "load_text",
    "plan",
    "namespace",
    "switch_port",
    "rate_bits",
    "UNDERLAY_IFACE",
    "SWITCH_BRIDGE",
    "DEFAULT_COMMAND",
]
