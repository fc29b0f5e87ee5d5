"""Container commands: run, ps, exec, logs, stop, kill, connect, disconnect, and the
`container` group (ls, inspect, rm, …). Docker's flags and output.

Exit codes of `net run`: the container's own code; 125 when the daemon refused or
failed (Docker's rule), 2 for a malformed flag, 130 after Ctrl-C.

Import-light like the rest of the CLI: cnm.ports (socket, threading) is loaded only
when `net run` parses `-p`.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, NoReturn

import click

from cnm.cli.output import error_line, table
from cnm.cli.params import IP, BadValue, KeyValue
from cnm.errors import CNMError, Conflict

from cnm.cli.runflow import (DAEMON_ERROR, INTERRUPTED, attached as _attached, create_body,  # noqa: E402
                             endpoint_config, stream_logs)
EXEC_NOT_FOUND = 127
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # as the runtime's
_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ByteSize(click.ParamType):
    """Docker's memory sizes: 67108864, 64m, 1g, 512k (b, k, m, g, t; case-insensitive,
    an optional trailing "b" as in "64mb")."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if len(text) > 2 and text.endswith("b") and text[-2] in _UNITS:
            text = text[:-1]
        unit = _UNITS.get(text[-1:], None) if text[-1:].isalpha() else 1
        number = text[:-1] if text[-1:].isalpha() else text
        try:
            amount = float(number)
        except ValueError:
            amount = -1.0
        if unit is None or amount < 0:
            raise BadValue(f"{value!r} is not a size (e.g. 64m, 1g, 67108864)", ctx=ctx, param=param)
        return int(amount * unit)


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


# -- run (the flow itself is in cnm.cli.runflow, shared with the fast path) -----------------

CMD_SETTINGS = {"allow_interspersed_args": False, "ignore_unknown_options": False}


@click.command("run", context_settings=CMD_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--name", help="Assign a name to the container.")
@click.option("--net", "--network", "network", metavar="MODE",
              help="bridge (default), host, none, container:NAME|ID, or a network name.")
@click.option("--ip", type=IP(), help="IPv4 address on the network.")
@click.option("--ip6", type=IP(), help="IPv6 address on the network.")
@click.option("--mac-address", "mac", help="MAC address on the network.")
@click.option("--hostname", help="Container host name (default: the short ID).")
@click.option("--network-alias", "aliases", multiple=True, metavar="ALIAS", help="Network-scoped alias (repeatable).")
@click.option("-p", "--publish", multiple=True, metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
              help="Publish a container port on the host (repeatable).")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable (repeatable).")
@click.option("--rootfs", type=click.Path(file_okay=False), help="Directory used read-only as the root filesystem.")
@click.option("-m", "--memory", type=ByteSize(), help="Memory limit (e.g. 64m, 1g).")
@click.option("--cpus", type=click.FloatRange(min=0.01), help="Number of CPUs (e.g. 1.5).")
@click.option("--pids-limit", type=click.IntRange(min=1), help="Maximum number of tasks.")
@click.argument("cmd", nargs=-1, required=True, metavar="[--] CMD [ARG...]")
@click.pass_obj
def run(state: Any, detach: bool, auto_remove: bool, name: str | None, network: str | None, ip: str | None,
        ip6: str | None, mac: str | None, hostname: str | None, aliases: tuple[str, ...],
        publish: tuple[str, ...], env: tuple[str, ...], rootfs: str | None, memory: int | None,
        cpus: float | None, pids_limit: int | None, cmd: tuple[str, ...]) -> None:
    """Run a command in a new container.

    Attached (no -d): prints the container's output and exits with its exit code.
    Exit 125 if the daemon could not run it, 130 after Ctrl-C (the container is stopped).
    """
    body = create_body(list(cmd), name=name, network=network, ip=ip, ip6=ip6, mac=mac, hostname=hostname,
                       aliases=aliases, publish=publish, env=env, rootfs=rootfs, memory=memory, cpus=cpus,
                       pids_limit=pids_limit, auto_remove=auto_remove and detach)
    try:
        cid = state.client.container_create(body)
    except CNMError as exc:
        error_line(exc)
        _exit(DAEMON_ERROR)
    if detach:
        click.echo(cid)
        return
    _exit(_attached(state.client, cid, remove=auto_remove))


# -- ps / inspect ---------------------------------------------------------------------

def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def ports_text(ports: list[dict]) -> str:
    """Docker's PORTS column: 0.0.0.0:32768->80/tcp, 81/tcp."""
    out = []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""), p.get("PublicPort", 0))):
        if p.get("PublicPort"):
            ip = p.get("IP") or "0.0.0.0"
            ip = f"[{ip}]" if ":" in ip else ip
            out.append(f"{ip}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}")
        else:
            out.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(out)


