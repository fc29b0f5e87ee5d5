"""Helpers shared by the route modules: blocking calls, JSON in and out, route defs."""
from __future__ import annotations

import asyncio
import functools
import json
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from cnm.errors import InvalidParameter

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXECUTOR = web.AppKey("cnm_executor", Executor)


@dataclass(frozen=True)
class Route:
    """One API route. `path` has no version prefix; the server adds `/v1.NN` itself."""

    method: str
    path: str
    handler: Handler


async def blocking(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous controller call in the API's thread pool: controller calls may
    block on netlink or the store, and must not stall the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[EXECUTOR], functools.partial(fn, *args, **kwargs))


async def json_body(request: web.Request) -> dict:
    """The request's JSON object; an empty body reads as {}."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidParameter(f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON body: expected an object")
    return body


def json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: Docker's client unpacks an error's
    # message only for that media type (else it prints the raw body), as dockerd sends.
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)
