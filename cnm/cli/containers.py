"""Container commands: run, ps, exec, logs, stop, kill, and under `container` also rm
and inspect. Declared with cnm.cli.spec; Docker's flags and output.

Exit codes of `net run`: the container's own code; 125 when the daemon refused or
failed (Docker's rule), 2 for a malformed flag, 130 after Ctrl-C.
"""

from __future__ import annotations

import sys

from cnm.cli.output import dumps, echo, error_line
from cnm.cli.runflow import DAEMON_ERROR, INTERRUPTED, attached, create_body, stream_logs
from cnm.cli.spec import arg, command, flag, option
from cnm.cli.values import byte_size, float_range, int_range, ip, key_value
from cnm.errors import CNMError, InvalidParameter

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from cnm.cli.spec import Context, Opts


# -- run (the flow itself is in cnm.cli.runflow) ----------------------------------------------


@command(
    "run",
    flag("-d", "--detach", help="Run in the background and print the container ID."),
    flag("--rm", dest="auto_remove", help="Remove the container when it exits."),
    flag("-i", "--interactive", help="Keep stdin open (attached: ours goes to the container)."),
    flag("-t", "--tty", help="Allocate a pseudo-TTY."),
    option("--restart", metavar="POLICY", help="no (default), on-failure[:N], always or unless-stopped."),
    option("--name", help="Assign a name to the container."),
    option(
        "--net",
        "--network",
        dest="network",
        metavar="MODE",
        help="bridge (default), host, none, container:NAME|ID, or a network name.",
    ),
    option("--ip", value=ip, help="IPv4 address on the network."),
    option("--ip6", value=ip, help="IPv6 address on the network."),
    option("--mac-address", dest="mac", help="MAC address on the network."),
    option("--hostname", help="Container host name (default: the short ID)."),
    option(
        "--network-alias", dest="aliases", multiple=True, metavar="ALIAS", help="Network-scoped alias (repeatable)."
    ),
    option(
        "-p",
        "--publish",
        multiple=True,
        metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
        help="Publish a container port on the host (repeatable).",
    ),
    option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable (repeatable)."),
    option(
        "--rootfs",
        metavar="DIRECTORY",
        help="Directory used read-only as the root filesystem (no IMAGE: the arguments are the command).",
    ),
    option("--entrypoint", metavar="CMD", help='Overwrite the image\'s ENTRYPOINT ("" resets it).'),
    option("-w", "--workdir", metavar="DIR", help="Working directory inside the container."),
    option("-u", "--user", metavar="USER[:GROUP]", help="User name or UID (and group) to run as."),
    option("-m", "--memory", value=byte_size, help="Memory limit (e.g. 64m, 1g)."),
    option("--cpus", value=float_range(0.01), help="Number of CPUs (e.g. 1.5)."),
    option("--pids-limit", value=int_range(1), help="Maximum number of tasks."),
    option(
        "--cap-add",
        dest="cap_add",
        multiple=True,
        metavar="CAP",
        help="Add a Linux capability to Docker's default 14 (repeatable; ALL: every one).",
    ),
    option(
        "--cap-drop",
        dest="cap_drop",
        multiple=True,
        metavar="CAP",
        help="Drop a Linux capability (repeatable; ALL: every one).",
    ),
    flag("--privileged", help="Every capability, no seccomp filter, no masked paths, the host's devices."),
    option(
        "-v",
        "--volume",
        dest="volumes",
        multiple=True,
        metavar="SRC:DST[:ro|rw]",
        help="Bind a host path (repeatable). Without --rootfs the host's / is read-only: -v /:/ makes it writable.",
    ),
    option(
        "--mount",
        dest="mounts",
        multiple=True,
        metavar="type=bind|tmpfs,...",
        help="Docker's --mount: type=bind,src=,dst=[,readonly] or type=tmpfs,dst=[,tmpfs-size=] (repeatable).",
    ),
    option("--tmpfs", multiple=True, metavar="DST[:OPTIONS]", help="Mount a tmpfs (repeatable)."),
    flag("--read-only", dest="read_only", help="Mount the container's root filesystem read-only (--rootfs)."),
    option(
        "--security-opt",
        dest="security_opt",
        multiple=True,
        metavar="OPTION",
        help="seccomp=unconfined|PROFILE.json, no-new-privileges[=false], systempaths=unconfined (repeatable).",
    ),
    option(
        "--device", dest="devices", multiple=True, metavar="HOST[:CTR][:rwm]", help="Add a host device (repeatable)."
    ),
    arg("args", nargs=-1, metavar="IMAGE [COMMAND] [ARG...] | /PATH/TO/CMD [ARG...]"),
    interspersed=False,
)
def run(cx: Context, o: Opts) -> int:
    """Run a command in a new container, on an image's layers or the host's filesystem.

    `net run IMAGE [COMMAND]` runs on the image (loaded with `net image load`); a first
    argument that is an absolute path (`net run /bin/busybox sleep 1`), or --rootfs DIR,
    runs that command on the host's filesystem (or DIR) instead.
    Attached (no -d): prints the container's output and exits with its exit code.
    Exit 125 if the daemon could not run it, 130 after Ctrl-C (the container is stopped).
    """
    image, cmd = split_image(o.args, o.rootfs)
    _check_tty(o.tty, o.interactive and not o.detach)
    body = create_body(
        cmd,
        image=image,
        entrypoint=o.entrypoint,
        workdir=o.workdir,
        user=o.user,
        name=o.name,
        network=o.network,
        ip=o.ip,
        ip6=o.ip6,
        mac=o.mac,
        hostname=o.hostname,
        aliases=o.aliases,
        publish=o.publish,
        env=o.env,
        rootfs=o.rootfs,
        memory=o.memory,
        cpus=o.cpus,
        pids_limit=o.pids_limit,
        auto_remove=o.auto_remove and o.detach,
        confinement=confinement(o) if _confined(o) else None,
    )
    interactive_body(body, o.interactive, o.tty, o.detach, o.restart)
    try:
        cid = cx.client.container_create(body)
    except CNMError as exc:
        if image and exc.message.startswith("No such image"):
            exc.message += " (load it first: net image load -i FILE, or net image import FILE NAME)"
        error_line(exc)
        return DAEMON_ERROR
    stream = None
    try:
        if not o.detach and (o.interactive or o.tty):  # attached before the start: nothing missed
            stream = cx.client.container_attach(cid, stdin=o.interactive)
        cx.client.container_start(cid)
    except CNMError as exc:  # as before create and start were apart: nothing left behind
        error_line(exc)
        if stream is not None:
            stream[0].close()
        try:
            cx.client.container_remove(cid, force=True)
        except CNMError:
            pass
        return DAEMON_ERROR
    if o.detach:
        echo(cid)
        return 0
    if stream is not None:
        from cnm.cli.execflow import run_attached_stream  # (CLI start-up: only an attached run streams)

        return run_attached_stream(cx.client, cid, stream, tty=o.tty, stdin=o.interactive, remove=o.auto_remove)
    return attached(cx.client, cid, remove=o.auto_remove)


