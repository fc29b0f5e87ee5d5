"""The realiser: turns a Lab into namespaces, links, etcd members, daemons, networks and
containers (`up`), and removes everything a record lists (`down`).

Every command goes through the Runner seam; the daemons are driven with the `net` CLI
against each host's socket, exactly as a user would. Each step is recorded as soon as
it is attempted, so a crash or a failure half-way leaves a record `down` can follow.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from cnm.errors import CNMError, Conflict, InvalidParameter, NotFound, Unavailable
from cnm.lab import impair as imp
from cnm.lab import procs
from cnm.lab.record import HostPaths, LabRecord, lab_dir
from cnm.lab.runner import Runner
from cnm.lab.topology import SWITCH_BRIDGE, UNDERLAY_IFACE, Lab, Step, namespace, plan, switch_port

NET = str(Path(sys.executable).parent / "net")
NETNS_DIR = Path("/run/netns")
DAEMON_START_TIMEOUT = 30.0
GLOBAL_NETWORK_WAIT = 15.0     # an overlay made on one host reaches the others through etcd


class LabUpFailed(CNMError):
    """`up` failed at a step; what was built has been torn down."""

    exit_code = 1


class Progress(Protocol):
    def __call__(self, index: int, total: int, step: Step, state: str, detail: str = "") -> None:
        """state is "start", "done" or "fail" (detail: the one-line reason)."""


class EtcdStarter(Protocol):
    def __call__(self, members: Sequence[tuple[str, str, str]], base: Path) -> tuple[str, list[dict]]:
        """Start one etcd member per (name, underlay address, netns) and wait until the
        cluster is healthy. Returns (the daemons' --cluster-store value,
        [{name, pid, client_url, log, data_dir}]); on failure stops what it started."""


def start_etcd(members: Sequence[tuple[str, str, str]], base: Path) -> tuple[str, list[dict]]:
    """The real EtcdStarter (cnm.cluster.etcd_server)."""
    from cnm.cluster.etcd_server import cluster_store_url, make_members, start_cluster
    ms = make_members([(n, a) for n, a, _ in members], base, netns={n: ns for n, _, ns in members})
    start_cluster(ms)
    return cluster_store_url(ms), [{"name": m.name, "pid": m.pid, "client_url": m.client_url,
                                    "log": str(m.log_path), "data_dir": str(m.data_dir)} for m in ms]


def net_argv(socket: str, *args: str) -> list[str]:
    """The `net` CLI against one host's daemon."""
    return [NET, "-H", f"unix://{socket}", *args]


def network_create_argv(socket: str, name: str, driver: str, subnet: str | None,
                        internal: bool, options: Sequence[tuple[str, str]]) -> list[str]:
    argv = net_argv(socket, "network", "create", "-d", driver)
    if subnet:
        argv += ["--subnet", subnet]
    if internal:
        argv.append("--internal")
    for k, v in options:
        argv += ["-o", f"{k}={v}"]
    return argv + [name]


def container_run_argv(socket: str, name: str, network: str, ip: str | None,
                       ports: Sequence[str], command: Sequence[str], cap_add: Sequence[str] = (),
                       privileged: bool = False, image: str = "") -> list[str]:
    """`net run` of a lab container: on its image, or on the host's filesystem (the
    command's first word found on PATH: `net run` takes an absolute path there)."""
    argv = net_argv(socket, "run", "-d", "--name", name, "--hostname", name, "--net", network)
    if ip:
        argv += ["--ip", ip]
    for p in ports:
        argv += ["-p", p]
    for cap in cap_add:
        argv += ["--cap-add", cap]
    if privileged:
        argv.append("--privileged")
    if image:
        return argv + ["--", image, *command]
    return argv + ["--", host_command(command[0]), *command[1:]]


def host_command(word: str) -> str:
    if word.startswith("/"):
        return word
    import shutil
    path = shutil.which(word)
    if path is None:
        raise InvalidParameter(f"command {word!r} is not on this machine's PATH: give its absolute path, "
                               "or an image: for the container")
    return path


