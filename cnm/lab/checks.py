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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cnm.errors import NotFound
from cnm.lab.netcli import net_argv
from cnm.lab.parallel import default_workers
from cnm.lab.runner import Runner
from cnm.lab.topology import Check, Lab

PASS_TRIES = 3


@dataclass(frozen=True)
class CheckResult:
    check: Check
    ok: bool  # the outcome matched the expectation
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


def run_checks(
    lab: Lab, sockets: dict[str, str], host_addresses: dict[str, str], runner: Runner, workers: int | None = None
) -> list[CheckResult]:
    """Run every check of the lab, side by side on `workers` threads (default
    cnm.lab.parallel.default_workers); results in the checks' order. Never raises for
    a failing probe."""

    n = max(1, workers or default_workers())
    names = {c.name for c in lab.containers}
    targets = sorted({c.target for c in lab.checks if c.target in names})
    inspected: dict[str, dict] = {}
    errors: dict[str, str] = {}

    def inspect(name: str) -> None:
        try:
            _networks_of(name, lab, sockets, runner, inspected)
        except NotFound as exc:
            errors[name] = str(exc)

    def one(check: Check) -> CheckResult:
        if check.target in errors:
            return CheckResult(check, False, errors[check.target])
        try:
            return _run_one(lab, check, sockets, host_addresses, runner, inspected)
        except NotFound as exc:
            return CheckResult(check, False, str(exc))

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="lab-check") as pool:
        list(pool.map(inspect, targets))
        return list(pool.map(one, lab.checks))


def _networks_of(name: str, lab: Lab, sockets: dict[str, str], runner: Runner, cache: dict[str, dict]) -> dict:
    if name not in cache:
        sock = sockets[lab.container(name).host]
        r = runner.run(net_argv(sock, "container", "inspect", name), check=False, timeout=20)
        if not r.ok:
            raise NotFound(f"cannot inspect container {name}: {r.last_line()}")
        cache[name] = (json.loads(r.stdout)[0].get("NetworkSettings") or {}).get("Networks") or {}
    return cache[name]


def _run_one(
    lab: Lab,
    check: Check,
    sockets: dict[str, str],
    host_addresses: dict[str, str],
    runner: Runner,
    cache: dict[str, dict],
) -> CheckResult:
    sock = sockets[lab.container(check.source).host]
    if check.kind == "mtu":
        r = runner.run(probe_argv(sock, check, None), check=False, timeout=20)
        got = parse_mtu(r.stdout) if r.ok else None
        ok = got == check.mtu
        return CheckResult(check, ok == check.expect_pass, f"mtu {got}" if got else r.last_line())
    target_nets = (
        _networks_of(check.target, lab, sockets, runner, cache)
        if check.target in {c.name for c in lab.containers}
        else {}
    )
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


def report_lines(results: list[CheckResult], verbose: bool = False) -> list[str]:
    """PASS/FAIL lines: one per lab-file entry; an entry that stands for many probes
    (a group's) says how many passed and lists the ones that did not (all of them
    with `verbose`). The last line sums up the probes."""
    entries: dict[int, list[CheckResult]] = {}
    for r in results:
        entries.setdefault(r.check.spec, []).append(r)
    rows: list[tuple[str, str, str]] = []
    for rs in entries.values():
        label = rs[0].check.spec_label or rs[0].check.label
        if len(rs) == 1 and not verbose and "probe" not in label:
            rows.append(("PASS" if rs[0].ok else "FAIL", rs[0].check.label, rs[0].detail))
            continue
        bad = [r for r in rs if not r.ok]
        rows.append(("FAIL" if bad else "PASS", label, f"{len(rs) - len(bad)}/{len(rs)} passed"))
        for r in rs if verbose else bad:
            rows.append(("  " + ("ok" if r.ok else "FAIL"), r.check.label, r.detail))
    width = max((len(label) for _, label, _ in rows), default=0)
    out = [f"{verdict:<6}{label.ljust(width)}  {detail}" for verdict, label, detail in rows]
    failed = sum(1 for r in results if not r.ok)
    out.append(f"{len(results)} checks: {len(results) - failed} passed, {failed} failed")
    return out
