"""Underlay impairments: rendered as commands from data (pure), applied through the runner.

What this kernel family offers, and what we build from it:
  rate   tbf on the egress of both ends of the host's link (the host's `ul0` and the
         switch's `p-<host>`), so each direction is limited;
  loss   nftables `numgen random` drops in a netdev table the lab owns, on `ul0`'s
         ingress and egress hooks: PCT percent of packets in each direction;
  delay  netem on both ends (each direction delayed by MS), only where the kernel has
         sch_netem; elsewhere a clear error, never a silent no-op.
When delay and rate are both asked for, netem carries both (its own `rate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cnm.errors import InvalidParameter, Unavailable
from cnm.lab.fields import RATE as _RATE
from cnm.lab.fields import rate_bits
from cnm.lab.model import UNDERLAY_IFACE, Link, switch_port
from cnm.lab.runner import Runner

NFT_TABLE = "lab_impair"  # in each lab host's namespace; a netdev table we own
NETEM_MISSING = "delay needs the kernel's netem (CONFIG_NET_SCH_NETEM), which this kernel lacks"
_NETEM_ERRORS = ("specified qdisc kind is unknown", "unknown qdisc", "qdisc 'netem'", "no such file")


@dataclass(frozen=True)
class Impairment:
    rate: str | None = None
    loss: float | None = None  # percent, each direction
    delay: float | None = None  # ms, each direction

    @classmethod
    def of_link(cls, link: Link) -> Impairment:
        return cls(rate=link.rate, loss=link.loss, delay=link.delay)

    @property
    def empty(self) -> bool:
        return not (self.rate or self.loss or self.delay)

    def merged(self, rate: str | None, loss: float | None, delay: float | None) -> Impairment:
        """This impairment with the given fields changed (None = keep; 0 = remove)."""
        return Impairment(
            rate=self.rate if rate is None else (rate if rate not in ("0", "") else None),
            loss=self.loss if loss is None else (loss or None),
            delay=self.delay if delay is None else (delay or None),
        )

    def to_json(self) -> dict:
        return {"rate": self.rate, "loss": self.loss, "delay": self.delay}

    @classmethod
    def from_json(cls, d: dict | None) -> Impairment:
        d = d or {}
        return cls(rate=d.get("rate"), loss=d.get("loss"), delay=d.get("delay"))

    def describe(self) -> str:
        parts = [
            f"rate {self.rate}" if self.rate else "",
            f"loss {self.loss:g}%" if self.loss else "",
            f"delay {self.delay:g}ms" if self.delay else "",
        ]
        return ", ".join(p for p in parts if p) or "none"


def validate(rate: str | None, loss: float | None, delay: float | None) -> None:
    """Reject bad values before anything is changed."""
    if rate not in (None, "0") and not _RATE.match(rate):
        raise InvalidParameter(
            f"invalid rate {rate!r}: use a number and bit, kbit, mbit, gbit (or bps, kbps, mbps, gbps)"
        )
    if rate not in (None, "0") and rate_bits(rate) < 8000:
        raise InvalidParameter(f"rate {rate!r} is too low (at least 8kbit)")
    if loss is not None and not 0 <= loss <= 100:
        raise InvalidParameter(f"invalid loss {loss:g}: a percentage from 0 to 100")
    if delay is not None and not 0 <= delay <= 60_000:
        raise InvalidParameter(f"invalid delay {delay:g}: milliseconds from 0 to 60000")


@dataclass(frozen=True)
class Command:
    """One command in one namespace. `tolerate` = its failure means "already so"."""

    netns: str
    argv: tuple[str, ...]
    input: str | None = None
    tolerate: bool = False
    netem: bool = False  # a failure here may mean the kernel lacks netem


def tbf_burst(rate: str, mtu: int) -> int:
    """Bucket size in bytes: 10 ms of traffic at `rate`, at least a few full frames."""
    return max(3 * (mtu + 14), rate_bits(rate) // 8 // 100)


def qdisc_argv(dev: str, imp: Impairment, mtu: int) -> tuple[tuple[str, ...], bool]:
    """(tc argv setting the root qdisc of `dev` for `imp`, whether it needs netem)."""
    if imp.delay:
        argv: tuple[str, ...] = ("tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{imp.delay:g}ms")
        if imp.rate:
            argv += ("rate", imp.rate)
        return argv, True
    if imp.rate:
        return (
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            imp.rate,
            "burst",
            str(tbf_burst(imp.rate, mtu)),
            "latency",
            "50ms",
        ), False
    return ("tc", "qdisc", "del", "dev", dev, "root"), False


def nft_script(dev: str, loss: float | None) -> str:
    """An atomic nft script: (re)create the lab's impair table, or only remove it.
    `table …` then `delete table …` makes the delete safe when the table is absent."""
    lines = [f"table netdev {NFT_TABLE}", f"delete table netdev {NFT_TABLE}"]
    if loss:
        # mod 10000 gives 0.01 % steps; the same threshold on each hook = PCT per direction
        threshold = round(loss * 100)
        lines.append(f"table netdev {NFT_TABLE} {{")
        for hook in ("ingress", "egress"):
            lines += [
                f"\tchain {hook} {{",
                f'\t\ttype filter hook {hook} device "{dev}" priority 0; policy accept;',
                f"\t\tnumgen random mod 10000 < {threshold} counter drop",
                "\t}",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def commands(host_ns: str, switch_ns: str, host: str, imp: Impairment, mtu: int) -> list[Command]:
    """Everything that sets a host's link to exactly `imp` (replacing any earlier
    impairment). Commands that need netem come first, so a kernel without it fails
    before anything has changed."""
    out: list[Command] = []
    for ns, dev in ((host_ns, UNDERLAY_IFACE), (switch_ns, switch_port(host))):
        argv, netem = qdisc_argv(dev, imp, mtu)
        out.append(Command(ns, argv, tolerate=argv[2] == "del", netem=netem))
    out.sort(key=lambda c: not c.netem)
    out.append(Command(host_ns, ("nft", "-f", "-"), input=nft_script(UNDERLAY_IFACE, imp.loss)))
    return out


def netem_missing(stderr: str) -> bool:
    """Does tc's complaint mean the kernel has no netem qdisc?"""
    low = stderr.lower()
    return any(e in low for e in _NETEM_ERRORS)


def apply(runner: Runner, cmds: list[Command]) -> None:
    """Run the commands in order; a missing netem becomes Unavailable(NETEM_MISSING)."""
    for c in cmds:
        r = runner.run(list(c.argv), c.netns, check=False, input=c.input)
        code, err = r.returncode, r.stderr or ""
        if code == 0 or c.tolerate:
            continue
        if c.netem and netem_missing(err):
            raise Unavailable(NETEM_MISSING)
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"{' '.join(c.argv)} in {c.netns} failed ({code}): {last}")
