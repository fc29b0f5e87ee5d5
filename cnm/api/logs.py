"""`GET /containers/{id}/logs`: the container's output from its log files, as Docker's
multiplexed stream; `follow` keeps it open until the container exits."""
from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from cnm.api.common import Route, blocking
from cnm.api.rawstream import MEDIA_TYPE, STDERR, STDOUT, encode_frame
from cnm.errors import InvalidParameter, NotFound

LOG_POLL = 0.02          # seconds between looks at a followed log
READ_CHUNK = 64 * 1024


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


def _state_or_none(service: Any, cid: str) -> Any:
    try:
        return service.runtime.state(cid)
    except NotFound:
        return None


class LogTail:
    """One log file read from where the last read stopped; opened once it exists
    (the open fd keeps it readable if the container is removed meanwhile)."""

    def __init__(self, stream: int, path: str) -> None:
        self.stream = stream
        self.path = path
        self.file: Any = None

    def read(self) -> bytes:
        if self.file is None:
            try:
                self.file = open(self.path, "rb")
            except FileNotFoundError:
                return b""
        return self.file.read(READ_CHUNK)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def tail_offset(f: Any, lines: int, block: int = 64 * 1024) -> int:
    """The offset in the open binary file `f` where its last `lines` lines begin (a
    last line without its newline counts), read backwards a block at a time."""
    end = f.seek(0, os.SEEK_END)
    if end == 0 or lines <= 0:
        return end
    f.seek(end - 1)
    pos = end - 1 if f.read(1) == b"\n" else end      # the last line's own newline ends it
    count = 0
    while pos > 0:
        start = max(0, pos - block)
        f.seek(start)
        chunk = f.read(pos - start)
        i = len(chunk)
        while (i := chunk.rfind(b"\n", 0, i)) >= 0:
            count += 1
            if count == lines:
                return start + i + 1
        pos = start
    return 0


def parse_tail(value: str | None) -> int | None:
    """Docker's `tail`: "all" (or nothing) for every line, else a number of lines."""
    if value is None or value in ("", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for tail: {value!r}: use a number of lines or all") from None
    return None if n < 0 else n


def _open_tails(tails: list[LogTail], lines: int | None) -> None:
    for t in tails:
        try:
            t.file = open(t.path, "rb")
        except FileNotFoundError:
            continue
        t.file.seek(tail_offset(t.file, lines) if lines is not None else 0)


def _read_all(tails: list[LogTail]) -> list[tuple[int, bytes]]:
    return [(t.stream, data) for t in tails if (data := t.read())]


def _exit_fd(service: Any, cid: str) -> int | None:
    try:
        return service.runtime.exit_fd(cid)
    except NotFound:
        return None      # removed meanwhile: the next state read tells


def _ended(service: Any, cid: str) -> bool:
    state = _state_or_none(service, cid)
    return state is None or state.status == "exited"


def _close_all(tails: list[LogTail]) -> None:
    for t in tails:
        t.close()



def routes(service: Any) -> list[Route]:
    async def logs(request: web.Request) -> web.StreamResponse:
        want_out, want_err = _flag(request, "stdout"), _flag(request, "stderr")
        if "stdout" not in request.query and "stderr" not in request.query:
            want_out = want_err = True
        if not (want_out or want_err):
            raise InvalidParameter("you must choose at least one stream: stdout=1 and/or stderr=1")
        follow = _flag(request, "follow")
        lines = parse_tail(request.query.get("tail"))
        timed = [k for k in ("since", "until") if request.query.get(k) not in (None, "", "0")]
        if _flag(request, "timestamps") or timed:
            raise InvalidParameter(f"logs {'--timestamps' if not timed else '--' + timed[0]} is not supported yet: "
                                   "the runtime's logs carry no times")
        ct = await blocking(request, service.get, request.match_info["ref"])
        try:
            out_path, err_path = await blocking(request, service.runtime.logs_paths, ct.id)
        except NotFound:          # created, never started: no output yet
            out_path = err_path = os.devnull
        tails = ([LogTail(STDOUT, out_path)] if want_out else []) + ([LogTail(STDERR, err_path)] if want_err else [])
        await blocking(request, _open_tails, tails, lines)
        resp = web.StreamResponse(headers={"Content-Type": MEDIA_TYPE})
        await resp.prepare(request)
        # Wake at once when the container exits (its supervisor's pidfd), not only on
        # the next poll: an attached `net run` ends as soon as the container does.
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        fd = None
        if follow and getattr(service.runtime, "exit_fd", None) is not None:
            fd = await blocking(request, _exit_fd, service, ct.id)
            if fd is not None:
                def wake() -> None:
                    if not exited.done():
                        exited.set_result(None)
                loop.add_reader(fd, wake)
        try:
            while True:
                # Look at the state BEFORE reading: output written up to the exit is
                # then read in this round or a later one, never lost.
                ended = not follow or await blocking(request, _ended, service, ct.id)
                chunks = await blocking(request, _read_all, tails)
                for stream, data in chunks:
                    await resp.write(encode_frame(stream, data))
                if chunks:
                    continue
                if ended:
                    break
                if request.transport is None or request.transport.is_closing():
                    return resp     # the client went away
                try:
                    await asyncio.wait_for(asyncio.shield(exited), LOG_POLL)
                except TimeoutError:
                    pass
            await resp.write_eof()
        except ConnectionResetError:
            pass
        finally:
            if fd is not None:
                loop.remove_reader(fd)
                os.close(fd)
            await blocking(request, _close_all, tails)
        return resp

    return [Route("GET", "/containers/{ref}/logs", logs)]
