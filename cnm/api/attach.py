"""`POST /containers/{id}/attach` (`docker run` attached, `docker attach`, compose's
`up` without -d): the container's output from the moment of the attach until it
exits, over the hijacked connection as Docker's multiplexed frames (raw for a TTY),
and the client's input to its stdin when it has one (OpenStdin).

The runtime's supervisor serves attaches (cnm.runtime.session): its HELLO says where
the log stood, `logs=1` replays the log up to there, then its frames follow. An attach
may come before the start (Docker's CLI attaches, then starts): it waits for the
container's `start` event and then replays its whole log (empty before its first
start), so the run is carried whole. Input: the client's bytes go to the container's
stdin (Docker's detach keys, ctrl-p ctrl-q by default, end the attach instead); the
client's half-close ends its input (and, with StdinOnce, the container's stdin) only
when stdin was asked for: Docker's CLI half-closes at once when it sends no stdin.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from cnm.api import wait as wait_api
from cnm.api.common import Route, blocking
from cnm.api.hijack import MULTIPLEXED, RAW, hijack, wants_upgrade
from cnm.api.logs import _attach, _flag, _take, _tty, lines_of
from cnm.api.rawstream import encode_frame
from cnm.api.streams import DetachScanner, detach_sequence
from cnm.errors import NotFound
from cnm.runtime import wire

START_WAIT = 0.2  # seconds between looks at a created container's state while waiting for its start


def routes(service: Any) -> list[Route]:
    async def attach(request: web.Request) -> web.StreamResponse:
        stream, replay = _flag(request, "stream"), _flag(request, "logs")
        want = {wire.STDOUT: _flag(request, "stdout"), wire.STDERR: _flag(request, "stderr")}
        with_stdin = _flag(request, "stdin")
        scanner = DetachScanner(detach_sequence(request.query.get("detachKeys", ""))) if with_stdin else None
        ct = await blocking(request, service.get, request.match_info["ref"])
        # Held from here: a --rm container that exits before this attach has read its
        # output is removed only once the attach ends (Docker's attached streams see it all).
        hold = getattr(service, "attach_begins", None)
        if hold is not None:
            await blocking(request, hold, ct.id)
        try:
            return await _attached(request, service, ct, stream, replay, want, with_stdin, scanner)
        finally:
            if hold is not None:
                await blocking(request, service.attach_ends, ct.id)

    async def _attached(
        request: web.Request,
        service: Any,
        ct: Any,
        stream: bool,
        replay: bool,
        want: dict[int, bool],
        with_stdin: bool,
        scanner: DetachScanner | None,
    ) -> web.StreamResponse:
        state = await blocking(request, _state, service, ct.id)
        # An exited container is attached for its next run (docker start -a attaches,
        # then starts; Docker's daemon allows it, its `docker attach` command does not).
        again = stream and state is not None and state.status == "exited"
        since = time.time_ns() if again else None  # the last run's output is older
        tty = await blocking(request, _tty, service, ct.id)
        streams = ("i" if with_stdin else "") + "oe"
        waiter = wait_api.Waiter(service.events, ct.id, asyncio.get_running_loop())
        session: Any = None
        try:
            if wants_upgrade(request):
                conn: Any = await hijack(request, RAW if tty else MULTIPLEXED)
                write, close, gone = conn.write, conn.close, conn.gone
            else:  # a plain HTTP client: the frames as a streamed body
                resp = web.StreamResponse(headers={"Content-Type": RAW if tty else MULTIPLEXED})
                await resp.prepare(request)
                write, close = resp.write, resp.write_eof
                gone = lambda: request.transport is None or request.transport.is_closing()  # noqa: E731
                conn = None
            try:
                if (state is None or state.status == "created" or again) and stream:  # not started yet
                    before = state.started_at if again and state is not None else None
                    started = await _until_started(request, service, ct.id, waiter, gone, before)
                    replay = replay or started  # this run's output from its start (`since`)
                session = await blocking(request, _attach, service, ct.id, streams)
                if replay:  # up to where the session starts; all of it if it already ended
                    upto = session.log_position if session is not None else None
                    lines = await blocking(
                        request,
                        lines_of,
                        service,
                        ct.id,
                        upto=upto,
                        since_ns=since,
                        stdout=want[wire.STDOUT],
                        stderr=want[wire.STDERR],
                    )
                    while batch := await blocking(request, _take, lines, 512):
                        for line in batch:
                            await write(line.data if tty else encode_frame(line.stream, line.data))
                if session is not None and stream:
                    await _relay(
                        session,
                        want,
                        tty,
                        write,
                        gone,
                        conn.read if (conn is not None and with_stdin) else None,
                        scanner,
                    )
            except (ConnectionResetError, BrokenPipeError):
                pass
            await close()
            return conn.response if conn is not None else resp
        finally:
            waiter.close()
            if session is not None:
                session.close()

    return [Route("POST", "/containers/{ref}/attach", attach)]


async def _until_started(
    request: web.Request, service: Any, cid: str, waiter: Any, gone: Any, before: str | None = None
) -> bool:
    """Wait for a created container's start (or an exited one's next: its start time
    differs from `before`): True once it left "created" (running, or already exited: a
    short run may be over before we look), False if it was removed
    first or the client left. (The runtime may not know a created container at all:
    the service makes its runtime directory at the start.)"""
    while not gone():
        st = await blocking(request, _state, service, cid)
        if st is not None and st.status != "created" and (before is None or st.started_at != before):
            return True
        try:
            ev = await asyncio.wait_for(waiter.queue.get(), START_WAIT)
            if ev.action == "destroy":
                return False
        except TimeoutError:
            pass
    return False


async def _relay(
    session: Any,
    want: dict[int, bool],
    tty: bool,
    write: Any,
    gone: Any,
    read_input: Any,
    scanner: DetachScanner | None,
) -> None:
    """The supervisor's frames to the client until EXIT; the client's input to the
    container's stdin meanwhile (until it detaches or half-closes)."""
    loop = asyncio.get_running_loop()
    session.sock.setblocking(False)
    pump = asyncio.ensure_future(_input(session, read_input, scanner)) if read_input is not None else None
    frames = session.buffered()
    reader: asyncio.Future[bytes] | None = None
    try:
        while True:
            for kind, _, payload in frames:
                if kind == wire.EXIT:
                    return
                if want.get(kind):
                    await write(payload if tty else encode_frame(kind, payload))
            # One read stays pending across wake-ups: cancelling a read whose bytes the
            # loop has already taken loses them (seen under load: the input ended, the
            # container answered and exited, and its output never reached the client).
            if reader is None:
                reader = asyncio.ensure_future(loop.sock_recv(session.sock, 65536))
            waiting = {reader} | ({pump} if pump is not None and not pump.done() else set())
            done, _ = await asyncio.wait(waiting, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if pump is not None and pump in done and pump.result():
                return  # detached: the container runs on
            if reader not in done:
                if gone():
                    return
                frames = []
                continue
            data, reader = reader.result(), None
            if not data:
                return
            frames = session.feed(data)
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
        if pump is not None and not pump.done():
            pump.cancel()


async def _input(session: Any, read_input: Any, scanner: DetachScanner | None) -> bool:
    """Client bytes to the container's stdin; True if the client typed the detach keys."""
    loop = asyncio.get_running_loop()
    while data := await read_input():
        if scanner is not None:
            data, detached = scanner.feed(data)
            if data:
                await loop.sock_sendall(session.sock, wire.in_frame(wire.STDIN, data))
            if detached:
                return True
        else:
            await loop.sock_sendall(session.sock, wire.in_frame(wire.STDIN, data))
    await loop.sock_sendall(session.sock, wire.in_frame(wire.CLOSE))  # the client's input ended
    return False


def _state(service: Any, cid: str) -> Any:
    try:
        return service.runtime.state(cid)
    except NotFound:
        return None
