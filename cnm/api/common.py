"""Helpers shared by the route modules: blocking calls, JSON in and out, route defs."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

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


WAITS = web.AppKey("cnm_waits", asyncio.Semaphore)
MAX_WAITING = 256  # calls that wait on containers at once; more queue, holding no thread


async def waiting(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Like blocking(), for a call that waits on a container's exit (stop and restart: up
    to their timeout, or for ever with t=-1). Each runs on a thread of its own, never on
    one of the API's few workers: slow stops must not freeze the API for everyone else.
    Daemon threads, so that a daemon's exit does not wait for them (a pool's threads are
    joined at exit); at most MAX_WAITING at once (the app's semaphore), the rest queue on
    the event loop."""
    gate = request.app.get(WAITS)
    if gate is None:
        return await blocking(request, fn, *args, **kwargs)
    await gate.acquire()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        gate.release()  # when the thread is done, not when the request is
        if done.cancelled():
            return
        if exc is None:
            done.set_result(value)
        else:
            done.set_exception(exc)

    def run() -> None:
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting request
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    try:
        threading.Thread(target=run, name="cnm-api-wait", daemon=True).start()
    except BaseException:
        gate.release()
        raise
    # A client that goes away does not stop the stop (Docker's neither): the thread
    # finishes, its result is dropped and only then is its place given back.
    return await asyncio.shield(done)


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


def encode_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(data: Any, status: int = 200) -> web.Response:
    return json_bytes_response(encode_json(data), status)


def json_bytes_response(body: bytes, status: int = 200) -> web.Response:
    """A body encode_json made (in an executor, for a big one)."""
    # Exactly "application/json", no charset: Docker's client unpacks an error's
    # message only for that media type (else it prints the raw body), as dockerd sends.
    return web.Response(body=body, status=status, content_type="application/json")


def one_line(message: str) -> str:
    """A message on one line whatever the user's input in it: control characters (a
    name ending in a newline, say) shown as escapes."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": one_line(message)}, status=status)