def interactive_body(body: dict, interactive: bool, tty: bool, detach: bool, restart: str | None) -> None:
    """-i, -t and --restart in the create body, as Docker's CLI sets them (StdinOnce
    when attached with -i: the container's stdin ends with ours)."""
    if interactive:
        body["OpenStdin"] = True
        body["AttachStdin"] = body["StdinOnce"] = not detach
    if tty:
        body["Tty"] = True
        from cnm.cli.interactive import terminal_size  # (CLI start-up: only with -t)

        size = terminal_size()
        if size is not None:
            body["HostConfig"]["ConsoleSize"] = list(size)
    if restart:
        name, _, count = restart.partition(":")
        if count and not count.isdigit():
            raise InvalidParameter(f"invalid restart policy {restart!r}: use on-failure:N with a number N")
        body["HostConfig"]["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}


def split_image(args: list[str], rootfs: str | None) -> tuple[str, list[str]]:
    """(image, command): Docker's `IMAGE [COMMAND]`; no image when the first argument is
    an absolute path (an image name never starts with '/') or with --rootfs."""
    if not args and not rootfs:
        raise InvalidParameter(
            "net run needs an IMAGE (see net images), or /PATH/TO/CMD to run on the host's filesystem"
        )
    if rootfs or args[0].startswith("/"):
        return "", list(args)
    return args[0], list(args[1:])


_CONFINEMENT_FLAGS = (
    "cap_add",
    "cap_drop",
    "privileged",
    "volumes",
    "mounts",
    "tmpfs",
    "read_only",
    "security_opt",
    "devices",
)


def _confined(o: Opts) -> bool:
    return any(getattr(o, k) for k in _CONFINEMENT_FLAGS)


def confinement(o: Opts) -> dict:
    """HostConfig fields of the confinement flags (imported only when one is given)."""
    from cnm.cli.confineflags import host_config  # (CLI start-up: only when a confinement flag is given)

    return host_config(**{k: getattr(o, k) for k in _CONFINEMENT_FLAGS})


# -- ps / inspect ---------------------------------------------------------------------


@command(
    "ps",
    flag("-a", "--all", dest="all_", help="Show all containers (default: running only)."),
    flag("-q", "--quiet", help="Only display container IDs."),
    option(
        "-f",
        "--filter",
        dest="filters",
        multiple=True,
        value=key_value,
        help="Filter: id=, name=, status=running|exited|created (repeatable).",
    ),
    option(
        "--format",
        dest="fmt",
        choices=("table", "json"),
        default="table",
        help="table, or json (an array of the API's container summaries).",
    ),
    flag("--no-trunc", help="Do not truncate the output."),
)
def ps(cx: Context, o: Opts) -> None:
    """List containers. The table (and -q's IDs) comes rendered by the daemon (cnm.api.
    ps_listing: thousands of rows cost it next to nothing, and the CLI decodes no JSON);
    a daemon that does not render it answers JSON, rendered here with the same cells."""
    wanted: dict[str, list[str]] = {}
    for key, value in o.filters:
        wanted.setdefault(key, []).append(value)
    if o.quiet or o.fmt == "table":
        out = cx.client.containers_text(all=o.all_, filters=wanted or None, no_trunc=o.no_trunc, quiet=o.quiet)
        if isinstance(out, str):
            sys.stdout.write(out)
            return
        containers = out
    else:
        containers = cx.client.containers(all=o.all_, filters=wanted or None)
    from cnm import ps_table, texttable  # (CLI start-up: only when the CLI renders the JSON itself)

    if o.quiet:
        sys.stdout.write(ps_table.quiet_text([c["Id"] for c in containers], o.no_trunc))
    elif o.fmt == "json":
        echo(dumps(containers))
    else:
        echo(texttable.table(ps_table.HEADERS, [ps_table.cells(c, o.no_trunc) for c in containers]))


def _each(refs: Iterable[str], action: Callable[[str], Any], show: bool = True) -> int:
    """Apply `action` to every ref; print each ref done; the first failure's code."""
    code = 0
    for ref in refs:
        try:
            action(ref)
        except CNMError as exc:
            error_line(exc)
            code = code or exc.exit_code
            continue
        if show:
            echo(ref)
    return code


@command("inspect", arg("refs", nargs=-1, metavar="CONTAINER..."))
def inspect(cx: Context, o: Opts) -> int:
    """Display detailed information on containers (a JSON array); a missing one is an
    error (exit non-zero) but the others are still printed."""
    found: list[dict] = []
    errors: list[CNMError] = []
    for ref in o.refs:
        try:
            found.append(cx.client.container_inspect(ref))
        except CNMError as exc:
            errors.append(exc)
    echo(dumps(found))
    for err in errors:
        error_line(err)
    return errors[0].exit_code if errors else 0


# -- lifecycle --------------------------------------------------------------------------


@command(
    "stop",
    option(
        "-t",
        "--time",
        dest="timeout",
        value=float_range(0),
        default=10.0,
        help="Seconds to wait before killing the container.",
    ),
    arg("refs", nargs=-1, metavar="CONTAINER..."),
)
def stop(cx: Context, o: Opts) -> int:
    """Stop running containers (SIGTERM, then SIGKILL after the timeout)."""
    return _each(o.refs, lambda ref: cx.client.container_stop(ref, o.timeout))


@command(
    "kill",
    option("-s", "--signal", dest="sig", default="SIGKILL", help="Signal to send."),
    arg("refs", nargs=-1, metavar="CONTAINER..."),
)
def kill(cx: Context, o: Opts) -> int:
    """Send a signal to the containers' main process."""
    return _each(o.refs, lambda ref: cx.client.container_kill(ref, o.sig))


@command(
    "rm",
    flag("-f", "--force", help="Kill and remove a running container."),
    arg("refs", nargs=-1, metavar="CONTAINER..."),
)
def rm(cx: Context, o: Opts) -> int:
    """Remove containers."""
    return _each(o.refs, lambda ref: cx.client.container_remove(ref, o.force))


@command(
    "logs", flag("-f", "--follow", help="Follow the output until the container exits."), arg("ref", metavar="CONTAINER")
)
def logs(cx: Context, o: Opts) -> int:
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    try:
        stream_logs(cx.client, o.ref, o.follow)
    except KeyboardInterrupt:
        return INTERRUPTED
    return 0


# -- exec, attach (through the daemon: cnm.cli.execflow) ----------------------------------


@command(
    "exec",
    flag("-i", "--interactive", help="Keep stdin attached."),
    flag("-t", "--tty", help="Allocate a pseudo-TTY."),
    flag("-d", "--detach", help="Run the command in the background."),
    option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable (repeatable)."),
    option("-u", "--user", metavar="USER[:GROUP]", help="User name or UID (and group) to run as."),
    option("-w", "--workdir", metavar="DIR", help="Working directory inside the container."),
    flag("--privileged", help="Give the command every capability, without seccomp (as Docker's)."),
    arg("ref", metavar="CONTAINER"),
    arg("cmd", nargs=-1, metavar="[--] CMD [ARG...]"),
    interspersed=False,
)
def exec_(cx: Context, o: Opts) -> int:
    """Run a command in a running container. The daemon starts it, confined as the
    container is (its capabilities, seccomp filter, no_new_privs and cgroups). Exits with
    the command's exit code (126: it could not be run, 127: not found)."""
    from cnm.cli.execflow import exec_body, run_exec  # (CLI start-up: only exec needs it)
    from cnm.cli.runflow import env_list  # (CLI start-up: only exec needs it)

    if not o.cmd:
        raise InvalidParameter("net exec needs a command: net exec CONTAINER -- CMD [ARG...]")
    _check_tty(o.tty, o.interactive)
    body = exec_body(
        o.cmd,
        interactive=o.interactive,
        tty=o.tty,
        env=env_list(o.env),
        user=o.user,
        workdir=o.workdir,
        privileged=o.privileged,
        detach=o.detach,
    )
    return run_exec(cx.client, o.ref, body, o.detach)


@command(
    "attach",
    flag("--no-stdin", dest="no_stdin", help="Do not send our stdin to the container."),
    option(
        "--detach-keys",
        dest="detach_keys",
        default="",
        metavar="KEYS",
        help="Keys that detach (default ctrl-p,ctrl-q).",
    ),
    arg("ref", metavar="CONTAINER"),
)
def attach(cx: Context, o: Opts) -> int:
    """Attach to a running container's output (and its stdin when it was run with -i).
    Exits with the container's exit code, or 0 after a detach (ctrl-p ctrl-q)."""
    from cnm.cli.execflow import run_attach  # (CLI start-up: only attach needs it)

    return run_attach(cx.client, o.ref, o.no_stdin, o.detach_keys)


def _check_tty(tty: bool, interactive: bool) -> None:
    if not (tty and interactive):
        return
    import os  # (not at the top: only -it needs it)

    if not os.isatty(0):
        raise InvalidParameter("the input device is not a TTY")


__all__ = ["attach", "exec_", "inspect", "kill", "logs", "ps", "rm", "run", "stop"]
