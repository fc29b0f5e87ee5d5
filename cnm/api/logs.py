"""`GET /containers/{id}/logs` (`docker logs`): the container's log as Docker's
multiplexed frames (raw bytes for a TTY container), with Docker's `tail`, `since`,
`until`, `timestamps` and `follow`.

The log is the runtime's (cnm.runtime.logs). Following attaches to the container's
supervisor first: its HELLO says where the log stood, the files are read up to there,
and what the supervisor sends afterwards follows, so no line is lost or repeated; the
stream ends with the container (EXIT), at `until`, or when the client goes away.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from cnm.api.common import Route, blocking
from cnm.api.rawstream import MEDIA_TYPE, encode_frame
from cnm.api.timestamps import parse_timestamp
from cnm.errors import CNMError, InvalidParameter, NotFound
from cnm.runtime import wire
from cnm.runtime.logs import format_line, rfc3339_nano

BATCH = 512  # log lines read per trip to the thread pool
WAKE = 1.0  # seconds between looks for a client gone away while following


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


def parse_tail(value: str | None) -> int | None:
    """Docker's `tail`: "all" (or nothing) for every line, else a number of lines."""
    if value is None or value in ("", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for tail: {value!r}: use a number of lines or all") from None
    return None if n < 0 else n


def _time(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "")
    if value in ("", "0"):
        return None
    return parse_timestamp(value, name)


def _tty(service: Any, cid: str) -> bool:
    """Whether the container has a TTY (raw output): its record says so from its create
    on (the runtime knows only once it started)."""
    try:
        if getattr(service.get(cid), "tty", False):
            return True
    except CNMError:
        pass
    spec = getattr(service.runtime, "spec", None)
    try:
        return bool(spec and getattr(spec(cid), "tty", False))
    except CNMError:
        return False


def _attach(service: Any, cid: str, streams: str = "oe") -> Any:
    try:
        return service.runtime.attach(cid, streams)
    except CNMError:
        return None  # not running: nothing to follow


def lines_of(service: Any, cid: str, **kw: Any) -> Iterator:
    """The container's log lines; none for a container the runtime does not know yet
    (created, never started: no output, not a 404)."""
    try:
        return service.runtime.logs(cid, **kw)
    except NotFound:
        return iter(())


def _take(lines: Iterator, n: int) -> list:
    return list(itertools.islice(lines, n))


class _Stamper:
    """Timestamps at the start of each line of live output (chunks split anywhere)."""

    def __init__(self) -> None:
        self.at_start = {wire.STDOUT: True, wire.STDERR: True}

    def __call__(self, stream: int, time_ns: int, data: bytes) -> bytes:
        stamp = rfc3339_nano(time_ns).encode() + b" "
        out = []
        for piece in data.splitlines(keepends=True):
            out.append(stamp + piece if self.at_start[stream] else piece)
            self.at_start[stream] = piece.endswith(b"\n")
        return b"".join(out)


async def handle(request: web.Request, service: Any) -> web.StreamResponse:
    want = {wire.STDOUT: _flag(request, "stdout"), wire.STDERR: _flag(request, "stderr")}
    if "stdout" not in request.query and "stderr" not in request.query:
        want = {wire.STDOUT: True, wire.STDERR: True}
    if not any(want.values()):
        raise InvalidParameter("you must choose at least one stream: stdout=1 and/or stderr=1")
    follow, timestamps = _flag(request, "follow"), _flag(request, "timestamps")
    tail = parse_tail(request.query.get("tail"))
    since, until = _time(request, "since"), _time(request, "until")
    ct = await blocking(request, service.get, request.match_info["ref"])
    tty = await blocking(request, _tty, service, ct.id)
    session = await blocking(request, _attach, service, ct.id) if follow else None
    try:
        lines = await blocking(
            request,
            lines_of,
            service,
            ct.id,
            tail=tail,
            since_ns=since,
            until_ns=until,
            stdout=want[wire.STDOUT],
            stderr=want[wire.STDERR],
            upto=session.log_position if session is not None else None,
        )
        resp = web.StreamResponse(headers={"Content-Type": MEDIA_TYPE})
        await resp.prepare(request)
        stamper = _Stamper()
        try:
            while batch := await blocking(request, _take, lines, BATCH):
                for line in batch:
                    data = format_line(line, timestamps)
                    stamper.at_start[line.stream] = data.endswith(b"\n")
                    await resp.write(data if tty else encode_frame(line.stream, data))
            if session is not None:
                await _follow(request, resp, session, want, until, tty, stamper if timestamps else None)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp
    finally:
        if session is not None:
            session.close()


async def _follow(
    request: web.Request,
    resp: web.StreamResponse,
    session: Any,
    want: dict[int, bool],
    until: int | None,
    tty: bool,
    stamper: _Stamper | None,
) -> None:
    loop = asyncio.get_running_loop()
    session.sock.setblocking(False)
    frames = session.buffered()  # what came in with the HELLO
    while True:
        for kind, t, payload in frames:
            if kind == wire.EXIT:
                return
            if kind not in want or not want[kind]:
                continue
            if until is not None and t > until:
                return
            if stamper is not None:
                payload = stamper(kind, t, payload)
            await resp.write(payload if tty else encode_frame(kind, payload))
        try:
            data = await asyncio.wait_for(loop.sock_recv(session.sock, 65536), WAKE)
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                return  # the client went away (aiohttp does not cancel the handler)
            frames = []
            continue
        except OSError:
            return
        if not data:
            return
        frames = session.feed(data)


def routes(service: Any) -> list[Route]:
    async def logs(request: web.Request) -> web.StreamResponse:
        return await handle(request, service)

    return [Route("GET", "/containers/{ref}/logs", logs)]
