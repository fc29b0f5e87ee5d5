"""Helpers shared by the route modules: blocking calls, JSON in and out, route defs."""
from __future__ import annotations

import asyncio
import functools
import json
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from cnm.api.listener import LIMITS, Limits
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


# Bodies up to this size are parsed on the event loop (microseconds); larger ones in
# the thread pool, so that no request can stall the loop (and /_ping) for long.
PARSE_INLINE = 16 * 1024


async def _read(request: web.Request) -> bytes:
    """The whole body, within the app's body timeout (408) and size cap (413, aiohttp's
    client_max_size)."""
    limits = request.app.get(LIMITS) or Limits()
    try:
        return await asyncio.wait_for(request.read(), limits.body_timeout)
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None


async def json_body(request: web.Request) -> dict:
    """The request's JSON object; an empty body reads as {}."""
    raw = await _read(request)
    if len(raw) <= PARSE_INLINE:
        return parse_json_object(raw)
    return await blocking(request, parse_json_object, raw)


async def parse_body(request: web.Request, parse: Callable[[dict], T]) -> T:
    """The request's JSON object through `parse` (a request class's from_docker_json):
    on the event loop for a small body, in the thread pool for a large one."""
    raw = await _read(request)
    if len(raw) <= PARSE_INLINE:
        return parse(parse_json_object(raw))
    return await blocking(request, lambda: parse(parse_json_object(raw)))


def _not_json(name: str) -> Any:
    # Python's decoder takes NaN and Infinity; JSON (and Docker's decoder) does not.
    raise ValueError(f"{name} is not a JSON value")


def parse_json_object(raw: bytes) -> dict:
    """A JSON object from bytes (empty: {}); InvalidParameter (one line) otherwise."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidParameter(f"invalid JSON body: {exc}") from exc
    except RecursionError:
        raise InvalidParameter("invalid JSON body: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON body: expected an object")
    return body


def json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: Docker's client unpacks an error's
    # message only for that media type (else it prints the raw body), as dockerd sends.
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def one_line(message: str) -> str:
    """A message on one line whatever the user's input in it: control characters (a
    name ending in a newline, say) shown as escapes."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": one_line(message)}, status=status)
