"""The `checks:` section of a lab file -> concrete probes (pure and deterministic).

An entry names a container or a *group* (the containers a `group:` entry generated)
as `from` and as target:

    {from: c1, ping: c2}                    one probe
    {from: red, ping: red}                  every red container pings a red container on
                                            another host (one probe per member, not all pairs)
    {from: red, tcp: "web:80", sample: 20}  20 of those probes, drawn at random
    {from: c1, ping: red}                   c1 pings every member of red
    {from: red, ping: c1}                   every member of red pings c1
    {from: red, mtu: 1450, sample: 10}      10 members' eth0 MTU

Random draws are seeded with the lab's name and the entry's index: the same file
gives the same probes on every run.
"""

from __future__ import annotations

import ipaddress
import random

from cnm.lab.fields import Ctx
from cnm.lab.model import Check, Container, Network

FIELDS = ("from", "ping", "tcp", "mtu", "iface", "network", "expect", "sample")
MAX_SAMPLE = 100_000


def checks(
    ctx: Ctx,
    data: dict,
    lab: str,
    lab_hosts: list[str],
    containers: tuple[Container, ...],
    networks: tuple[Network, ...],
) -> tuple[Check, ...]:
    by_name = {c.name: c for c in containers}
    groups: dict[str, list[Container]] = {}
    for c in containers:
        if c.group:
            groups.setdefault(c.group, []).append(c)
    known_nets = {n.name for n in networks}
    hosts = set(lab_hosts)
    out: list[Check] = []
    for i, raw in enumerate(ctx.seq(data.get("checks") or [], "checks")):
        where = f"checks[{i}]"
        raw = ctx.mapping(raw, where, FIELDS, ("from",))
        kinds = [k for k in ("ping", "tcp", "mtu") if k in raw]
        if len(kinds) != 1:
            raise ctx.err(where, "give exactly one of 'ping', 'tcp' or 'mtu'")
        kind = kinds[0]
        source = str(raw["from"])
        if source not in by_name and source not in groups:
            raise ctx.err(f"{where}.from", f"unknown container {source!r} (nor a group)")
        expect = raw.get("expect", "pass")
        if expect not in ("pass", "fail"):
            raise ctx.err(f"{where}.expect", f"expected pass or fail, got {expect!r}")
        network = raw.get("network")
        if network is not None and network != "bridge" and network not in known_nets:
            raise ctx.err(f"{where}.network", f"unknown network {network!r}")
        if "iface" in raw and kind != "mtu":
            raise ctx.err(f"{where}.iface", "'iface' goes with an 'mtu' check")
        sample = ctx.integer(raw["sample"], f"{where}.sample", 1, MAX_SAMPLE) if "sample" in raw else None
        target: str | None = None
        port = mtu = None
        if kind == "mtu":
            mtu = ctx.integer(raw["mtu"], f"{where}.mtu", 68, 65535)
            if network is not None:
                raise ctx.err(f"{where}.network", "'network' goes with a ping or tcp check")
        else:
            text = str(raw[kind])
            if kind == "tcp":
                target, _, port_text = text.rpartition(":")
                if not target or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ctx.err(f"{where}.tcp", f"expected TARGET:PORT, got {text!r}")
                port = int(port_text)
            else:
                target = text
            if target not in by_name and target not in groups and target not in hosts:
                try:
                    ipaddress.IPv4Address(target)
                except ValueError:
                    raise ctx.err(
                        f"{where}.{kind}", f"unknown target {target!r}: a container, a group, a host or an IPv4 address"
                    ) from None
            if network is not None and target not in by_name and target not in groups:
                raise ctx.err(f"{where}.network", "'network' picks one of a target container's addresses")
        template = Check(
            kind=kind,
            source=source,
            target=target,
            port=port,
            mtu=mtu,
            iface=str(raw.get("iface", "eth0")),
            network=network,
            expect_pass=expect == "pass",
            spec=i,
        )
        pairs = _pairs(source, target, by_name, groups, sample, random.Random(f"{lab}/{i}"))
        if not pairs:
            raise ctx.err(where, f"group {target!r} has no member other than the source to aim at")
        label = _spec_label(template, len(pairs), source in groups or target in groups, sample)
        out += [_concrete(template, s, t, label) for s, t in pairs]
    return tuple(out)


def _pairs(
    source: str,
    target: str | None,
    by_name: dict[str, Container],
    groups: dict[str, list[Container]],
    sample: int | None,
    rng: random.Random,
) -> list[tuple[str, str | None]]:
    """(source container, target) of every probe an entry stands for."""
    sources = [c.name for c in groups[source]] if source in groups else [source]
    if target in groups:
        members = groups[target]
        if source not in groups:
            # one source, a group of targets: every member (or a sample of them)
            names = [c.name for c in members if c.name != source]
            chosen = rng.sample(names, min(sample, len(names))) if sample else names
            return [(source, t) for t in chosen]
        chosen_sources = rng.sample(sources, min(sample, len(sources))) if sample else sources
        out: list[tuple[str, str | None]] = []
        for s in chosen_sources:
            host = by_name[s].host
            across = [c.name for c in members if c.host != host]
            others = across or [c.name for c in members if c.name != s]
            if others:
                out.append((s, rng.choice(others)))
        return out
    if sample and len(sources) > 1:
        sources = rng.sample(sources, min(sample, len(sources)))
    elif sample and len(sources) == 1:
        sources = sources * sample  # the same probe, repeated
    return [(s, target) for s in sources]


def _spec_label(t: Check, n: int, grouped: bool, sample: int | None) -> str:
    if t.kind == "mtu":
        what = f"mtu {t.source}:{t.iface} == {t.mtu}"
    else:
        dest = f"{t.target}:{t.port}" if t.kind == "tcp" else t.target
        what = f"{t.kind} {t.source} -> {dest}" + (f" via {t.network}" if t.network else "")
    if grouped:
        what += f" ({n} {'sampled ' if sample else ''}probe{'s' if n != 1 else ''})"
    return what + ("" if t.expect_pass else " (expect fail)")


def _concrete(t: Check, source: str, target: str | None, label: str) -> Check:
    return Check(
        kind=t.kind,
        source=source,
        target=target,
        port=t.port,
        mtu=t.mtu,
        iface=t.iface,
        network=t.network,
        expect_pass=t.expect_pass,
        spec=t.spec,
        spec_label=label,
    )


__all__ = ["checks", "FIELDS"]
