"""The /etc/hosts and /etc/resolv.conf a sandbox gives its containers. Pure text."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from cnm.addresses import IPAddress

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
)
# Docker's fallback when the host names only resolvers a sandbox cannot reach.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def file_reader(path: str) -> Callable[[], str]:
    """A function reading the file at `path` anew each call (the host's resolv.conf and
    hosts: what a container gets is what they say when it starts)."""

    def read() -> str:
        with open(path) as f:
            return f.read()

    return read


def hosts_file(hostname: str, addresses: Iterable[IPAddress], extra: Sequence[tuple[str, str]] = ()) -> str:
    """Docker's /etc/hosts: the loopback names, then `hostname` on each address, then
    `extra` (address, name) pairs."""
    lines = list(_HOSTS_HEADER)
    for addr in addresses:
        lines.append(f"{addr}\t{hostname}")
    for other, name in extra:
        lines.append(f"{other}\t{name}")
    return "\n".join(lines) + "\n"


def container_resolv_conf(host_text: str) -> str:
    """The host's resolv.conf minus loopback nameservers (unreachable from a sandbox);
    Docker's fallback to public resolvers when nothing is left."""
    out, servers = [], 0
    for line in host_text.splitlines():
        parts = line.split()
        if parts[:1] == ["nameserver"] and len(parts) > 1:
            if parts[1].startswith("127.") or parts[1] == "::1":
                continue
            servers += 1
        out.append(line)
    if not servers:
        out += [f"nameserver {ns}" for ns in FALLBACK_NAMESERVERS]
    return "\n".join(out) + "\n"
