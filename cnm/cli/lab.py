"""`net lab …`: build multi-host topologies on this machine, check, picture, capture,
impair and remove them. The lab machinery (cnm.lab: YAML, processes, rich) is imported
inside the commands, so `net --help` stays fast."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cnm.cli.output import table
from cnm.errors import InvalidParameter, NotFound

if TYPE_CHECKING:
    from cnm.lab.record import LabRecord
    from cnm.lab.topology import Lab, Step

CMD_SETTINGS = {"allow_interspersed_args": False}


@click.group("lab")
def lab() -> None:
    """Multi-host labs: each host a network namespace with its own daemon, joined by an
    underlay switch (state under /var/lib/cnm-lab, or $CNM_LAB_DIR)."""


# -- helpers ---------------------------------------------------------------------------

def _is_file_arg(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) or os.sep in arg or Path(arg).is_file()


def _lab_name(arg: str) -> str:
    """NAME, or the `name:` of a lab FILE (read leniently: down must work for a file
    that no longer validates)."""
    if not _is_file_arg(arg):
        return arg
    import yaml
    try:
        data = yaml.safe_load(Path(arg).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidParameter(f"{arg}: cannot read the lab's name from it ({exc.__class__.__name__}); "
                               "give the lab's NAME instead (see net lab ls)") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InvalidParameter(f"{arg}: no 'name' field; give the lab's NAME instead (see net lab ls)")
    return data["name"]


def _record(name: str) -> "LabRecord":
    from cnm.lab.record import LabRecord
    return LabRecord.load(name)


def _lab_of(rec: "LabRecord") -> "Lab":
    from cnm.lab.topology import parse
    return parse(rec.topology, rec.source or f"lab {rec.name}")


def _realiser(progress: Any = None) -> Any:
    from cnm.lab.realise import Realiser
    from cnm.lab.runner import SubprocessRunner
    return Realiser(SubprocessRunner(), progress=progress)


class PlainProgress:
    """One line per finished step (for logs and pipes)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, index: int, total: int, step: "Step", state: str, detail: str = "") -> None:
        if state == "start":
            self.t0 = time.monotonic()
            return
        took = time.monotonic() - self.t0
        verdict = f"ok ({took:.1f}s)" if state == "done" else "FAILED"
        click.echo(f"[{index}/{total}] {step.label} {verdict}")


