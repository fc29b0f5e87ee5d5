"""Container routes of Docker's Engine API (and network connect/disconnect), on top of
`cnm.containers.ContainerService`.

    app = make_app(controller, extra_routes=containers.routes(service))

The life cycle is Docker's: create (a record; nothing runs, no network is taken),
start (304 if it runs), stop (304 if it does not), restart, rename, kill, remove.
"""

from __future__ import annotations

import asyncio
import os
import signal as signals
from typing import Any, Protocol

from aiohttp import web

from cnm.api import container_filters as cf
from cnm.api import container_listing as listing
from cnm.api import ps_listing
from cnm.api import wait as wait_api
from cnm.api.common import (
    Route,
    blocking,
    json_body,
    json_bytes_response,
    json_response,
    parse_body,
    waiting,
)
from cnm.api.execs import size_query
from cnm.api.filters import parse_filters
from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.model import Endpoint
from cnm.render_container import container_json
from cnm.restart_policy import RestartPolicy
from cnm.strictnum import is_ascii_digits, parse_int

LOG_POLL = 0.02  # seconds between looks at a followed log / an exit without pidfd
READ_CHUNK = 64 * 1024


class ContainerRuntime(Protocol):
    """The part of `cnm.runtime.Runtime` these routes use."""

    def state(self, cid: str) -> Any:
        """ContainerState(id, status, pid, shim_pid, exit_code, started_at, finished_at);
        NotFound once the container is removed."""

    def kill(self, cid: str, sig: int) -> None:
        """Signal the container's PID 1; Conflict if it is not running."""

    def logs(self, cid: str, **kw: Any) -> Any:
        """The container's log lines (cnm.runtime.logs.LogLine); see cnm/api/logs.py."""

    def exit_fd(self, cid: str) -> int | None:
        """A pidfd readable once the container's supervisor exits; None if it is not
        running. The caller closes it."""

    def resize(self, cid: str, rows: int, cols: int) -> None:
        """Resize the container's TTY; Conflict if it is not running."""

    # Optional: exit_fd(cid) -> int | None, a pidfd readable once the container has
    # exited (None if it is not running). Without it, `wait` polls the state.


class ContainerServiceLike(Protocol):
    """The part of `cnm.containers.ContainerService` these routes use. Synchronous and
    thread-safe: routes call it from a thread pool."""

    ctl: Any  # get_network(ref) -> Network

    @property
    def runtime(self) -> ContainerRuntime: ...

    # Optional: exit codes of containers removed after they exited (auto-remove), kept
    # by the service when it removes them, so that a wait racing with the removal still
    # answers. Read with getattr: a service without it makes such a wait a 404.
    exit_codes: dict[str, int]

    def get(self, ref: str) -> Any:
        """The Container record by name, id or unique id prefix; NotFound."""

    def state_of(self, cid: str) -> Any:
        """The container's process state as last known (ContainerState), None when the
        runtime has none. Reads no file once known."""

    def list_containers(self) -> list[Any]:
        """Every container record, newest first."""

    def endpoints(self, ct: Any) -> list[Endpoint]:
        """The container's endpoints in attach order."""

    def create(self, req: ContainerCreate) -> Any:
        """The container's record; nothing runs yet."""

    def start(self, ref: str) -> bool:
        """Start a created or exited container; False if it runs already."""

    def stop(self, ref: str, timeout: float | None = 10) -> bool:
        """SIGTERM, SIGKILL after `timeout` (None: never); releases its network. False if it
        was not running."""

    def restart(self, ref: str, timeout: float | None = 10) -> Any:
        """stop (if it runs), then start."""

    def rename(self, ref: str, name: str) -> Any:
        """A new name (DNS follows)."""

    def update_restart_policy(self, ref: str, policy: RestartPolicy) -> Any:
        """`docker update --restart`."""

    def kill(self, ref: str, sig: int) -> Any:
        """Signal the container's PID 1; Conflict if it is not running."""

    def remove(self, ref: str, force: bool = False) -> Any:
        """Remove the container; Conflict while it runs unless `force`."""

    def connect(self, net_ref: str, ct_ref: str, epreq: EndpointRequest) -> Endpoint | None:
        """Attach a running container to one more network."""

    def disconnect(self, net_ref: str, ct_ref: str, force: bool = False) -> None:
        """Detach the container from a network."""


# -- query helpers ---------------------------------------------------------------------


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


MAX_STOP_TIMEOUT = 2**31 - 1


def stop_timeout(request: web.Request) -> float | None:
    """`t`, seconds before SIGKILL: an integer as Docker's (strconv.Atoi: ASCII digits,
    no "nan", "inf" or "1e400"); negative waits for ever (Docker's rule), None here."""
    value = request.query.get("t")
    if value is None or value == "":
        return 10
    try:
        n = parse_int(value, lo=-MAX_STOP_TIMEOUT, hi=MAX_STOP_TIMEOUT)
    except ValueError as exc:
        raise InvalidParameter(f"invalid value for t: {exc} (seconds to wait before killing)") from None
    return None if n < 0 else n


