"""`POST /containers/{id}/wait` as Docker's daemon answers it.

Conditions: `not-running` (the default: at once if the container is not running, else
at its exit), `next-exit` (its next exit, even if it is not running now), `removed`
(its removal; the status is its last exit code). From API 1.30 on, the status line and
headers go out at once, before the wait: Docker's CLI waits for them before it starts
the container (`docker run`), so a late answer hangs it.

Waiting is driven by the daemon's event bus (the container's `die` and `destroy`
events), not by polling: the waiter subscribes first, then looks at the state, so an
exit between the two is never missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cnm.api.version import API_VERSION, VERSION_KEY, compare
from cnm.errors import InvalidParameter
from cnm.events import Event, EventBus

CONDITIONS = ("not-running", "next-exit", "removed")
CHECK = 1.0  # seconds between looks at whether the client is still there


def parse_condition(value: str | None, api_version: str) -> str:
    """The wait condition; before API 1.30 there were none (always not-running)."""
    if not value or compare(api_version, "1.30") < 0:
        return "not-running"
    if value not in CONDITIONS:
        raise InvalidParameter(f'invalid condition: "{value}"')
    return value


class Waiter:
    """Collects one container's `die` and `destroy` events from the moment it is made;
    `close()` unsubscribes."""

    def __init__(self, bus: EventBus, cid: str, loop: asyncio.AbstractEventLoop) -> None:
        self.cid = cid
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(ev: Event) -> None:  # any thread
            if ev.type == "container" and ev.actor_id == cid and ev.action in ("die", "destroy"):
                try:
                    loop.call_soon_threadsafe(self.queue.put_nowait, ev)
                except RuntimeError:  # the loop is closing
                    pass

        _, self.close = bus.subscribe(deliver)

    async def until(self, condition: str, last_code: int, gone: Callable[[], bool]) -> int:
        """The exit code once `condition` holds. `last_code` is the code known when the
        wait began; `gone()` tells whether the client went away (then -1)."""
        code = last_code
        while True:
            try:
                ev = await asyncio.wait_for(self.queue.get(), CHECK)
            except TimeoutError:
                if gone():
                    return -1
                continue
            if ev.action == "die":
                code = int(ev.attributes.get("exitCode", "-1") or -1)
                if condition != "removed":
                    return code
            elif ev.action == "destroy":
                return code


def api_version(request: web.Request) -> str:
    version = request.match_info.get(VERSION_KEY, "")
    return version[1:] if version.startswith("v") else API_VERSION


async def answer(
    request: web.Request, bus: EventBus, cid: str, condition: str, current: Callable[[], Any]
) -> web.StreamResponse:
    """Subscribe, read the state with `current()` (an awaitable giving (exists, running,
    exit code)), send the headers, then wait and send `{"StatusCode", "Error"}`."""
    waiter = Waiter(bus, cid, asyncio.get_running_loop())
    try:
        exists, running, code = await current()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if compare(api_version(request), "1.30") >= 0:
            await resp.prepare(request)  # headers now: the CLI starts the container after them
        if not exists or (condition == "not-running" and not running):
            pass  # answered at once
        else:
            code = await waiter.until(
                condition, code, lambda: request.transport is None or request.transport.is_closing()
            )
        body = json.dumps({"StatusCode": code, "Error": None}).encode()
        if not resp.prepared:
            resp.content_length = len(body)
            await resp.prepare(request)
        try:
            await resp.write(body)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp
    finally:
        waiter.close()
