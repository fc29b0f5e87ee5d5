"""The daemon's HTTP server: an aiohttp app on a unix socket, Docker Engine API shaped.

Routes come from resource modules (`cnm.api.system`, `cnm.api.networks`, …), each with
a `routes(controller) -> list[Route]`. To add a resource (containers, …): write
`cnm/api/containers.py` with such a function and add the module to `ROUTE_MODULES`
(or pass extra `Route`s to `make_app(..., extra_routes=...)`). Every route is served
both as `/path` and as `/v1.NN/path`, like Docker's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from cnm.api import networks, system
from cnm.api.common import EXECUTOR, MAX_WAITING, WAITS, Route, error_response
from cnm.api.listener import LIMITS, GuardedUnixSite, Limits, guard_of, http_logger
from cnm.api.version import VERSION_KEY, add_headers, server_headers, version_middleware
from cnm.errors import CNMError, Conflict, http_status
from cnm.statedirs import chmod_socket

log = logging.getLogger("cnm.api")

ROUTE_MODULES = (system, networks)
VERSION_PREFIX = "/{" + VERSION_KEY + r":v[0-9][0-9.]*}"  # Docker's /v{version:[0-9.]+}
SOCKET_MODE = 0o660
DEFAULT_LIMITS = Limits()


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure becomes `{"message": ...}` with the status of its category. Also
    tells the connection's guard that the request's headers are in (its header timer
    stops) and, at the end, that the connection is idle again."""
    guard = guard_of(request)
    if guard is not None:
        guard.request_started()
    try:
        return await _answer(request, handler)
    finally:
        if guard is not None:
            guard.request_done()


async def _answer(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except CNMError as exc:
        log.info("%s %s -> %d: %s", request.method, request.path, http_status(exc), exc.message)
        return error_response(http_status(exc), exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        limits = request.app[LIMITS]
        message = {
            404: "page not found",
            405: "method not allowed",
            408: f"request body not received within {limits.body_timeout:g}s",
            413: f"request body too large: at most {limits.max_body} bytes",
        }.get(exc.status, exc.reason)
        response = error_response(exc.status, message)
        if exc.status in (408, 413):
            response.force_close()  # the rest of the body is not worth waiting for
        return response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def make_app(
    controller: Any, *, extra_routes: Iterable[Route] = (), workers: int = 4, limits: Limits = DEFAULT_LIMITS
) -> web.Application:
    """The API app. Controller calls run in a pool of `workers` threads, shut down with
    the app. `limits` bound what one client may hold (see cnm.api.listener)."""
    app = web.Application(middlewares=[error_middleware, version_middleware], client_max_size=limits.max_body)
    app[LIMITS] = limits
    app.on_response_prepare.append(add_headers(server_headers()))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnm-api")
    app[EXECUTOR] = executor
    app[WAITS] = asyncio.Semaphore(MAX_WAITING)  # stop/restart wait on threads of their own
    all_routes = [r for mod in ROUTE_MODULES for r in mod.routes(controller)] + list(extra_routes)
    for route in all_routes:
        app.router.add_route(route.method, route.path, route.handler)
        app.router.add_route(route.method, VERSION_PREFIX + route.path, route.handler)

    async def stop_executor(_app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_executor)
    return app


def _someone_listens(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def prepare_socket_path(path: Path) -> None:
    """Remove a stale socket file left by a daemon that died; refuse if one answers."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(st.st_mode):  # a symlink included: never followed
        raise Conflict(f"{path} exists and is not a socket: remove it or choose another --socket")
    if _someone_listens(path):
        raise Conflict(f"another daemon is listening on {path}: stop it or choose another --socket")
    path.unlink()


class Server:
    """A started API server; `await close()` stops it and removes the socket file."""

    def __init__(self, runner: web.AppRunner, path: Path) -> None:
        self.runner = runner
        self.path = path

    async def close(self) -> None:
        try:
            await self.runner.cleanup()
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _listening_socket(path: Path, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        chmod_socket(str(path), SOCKET_MODE)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_server(app: web.Application, socket_path: str | os.PathLike) -> Server:
    """Listen on `socket_path` (mode 0660) and return at once."""
    path = Path(socket_path)
    limits = app.get(LIMITS) or Limits()
    prepare_socket_path(path)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("cnm.api.access"),
        access_log_format="%r %s %b %Tfs",
        handle_signals=False,
        keepalive_timeout=limits.keepalive_timeout,
        lingering_time=1.0,
        logger=http_logger(limits),
    )
    await runner.setup()
    try:
        site = GuardedUnixSite(runner, _listening_socket(path, limits.backlog), limits)
        await site.start()
    except BaseException:
        await runner.cleanup()
        path.unlink(missing_ok=True)
        raise
    log.info("API listening on unix://%s", path)
    return Server(runner, path)


async def serve(app: web.Application, socket_path: str | os.PathLike) -> None:
    """Serve until cancelled (e.g. the daemon's SIGTERM handler cancels this task); the
    socket file is removed on the way out."""
    server = await start_server(app, socket_path)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