def parse_signal(text: str | None) -> int:
    """SIGKILL, KILL or 9 (Docker accepts all three); SIGKILL when empty."""
    if not text:
        return int(signals.SIGKILL)
    if text.isdigit():
        if not is_ascii_digits(text) or len(text) > 3:
            raise InvalidParameter(f"invalid signal: {text}")
        num = int(text)
        if num not in {int(s) for s in signals.Signals}:
            raise InvalidParameter(f"invalid signal: {text}")
        return num
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signals.Signals[name])
    except KeyError:
        raise InvalidParameter(f"invalid signal: {text}") from None


def update_policy(body: dict) -> RestartPolicy | None:
    """`POST /containers/{id}/update`'s body: its RestartPolicy (None when the name is
    empty: Docker leaves the policy as it is). Resource changes are refused: this daemon
    does not change a container's cgroup limits after its start."""
    changed = sorted(k for k, v in body.items() if k != "RestartPolicy" and v not in (None, 0, "", [], {}, False))
    if changed:
        raise InvalidParameter(
            f"updating {', '.join(changed)} is not supported by this daemon: only the restart "
            "policy (docker update --restart) can be changed"
        )
    raw = body.get("RestartPolicy")
    if isinstance(raw, dict) and not raw.get("Name"):
        return None
    return RestartPolicy.from_docker_json(raw) if raw is not None else None


def _resize(service: ContainerServiceLike, cid: str, height: int, width: int) -> None:
    """The container's TTY resized (nothing without a TTY); Conflict if not running."""
    try:
        service.runtime.resize(cid, height, width)
    except NotFound:  # created, never started: the runtime has no directory yet
        raise Conflict(f"container {cid[:12]} is not running") from None


# -- synchronous pieces, run in the executor -----------------------------------------


def _inspect(service: ContainerServiceLike, ref: str) -> dict:
    ct = service.get(ref)
    return container_json(ct, *listing.view(service, ct))


# -- waiting for an exit ---------------------------------------------------------------


def _exit_fd(service: ContainerServiceLike, cid: str) -> int | None:
    try:
        return service.runtime.exit_fd(cid)
    except NotFound:
        return None  # removed meanwhile: the next state read tells


async def _readable(fd: int) -> None:
    """Until `fd` (a pidfd) is readable; closes it."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def wait_exit(request: web.Request, service: ContainerServiceLike, cid: str) -> int:
    """The container's exit code, once it has exited. Uses the runtime's exit pidfd
    (`exit_fd`) when it has one, else polls. An auto-remove container may be gone by
    the time the state is read: then the service's `exit_codes` answers."""
    has_exit_fd = getattr(service.runtime, "exit_fd", None) is not None
    while True:
        state = await blocking(request, listing.state_or_none, service, cid)
        if state is None:
            code = getattr(service, "exit_codes", {}).get(cid)
            if code is not None:
                return code
            raise NotFound(f"container {cid[:12]} was removed before its exit status could be read")
        if state.status == "exited":
            return state.exit_code if state.exit_code is not None else -1
        fd = await blocking(request, _exit_fd, service, cid) if has_exit_fd else None
        if fd is None:
            await asyncio.sleep(LOG_POLL)
        else:
            await _readable(fd)


# -- routes -------------------------------------------------------------------------------