def ps_rows(containers: list[dict], no_trunc: bool = False) -> list[tuple[str, ...]]:
    rows = []
    for c in containers:
        command = c.get("Command", "")
        rows.append((c["Id"] if no_trunc else c["Id"][:12],
                     ",".join(n.lstrip("/") for n in c.get("Names", [])),
                     json.dumps(command if no_trunc else _ellipsis(command, 20), ensure_ascii=False),
                     c.get("Status", ""),
                     ports_text(c.get("Ports") or []),
                     ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {}))))
    return rows


@click.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running only).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-f", "--filter", "filters", multiple=True, type=KeyValue(), metavar="KEY=VALUE",
              help="Filter: id=, name=, status=running|exited|created (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json (an array of the API's container summaries).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.pass_obj
def ps(state: Any, all_: bool, quiet: bool, filters: tuple[tuple[str, str], ...], fmt: str, no_trunc: bool) -> None:
    """List containers."""
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)
    containers = state.client.containers(all=all_, filters=wanted or None)
    if quiet:
        for c in containers:
            click.echo(c["Id"] if no_trunc else c["Id"][:12])
    elif fmt == "json":
        click.echo(json.dumps(containers, indent=4))
    else:
        click.echo(table(("CONTAINER ID", "NAME", "COMMAND", "STATUS", "PORTS", "NETWORKS"),
                         ps_rows(containers, no_trunc)))


def _each(refs: Iterable[str], action: Any, echo: bool = True) -> int:
    """Apply `action` to every ref; print each ref done; the first failure's code."""
    code = 0
    for ref in refs:
        try:
            action(ref)
        except CNMError as exc:
            error_line(exc)
            code = code or exc.exit_code
            continue
        if echo:
            click.echo(ref)
    return code


@click.command("inspect")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def inspect(state: Any, refs: tuple[str, ...]) -> None:
    """Display detailed information on containers (a JSON array); a missing one is an
    error (exit non-zero) but the others are still printed."""
    found: list[dict] = []
    errors: list[CNMError] = []
    for ref in refs:
        try:
            found.append(state.client.container_inspect(ref))
        except CNMError as exc:
            errors.append(exc)
    click.echo(json.dumps(found, indent=4))
    for exc in errors:
        error_line(exc)
    _exit(errors[0].exit_code if errors else 0)


# -- lifecycle --------------------------------------------------------------------------

@click.command("stop")
@click.option("-t", "--time", "timeout", type=click.FloatRange(min=0), default=10, show_default=True,
              help="Seconds to wait before killing the container.")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def stop(state: Any, timeout: float, refs: tuple[str, ...]) -> None:
    """Stop running containers (SIGTERM, then SIGKILL after the timeout)."""
    _exit(_each(refs, lambda ref: state.client.container_stop(ref, timeout)))


@click.command("kill")
@click.option("-s", "--signal", "sig", default="SIGKILL", show_default=True, help="Signal to send.")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def kill(state: Any, sig: str, refs: tuple[str, ...]) -> None:
    """Send a signal to the containers' main process."""
    _exit(_each(refs, lambda ref: state.client.container_kill(ref, sig)))


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill and remove a running container.")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def rm(state: Any, force: bool, refs: tuple[str, ...]) -> None:
    """Remove containers."""
    _exit(_each(refs, lambda ref: state.client.container_remove(ref, force)))


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow the output until the container exits.")
@click.argument("ref", metavar="CONTAINER")
@click.pass_obj
def logs(state: Any, follow: bool, ref: str) -> None:
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    try:
        stream_logs(state.client, ref, follow)
    except KeyboardInterrupt:
        _exit(INTERRUPTED)


# -- exec ------------------------------------------------------------------------------

