"""`GET /events`: the daemon's events as Docker streams them — one JSON object per
line, headers sent at once; `since` replays the kept events from then; `until` in the
past answers the kept events and ends, in the future streams until then."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from cnm.api.common import Route
from cnm.api.filters import EVENT_FILTERS, Filters, event_matches, parse_filters
from cnm.api.timestamps import parse_timestamp
from cnm.errors import InvalidParameter
from cnm.events import Event, EventBus

CHECK = 1.0


def _matches(ev: Event, filters: Filters) -> bool:
    return event_matches(ev.type, ev.action, ev.actor_id, ev.attributes, ev.scope, filters)


def _line(ev: Event) -> bytes:
    return json.dumps(ev.to_docker(), separators=(",", ":")).encode() + b"\n"


def routes(bus: EventBus) -> list[Route]:
    async def events(request: web.Request) -> web.StreamResponse:
        q = request.query
        since = parse_timestamp(q["since"], "since") if q.get("since") else None
        until = parse_timestamp(q["until"], "until") if q.get("until") else None
        if since is not None and until is not None and until < since:
            raise InvalidParameter(f"`since` time ({q['since']}) cannot be after `until` time ({q['until']})")
        filters = parse_filters(q.get("filters"), EVENT_FILTERS)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(ev: Event) -> None:  # any thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, ev)
            except RuntimeError:  # the loop is closing: the stream is over anyway
                pass

        history, unsubscribe = bus.subscribe(deliver, since, until)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for ev in history:
                if _matches(ev, filters):
                    await resp.write(_line(ev))
            if until is not None and until <= time.time_ns():
                await resp.write_eof()
                return resp
            while True:
                left = None if until is None else (until - time.time_ns()) / 1e9
                if left is not None and left <= 0:
                    break
                try:
                    # Wake at least every CHECK seconds: a client that went away while
                    # nothing happened is noticed (aiohttp does not cancel the handler).
                    ev = await asyncio.wait_for(queue.get(), CHECK if left is None else min(left, CHECK))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if until is not None and ev.time_nano > until:
                    break
                if _matches(ev, filters):
                    await resp.write(_line(ev))
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            unsubscribe()
        return resp

    return [Route("GET", "/events", events)]
