"""The realiser: turns a Lab into namespaces, links, etcd members, daemons, networks and
containers (`up`), and removes everything a record lists (`down`, cnm.lab.teardown).

`up` runs in phases — underlay, impairments, etcd, daemons, networks, containers —
and within a phase runs its steps side by side on a few threads (cnm.lab.parallel):
a host's own steps stay in order, different hosts' do not wait for each other.
Commands go through the Runner seam (the underlay as `ip -batch` scripts, the daemons
driven with the `net` CLI against each host's socket, exactly as a user would); the
daemons themselves are forked from a pre-imported template process
(cnm.lab.zygote), each into its host's namespaces. What a phase made is in the
record before the next phase starts, and what a step is about to make is in the
record before it exists, so a crash or a failure half-way leaves a record `down`
can follow (and `down` also removes whatever it finds in the lab's namespaces).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cnm.errors import CNMError, Conflict, NotFound, Unavailable
from cnm.lab import impair as imp
from cnm.lab import procs, teardown
from cnm.lab import underlay as ul
from cnm.lab.netcli import NET, container_run_argv, host_command, net_argv, network_create_argv
from cnm.lab.parallel import StepFailed, default_workers, run_chains
from cnm.lab.record import HostPaths, LabRecord, lab_dir
from cnm.lab.runner import Runner
from cnm.lab.topology import Lab, Step, namespace, plan

NETNS_DIR = Path("/run/netns")
DAEMON_START_TIMEOUT = 60.0  # from the fork to a socket that answers, on a loaded machine

PHASES = (
    ("underlay", ("switch", "host")),
    ("impairments", ("impair",)),
    ("etcd", ("etcd",)),
    ("daemons", ("daemon",)),
    ("networks", ("network",)),
    ("containers", ("container",)),
)


class LabUpFailed(CNMError):
    """`up` failed at a step; what was built has been torn down."""

    exit_code = 1


class Progress(Protocol):
    def __call__(self, phase: str, done: int, total: int, state: str, detail: str = "") -> None:
        """state: "start" (the phase begins; total steps known), "step" (done more),
        "done" (the phase is complete) or "fail" (detail: the failed step and why)."""


class EtcdStarter(Protocol):
    def __call__(
        self, members: Sequence[tuple[str, str, str]], base: Path, timing: tuple[int, int]
    ) -> tuple[str, list[dict]]:
        """Start one etcd member per (name, underlay address, netns), with timing =
        (heartbeat ms, election timeout ms), and wait until the cluster is healthy.
        Returns (the daemons' --cluster-store value, [{name, pid, client_url, log,
        data_dir}]); on failure stops what it started."""


class DaemonLauncher(Protocol):
    def open(self) -> None:
        """Get ready to start daemons (may work in the background)."""

    def spawn(self, config: dict, netns: str, log: Path, cmdline: str) -> int:
        """Start a daemon with these DaemonConfig fields in the network namespace at
        `netns`, output to `log`; its pid, at once."""

    def answers(self, sock_path: str) -> bool:
        """Does a daemon accept connections on this socket?"""

    def close(self) -> None:
        """Done starting daemons (they keep running). Idempotent."""


def start_etcd(
    members: Sequence[tuple[str, str, str]], base: Path, timing: tuple[int, int] = (100, 1000)
) -> tuple[str, list[dict]]:
    """The real EtcdStarter (cnm.cluster.etcd_server)."""
    from cnm.cluster.etcd_server import cluster_store_url, make_members, start_cluster

    ms = make_members(
        [(n, a) for n, a, _ in members],
        base,
        netns={n: ns for n, _, ns in members},
        heartbeat_ms=timing[0],
        election_ms=timing[1],
    )
    start_cluster(ms, timeout=max(20.0, timing[1] / 1000 * 10))
    return cluster_store_url(ms), [
        {"name": m.name, "pid": m.pid, "client_url": m.client_url, "log": str(m.log_path), "data_dir": str(m.data_dir)}
        for m in ms
    ]


def zygote_launcher(rec: LabRecord) -> DaemonLauncher:
    """The real DaemonLauncher: a daemon template process (cnm.lab.zygote)."""
    from cnm.lab.zygote import ZygoteLauncher

    return ZygoteLauncher(log=Path(rec.dir) / "zygote.log")


def interrupted(rec: LabRecord) -> bool:
    """A lab whose `net lab up` died while building it (killed, a crash): what it built
    is removed by the next `up` as by `down`."""
    b = rec.builder or {}
    return rec.status == "building" and bool(b.get("pid")) and not procs.alive(b["pid"], b.get("start"))


@dataclass
class Realiser:
    runner: Runner
    etcd_starter: EtcdStarter = start_etcd
    progress: Progress | None = None
    daemon_timeout: float = DAEMON_START_TIMEOUT
    sleep: Callable[[float], None] = time.sleep
    launcher_factory: Callable[[LabRecord], DaemonLauncher] = zygote_launcher
    workers: int = field(default_factory=default_workers)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- up -------------------------------------------------------------------------

    def up(self, lab: Lab, raw: Any, source: str | None = None) -> LabRecord:
        """Build the lab. A stale record of a crashed lab of the same name is removed
        first; a running one is a Conflict. On failure everything built is torn down
        and LabUpFailed says which step failed, why, and where the log is."""
        self._clear_stale(lab)
        rec = LabRecord(
            name=lab.name,
            dir=str(lab_dir(lab.name)),
            topology=raw,
            source=source,
            builder={"pid": os.getpid(), "start": procs.start_time(os.getpid())},
        )
        rec.save()
        steps = plan(lab)
        launcher = self.launcher_factory(rec) if any(s.kind == "daemon" for s in steps) else None
        try:
            if launcher is not None:
                launcher.open()  # the template imports while the underlay is built
            for phase, kinds in PHASES:
                todo = [s for s in steps if s.kind in kinds]
                if todo:
                    self._phase(lab, rec, phase, todo, launcher)
        finally:
            if launcher is not None:
                launcher.close()
        rec.status = "up"
        rec.save()
        return rec

    def _phase(self, lab: Lab, rec: LabRecord, phase: str, steps: list[Step], launcher: DaemonLauncher | None) -> None:
        total, done = len(steps), [0]
        self._report(phase, 0, total, "start")

        def finished(_step: Step) -> None:
            done[0] += 1
            self._report(phase, done[0], total, "step")

        try:
            if phase == "underlay":
                self._underlay(lab, rec, steps, finished)
            else:
                do = {
                    "impairments": self._impair,
                    "etcd": self._etcd,
                    "networks": self._network,
                    "containers": self._container,
                    "daemons": lambda lab_, rec_, s: self._daemon(lab_, rec_, s, launcher),
                }[phase]
                run_chains(steps, lambda s: do(lab, rec, s), lambda s: s.host or s.name, self.workers, finished)
        except StepFailed as failed:
            self._fail(lab, rec, phase, failed.step, failed.error)
        with self._lock:
            rec.save()
        self._report(phase, total, total, "done")

    def _fail(self, lab: Lab, rec: LabRecord, phase: str, step: Step, exc: BaseException) -> None:
        if not isinstance(exc, (CNMError, OSError)):
            rec.status, rec.failed_step, rec.error = "failed", step.label, repr(exc)
            rec.save()
            raise exc
        reason = " ".join(str(exc).split()) if not isinstance(exc, OSError) else f"{exc}"
        rec.status, rec.failed_step, rec.error = "failed", step.label, reason
        rec.save()
        self._report(phase, 0, 0, "fail", f"{step.label}: {reason}")
        logs = self._keep_logs(rec, step)
        self.down(rec)
        where = f" (log: {', '.join(logs)})" if logs else ""
        raise LabUpFailed(
            f"lab {lab.name}: step '{step.label}' failed: {reason}{where}; everything built was torn down"
        ) from exc

    def _report(self, phase: str, done: int, total: int, state: str, detail: str = "") -> None:
        if self.progress:
            with self._lock:
                self.progress(phase, done, total, state, detail)

    def _clear_stale(self, lab: Lab) -> None:
        try:
            old = LabRecord.load(lab.name)
        except CNMError:
            old = None
        if old is not None:
            live = [h for h, d in old.daemons.items() if procs.alive(d["pid"], d.get("start"))]
            if live and old.status != "failed" and not interrupted(old):
                raise Conflict(
                    f"lab {lab.name} is already up (daemons on {', '.join(live[:5])}"
                    f"{', …' if len(live) > 5 else ''}): net lab down {lab.name} first"
                )
            self.down(old)
        for ns in [lab.switch_namespace, *(lab.namespace(h.name) for h in lab.hosts)]:
            if (NETNS_DIR / ns).exists():
                raise Conflict(
                    f"network namespace {ns} exists but no lab record owns it: remove it with ip netns del {ns}"
                )

    def _keep_logs(self, rec: LabRecord, step: Step) -> list[str]:
        """Copy the logs that explain a failed step out of the lab directory, which
        the teardown removes."""
        srcs: list[tuple[str, str]] = []
        if step.kind == "etcd":
            srcs = [(m, d["log"]) for m, d in rec.etcd.items() if d.get("log")]
        elif step.kind in ("daemon", "network", "container") and step.host in rec.hosts:
            srcs = [(step.host, rec.hosts[step.host]["log"])]
        kept = []
        for who, path in srcs:
            if Path(path).is_file():
                fd, dest = tempfile.mkstemp(prefix=f"cnm-lab-{rec.name}-{who}-", suffix=".log")
                with open(fd, "wb") as out:
                    out.write(Path(path).read_bytes())
                kept.append(dest)
        return kept

    # --- phases -------------------------------------------------------------------------

    def _underlay(self, lab: Lab, rec: LabRecord, steps: list[Step], finished: Callable[[Step], None]) -> None:
        """Every namespace in one `ip -batch`, each host's link in one per host (side by
        side), every switch port in one more."""
        sw = lab.switch_namespace
        hosts = [lab.host(s.name) for s in steps if s.kind == "host"]
        for h in hosts:
            paths = HostPaths.for_host(Path(rec.dir), h.name)
            rec.hosts[h.name] = {
                "netns": lab.namespace(h.name),
                "address": h.address,
                "mtu": h.link.mtu,
                **paths.__dict__,
            }
        # recorded before they exist: down tolerates absence
        rec.namespaces += [sw, *(lab.namespace(h.name) for h in hosts)]
        rec.save()
        switch = Step("switch", "underlay")
        try:
            self.runner.run(["ip", "-batch", "-"], input=ul.namespaces_script(rec.namespaces))
            self.runner.run(["ip", "-n", sw, "-batch", "-"], input=ul.switch_script())
        except CNMError as exc:
            raise StepFailed(switch, exc) from exc
        finished(switch)

        def link(s: Step) -> None:
            self.runner.run(
                ["ip", "-n", lab.namespace(s.name), "-batch", "-"], input=ul.host_script(lab, lab.host(s.name))
            )

        run_chains([s for s in steps if s.kind == "host"], link, lambda s: s.name, self.workers, finished)
        try:
            self.runner.run(["ip", "-n", sw, "-batch", "-"], input=ul.ports_script(hosts))
        except CNMError as exc:
            raise StepFailed(switch, exc) from exc

    def _impair(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        h = lab.host(step.name)
        self.set_impairment(rec, h.name, imp.Impairment.of_link(h.link))

    def set_impairment(self, rec: LabRecord, host: str, want: imp.Impairment) -> None:
        """Make `host`'s link impaired exactly as `want` (replacing any earlier one)."""
        info = rec.hosts[host]
        cmds = imp.commands(info["netns"], namespace(rec.name, "sw"), host, want, int(info.get("mtu", 1500)))
        imp.apply(self.runner, cmds)
        with self._lock:
            if want.empty:
                rec.impair.pop(host, None)
            else:
                rec.impair[host] = want.to_json()
            rec.save()

    def _etcd(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        base = Path(rec.dir) / "etcd"
        members = [(f"etcd-{h}", lab.host(h).address, lab.namespace(h)) for h in lab.cluster.hosts]
        timing = (lab.cluster.heartbeat_ms, lab.cluster.election_ms)
        for (name, _, _), h in zip(members, lab.cluster.hosts, strict=True):
            rec.etcd[name] = {
                "host": h,
                "pid": None,
                "start": None,
                "log": str(base / f"{name}.log"),
                "timing": list(timing),
            }
        rec.save()
        url, started = self.etcd_starter(members, base, timing)
        for m in started:
            entry = rec.etcd[m["name"]]
            entry.update(
                pid=m["pid"],
                start=procs.start_time(m["pid"]) if m["pid"] else None,
                client_url=m["client_url"],
                log=m["log"],
                data_dir=m["data_dir"],
            )
        rec.cluster_store = url
        rec.save()

    def daemon_argv(self, rec: LabRecord, host: str) -> list[str]:
        """The `net daemon` command line equivalent to a host's daemon (what ps shows)."""
        info = rec.hosts[host]
        argv = [NET, "daemon", "--root", info["root"], "--run-dir", info["run"], "--socket", info["socket"]]
        if rec.cluster_store:
            argv += ["--cluster-store", rec.cluster_store, "--advertise", info["address"]]
        return argv

    def daemon_config(self, rec: LabRecord, host: str) -> dict:
        """cnm.daemon.DaemonConfig's fields for a host's daemon."""
        info = rec.hosts[host]
        config = {"root": info["root"], "run_dir": info["run"], "socket": info["socket"]}
        if rec.cluster_store:
            config.update(cluster_store=rec.cluster_store, advertise=info["address"])
        return config

    def _daemon(self, lab: Lab | None, rec: LabRecord, step: Step, launcher: DaemonLauncher | None) -> None:
        assert launcher is not None
        host = step.name
        info = rec.hosts[host]
        for d in (info["root"], info["run"]):
            Path(d).mkdir(parents=True, exist_ok=True)
        cmdline = "net " + " ".join(self.daemon_argv(rec, host)[1:])
        pid = launcher.spawn(self.daemon_config(rec, host), str(NETNS_DIR / info["netns"]), Path(info["log"]), cmdline)
        start = procs.start_time(pid)
        with self._lock:
            rec.daemons[host] = {"pid": pid, "start": start}
        deadline = time.monotonic() + self.daemon_timeout
        while not launcher.answers(info["socket"]):
            if start is None or not procs.alive(pid, start):
                raise Unavailable(f"the daemon on {host} exited at start-up")
            if time.monotonic() > deadline:
                raise Unavailable(f"the daemon on {host} did not answer within {self.daemon_timeout:g}s")
            self.sleep(0.05)
        for tarball in lab.images if lab is not None else ():
            self.runner.run(net_argv(info["socket"], "image", "load", "-q", "-i", tarball), timeout=300)

    def _network(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        n = lab.network(step.name)
        sock = rec.hosts[step.host]["socket"]  # type: ignore[index]
        self.runner.run(network_create_argv(sock, n.name, n.driver, n.subnet, n.internal, n.options))
        with self._lock:
            rec.networks.append([n.name, step.host])  # type: ignore[list-item]

    def _container(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        """`net run` (an overlay made on another host is found through the cluster
        store by the daemon), then `net network connect` for any further network."""
        c = lab.container(step.name)
        sock = rec.hosts[c.host]["socket"]
        with self._lock:
            rec.containers.append([c.name, c.host])
        self.runner.run(
            container_run_argv(sock, c.name, c.networks[0], c.ip, c.ports, c.command, c.cap_add, c.privileged, c.image)
        )
        for net in c.networks[1:]:
            self.runner.run(net_argv(sock, "network", "connect", net, c.name))

    # --- faults -------------------------------------------------------------------------

    def stop_daemon(self, rec: LabRecord, host: str, sig: int = signal.SIGTERM) -> str:
        """Stop HOST's daemon (its containers keep running: they outlive the daemon)."""
        d = rec.daemons.get(host) or {}
        if not d.get("pid") or not procs.alive(d["pid"], d.get("start")):
            return "not running"
        if sig == signal.SIGKILL:
            os.kill(d["pid"], signal.SIGKILL)
            procs.terminate(d["pid"], d.get("start"), timeout=5)  # reaps it
            return "killed"
        return procs.terminate(d["pid"], d.get("start"), timeout=15)

    def start_daemon(self, rec: LabRecord, host: str) -> None:
        """(Re)start HOST's daemon with the same paths and cluster store (forked from a
        template of its own: the lab's went when `up` finished)."""
        d = rec.daemons.get(host) or {}
        if d.get("pid") and procs.alive(d["pid"], d.get("start")):
            raise Conflict(f"the daemon on {host} is running (pid {d['pid']})")
        launcher = self.launcher_factory(rec)
        launcher.open()
        try:
            self._daemon(None, rec, Step("daemon", host, host), launcher)
        finally:
            launcher.close()
            rec.save()

    def _members(self, rec: LabRecord) -> dict:
        from cnm.cluster.etcd_server import make_members

        names = [(name, rec.hosts[e["host"]]["address"]) for name, e in sorted(rec.etcd.items())]
        netns = {name: rec.hosts[e["host"]]["netns"] for name, e in rec.etcd.items()}
        timing = next((e["timing"] for e in rec.etcd.values() if e.get("timing")), (100, 1000))
        return {
            m.name: m
            for m in make_members(
                names, Path(rec.dir) / "etcd", netns=netns, heartbeat_ms=int(timing[0]), election_ms=int(timing[1])
            )
        }

    def stop_etcd(self, rec: LabRecord, host: str, sig: int = signal.SIGTERM) -> str:
        name = f"etcd-{host}"
        e = rec.etcd.get(name)
        if e is None:
            raise NotFound(f"no etcd member runs on {host}")
        if not e.get("pid") or not procs.alive(e["pid"], e.get("start")):
            return "not running"
        if sig == signal.SIGKILL:
            os.kill(e["pid"], signal.SIGKILL)
        return procs.terminate(e["pid"], e.get("start"), timeout=10)

    def start_etcd(self, rec: LabRecord, host: str, timeout: float = 15) -> None:
        """Restart HOST's etcd member on its existing data (it rejoins the cluster)."""
        name = f"etcd-{host}"
        e = rec.etcd.get(name)
        if e is None:
            raise NotFound(f"no etcd member runs on {host}")
        if e.get("pid") and procs.alive(e["pid"], e.get("start")):
            raise Conflict(f"{name} is running (pid {e['pid']})")
        member = self._members(rec)[name]
        member.spawn()
        e.update(pid=member.pid, start=procs.start_time(member.pid) if member.pid else None)
        rec.save()
        # A lone member of a 3-member cluster is healthy only once a quorum is back:
        # wait only when it can be.
        quorum = sum(1 for x in rec.etcd.values() if x.get("pid") and procs.alive(x["pid"], x.get("start")))
        if quorum > len(rec.etcd) // 2:
            member.wait_healthy(timeout)

    def down(self, rec: LabRecord, say: Callable[[str], None] | None = None) -> list[str]:
        """Remove everything the record lists (cnm.lab.teardown.down)."""
        return teardown.down(self.runner, rec, say)


__all__ = [
    "Realiser",
    "LabUpFailed",
    "start_etcd",
    "net_argv",
    "network_create_argv",
    "container_run_argv",
    "host_command",
    "NET",
    "PHASES",
]
