"""ExecService over a stand-in supervisor session (a socket pair speaking cnm.runtime.wire):
output reaches an attached client's queues and is dropped when nobody takes it, stdin,
CLOSE and RESIZE go the other way, the EXIT frame gives the exit code, a resize before
the process runs becomes its first size, failed starts get Docker's codes."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from cnm.errors import Conflict, InvalidParameter
from cnm.execs import ExecConfig, ExecService, Target
from cnm.runtime import wire
from cnm.runtime.session import Session

RUNNING = Target("c" * 64, "box", 4242)


class Supervisor:
    """The far end of an exec session: what the daemon sent, and frames to send back."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.got = b""

    def session(self) -> Session:
        return Session(self.ours, supervisor_pid=1, pid=4343)

    def send(self, kind: int, payload: bytes) -> None:
        self.theirs.sendall(wire.out_frame(kind, payload, time.time_ns()))

    async def received(self, n: int) -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        self.theirs.setblocking(False)
        frames: list[tuple[int, bytes]] = []
        while len(frames) < n:
            self.got += await loop.sock_recv(self.theirs, 4096)
            frames = []
            buf = self.got
            while len(buf) >= wire.IN_HEADER.size:
                kind, length = wire.IN_HEADER.unpack_from(buf)
                frames.append((kind, buf[wire.IN_HEADER.size : wire.IN_HEADER.size + length]))
                buf = buf[wire.IN_HEADER.size + length :]
        return frames


def service(sup: Supervisor, events: list | None = None, seen: list | None = None) -> ExecService:
    async def spawn(cid: str, cfg: ExecConfig, env: dict[str, str]) -> Session:
        if seen is not None:
            seen.append((cid, cfg.console_size, env))
        return sup.session()

    return ExecService(spawn, publish=lambda *a: events.append(a[0]) if events is not None else None)


def test_output_stdin_and_exit_code():
    async def main() -> None:
        sup, events = Supervisor(), []
        execs = service(sup, events)
        ex = execs.create(RUNNING, ExecConfig(argv=["cat"], attach_stdin=True, env=["A=1"]))
        run = await execs.start(ex.id, RUNNING, attached=True)
        assert run.outputs is not None and ex.pid == 4343 and ex.running
        sup.send(wire.STDOUT, b"out")
        sup.send(wire.STDERR, b"err")
        assert await run.outputs[wire.STDOUT].get() == b"out"
        assert await run.outputs[wire.STDERR].get() == b"err"
        await run.send_stdin(b"hello")
        await run.close_stdin()
        assert await sup.received(2) == [(wire.STDIN, b"hello"), (wire.CLOSE, b"")]
        sup.send(wire.EXIT, b"3")
        await asyncio.wait_for(ex.done.wait(), 5)
        assert ex.exit_code == 3 and not ex.running and ex.inspect()["ExitCode"] == 3
        assert await run.outputs[wire.STDOUT].get() == b""  # the end, for the stream
        assert [e.split(":")[0] for e in events] == ["exec_create", "exec_start", "exec_die"]
        with pytest.raises(Conflict, match="has already run"):
            execs.check_startable(ex.id)

    asyncio.run(main())


def test_detached_output_is_dropped_and_a_lost_supervisor_is_126():
    async def main() -> None:
        sup = Supervisor()
        execs = service(sup)
        ex = execs.create(RUNNING, ExecConfig(argv=["yes"]))
        run = await execs.start(ex.id, RUNNING, attached=False)

        def flood() -> None:  # more than the queues hold: nothing waits on them
            for _ in range(200):
                sup.send(wire.STDOUT, b"y\n" * 100)
            sup.theirs.close()  # the supervisor died without an EXIT

        await asyncio.get_running_loop().run_in_executor(None, flood)
        await asyncio.wait_for(ex.done.wait(), 5)
        assert run.outputs is None and ex.exit_code == 126

    asyncio.run(main())


def test_a_resize_before_the_start_is_the_first_size():
    async def main() -> None:
        sup, seen = Supervisor(), []
        execs = service(sup, seen=seen)
        ex = execs.create(RUNNING, ExecConfig(argv=["sh"], tty=True))
        await execs.resize(ex.id, 33, 101)
        await execs.wait_for_size(ex, timeout=5)  # returns at once: the size is there
        run = await execs.start(ex.id, RUNNING, attached=True)
        assert seen == [(RUNNING.id, (33, 101), {})]
        await execs.resize(ex.id, 20, 60)
        assert await sup.received(1) == [(wire.RESIZE, b"20 60")]
        no_tty = execs.create(RUNNING, ExecConfig(argv=["true"]))
        with pytest.raises(InvalidParameter, match="no TTY"):
            await execs.resize(no_tty.id, 1, 1)
        sup.send(wire.EXIT, b"0")
        await asyncio.wait_for(ex.done.wait(), 5)
        del run

    asyncio.run(main())


def test_failed_starts_get_dockers_codes_and_stopped_containers_are_refused():
    async def main() -> None:
        async def spawn(cid: str, cfg: ExecConfig, env: dict[str, str]) -> Session:
            raise InvalidParameter(f'exec: "{cfg.argv[0]}": executable file not found in $PATH')

        execs = ExecService(spawn)
        ex = execs.create(RUNNING, ExecConfig(argv=["nosuch"]))
        with pytest.raises(InvalidParameter):
            await execs.start(ex.id, RUNNING, attached=True)
        assert ex.exit_code == 127 and ex.done.is_set()
        with pytest.raises(Conflict, match="is not running"):
            execs.create(Target("d" * 64, "dead", None), ExecConfig(argv=["true"]))

    asyncio.run(main())


def test_a_client_that_leaves_with_full_queues_does_not_hold_the_process_back():
    async def main() -> None:
        sup = Supervisor()
        execs = service(sup)
        ex = execs.create(RUNNING, ExecConfig(argv=["yes"]))
        run = await execs.start(ex.id, RUNNING, attached=True)

        def flood() -> None:
            for _ in range(100):  # more than the queue holds, nobody reading
                sup.send(wire.STDOUT, b"y\n")
            sup.send(wire.EXIT, b"0")

        await asyncio.get_running_loop().run_in_executor(None, flood)
        await asyncio.sleep(0.1)
        assert run.outputs is not None and run.outputs[wire.STDOUT].full() and not ex.done.is_set()
        run.drop_output()  # the client went away
        await asyncio.wait_for(ex.done.wait(), 5)
        assert ex.exit_code == 0

    asyncio.run(main())
