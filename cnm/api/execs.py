"""Exec routes of Docker's Engine API: `POST /containers/{id}/exec`, `POST
/exec/{id}/start` (the connection hijacked for the process's I/O, or detached),
`POST /exec/{id}/resize`, `GET /exec/{id}/json`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnm.api.common import Route, blocking, json_body, json_response
from cnm.api.hijack import MULTIPLEXED, RAW, Hijacked, hijack, wants_upgrade
from cnm.api.rawstream import STDERR, STDOUT, encode_frame
from cnm.api.streams import bridge
from cnm.errors import CNMError, InvalidParameter
from cnm.execs import ExecConfig, ExecInstance, ExecRun, ExecService, Target
from cnm.strictnum import parse_int


def size_query(request: web.Request) -> tuple[int, int]:
    """`h` and `w` of a resize, as Docker checks them."""
    try:
        height, width = parse_int(request.query.get("h", "")), parse_int(request.query.get("w", ""))
    except ValueError:
        raise InvalidParameter("resize needs numbers h (rows) and w (columns)") from None
    if not (0 <= height <= 65535 and 0 <= width <= 65535):
        raise InvalidParameter("resize: h and w must be 0-65535")
    return height, width


def _reader(queue: asyncio.Queue[bytes]) -> Callable[[], Awaitable[bytes]]:
    return queue.get


async def _stream(conn: Hijacked, ex: ExecInstance, run: ExecRun) -> web.StreamResponse:
    """The hijacked connection carries the process's I/O until its output ends and it
    exited (Docker's CLI reads the exit code with an inspect right after the stream)."""
    cfg = ex.config
    queues = run.outputs if run.outputs is not None else run.take_output()
    detached = False
    try:
        outputs: list[tuple[Callable[[], Awaitable[bytes]], int | None]]
        if cfg.tty:
            outputs = [(_reader(queues[STDOUT]), None)]
        else:
            outputs = [
                (_reader(queues[s]), s)
                for s, wanted in ((STDOUT, cfg.attach_stdout), (STDERR, cfg.attach_stderr))
                if wanted
            ]
            if not outputs:  # nothing to show: the stream lasts as long as the process
                outputs = [(_until(run), STDOUT)]

        def close_stdin() -> None:
            asyncio.ensure_future(run.close_stdin())

        detached = await bridge(
            conn,
            outputs,
            run.send_stdin if cfg.attach_stdin else None,
            close_stdin if cfg.attach_stdin else None,
            cfg.detach_keys or None,
        )
        if not detached and not conn.gone():
            await ex.done.wait()
    finally:
        run.drop_output()  # a detached (or gone) client: the process runs on, its output dropped
        await conn.close()
    return conn.response


def _until(run: ExecRun) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        await run.ended.wait()
        return b""

    return read


def routes(execs: ExecService, target: Callable[[str], Target]) -> list[Route]:
    """`target(ref)` looks a container up (blocking: run in the thread pool)."""

    async def create(request: web.Request) -> web.Response:
        cfg = ExecConfig.from_docker_json(await json_body(request))
        tgt = await blocking(request, target, request.match_info["ref"])
        ex = execs.create(tgt, cfg)
        return json_response({"Id": ex.id}, status=201)

    async def start(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        ex = execs.check_startable(request.match_info["id"])
        tgt = await blocking(request, target, ex.container_id)
        size = body.get("ConsoleSize")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n >= 0 for n in size):
            ex.config.console_size = (size[0], size[1])
        if body.get("Detach"):
            await execs.start(ex.id, tgt, attached=False)
            return web.Response(status=200)
        if not wants_upgrade(request):
            raise InvalidParameter(
                "exec start streams over a hijacked connection: send "
                "Connection: Upgrade and Upgrade: tcp (or Detach: true)"
            )
        # As Docker's: the connection is taken over first; a process that cannot be
        # started is told in the stream (its message on stdout), its code in inspect.
        conn = await hijack(request, RAW if ex.config.tty else MULTIPLEXED)
        await execs.wait_for_size(ex)
        try:
            run = await execs.start(ex.id, tgt, attached=True)
        except CNMError as exc:
            line = exc.message.encode() + b"\r\n"
            try:
                await conn.write(line if ex.config.tty else encode_frame(STDOUT, line))
            finally:
                await conn.close()
            return conn.response
        return await _stream(conn, ex, run)

    async def resize(request: web.Request) -> web.Response:
        height, width = size_query(request)
        await execs.resize(request.match_info["id"], height, width)
        return web.Response(status=200)

    async def inspect(request: web.Request) -> web.Response:
        return json_response(execs.get(request.match_info["id"]).inspect())

    return [
        Route("POST", "/containers/{ref}/exec", create),
        Route("POST", "/exec/{id}/start", start),
        Route("POST", "/exec/{id}/resize", resize),
        Route("GET", "/exec/{id}/json", inspect),
    ]