class RichProgress:
    """A spinner on the running step and a tick per finished one (rich, loaded lazily)."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console()
        self.status: Any = None
        self.t0 = time.monotonic()

    def __call__(self, index: int, total: int, step: "Step", state: str, detail: str = "") -> None:
        if state == "start":
            self.t0 = time.monotonic()
            self.status = self.console.status(f"[{index}/{total}] {step.label}")
            self.status.start()
            return
        if self.status is not None:
            self.status.stop()
        took = time.monotonic() - self.t0
        if state == "done":
            self.console.print(f"[green]✓[/] [{index}/{total}] {step.label} [dim]{took:.1f}s[/]", highlight=False)
        else:
            self.console.print(f"[red]✗[/] [{index}/{total}] {step.label}", highlight=False)


def _progress() -> Any:
    if sys.stdout.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress()


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InvalidParameter("net lab needs root (it creates network namespaces): run it with sudo")


# -- up / down ---------------------------------------------------------------------------

@lab.command("up")
@click.option("--dry-run", is_flag=True, help="Validate the file and print the steps; build nothing.")
@click.argument("file", type=click.Path(dir_okay=False))
def up(file: str, dry_run: bool) -> None:
    """Build the lab described in FILE (see labs/*.yaml)."""
    from cnm.lab.topology import load, plan
    topo, raw = load(file)
    if dry_run:
        for i, step in enumerate(plan(topo), 1):
            click.echo(f"{i:>3}. {step.label}")
        return
    _require_root()
    rec = _realiser(_progress()).up(topo, raw, source=str(Path(file).resolve()))
    click.echo(f"lab {rec.name} is up: {len(rec.hosts)} host(s), {len(rec.containers)} container(s). "
               f"Next: net lab check {rec.name}")


@lab.command("down")
@click.argument("lab_ref", metavar="NAME|FILE")
def down(lab_ref: str) -> None:
    """Remove everything the lab made (works without its file and after a failed up)."""
    _require_root()
    name = _lab_name(lab_ref)
    try:
        rec = _record(name)
    except NotFound:
        click.echo(f"lab {name}: nothing to remove")
        return
    problems = _realiser().down(rec, say=lambda msg: click.echo(f"  {msg}"))
    for p in problems:
        click.echo(f"warning: {p}", err=True)
    click.echo(f"lab {name} removed" + (" (with warnings)" if problems else ""))


# -- ls / inspect ------------------------------------------------------------------------------

def _describe(rec: "LabRecord") -> dict[str, Any]:
    from cnm.lab import procs
    hosts = []
    for h, info in rec.hosts.items():
        d = rec.daemons.get(h) or {}
        hosts.append({"Name": h, "Namespace": info["netns"], "Address": info["address"], "MTU": info.get("mtu"),
                      "Socket": info["socket"], "Log": info["log"],
                      "Daemon": {"Pid": d.get("pid"), "Running": bool(d.get("pid")) and procs.alive(d["pid"], d.get("start"))},
                      "Impairment": rec.impair.get(h)})
    etcd = [{"Name": m, "Host": d.get("host"), "ClientURL": d.get("client_url"), "Pid": d.get("pid"),
             "Running": bool(d.get("pid")) and procs.alive(d["pid"], d.get("start")), "Log": d.get("log")}
            for m, d in rec.etcd.items()]
    return {"Name": rec.name, "Status": rec.status, "Source": rec.source, "Dir": rec.dir,
            "Created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(rec.created)),
            "Namespaces": rec.namespaces, "Hosts": hosts, "Etcd": etcd, "ClusterStore": rec.cluster_store,
            "Networks": [{"Name": n, "Host": h} for n, h in rec.networks],
            "Containers": [{"Name": c, "Host": h} for c, h in rec.containers],
            "FailedStep": rec.failed_step, "Error": rec.error}


@lab.command("ls")
def ls() -> None:
    """List the labs recorded on this machine."""
    from cnm.lab.record import list_labs
    rows = []
    for rec in list_labs():
        d = _describe(rec)
        running = sum(1 for h in d["Hosts"] if h["Daemon"]["Running"])
        rows.append((rec.name, rec.status, f"{running}/{len(d['Hosts'])} up", str(len(rec.etcd)),
                     str(len(rec.containers)), rec.source or ""))
    click.echo(table(("NAME", "STATUS", "DAEMONS", "ETCD", "CONTAINERS", "SOURCE"), rows))


@lab.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.argument("name")
def inspect(name: str, fmt: str) -> None:
    """Hosts, addresses, daemons, etcd members, networks and containers of a lab."""
    d = _describe(_record(_lab_name(name)))
    if fmt == "json":
        click.echo(json.dumps(d, indent=4))
        return
    click.echo(f"lab {d['Name']} ({d['Status']}), state in {d['Dir']}")
    if d["Error"]:
        click.echo(f"failed at {d['FailedStep']}: {d['Error']}")
    click.echo(table(("HOST", "NAMESPACE", "ADDRESS", "DAEMON", "IMPAIRMENT", "SOCKET"),
                     [(h["Name"], h["Namespace"], h["Address"],
                       f"{h['Daemon']['Pid']} {'running' if h['Daemon']['Running'] else 'stopped'}",
                       ", ".join(f"{k} {v}" for k, v in (h["Impairment"] or {}).items() if v) or "-",
                       h["Socket"]) for h in d["Hosts"]]))
    if d["Etcd"]:
        click.echo(table(("ETCD", "HOST", "CLIENT URL", "STATE"),
                         [(m["Name"], m["Host"] or "", m["ClientURL"] or "", "running" if m["Running"] else "stopped")
                          for m in d["Etcd"]]))
    click.echo("networks:   " + (", ".join(f"{n['Name']}@{n['Host']}" for n in d["Networks"]) or "-"))
    click.echo("containers: " + (", ".join(f"{c['Name']}@{c['Host']}" for c in d["Containers"]) or "-"))


# -- exec / check --------------------------------------------------------------------------------

def exec_plan(rec: "LabRecord", host: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `net lab exec`: CMD in the host's namespace, with `net`
    pointed at that host's daemon (and the venv's `net` first on PATH)."""
    paths = rec.host_paths(host)
    env = dict(os.environ)
    env["NET_HOST"] = f"unix://{paths.socket}"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return ["ip", "netns", "exec", rec.hosts[host]["netns"], *cmd], env


@lab.command("exec", context_settings=CMD_SETTINGS)
@click.argument("name")
@click.argument("host")
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARG...]")
def exec_(name: str, host: str, cmd: tuple[str, ...]) -> None:
    """Run CMD inside HOST of lab NAME; `net` there talks to that host's daemon
    (net lab exec demo h1 -- net ps). Exits with CMD's exit code."""
    _require_root()
    argv, env = exec_plan(_record(name), host, list(cmd[1:] if cmd[:1] == ("--",) else cmd))
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


@lab.command("check")
@click.argument("name")
def check(name: str) -> None:
    """Run the lab's checks: PASS/FAIL per check; exit 1 if any fails."""
    _require_root()
    from cnm.lab.checks import run_checks
    from cnm.lab.runner import SubprocessRunner
    rec = _record(name)
    topo = _lab_of(rec)
    if not topo.checks:
        click.echo(f"lab {name} has no checks")
        return
    sockets = {h: info["socket"] for h, info in rec.hosts.items()}
    addresses = {h: info["address"] for h, info in rec.hosts.items()}
    results = run_checks(topo, sockets, addresses, SubprocessRunner())
    width = max(len(r.check.label) for r in results)
    for r in results:
        click.echo(f"{'PASS' if r.ok else 'FAIL'}  {r.check.label.ljust(width)}  {r.detail}")
    failed = sum(1 for r in results if not r.ok)
    click.echo(f"{len(results)} checks: {len(results) - failed} passed, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


# -- graph / capture / impair ---------------------------------------------------------------------

@lab.command("graph")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Picture file: .dot, .png, .svg or .pdf.")
@click.argument("lab_ref", metavar="NAME|FILE")
def graph(lab_ref: str, output: str) -> None:
    """Draw the lab: hosts, underlay, networks (an overlay spanning hosts), containers."""
    from cnm.lab.graph import output_format, render
    fmt = output_format(output)
    if _is_file_arg(lab_ref) and Path(lab_ref).is_file():
        from cnm.lab.topology import load
        topo = load(lab_ref)[0]
    else:
        topo = _lab_of(_record(lab_ref))
    text = render(topo)
    if fmt == "dot":
        Path(output).write_text(text)
    else:
        from cnm.lab.runner import SubprocessRunner
        r = SubprocessRunner().run(["dot", f"-T{fmt}", "-o", output], input=text, check=False)
        if r.returncode == 127:
            raise InvalidParameter("Graphviz is not installed (apt-get install graphviz); .dot output works without it")
        if not r.ok:
            raise InvalidParameter(f"dot failed: {r.last_line()}")
    click.echo(output)


@lab.command("capture")
@click.option("-w", "--write", "out", required=True, type=click.Path(dir_okay=False), help="pcap file to write.")
@click.option("-c", "--count", type=click.IntRange(min=1), default=10, show_default=True, help="Stop after COUNT packets.")
@click.option("-t", "--timeout", type=click.FloatRange(min=0.1), default=10, show_default=True,
              help="Stop after this many seconds in any case.")
@click.option("-f", "--filter", "bpf", default=None, help="Capture filter (BPF), e.g. 'udp port 4789'.")
@click.argument("name")
@click.argument("where", metavar="HOST:IFACE")
def capture(name: str, where: str, out: str, count: int, timeout: float, bpf: str | None) -> None:
    """Capture packets on an interface of a lab host (HOST `sw` is the underlay switch;
    ul0 is a host's underlay link) into a pcap file tshark or Wireshark reads."""
    _require_root()
    from cnm.lab.runner import SubprocessRunner
    host, sep, iface = where.partition(":")
    if not sep or not host or not iface:
        raise InvalidParameter(f"expected HOST:IFACE (e.g. h1:ul0), got {where!r}")
    rec = _record(name)
    ns = f"lab-{rec.name}-sw" if host == "sw" else rec.hosts.get(host, {}).get("netns")
    if ns is None:
        raise NotFound(f"lab {name} has no host {host!r} (hosts: {', '.join(['sw', *rec.hosts])})")
    argv = capture_argv(iface, str(Path(out).resolve()), count, timeout, bpf)
    r = SubprocessRunner().run(argv, ns, check=False, timeout=timeout + 30)
    if not r.ok:
        raise InvalidParameter(f"capture on {where} failed: {r.last_line()}")
    click.echo(f"{out}: captured on {where}")


def capture_argv(iface: str, out: str, count: int, timeout: float, bpf: str | None) -> list[str]:
    """dumpcap writing classic pcap (-P), stopping at COUNT packets or TIMEOUT seconds."""
    argv = ["dumpcap", "-q", "-P", "-i", iface, "-c", str(count), "-a", f"duration:{max(1, round(timeout))}", "-w", out]
    return argv + (["-f", bpf] if bpf else [])


@lab.command("impair")
@click.option("--delay", type=click.FloatRange(min=0), help="Delay each direction by MS milliseconds (needs netem).")
@click.option("--loss", type=click.FloatRange(0, 100), help="Drop PCT percent of packets in each direction.")
@click.option("--rate", help="Limit each direction to RATE (e.g. 10mbit, 512kbit).")
@click.option("--clear", is_flag=True, help="Remove every impairment first.")
@click.argument("name")
@click.argument("host")
def impair(name: str, host: str, delay: float | None, loss: float | None, rate: str | None, clear: bool) -> None:
    """Impair HOST's underlay link at run time (0 removes one setting; --clear all).
    With no option, show the current impairment."""
    _require_root()
    from cnm.lab import impair as imp
    rec = _record(name)
    rec.host_paths(host)   # NotFound for an unknown host
    current = imp.Impairment() if clear else imp.Impairment.from_json(rec.impair.get(host))
    if not clear and delay is None and loss is None and rate is None:
        click.echo(f"{host}: {current.describe()}")
        return
    imp.validate(rate, loss, delay)
    want = current.merged(rate, loss, delay)
    _realiser().set_impairment(rec, host, want)
    click.echo(f"{host}: {want.describe()}")


@lab.command("stop")
@click.option("--etcd", is_flag=True, help="Stop the host's etcd member instead of its daemon.")
@click.option("--kill", "hard", is_flag=True, help="SIGKILL instead of SIGTERM (a crash, not a shutdown).")
@click.argument("name")
@click.argument("host")
def stop(name: str, host: str, etcd: bool, hard: bool) -> None:
    """Stop HOST's daemon (or etcd member) to study faults; its containers keep running."""
    import signal
    _require_root()
    rec = _record(name)
    rec.host_paths(host)
    sig = signal.SIGKILL if hard else signal.SIGTERM
    r = _realiser()
    outcome = r.stop_etcd(rec, host, sig) if etcd else r.stop_daemon(rec, host, sig)
    click.echo(f"{host}: {'etcd member' if etcd else 'daemon'} {outcome}")


@lab.command("start")
@click.option("--etcd", is_flag=True, help="Start the host's etcd member instead of its daemon.")
@click.argument("name")
@click.argument("host")
def start(name: str, host: str, etcd: bool) -> None:
    """Start HOST's daemon (or etcd member) again after `net lab stop`."""
    _require_root()
    rec = _record(name)
    rec.host_paths(host)
    r = _realiser()
    if etcd:
        r.start_etcd(rec, host)
    else:
        r.start_daemon(rec, host)
    click.echo(f"{host}: {'etcd member' if etcd else 'daemon'} started")


__all__ = ["lab"]