def routes(service: ContainerServiceLike) -> list[Route]:
    """The container routes; pass them to `make_app(..., extra_routes=...)`."""

    async def create(request: web.Request) -> web.Response:
        name = request.query.get("name")

        def parse(body: dict) -> ContainerCreate:
            if name:
                body["Name"] = name
            return ContainerCreate.from_docker_json(body)

        req = await parse_body(request, parse)
        ct = await blocking(request, service.create, req)
        return json_response({"Id": ct.id, "Warnings": []}, status=201)

    ps = ps_listing.PsListing(service)

    async def list_(request: web.Request) -> web.Response:
        query = cf.ListQuery.parse(parse_filters(request.query.get("filters"), cf.LIST_FILTERS), _flag(request, "all"))
        if ps_listing.wants_table(request.query):  # our CLI's `net ps`; never Docker's clients
            no_trunc, quiet = _flag(request, "no-trunc"), _flag(request, "quiet")
            text = await blocking(request, ps.text, query, no_trunc, quiet)
            return web.Response(text=text, content_type="text/plain", charset="utf-8")
        return json_bytes_response(await blocking(request, listing.summaries_json, service, query))

    async def prune(request: web.Request) -> web.Response:
        chosen = cf.prune_selector(parse_filters(request.query.get("filters"), cf.PRUNE_FILTERS))
        removed = await blocking(request, listing.prune, service, chosen)
        return json_response({"ContainersDeleted": removed, "SpaceReclaimed": 0})

    async def inspect(request: web.Request) -> web.Response:
        return json_response(await blocking(request, _inspect, service, request.match_info["ref"]))

    async def start(request: web.Request) -> web.Response:
        started = await blocking(request, service.start, request.match_info["ref"])
        return web.Response(status=204 if started else 304)

    async def stop(request: web.Request) -> web.Response:
        timeout = stop_timeout(request)
        stopped = await waiting(request, service.stop, request.match_info["ref"], timeout)
        return web.Response(status=204 if stopped else 304)

    async def restart(request: web.Request) -> web.Response:
        await waiting(request, service.restart, request.match_info["ref"], stop_timeout(request))
        return web.Response(status=204)

    async def resize(request: web.Request) -> web.Response:
        height, width = size_query(request)
        ct = await blocking(request, service.get, request.match_info["ref"])
        await blocking(request, _resize, service, ct.id, height, width)
        return web.Response(status=200)

    async def update(request: web.Request) -> web.Response:
        policy = update_policy(await json_body(request))
        if policy is not None:
            await blocking(request, service.update_restart_policy, request.match_info["ref"], policy)
        else:
            await blocking(request, service.get, request.match_info["ref"])  # 404 for a wrong name
        return json_response({"Warnings": []})

    async def rename(request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            raise InvalidParameter("rename needs a new name: ?name=NEW")
        await blocking(request, service.rename, request.match_info["ref"], name)
        return web.Response(status=204)

    async def kill(request: web.Request) -> web.Response:
        sig = parse_signal(request.query.get("signal"))
        await blocking(request, service.kill, request.match_info["ref"], sig)
        return web.Response(status=204)

    async def remove(request: web.Request) -> web.Response:
        force = _flag(request, "force")
        # -f kills and waits for the exit (seconds, if the process is stuck in the kernel)
        await (waiting if force else blocking)(request, service.remove, request.match_info["ref"], force)
        return web.Response(status=204)

    async def wait(request: web.Request) -> web.StreamResponse:
        condition = wait_api.parse_condition(request.query.get("condition"), wait_api.api_version(request))
        ct = await blocking(request, service.get, request.match_info["ref"])  # 404 before any header
        bus = getattr(service, "events", None)
        if bus is None:  # a service without an event bus (unit-test doubles): poll for the exit
            code = await wait_exit(request, service, ct.id)
            return json_response({"StatusCode": code, "Error": None})

        async def current() -> tuple[bool, bool, int]:
            state = await blocking(request, listing.state_or_none, service, ct.id)
            if state is None:
                return False, False, getattr(service, "exit_codes", {}).get(ct.id, -1)
            return True, state.status == "running", state.exit_code or 0

        return await wait_api.answer(request, bus, ct.id, condition, current)

    async def connect(request: web.Request) -> web.Response:
        body = await json_body(request)
        ref = body.get("Container")
        if not isinstance(ref, str) or not ref:
            raise InvalidParameter("field Container is required: the container name or ID to connect")
        epreq = EndpointRequest.from_docker_json(body.get("EndpointConfig") or {})
        await blocking(request, service.connect, request.match_info["ref"], ref, epreq)
        return web.Response(status=200)

    async def disconnect(request: web.Request) -> web.Response:
        body = await json_body(request)
        ref = body.get("Container")
        if not isinstance(ref, str) or not ref:
            raise InvalidParameter("field Container is required: the container name or ID to disconnect")
        force = body.get("Force", False)
        if not isinstance(force, bool):
            raise InvalidParameter("field Force must be a boolean")
        await blocking(request, service.disconnect, request.match_info["ref"], ref, force)
        return web.Response(status=200)

    return [
        Route("POST", "/containers/create", create),
        Route("GET", "/containers/json", list_),
        Route("POST", "/containers/prune", prune),
        Route("GET", "/containers/{ref}/json", inspect),
        Route("POST", "/containers/{ref}/start", start),
        Route("POST", "/containers/{ref}/stop", stop),
        Route("POST", "/containers/{ref}/restart", restart),
        Route("POST", "/containers/{ref}/rename", rename),
        Route("POST", "/containers/{ref}/update", update),
        Route("POST", "/containers/{ref}/resize", resize),
        Route("POST", "/containers/{ref}/kill", kill),
        Route("POST", "/containers/{ref}/wait", wait),
        Route("DELETE", "/containers/{ref}", remove),
        Route("POST", "/networks/{ref}/connect", connect),
        Route("POST", "/networks/{ref}/disconnect", disconnect),
    ]
