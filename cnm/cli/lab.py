"""`net lab …`: build multi-host topologies on this machine, check, picture, capture,
impair and remove them. Declared with cnm.cli.spec. The lab machinery (cnm.lab: YAML,
processes, rich) is imported inside the commands that need it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cnm.cli.labprogress import PlainProgress, RichProgress, _progress  # noqa: F401  (PlainProgress: re-exported)
from cnm.cli.output import dumps, echo, table
from cnm.cli.spec import ANY, arg, command, flag, option
from cnm.cli.values import float_range, int_range
from cnm.errors import InvalidParameter, NotFound

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from cnm.cli.spec import Context, Opts
    from cnm.lab.record import LabRecord
    from cnm.lab.topology import Lab

# The lab machinery (cnm.lab: dataclasses, YAML, rich for progress, processes, daemons).
HEAVY = ANY


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
        raise InvalidParameter(
            f"{arg}: cannot read the lab's name from it ({exc.__class__.__name__}); "
            "give the lab's NAME instead (see net lab ls)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InvalidParameter(f"{arg}: no 'name' field; give the lab's NAME instead (see net lab ls)")
    return data["name"]


def _record(name: str) -> LabRecord:
    from cnm.lab.record import LabRecord

    return LabRecord.load(name)


def _lab_of(rec: LabRecord) -> Lab:
    from cnm.lab.topology import parse

    return parse(rec.topology, rec.source or f"lab {rec.name}")


def _realiser(progress: Any = None) -> Any:
    from cnm.lab.realise import Realiser
    from cnm.lab.runner import SubprocessRunner

    return Realiser(SubprocessRunner(), progress=progress)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InvalidParameter("net lab needs root (it creates network namespaces): run it with sudo")


# -- up / down ---------------------------------------------------------------------------


@command(
    "up",
    flag("--dry-run", help="Validate the file and print the steps; build nothing."),
    arg("file", metavar="FILE"),
    heavy=HEAVY,
)
def up(cx: Context, o: Opts) -> None:
    """Build the lab described in FILE (see labs/*.yaml)."""
    from cnm.lab.topology import load, plan

    file = o.file
    topo, raw = load(file)
    if o.dry_run:
        for i, step in enumerate(plan(topo), 1):
            echo(f"{i:>3}. {step.label}")
        return
    _require_root()
    rec = _realiser(_progress()).up(topo, raw, source=str(Path(file).resolve()))
    echo(
        f"lab {rec.name} is up: {len(rec.hosts)} host(s), {len(rec.containers)} container(s). "
        f"Next: net lab check {rec.name}"
    )


@command("down", arg("lab_ref", metavar="NAME|FILE"), heavy=HEAVY)
def down(cx: Context, o: Opts) -> None:
    """Remove everything the lab made (works without its file and after a failed up)."""
    _require_root()
    name = _lab_name(o.lab_ref)
    try:
        rec = _record(name)
    except NotFound:
        echo(f"lab {name}: nothing to remove")
        return
    problems = _realiser().down(rec, say=lambda msg: echo(f"  {msg}"))
    for p in problems:
        echo(f"warning: {p}", err=True)
    echo(f"lab {name} removed" + (" (with warnings)" if problems else ""))


# -- ls / inspect ------------------------------------------------------------------------------


def _describe(rec: LabRecord) -> dict[str, Any]:
    from cnm.lab import procs

    hosts = []
    for h, info in rec.hosts.items():
        d = rec.daemons.get(h) or {}
        hosts.append(
            {
                "Name": h,
                "Namespace": info["netns"],
                "Address": info["address"],
                "MTU": info.get("mtu"),
                "Socket": info["socket"],
                "Log": info["log"],
                "Daemon": {
                    "Pid": d.get("pid"),
                    "Running": bool(d.get("pid")) and procs.alive(d["pid"], d.get("start")),
                },
                "Impairment": rec.impair.get(h),
            }
        )
    etcd = [
        {
            "Name": m,
            "Host": d.get("host"),
            "ClientURL": d.get("client_url"),
            "Pid": d.get("pid"),
            "Running": bool(d.get("pid")) and procs.alive(d["pid"], d.get("start")),
            "Log": d.get("log"),
        }
        for m, d in rec.etcd.items()
    ]
    from cnm.lab.realise import interrupted

    status = "interrupted" if interrupted(rec) else rec.status  # its `up` died part-way: down or up again
    return {
        "Name": rec.name,
        "Status": status,
        "Source": rec.source,
        "Dir": rec.dir,
        "Created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(rec.created)),
        "Namespaces": rec.namespaces,
        "Hosts": hosts,
        "Etcd": etcd,
        "ClusterStore": rec.cluster_store,
        "Networks": [{"Name": n, "Host": h} for n, h in rec.networks],
        "Containers": [{"Name": c, "Host": h} for c, h in rec.containers],
        "FailedStep": rec.failed_step,
        "Error": rec.error,
    }


@command("ls", heavy=HEAVY)
def ls(cx: Context, o: Opts) -> None:
    """List the labs recorded on this machine."""
    from cnm.lab.record import list_labs

    rows = []
    for rec in list_labs():
        d = _describe(rec)
        running = sum(1 for h in d["Hosts"] if h["Daemon"]["Running"])
        rows.append(
            (
                rec.name,
                d["Status"],
                f"{running}/{len(d['Hosts'])} up",
                str(len(rec.etcd)),
                str(len(rec.containers)),
                rec.source or "",
            )
        )
    echo(table(("NAME", "STATUS", "DAEMONS", "ETCD", "CONTAINERS", "SOURCE"), rows))


@command(
    "inspect",
    option("--format", dest="fmt", choices=("text", "json"), default="text", help="text, or json."),
    arg("name"),
    heavy=HEAVY,
)
def inspect(cx: Context, o: Opts) -> None:
    """Hosts, addresses, daemons, etcd members, networks and containers of a lab."""
    d = _describe(_record(_lab_name(o.name)))
    if o.fmt == "json":
        echo(dumps(d))
        return
    echo(f"lab {d['Name']} ({d['Status']}), state in {d['Dir']}")
    if d["Error"]:
        echo(f"failed at {d['FailedStep']}: {d['Error']}")
    echo(
        table(
            ("HOST", "NAMESPACE", "ADDRESS", "DAEMON", "IMPAIRMENT", "SOCKET"),
            [
                (
                    h["Name"],
                    h["Namespace"],
                    h["Address"],
                    f"{h['Daemon']['Pid']} {'running' if h['Daemon']['Running'] else 'stopped'}",
                    ", ".join(f"{k} {v}" for k, v in (h["Impairment"] or {}).items() if v) or "-",
                    h["Socket"],
                )
                for h in d["Hosts"]
            ],
        )
    )
    if d["Etcd"]:
        echo(
            table(
                ("ETCD", "HOST", "CLIENT URL", "STATE"),
                [
                    (m["Name"], m["Host"] or "", m["ClientURL"] or "", "running" if m["Running"] else "stopped")
                    for m in d["Etcd"]
                ],
            )
        )
    echo("networks:   " + (", ".join(f"{n['Name']}@{n['Host']}" for n in d["Networks"]) or "-"))
    echo("containers: " + (", ".join(f"{c['Name']}@{c['Host']}" for c in d["Containers"]) or "-"))


# -- exec / check --------------------------------------------------------------------------------


def exec_plan(rec: LabRecord, host: str, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `net lab exec`: CMD in the host's namespace, with `net`
    pointed at that host's daemon (and the venv's `net` first on PATH)."""
    paths = rec.host_paths(host)
    env = dict(os.environ)
    env["NET_HOST"] = f"unix://{paths.socket}"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return ["ip", "netns", "exec", rec.hosts[host]["netns"], *cmd], env


@command(
    "exec", arg("name"), arg("host"), arg("cmd", nargs=-1, metavar="-- CMD [ARG...]"), interspersed=False, heavy=HEAVY
)
def exec_(cx: Context, o: Opts) -> None:
    """Run CMD inside HOST of lab NAME; `net` there talks to that host's daemon
    (net lab exec demo h1 -- net ps). Exits with CMD's exit code."""
    _require_root()
    argv, env = exec_plan(_record(o.name), o.host, o.cmd)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


@command(
    "check",
    flag("-v", "--verbose", help="List every probe of a group's check, not only the failed ones."),
    arg("name"),
    heavy=HEAVY,
)
def check(cx: Context, o: Opts) -> int:
    """Run the lab's checks: PASS/FAIL per check (a group's check: how many of its
    probes passed, and the ones that failed); exit 1 if any fails."""
    _require_root()
    name = o.name
    from cnm.lab.checks import report_lines, run_checks
    from cnm.lab.runner import SubprocessRunner

    rec = _record(name)
    topo = _lab_of(rec)
    if not topo.checks:
        echo(f"lab {name} has no checks")
        return 0
    sockets = {h: info["socket"] for h, info in rec.hosts.items()}
    addresses = {h: info["address"] for h, info in rec.hosts.items()}
    results = run_checks(topo, sockets, addresses, SubprocessRunner())
    for line in report_lines(results, verbose=o.verbose):
        echo(line)
    return 1 if any(not r.ok for r in results) else 0


# -- graph / capture / impair ---------------------------------------------------------------------


@command(
    "graph",
    option("-o", "--output", required=True, metavar="FILE", help="Picture file: .dot, .png, .svg or .pdf."),
    arg("lab_ref", metavar="NAME|FILE"),
    heavy=HEAVY,
)
def graph(cx: Context, o: Opts) -> None:
    """Draw the lab: hosts, underlay, networks (an overlay spanning hosts), containers."""
    lab_ref, output = o.lab_ref, o.output
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
    echo(output)


@command(
    "capture",
    option("-w", "--write", dest="out", required=True, metavar="FILE", help="pcap file to write."),
    option("-c", "--count", value=int_range(1), default=10, help="Stop after COUNT packets."),
    option("-t", "--timeout", value=float_range(0.1), default=10.0, help="Stop after this many seconds in any case."),
    option("-f", "--filter", dest="bpf", help="Capture filter (BPF), e.g. 'udp port 4789'."),
    arg("name"),
    arg("where", metavar="HOST:IFACE"),
    heavy=HEAVY,
)
def capture(cx: Context, o: Opts) -> None:
    """Capture packets on an interface of a lab host (HOST `sw` is the underlay switch;
    ul0 is a host's underlay link) into a pcap file tshark or Wireshark reads."""
    _require_root()
    name, where, out, count, timeout, bpf = o.name, o.where, o.out, o.count, o.timeout, o.bpf
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
    echo(f"{out}: captured on {where}")


def capture_argv(iface: str, out: str, count: int, timeout: float, bpf: str | None) -> list[str]:
    """dumpcap writing classic pcap (-P), stopping at COUNT packets or TIMEOUT seconds."""
    argv = ["dumpcap", "-q", "-P", "-i", iface, "-c", str(count), "-a", f"duration:{max(1, round(timeout))}", "-w", out]
    return argv + (["-f", bpf] if bpf else [])


@command(
    "impair",
    option("--delay", value=float_range(0), help="Delay each direction by MS milliseconds (needs netem)."),
    option("--loss", value=float_range(0, 100), help="Drop PCT percent of packets in each direction."),
    option("--rate", help="Limit each direction to RATE (e.g. 10mbit, 512kbit)."),
    flag("--clear", help="Remove every impairment first."),
    arg("name"),
    arg("host"),
    heavy=HEAVY,
)
def impair(cx: Context, o: Opts) -> None:
    """Impair HOST's underlay link at run time (0 removes one setting; --clear all).
    With no option, show the current impairment."""
    _require_root()
    name, host, delay, loss, rate, clear = o.name, o.host, o.delay, o.loss, o.rate, o.clear
    from cnm.lab import impair as imp

    rec = _record(name)
    rec.host_paths(host)  # NotFound for an unknown host
    current = imp.Impairment() if clear else imp.Impairment.from_json(rec.impair.get(host))
    if not clear and delay is None and loss is None and rate is None:
        echo(f"{host}: {current.describe()}")
        return
    imp.validate(rate, loss, delay)
    want = current.merged(rate, loss, delay)
    _realiser().set_impairment(rec, host, want)
    echo(f"{host}: {want.describe()}")


@command(
    "stop",
    flag("--etcd", help="Stop the host's etcd member instead of its daemon."),
    flag("--kill", dest="hard", help="SIGKILL instead of SIGTERM (a crash, not a shutdown)."),
    arg("name"),
    arg("host"),
    heavy=HEAVY,
)
def stop(cx: Context, o: Opts) -> None:
    """Stop HOST's daemon (or etcd member) to study faults; its containers keep running."""
    import signal

    _require_root()
    name, host, etcd, hard = o.name, o.host, o.etcd, o.hard
    rec = _record(name)
    rec.host_paths(host)
    sig = signal.SIGKILL if hard else signal.SIGTERM
    r = _realiser()
    outcome = r.stop_etcd(rec, host, sig) if etcd else r.stop_daemon(rec, host, sig)
    echo(f"{host}: {'etcd member' if etcd else 'daemon'} {outcome}")


@command(
    "start",
    flag("--etcd", help="Start the host's etcd member instead of its daemon."),
    arg("name"),
    arg("host"),
    heavy=HEAVY,
)
def start(cx: Context, o: Opts) -> None:
    """Start HOST's daemon (or etcd member) again after `net lab stop`."""
    _require_root()
    name, host, etcd = o.name, o.host, o.etcd
    rec = _record(name)
    rec.host_paths(host)
    r = _realiser()
    if etcd:
        r.start_etcd(rec, host)
    else:
        r.start_daemon(rec, host)
    echo(f"{host}: {'etcd member' if etcd else 'daemon'} started")


__all__ = ["capture", "check", "down", "exec_", "graph", "impair", "inspect", "ls", "start", "stop", "up"]
