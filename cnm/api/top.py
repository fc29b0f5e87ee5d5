"""`GET /containers/{id}/top?ps_args=…` (`docker top`): the host's `ps` with the given
arguments (default `-ef`), the rows of the container's processes only — those in its
PID namespace, its init, what it started and what `docker exec` runs in it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable

from aiohttp import web

from cnm.api.common import Route, blocking, json_response
from cnm.errors import Conflict, InternalError, InvalidParameter

PS_TIMEOUT = 10.0


def parse_ps(output: str, pids: Iterable[int]) -> dict:
    """Docker's parsing of ps output: the header's words are the titles; each row is
    split into as many fields, the last one keeping its spaces (the command); only rows
    whose PID is in `pids` are kept."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise InternalError("ps printed nothing")
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidParameter("couldn't find PID field in ps output: keep the PID column in ps_args")
    at = titles.index("PID")
    wanted = set(pids)
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        try:
            pid = int(fields[at])
        except (IndexError, ValueError):
            raise InternalError(f"unexpected pid in ps output: {line!r}") from None
        if pid in wanted:
            rows.append(fields)
    return {"Titles": titles, "Processes": rows}


def namespace_members(init_pid: int, proc: str = "/proc") -> list[int]:
    """Host pids of every process in the PID namespace of `init_pid`."""
    try:
        want = os.readlink(f"{proc}/{init_pid}/ns/pid")
    except OSError:
        return []
    out = []
    for name in os.listdir(proc):
        if name.isdigit():
            try:
                if os.readlink(f"{proc}/{name}/ns/pid") == want:
                    out.append(int(name))
            except OSError:
                continue  # gone meanwhile
    return out


def top(init_pid: int | None, name: str, ps_args: str) -> dict:
    if init_pid is None:
        raise Conflict(f"container {name} is not running")
    argv = ["ps", *[a for a in ps_args.split(" ") if a]] if ps_args else ["ps", "-ef"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=PS_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InternalError(f"error running ps: {exc}") from exc
    if r.returncode != 0:
        raise InvalidParameter(f"ps {ps_args}: {r.stderr.strip() or 'failed'}")
    return parse_ps(r.stdout, namespace_members(init_pid))


def routes(target: Callable[[str], tuple[int | None, str]]) -> list[Route]:
    """`target(ref)` -> (the container's init pid or None if not running, its name)."""

    async def handler(request: web.Request) -> web.Response:
        def run() -> dict:
            pid, name = target(request.match_info["ref"])
            return top(pid, name, request.query.get("ps_args", ""))

        return json_response(await blocking(request, run))

    return [Route("GET", "/containers/{ref}/top", handler)]
