"""`net lab check`: probes from containers, rendered from data, run through the runner.

ping  `net exec C -- busybox ping -c1 -W2 ADDR` (an expected pass gets 3 tries, so
      one lost packet on an impaired underlay does not fail it; an expected failure
      needs only one silent try)
tcp   `net exec C -- busybox nc -w2 ADDR PORT` (stdin is /dev/null: connect, then close)
mtu   `net exec C -- busybox ip -o link show IFACE`
A target container's address is taken from the network named in the check, else a
network it shares with the source (an overlay, or a bridge network on the same host),
else its first network.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from cnm.errors import NotFound
from cnm.lab.realise import net_argv
from cnm.lab.runner import Runner
from cnm.lab.topology import Check, Lab

PASS_TRIES = 3


@dataclass(frozen=True)
class CheckResult:
    check: Check
    ok: bool              # the outcome matched the expectation
    detail: str


def shared_networks(lab: Lab, a: str, b: str) -> list[str]:
    """Networks on which containers a and b can talk directly, in b's order."""
    ca, cb = lab.container(a), lab.container(b)
    out = []
    for n in cb.networks:
        if n not in ca.networks:
            continue
        overlay = n != "bridge" and lab.network(n).is_overlay
        if overlay or ca.host == cb.host:
            out.append(n)
    return out


def pick_address(lab: Lab, check: Check, target_networks: dict[str, Any], host_addresses: dict[str, str]) -> str:
    """The address a check aims at. `target_networks` is the target container's
    NetworkSettings.Networks (ignored for host and literal targets)."""
    target = check.target or ""
    if target in host_addresses:
        return host_addresses[target]
    if target not in {c.name for c in lab.containers}:
        return target
    order = [check.network] if check.network else shared_networks(lab, check.source, target)
    order += [n for n in lab.container(target).networks if n not in order]
    for n in order:
        ip = (target_networks.get(n) or {}).get("IPAddress")
        if ip:
            return ip
    raise NotFound(f"container {target} has no address on {', '.join(order)}")


def probe_argv(socket: str, check: Check, address: str | None) -> list[str]:
    base = net_argv(socket, "exec", check.source, "--", "busybox")
    if check.kind == "ping":
        return base + ["ping", "-c1", "-W2", str(address)]
    if check.kind == "tcp":
        return base + ["nc", "-w2", str(address), str(check.port)]
    # not /sys/class/net: a container sees the sysfs of the namespace that mounted it
    return base + ["ip", "-o", "link", "show", check.iface]


def parse_mtu(text: str) -> int | None:
    """The MTU from `ip -o link show IFACE` output."""
    m = re.search(r"\bmtu (\d+)", text)
    return int(m.group(1)) if m else None


def run_checks(lab: Lab, sockets: dict[str, str], host_addresses: dict[str, str], runner: Runner) -> list[CheckResult]:
    """Run every check of the lab; never raises for a failing probe."""
    results = []
    inspected: dict[str, dict] = {}
    for check in lab.checks:
        try:
            results.append(_run_one(lab, check, sockets, host_addresses, runner, inspected))
        except NotFound as exc:
            results.append(CheckResult(check, False, str(exc)))
    return results


def _networks_of(name: str, lab: Lab, sockets: dict[str, str], runner: Runner, cache: dict[str, dict]) -> dict:
    if name not in cache:
        sock = sockets[lab.container(name).host]
        r = runner.run(net_argv(sock, "container", "inspect", name), check=False, timeout=20)
        if not r.ok:
            raise NotFound(f"cannot inspect container {name}: {r.last_line()}")
        cache[name] = (json.loads(r.stdout)[0].get("NetworkSettings") or {}).get("Networks") or {}
    return cache[name]


def _run_one(lab: Lab, check: Check, sockets: dict[str, str], host_addresses: dict[str, str],
             runner: Runner, cache: dict[str, dict]) -> CheckResult:
    sock = sockets[lab.container(check.source).host]
    if check.kind == "mtu":
        r = runner.run(probe_argv(sock, check, None), check=False, timeout=20)
        got = parse_mtu(r.stdout) if r.ok else None
        ok = got == check.mtu
        return CheckResult(check, ok == check.expect_pass, f"mtu {got}" if got else r.last_line())
    target_nets = _networks_of(check.target, lab, sockets, runner, cache) if check.target in \
        {c.name for c in lab.containers} else {}
    address = pick_address(lab, check, target_nets, host_addresses)
    tries = PASS_TRIES if check.expect_pass else 1
    reached = False
    for _ in range(tries):
        r = runner.run(probe_argv(sock, check, address), check=False, timeout=20)
        if r.ok:
            reached = True
            break
    what = f"{address}:{check.port}" if check.kind == "tcp" else address
    detail = f"{what} {'reached' if reached else 'unreachable'}"
    return CheckResult(check, reached == check.expect_pass, detail)
