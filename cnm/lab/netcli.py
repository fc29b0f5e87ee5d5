"""The `net` CLI command lines a lab runs against its daemons (pure, but for finding a
command on PATH)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from cnm.errors import InvalidParameter

NET = str(Path(sys.executable).parent / "net")


def net_argv(socket: str, *args: str) -> list[str]:
    """The `net` CLI against one host's daemon."""
    return [NET, "-H", f"unix://{socket}", *args]


def network_create_argv(
    socket: str, name: str, driver: str, subnet: str | None, internal: bool, options: Sequence[tuple[str, str]]
) -> list[str]:
    argv = net_argv(socket, "network", "create", "-d", driver)
    if subnet:
        argv += ["--subnet", subnet]
    if internal:
        argv.append("--internal")
    for k, v in options:
        argv += ["-o", f"{k}={v}"]
    return argv + [name]


def container_run_argv(
    socket: str,
    name: str,
    network: str,
    ip: str | None,
    ports: Sequence[str],
    command: Sequence[str],
    cap_add: Sequence[str] = (),
    privileged: bool = False,
    image: str = "",
) -> list[str]:
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
    path = shutil.which(word)
    if path is None:
        raise InvalidParameter(
            f"command {word!r} is not on this machine's PATH: give its absolute path, or an image: for the container"
        )
    return path