@dataclass
class Realiser:
    runner: Runner
    etcd_starter: EtcdStarter = start_etcd
    progress: Progress | None = None
    net_wait: float = GLOBAL_NETWORK_WAIT
    daemon_timeout: float = DAEMON_START_TIMEOUT
    sleep: Callable[[float], None] = time.sleep

    # --- up -------------------------------------------------------------------------

    def up(self, lab: Lab, raw: Any, source: str | None = None) -> LabRecord:
        """Build the lab. A stale record of a crashed lab of the same name is removed
        first; a running one is a Conflict. On failure everything built is torn down
        and LabUpFailed says which step failed, why, and where the log is."""
        self._clear_stale(lab)
        rec = LabRecord(name=lab.name, dir=str(lab_dir(lab.name)), topology=raw, source=source)
        rec.save()
        steps = plan(lab)
        for i, step in enumerate(steps, 1):
            self._report(i, len(steps), step, "start")
            try:
                self._do(lab, rec, step)
            except (CNMError, OSError) as exc:
                reason = " ".join(str(exc).split()) if not isinstance(exc, OSError) else f"{exc}"
                rec.status, rec.failed_step, rec.error = "failed", step.label, reason
                rec.save()
                self._report(i, len(steps), step, "fail", reason)
                logs = self._keep_logs(rec, step)
                self.down(rec)
                where = f" (log: {', '.join(logs)})" if logs else ""
                raise LabUpFailed(f"lab {lab.name}: step '{step.label}' failed: {reason}{where}; "
                                  "everything built was torn down") from exc
            rec.save()
            self._report(i, len(steps), step, "done")
        rec.status = "up"
        rec.save()
        return rec

    def _report(self, i: int, n: int, step: Step, state: str, detail: str = "") -> None:
        if self.progress:
            self.progress(i, n, step, state, detail)

    def _clear_stale(self, lab: Lab) -> None:
        try:
            old = LabRecord.load(lab.name)
        except CNMError:
            old = None
        if old is not None:
            live = [h for h, d in old.daemons.items() if procs.alive(d["pid"], d.get("start"))]
            if live and old.status != "failed":
                raise Conflict(f"lab {lab.name} is already up (daemons on {', '.join(live)}): "
                               f"net lab down {lab.name} first")
            self.down(old)
        for ns in [lab.switch_namespace, *(lab.namespace(h.name) for h in lab.hosts)]:
            if (NETNS_DIR / ns).exists():
                raise Conflict(f"network namespace {ns} exists but no lab record owns it: "
                               f"remove it with ip netns del {ns}")

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

    def _do(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        {"switch": self._switch, "host": self._host, "impair": self._impair, "etcd": self._etcd,
         "daemon": self._daemon, "network": self._network, "container": self._container}[step.kind](lab, rec, step)

    def _add_netns(self, rec: LabRecord, ns: str) -> None:
        rec.namespaces.append(ns)        # recorded before it exists: down tolerates absence
        rec.save()
        self.runner.run(["ip", "netns", "add", ns])
        self.runner.run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _switch(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        sw = lab.switch_namespace
        self._add_netns(rec, sw)
        self.runner.run(["ip", "-n", sw, "link", "add", SWITCH_BRIDGE, "type", "bridge"])
        self.runner.run(["ip", "-n", sw, "link", "set", SWITCH_BRIDGE, "up"])

    def _host(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        h = lab.host(step.name)
        ns, sw, port = lab.namespace(h.name), lab.switch_namespace, switch_port(h.name)
        paths = HostPaths.for_host(Path(rec.dir), h.name)
        rec.hosts[h.name] = {"netns": ns, "address": h.address, "mtu": h.link.mtu, **paths.__dict__}
        self._add_netns(rec, ns)
        # made inside the switch namespace, peer moved straight into the host: the
        # machine's root namespace never sees either end
        self.runner.run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", UNDERLAY_IFACE,
                         "netns", ns])
        self.runner.run(["ip", "-n", sw, "link", "set", port, "mtu", str(h.link.mtu), "master", SWITCH_BRIDGE, "up"])
        self.runner.run(["ip", "-n", ns, "link", "set", UNDERLAY_IFACE, "mtu", str(h.link.mtu)])
        self.runner.run(["ip", "-n", ns, "addr", "add", f"{h.address}/{lab.underlay.prefixlen}", "dev", UNDERLAY_IFACE])
        self.runner.run(["ip", "-n", ns, "link", "set", UNDERLAY_IFACE, "up"])

    def _impair(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        h = lab.host(step.name)
        self.set_impairment(rec, h.name, imp.Impairment.of_link(h.link))

    def set_impairment(self, rec: LabRecord, host: str, want: imp.Impairment) -> None:
        """Make `host`'s link impaired exactly as `want` (replacing any earlier one)."""
        info = rec.hosts[host]
        cmds = imp.commands(info["netns"], namespace(rec.name, "sw"), host, want, int(info.get("mtu", 1500)))
        imp.apply(self.runner, cmds)
        if want.empty:
            rec.impair.pop(host, None)
        else:
            rec.impair[host] = want.to_json()
        rec.save()

    def _etcd(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        base = Path(rec.dir) / "etcd"
        members = [(f"etcd-{h}", lab.host(h).address, lab.namespace(h)) for h in lab.cluster.hosts]
        for (name, _, _), h in zip(members, lab.cluster.hosts):
            rec.etcd[name] = {"host": h, "pid": None, "start": None, "log": str(base / f"{name}.log")}
        rec.save()
        url, started = self.etcd_starter(members, base)
        for m in started:
            entry = rec.etcd[m["name"]]
            entry.update(pid=m["pid"], start=procs.start_time(m["pid"]) if m["pid"] else None,
                         client_url=m["client_url"], log=m["log"], data_dir=m["data_dir"])
        rec.cluster_store = url
        rec.save()

    def daemon_argv(self, rec: LabRecord, host: str) -> list[str]:
        info = rec.hosts[host]
        argv = [NET, "daemon", "--root", info["root"], "--run-dir", info["run"], "--socket", info["socket"]]
        if rec.cluster_store:
            argv += ["--cluster-store", rec.cluster_store, "--advertise", info["address"]]
        return argv

    def _daemon(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        info = rec.hosts[step.name]
        for d in (info["root"], info["run"]):
            Path(d).mkdir(parents=True, exist_ok=True)
        pid = self.runner.spawn(self.daemon_argv(rec, step.name), info["netns"], Path(info["log"]))
        rec.daemons[step.name] = {"pid": pid, "start": procs.start_time(pid)}
        rec.save()
        deadline = time.monotonic() + self.daemon_timeout
        while True:
            if self.runner.run(net_argv(info["socket"], "ls", "-q"), check=False, timeout=10).ok:
                for tarball in lab.images if lab is not None else ():
                    self.runner.run(net_argv(info["socket"], "image", "load", "-q", "-i", tarball), timeout=300)
                return
            if not procs.alive(pid, rec.daemons[step.name]["start"]):
                raise Unavailable(f"the daemon on {step.name} exited at start-up")
            if time.monotonic() > deadline:
                raise Unavailable(f"the daemon on {step.name} did not answer within {self.daemon_timeout:g}s")
            self.sleep(0.1)

    def _network(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        n = lab.network(step.name)
        sock = rec.hosts[step.host]["socket"]  # type: ignore[index]
        self.runner.run(network_create_argv(sock, n.name, n.driver, n.subnet, n.internal, n.options))
        rec.networks.append([n.name, step.host])  # type: ignore[list-item]

    def _container(self, lab: Lab, rec: LabRecord, step: Step) -> None:
        c = lab.container(step.name)
        sock = rec.hosts[c.host]["socket"]
        for net in c.networks:
            if net != "bridge" and lab.network(net).is_overlay:
                self._wait_network(sock, net, c.host)
        rec.containers.append([c.name, c.host])
        self.runner.run(container_run_argv(sock, c.name, c.networks[0], c.ip, c.ports, c.command, c.cap_add,
                                           c.privileged, c.image))
        for net in c.networks[1:]:
            self.runner.run(net_argv(sock, "network", "connect", net, c.name))

    def _wait_network(self, sock: str, net: str, host: str) -> None:
        deadline = time.monotonic() + self.net_wait
        while True:
            r = self.runner.run(net_argv(sock, "network", "inspect", net), check=False, timeout=10)
            if r.ok:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"overlay network {net} did not reach {host} within {self.net_wait:g}s: "
                                  f"{r.last_line()}")
            self.sleep(0.2)

    # --- down -----------------------------------------------------------------------

    # ------------------------------------------------------------ faults
    def stop_daemon(self, rec: LabRecord, host: str, sig: int = signal.SIGTERM) -> str:
        """Stop HOST's daemon (its containers keep running: they outlive the daemon)."""
        d = rec.daemons.get(host) or {}
        if not d.get("pid") or not procs.alive(d["pid"], d.get("start")):
            return "not running"
        if sig == signal.SIGKILL:
            os.kill(d["pid"], signal.SIGKILL)
            procs.terminate(d["pid"], d.get("start"), timeout=5)   # reaps it
            return "killed"
        return procs.terminate(d["pid"], d.get("start"), timeout=15)

    def start_daemon(self, rec: LabRecord, host: str) -> None:
        """(Re)start HOST's daemon with the same paths and cluster store."""
        d = rec.daemons.get(host) or {}
        if d.get("pid") and procs.alive(d["pid"], d.get("start")):
            raise Conflict(f"the daemon on {host} is running (pid {d['pid']})")
        self._daemon(None, rec, Step("daemon", host))   # type: ignore[arg-type]

    def _members(self, rec: LabRecord):
        from cnm.cluster.etcd_server import make_members
        names = [(name, rec.hosts[e["host"]]["address"]) for name, e in sorted(rec.etcd.items())]
        netns = {name: rec.hosts[e["host"]]["netns"] for name, e in rec.etcd.items()}
        return {m.name: m for m in make_members(names, Path(rec.dir) / "etcd", netns=netns)}

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
        """Remove everything the record lists, best effort and idempotent: containers
        and networks through each live daemon, then daemons, etcd members, any other
        process left in the lab's namespaces, mounts under the lab directory, the
        namespaces, the directory. Returns the problems met (empty = clean)."""
        say = say or (lambda _msg: None)
        problems: list[str] = []
        live = {h: d for h, d in rec.daemons.items() if d.get("pid") and procs.alive(d["pid"], d.get("start"))}
        for host, _ in live.items():
            sock = rec.hosts[host]["socket"]
            r = self.runner.run(net_argv(sock, "ps", "-a", "-q"), check=False, timeout=20)
            ids = r.stdout.split() if r.ok else []
            if ids:
                rm = self.runner.run(net_argv(sock, "container", "rm", "-f", *ids), check=False, timeout=60)
                if not rm.ok:
                    problems.append(f"{host}: net container rm -f: {rm.last_line()}")
                say(f"{host}: removed {len(ids)} container(s)")
            for name, where in reversed(rec.networks):
                if where == host:
                    self.runner.run(net_argv(sock, "network", "rm", name), check=False, timeout=30)
        for host, d in rec.daemons.items():
            if d.get("pid"):
                outcome = procs.terminate(d["pid"], d.get("start"), timeout=15)
                if outcome == "killed":
                    problems.append(f"{host}: the daemon did not stop on SIGTERM; killed")
                say(f"{host}: daemon {outcome}")
        for name, d in rec.etcd.items():
            if d.get("pid"):
                say(f"{name}: {procs.terminate(d['pid'], d.get('start'), timeout=10)}")
        self._kill_strays(rec, say)
        for point, _ in procs.mounts_under(rec.dir):
            r = self.runner.run(["umount", "-l", point], check=False)
            if not r.ok:
                problems.append(f"umount {point}: {r.last_line()}")
        for ns in reversed(rec.namespaces):
            if (NETNS_DIR / ns).exists():
                r = self.runner.run(["ip", "netns", "del", ns], check=False)
                if not r.ok:
                    problems.append(f"ip netns del {ns}: {r.last_line()}")
        shutil.rmtree(rec.dir, ignore_errors=True)
        if Path(rec.dir).exists():
            problems.append(f"could not remove {rec.dir}")
        return problems

    def _kill_strays(self, rec: LabRecord, say: Callable[[str], None]) -> None:
        """Processes still in a lab namespace (container shims and processes after a
        daemon crash, `net lab exec` shells) are the lab's: SIGKILL them by pid."""
        inodes = {i for ns in rec.namespaces if (i := procs.netns_inode(NETNS_DIR / ns))}
        inodes |= procs.nsfs_inodes_under(rec.dir)
        if not inodes:
            return
        pids = procs.pids_in_netns(inodes)
        for pid in pids:
            procs.terminate(pid, procs.start_time(pid), timeout=0.0)
        if pids:
            say(f"killed {len(pids)} leftover process(es)")


__all__ = ["Realiser", "LabUpFailed", "start_etcd", "net_argv", "network_create_argv", "container_run_argv", "NET"]
