"""`POST /containers/{id}/attach` (`docker run` attached, `docker attach`, compose's
`up` without -d): the container's output from the moment of the attach until it
exits, over the hijacked connection as Docker's multiplexed frames.

The output is read from the container's log files (the runtime's supervisor writes
them); the end is the container's `die` (or `destroy`) event on the daemon's bus. An
attach may come before the start (Docker's CLI attaches, then starts): it then carries
the whole run. `logs=1` replays what was written before. Standard input is not
attachable: the runtime gives containers no stdin yet (create refuses -i and -t).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from cnm.api import wait as wait_api
from cnm.api.common import Route, blocking
from cnm.api.hijack import MULTIPLEXED, hijack, wants_upgrade
from cnm.api.logs import LogTail, _close_all, _flag, _read_all
from cnm.api.rawstream import STDERR, STDOUT, encode_frame
from cnm.errors import Conflict, InvalidParameter, NotFound

POLL = 0.02


def _open_tails(service: Any, cid: str, want_out: bool, want_err: bool, replay: bool) -> list[LogTail] | None:
    """The log files to follow; None while the runtime has none (not started yet)."""
    try:
        out_path, err_path = service.runtime.logs_paths(cid)
    except NotFound:
        return None
    tails = ([LogTail(STDOUT, out_path)] if want_out else []) + ([LogTail(STDERR, err_path)] if want_err else [])
    if not replay:
        for t in tails:              # from now on only: skip what is already there
            try:
                t.file = open(t.path, "rb")
                t.file.seek(0, os.SEEK_END)
            except FileNotFoundError:
                pass
    return tails


def routes(service: Any) -> list[Route]:
    async def attach(request: web.Request) -> web.StreamResponse:
        stream = _flag(request, "stream")
        replay = _flag(request, "logs")
        want_out, want_err = _flag(request, "stdout"), _flag(request, "stderr")
        if _flag(request, "stdin"):
            raise InvalidParameter("attaching stdin is not supported: this runtime gives containers no "
                                   "standard input (run without -i)")
        ct = await blocking(request, service.get, request.match_info["ref"])
        state = await blocking(request, _state, service, ct.id)
        if stream and state is not None and state.status == "exited":
            raise Conflict("You cannot attach to a stopped container, start it first")
        bus = service.events
        waiter = wait_api.Waiter(bus, ct.id, asyncio.get_running_loop())
        tails: list[LogTail] | None = None
        try:
            tails = await blocking(request, _open_tails, service, ct.id, want_out, want_err, replay)
            if wants_upgrade(request):
                conn: Any = await hijack(request, MULTIPLEXED)
                # (not the client's half-close: Docker's CLI half-closes at once when it
                # sends no stdin; a failed start ends the attach with a die event instead)
                write, close, gone = conn.write, conn.close, conn.gone
            else:                    # a plain HTTP client: the frames as a streamed body
                resp = web.StreamResponse(headers={"Content-Type": MULTIPLEXED})
                await resp.prepare(request)
                write, close = resp.write, resp.write_eof
                gone = lambda: request.transport is None or request.transport.is_closing()  # noqa: E731
            ended = not stream
            try:
                while True:
                    if tails is None:        # attached before the start: the files come with it
                        tails = await blocking(request, _open_tails, service, ct.id, want_out, want_err, True)
                    chunks = await blocking(request, _read_all, tails or [])
                    for s, data in chunks:
                        await write(encode_frame(s, data))
                    if chunks:
                        continue
                    if ended or gone():
                        break
                    try:
                        ev = await asyncio.wait_for(waiter.queue.get(), POLL)
                        if ev.action in ("die", "destroy"):
                            ended = True     # one more read drains what was written up to the exit
                    except TimeoutError:
                        pass
            except ConnectionResetError:
                pass
            await close()
            return conn.response if wants_upgrade(request) else resp
        finally:
            waiter.close()
            await blocking(request, _close_all, tails or [])

    return [Route("POST", "/containers/{ref}/attach", attach)]


def _state(service: Any, cid: str) -> Any:
    try:
        return service.runtime.state(cid)
    except NotFound:
        return None
