"""The `net` entry point, with a fast path for the commands people run most.

`net run`, `net connect` and `net disconnect` with their common flags are parsed here
by hand and sent with the standard-library client: no click, no import of the command
tree — about 50 ms less per call, which is most of a `net run -d`. Anything this
parser does not fully understand (another flag, a bad value, --help, -p, …) falls
through to the click CLI, which stays the reference for behaviour and messages. The
request bodies and the attached-run flow are the ones the click commands use
(cnm.cli.runflow), so both paths send the same thing."""
from __future__ import annotations

import os
import sys

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"

_RUN_FLAGS = {"-d": "detach", "--detach": "detach", "--rm": "rm"}
_RUN_VALUES = {"--name": "name", "--net": "network", "--network": "network", "--ip": "ip", "--ip6": "ip6",
               "--hostname": "hostname", "--mac-address": "mac", "--network-alias": "aliases",
               "-e": "env", "--env": "env"}
_CONNECT_VALUES = {"--ip": "ip", "--ip6": "ip6", "--alias": "aliases", "--mac-address": "mac"}
_MULTI = {"aliases", "env"}


def _options(args: list[str], flags: dict[str, str], values: dict[str, str]) -> tuple[dict, list[str]] | None:
    """Options up to the first positional (or `--`); None if any is not ours."""
    got: dict = {"aliases": [], "env": []}
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return got, args[i + 1:]
        if not tok.startswith("-") or tok == "-":
            return got, args[i:]
        name, eq, val = tok.partition("=")
        if name in flags and not eq:
            got[flags[name]] = True
            i += 1
        elif name in values and (eq or (name.startswith("--") and i + 1 < len(args)) or
                                 (not name.startswith("--") and i + 1 < len(args))):
            if not eq:
                val = args[i + 1]
                i += 1
            i += 1
            key = values[name]
            if key in _MULTI:
                got[key].append(val)
            else:
                got[key] = val
        else:
            return None
    return got, []


def _valid_ips(opts: dict) -> bool:
    if not (opts.get("ip") or opts.get("ip6")):
        return True
    import ipaddress
    try:
        for key in ("ip", "ip6"):
            if opts.get(key):
                ipaddress.ip_address(opts[key])
    except ValueError:
        return False
    return True


def _client(host: str):
    from cnm.api.client import APIClient
    return APIClient(host)


def _run(host: str, args: list[str]) -> int | None:
    parsed = _options(args, _RUN_FLAGS, _RUN_VALUES)
    if parsed is None or not parsed[1] or not _valid_ips(parsed[0]):
        return None
    opts, cmd = parsed
    from cnm.cli.runflow import DAEMON_ERROR, attached, create_body, error_line
    from cnm.errors import CNMError
    detach = bool(opts.get("detach"))
    body = create_body(cmd, name=opts.get("name"), network=opts.get("network"), ip=opts.get("ip"),
                       ip6=opts.get("ip6"), mac=opts.get("mac"), hostname=opts.get("hostname"),
                       aliases=opts["aliases"], env=opts["env"], auto_remove=bool(opts.get("rm")) and detach)
    client = _client(host)
    try:
        cid = client.container_create(body)
    except CNMError as exc:
        error_line(exc)
        return DAEMON_ERROR
    if detach:
        sys.stdout.write(cid + "\n")
        return 0
    return attached(client, cid, remove=bool(opts.get("rm")))


def _connect(host: str, args: list[str], disconnect: bool) -> int | None:
    parsed = _options(args, {"-f": "force", "--force": "force"} if disconnect else {},
                      {} if disconnect else _CONNECT_VALUES)
    if parsed is None or len(parsed[1]) != 2 or not _valid_ips(parsed[0]):
        return None
    (opts, (network, ref)) = parsed
    from cnm.cli.runflow import endpoint_config, error_line
    from cnm.errors import CNMError
    try:
        if disconnect:
            _client(host).network_disconnect(network, ref, bool(opts.get("force")))
        else:
            _client(host).network_connect(network, ref, endpoint_config(
                opts.get("ip"), opts.get("ip6"), opts["aliases"], opts.get("mac")))
    except CNMError as exc:
        error_line(exc)
        return exc.exit_code
    return 0


def fast(argv: list[str]) -> int | None:
    """The exit code, or None to hand over to the full CLI."""
    host = os.environ.get("NET_HOST") or DEFAULT_HOST
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        tok = argv[i]
        if tok in ("-H", "--host") and i + 1 < len(argv):
            host, i = argv[i + 1], i + 2
        elif tok.startswith("--host="):
            host, i = tok.split("=", 1)[1], i + 1
        else:
            return None
    if i >= len(argv) or not host.startswith("unix:///"):
        return None
    cmd, rest = argv[i], argv[i + 1:]
    if cmd == "run":
        return _run(host, rest)
    if cmd in ("connect", "disconnect"):
        return _connect(host, rest, cmd == "disconnect")
    return None


def main() -> None:
    code = fast(sys.argv[1:])
    if code is None:
        from cnm.cli.main import main as full
        full()
    else:
        sys.stdout.flush()
        sys.exit(code)
