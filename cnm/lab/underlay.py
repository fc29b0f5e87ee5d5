"""The underlay as `ip -batch` scripts (pure): one `ip` process makes every namespace,
one per host configures that host's link, one more attaches every port to the switch.
A 100-host lab is ~100 `ip` processes instead of ~700.

    lab-<lab>-sw:   bridge br0, one port p-<host> per host
    lab-<lab>-<h>:  ul0 (the other end of p-<h>) with the host's underlay address

Each host's veth pair is made from inside the host's namespace with its peer born in
the switch's (`peer name p-<h> netns lab-<lab>-sw`): the machine's root namespace
never sees either end.
"""

from __future__ import annotations

from cnm.lab.model import SWITCH_BRIDGE, UNDERLAY_IFACE, Host, Lab, switch_port


def namespaces_script(names: list[str], delete: bool = False) -> str:
    """`ip -batch` making (or deleting) these named namespaces."""
    verb = "del" if delete else "add"
    return "".join(f"netns {verb} {n}\n" for n in names)


def switch_script() -> str:
    """Inside the switch namespace: lo and the bridge, up."""
    return f"link set lo up\nlink add {SWITCH_BRIDGE} type bridge\nlink set {SWITCH_BRIDGE} up\n"


def host_script(lab: Lab, host: Host) -> str:
    """Inside a host's namespace: lo up, the veth pair to the switch, the address."""
    mtu = host.link.mtu
    return (
        f"link set lo up\n"
        f"link add {UNDERLAY_IFACE} mtu {mtu} type veth peer name {switch_port(host.name)} mtu {mtu} "
        f"netns {lab.switch_namespace}\n"
        f"address add {host.address}/{lab.underlay.prefixlen} dev {UNDERLAY_IFACE}\n"
        f"link set {UNDERLAY_IFACE} up\n"
    )


def ports_script(hosts: list[Host]) -> str:
    """Inside the switch namespace: every host's port on the bridge, up."""
    return "".join(f"link set {switch_port(h.name)} master {SWITCH_BRIDGE} up\n" for h in hosts)


__all__ = ["namespaces_script", "switch_script", "host_script", "ports_script"]