def nsenter_argv(pid: int, argv: list[str]) -> list[str]:
    """util-linux nsenter entering every namespace of `pid` plus its root and cwd (the
    same argv as cnm.runtime.runtime.nsenter_argv, rebuilt here: the runtime module is
    too heavy for the CLI's import path)."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
            "--root", "--wd", "--", *argv]


def exec_env(info: dict) -> dict[str, str]:
    """The environment the container's process got: PATH and HOSTNAME defaulted, then
    its -e variables."""
    config = info.get("Config") or {}
    env = {"PATH": DEFAULT_PATH}
    if config.get("Hostname"):
        env["HOSTNAME"] = config["Hostname"]
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def exec_plan(info: dict, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run `argv` inside the inspected container; Conflict if it is
    not running."""
    st = info.get("State") or {}
    name = (info.get("Name") or info.get("Id", "?")[:12]).lstrip("/")
    if not st.get("Running") or not st.get("Pid"):
        raise Conflict(f"container {name} is not running: start a new one with net run")
    return nsenter_argv(int(st["Pid"]), list(argv)), exec_env(info)


def replace_process(argv: list[str], env: dict[str, str], interactive: bool) -> NoReturn:
    """exec; without -i the command gets /dev/null as stdin (Docker's default)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if not interactive:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        click.echo(f"Error: {argv[0]} not found: install util-linux", err=True)
        _exit(EXEC_NOT_FOUND)
    except OSError as exc:
        click.echo(f"Error: cannot run {argv[0]}: {exc.strerror}", err=True)
        _exit(126)
    _exit(0)  # not reached: a successful exec never returns


@click.command("exec", context_settings=CMD_SETTINGS)
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached.")
@click.argument("ref", metavar="CONTAINER")
@click.argument("cmd", nargs=-1, required=True, metavar="[--] CMD [ARG...]")
@click.pass_obj
def exec_(state: Any, interactive: bool, ref: str, cmd: tuple[str, ...]) -> None:
    """Run a command in a running container (needs root: it uses nsenter). Exits with
    the command's exit code."""
    argv = list(cmd[1:] if cmd[:1] == ("--",) else cmd)   # click keeps a "--" after CONTAINER
    if not argv:
        raise click.UsageError("no command given: net exec CONTAINER [--] CMD [ARG...]")
    argv, env = exec_plan(state.client.container_inspect(ref), argv)
    replace_process(argv, env, interactive)


# -- networks ----------------------------------------------------------------------------

@click.command("connect")
@click.option("--ip", type=IP(), help="IPv4 address on the network.")
@click.option("--ip6", type=IP(), help="IPv6 address on the network.")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS", help="Network-scoped alias (repeatable).")
@click.option("--mac-address", "mac", help="MAC address on the network.")
@click.argument("network", metavar="NETWORK")
@click.argument("ref", metavar="CONTAINER")
@click.pass_obj
def connect(state: Any, ip: str | None, ip6: str | None, aliases: tuple[str, ...], mac: str | None,
            network: str, ref: str) -> None:
    """Connect a running container to a network."""
    state.client.network_connect(network, ref, endpoint_config(ip, ip6, aliases, mac))


@click.command("disconnect")
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect.")
@click.argument("network", metavar="NETWORK")
@click.argument("ref", metavar="CONTAINER")
@click.pass_obj
def disconnect(state: Any, force: bool, network: str, ref: str) -> None:
    """Disconnect a container from a network."""
    state.client.network_disconnect(network, ref, force)


# -- registration --------------------------------------------------------------------------

TOP_LEVEL = (run, ps, exec_, logs, stop, kill, connect, disconnect)   # `net rm`/`net inspect` are networks'
NETWORK_COMMANDS = (connect, disconnect)                              # also `net network connect`


def container_group(group_cls: type[click.Group]) -> click.Group:
    """`net container …`: every container command, with Docker's aliases."""
    group = group_cls("container", help="Manage containers.")
    for cmd in (run, exec_, logs, stop, kill, rm, inspect):
        group.add_command(cmd)
    for alias in ("ls", "ps", "list"):
        group.add_command(ps, alias)
    group.add_command(rm, "remove")
    return group


__all__ = ["TOP_LEVEL", "NETWORK_COMMANDS", "container_group"]
