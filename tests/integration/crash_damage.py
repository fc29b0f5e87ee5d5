"""Damage done from outside while the daemon is down, for the crash test: what an
operator (`ip link del`), the OOM killer or a stray `kill -9` does to a host between a
crash and the restart. After the restart each one must have been dealt with: a
container's gone veth repaired (or its endpoint released, when the container no longer
asks for the network or ended meanwhile), a container whose process or supervisor was
killed reported as exited (137), never "dead", and its network released (or started
again, by its restart policy).

Chosen by the test's seeded generator, so a replay does the same damage."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from drivers.bridge import naming
from tests.integration import crash_checks

VETH, PROCESS, SUPERVISOR = "veth deleted", "container process killed", "supervisor killed"


@dataclass(frozen=True)
class Damage:
    kind: str
    target: str  # the link's name, or the container's id
    owner: str  # the endpoint's id (veth), or the container's id

    def __str__(self) -> str:
        return f"{self.kind}: {self.target if self.kind == VETH else self.target[:12]}"


def _started(run_dir: Path) -> dict[str, dict]:
    """Container id -> its state.json, for those started and not recorded as ended."""
    out = {}
    for d in (run_dir / "containers").glob("*"):
        if len(d.name) != 64 or (d / "exit.json").exists():
            continue
        try:
            out[d.name] = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
    return out


def _shim_pid(run_dir: Path, cid: str) -> int | None:
    try:
        pid = int((run_dir / "containers" / cid / "shim.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if crash_checks.comm(pid) == "cnm-shim" else None


def inflict(rng: random.Random, ns: str, root: Path, run_dir: Path) -> Damage | None:
    """Maybe do one kind of damage (about half the time); what was done, or None."""
    roll = rng.random()
    if roll < 0.3:
        kv = crash_checks.store(root)
        present = {link["ifname"] for link in crash_checks.links(ns)}
        eps = sorted(k[len("endpoint/") :] for k in kv if k.startswith("endpoint/") and k.count("/") == 1)
        gone = [(naming.host_ifname(e), e) for e in eps if naming.host_ifname(e) in present]
        if gone:
            name, eid = rng.choice(gone)
            crash_checks.sh("ip", "-n", ns, "link", "del", name)
            return Damage(VETH, name, eid)
    elif roll < 0.55:
        started = _started(run_dir)
        if started:
            cid = rng.choice(sorted(started))
            if roll < 0.45:
                pid = started[cid].get("pid")
                kind = PROCESS
            else:
                pid = _shim_pid(run_dir, cid)
                kind = SUPERVISOR
            if isinstance(pid, int) and pid > 1:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    return None
                if kind == PROCESS:
                    _recorded_exit(run_dir / "containers" / cid)
                return Damage(kind, cid, cid)
    return None


def _recorded_exit(cdir: Path, timeout: float = 20.0) -> None:
    """Until the supervisor has recorded the killed process's exit (slow under load):
    the damage is done before the daemon comes back, not while it adopts."""
    deadline = time.monotonic() + timeout
    while not (cdir / "exit.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def outcome(d: Damage, root: Path, states: dict[str, str], log_text: str, policy: str = "") -> tuple[str, str | None]:
    """(how it was dealt with, a problem or None), after the restart. `states`: the
    API's container states by id; `log_text`: what the restarted daemon logged;
    `policy`: the damaged container's restart policy ("" or "no": none)."""
    if d.kind == VETH:
        short = d.owner[:12]
        kv = crash_checks.store(root)
        if f"endpoint/{d.owner}" not in kv:
            return "released", None
        if f"endpoint {short}" in log_text and "repaired" in _lines_with(log_text, short):
            return "repaired", None
        return "kept", f"{d}: endpoint {short} kept, neither repaired nor released"
    st = states.get(d.owner)
    if st is None:
        return "removed", None  # its removal was in flight when the daemon died
    if st == "exited":
        return "exited", None
    if st == "running" and policy not in ("", "no"):
        return f"restarted ({policy})", None
    if f"restarting container {d.owner[:12]} by its restart policy:" in log_text:
        # Its policy's start was refused (e.g. ports published, no network left after a
        # disconnect): a 4xx a user would get too, not the crash's doing. Shown as
        # "created": the old run's directory goes before a start (no restart in place yet).
        return f"restart by its policy refused, {st}", None
    return st, f"{d}: container is {st} after the restart (want exited{', or running again' if policy else ''})"


def _lines_with(text: str, needle: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if needle in ln)
