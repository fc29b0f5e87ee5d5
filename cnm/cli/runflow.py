"""`net run`'s flow: the request body from its flags, streaming the output, waiting and
removing."""

from __future__ import annotations

import sys

from cnm.cli.output import error_line
from cnm.errors import CNMError

TYPE_CHECKING = False  # typing stays out of the CLI's start (~4 ms); type checkers see True
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

DAEMON_ERROR = 125  # docker run: the daemon could not run the container
INTERRUPTED = 130


def port_bindings(specs: Iterable[str]) -> dict[str, list[dict]]:
    """`-p` values as Docker's HostConfig.PortBindings. Raises InvalidParameter."""
    from cnm.portspec import parse  # (CLI start-up: only with -p)

    out: dict[str, list[dict]] = {}
    for spec in specs:
        for proto, container_port, host_ip, host_port, host_port_end in parse(spec):
            port = "" if host_port is None else str(host_port)
            if host_port_end is not None:
                port += f"-{host_port_end}"
            out.setdefault(f"{container_port}/{proto}", []).append({"HostIp": host_ip or "", "HostPort": port})
    return out


def env_list(items: Iterable[str]) -> list[str]:
    """-e K=V as given; a bare -e K takes K from this environment (skipped if unset),
    like Docker's."""
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
            continue
        import os  # (not at the top: os costs every CLI call ~1.5 ms; only a bare -e K needs it)

        if item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def endpoint_config(ip: str | None, ip6: str | None, aliases: Iterable[str], mac: str | None) -> dict:
    """Docker's EndpointConfig for --ip/--ip6/--alias/--mac-address (run and connect)."""
    config: dict[str, Any] = {}
    if ip or ip6:
        config["IPAMConfig"] = {k: v for k, v in (("IPv4Address", ip), ("IPv6Address", ip6)) if v}
    aliases = list(aliases)
    if aliases:
        config["Aliases"] = aliases
    if mac:
        config["MacAddress"] = mac
    return config


def create_body(
    cmd: list[str],
    *,
    image: str = "",
    entrypoint: str | None = None,
    workdir: str | None = None,
    user: str | None = None,
    name: str | None = None,
    network: str | None = None,
    ip: str | None = None,
    ip6: str | None = None,
    mac: str | None = None,
    hostname: str | None = None,
    aliases: Iterable[str] = (),
    publish: Iterable[str] = (),
    env: Iterable[str] = (),
    rootfs: str | None = None,
    memory: int | None = None,
    cpus: float | None = None,
    pids_limit: int | None = None,
    auto_remove: bool = False,
    confinement: dict | None = None,
) -> dict:
    """The `POST /containers/create` body for `net run`'s flags (`confinement`: HostConfig
    fields from cnm.cli.confineflags)."""
    host: dict[str, Any] = {"NetworkMode": network or "default", "AutoRemove": auto_remove, **(confinement or {})}
    bindings = port_bindings(publish)
    if bindings:
        host["PortBindings"] = bindings
    if memory:
        host["Memory"] = memory
    if cpus:
        host["NanoCpus"] = int(round(cpus * 1e9))
    if pids_limit:
        host["PidsLimit"] = pids_limit
    # With an image and no command, Cmd is null: the image's CMD runs (Docker's rule).
    body: dict[str, Any] = {
        "Image": image,
        "Cmd": list(cmd) if cmd or not image else None,
        "Env": env_list(env),
        "HostConfig": host,
    }
    if entrypoint is not None:
        body["Entrypoint"] = [entrypoint]
    if workdir:
        body["WorkingDir"] = workdir
    if user:
        body["User"] = user
    if name:
        body["Name"] = name
    if hostname:
        body["Hostname"] = hostname
    if rootfs:
        import os.path  # (CLI start-up: os costs ~1.5 ms; only --rootfs needs it)

        body["Rootfs"] = os.path.abspath(rootfs)
    endpoint = endpoint_config(ip, ip6, aliases, mac)
    if endpoint:
        body["NetworkingConfig"] = {"EndpointsConfig": {network or "bridge": endpoint}}
    return body


def _write(stream: int, data: bytes) -> None:
    """Raw bytes to our stdout or stderr, flushed at once (unbuffered, like Docker)."""
    target = sys.stderr if stream == 2 else sys.stdout
    raw = getattr(target, "buffer", None)
    if raw is None:
        target.write(data.decode(errors="replace"))
        target.flush()
        return
    target.flush()
    raw.write(data)
    raw.flush()


def stream_logs(client: Any, ref: str, follow: bool) -> None:
    for stream, data in client.container_logs(ref, follow=follow):
        _write(stream, data)


def attached(client: Any, cid: str, remove: bool) -> int:
    """Stream the output until the container exits; its exit code. Ctrl-C stops it."""
    try:
        try:
            stream_logs(client, cid, follow=True)
            code = client.container_wait(cid)
        except KeyboardInterrupt:
            client.container_stop(cid, 10)
            code = INTERRUPTED
    except CNMError as exc:
        error_line(exc)
        code = DAEMON_ERROR
    if remove:
        try:
            client.container_remove(cid, force=True)
        except CNMError as exc:
            error_line(exc)
    return code
