"""Exec routes of Docker's Engine API: `POST /containers/{id}/exec`, `POST
/exec/{id}/start` (the connection hijacked for the process's I/O, or detached),
`POST /exec/{id}/resize`, `GET /exec/{id}/json`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from cnm.api.common import Route, blocking, json_body, json_response
from cnm.api.hijack import MULTIPLEXED, RAW, hijack, wants_upgrade
from cnm.api.rawstream import STDERR, STDOUT
from cnm.api.streams import FdStream, bridge
from cnm.errors import CNMError, InvalidParameter
from cnm.execs import ExecConfig, ExecInstance, ExecProcess, ExecService, Target
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


async def _stream(request: web.Request, ex: ExecInstance, proc: ExecProcess) -> web.StreamResponse:
    """The hijacked connection carries the process's I/O until its output ends and it
    exited (Docker's CLI reads the exit code with an inspect right after the stream)."""
    cfg = ex.config
    conn = await hijack(request, RAW if cfg.tty else MULTIPLEXED)
    detached = False
    try:
        if proc.master is not None:       # a TTY: one stream each way
            pty = FdStream(proc.master)
            detached = await bridge(conn, [(pty.read, None)], pty.write if cfg.attach_stdin else None, None,
                         cfg.detach_keys or None)
        else:
            p = proc.proc
            outputs = []
            if p.stdout is not None:
                outputs.append((lambda: p.stdout.read(32768), STDOUT))   # type: ignore[union-attr]
            if p.stderr is not None:
                outputs.append((lambda: p.stderr.read(32768), STDERR))   # type: ignore[union-attr]
            stdin = p.stdin

            async def write(data: bytes) -> None:
                assert stdin is not None
                stdin.write(data)
                await stdin.drain()

            def close() -> None:
                if stdin is not None and not stdin.is_closing():
                    stdin.close()

            if not outputs:               # nothing to show: the stream lasts as long as the process
                outputs.append((_until_exit(proc), STDOUT))
            detached = await bridge(conn, outputs, write if stdin is not None else None, close,
                                    cfg.detach_keys or None)
        if not detached and not conn.gone():
            await ex.done.wait()
    finally:
        await conn.close()        # the pty stays open for a detached process; its reaper closes it
    return conn.response


def _until_exit(proc: ExecProcess) -> Callable[[], Any]:
    async def read() -> bytes:
        await proc.wait()
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
        if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) for n in size):
            ex.config.console_size = (size[0], size[1])
        if body.get("Detach"):
            await execs.start(ex.id, tgt)
            return web.Response(status=200)
        if not wants_upgrade(request):
            raise InvalidParameter("exec start streams over a hijacked connection: send "
                                   "Connection: Upgrade and Upgrade: tcp (or Detach: true)")
        try:
            proc = await execs.start(ex.id, tgt)
        except CNMError:
            raise
        except OSError as exc:          # the spawn itself failed (nsenter missing, …)
            raise InvalidParameter(f"exec {ex.config.argv[0]}: {exc}") from exc
        return await _stream(request, ex, proc)

    async def resize(request: web.Request) -> web.Response:
        height, width = size_query(request)
        execs.resize(request.match_info["id"], height, width)
        return web.Response(status=200)

    async def inspect(request: web.Request) -> web.Response:
        return json_response(execs.get(request.match_info["id"]).inspect())

    return [
        Route("POST", "/containers/{ref}/exec", create),
        Route("POST", "/exec/{id}/start", start),
        Route("POST", "/exec/{id}/resize", resize),
        Route("GET", "/exec/{id}/json", inspect),
    ]

