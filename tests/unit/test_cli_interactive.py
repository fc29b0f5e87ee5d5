"""The CLI's hijacked-stream side (cnm.cli.interactive, cnm.cli.execflow): frames split
anywhere come out whole and in order, the exec request from `net exec`'s flags, exit
codes of a start that failed, and the stream over a socket pair (no daemon, no root)."""

from __future__ import annotations

import os
import socket
import threading

from cnm.api.rawstream import encode_frame
from cnm.cli.execflow import exec_body, start_failure_code
from cnm.cli.interactive import Demux, pump


def test_demux_reassembles_frames_split_anywhere():
    data = encode_frame(1, b"out one\n") + encode_frame(2, b"err\n") + encode_frame(1, b"") + encode_frame(1, b"two")
    for cut in range(len(data) + 1):
        d = Demux()
        got = d.feed(data[:cut]) + d.feed(data[cut:])
        assert [(s, p) for s, p in got if p] == [(1, b"out one\n"), (2, b"err\n"), (1, b"two")]


def test_exec_body_from_flags():
    body = exec_body(
        ["sh", "-c", "id"],
        interactive=True,
        tty=False,
        env=["A=1"],
        user="nobody",
        workdir="/tmp",
        privileged=False,
        detach=False,
    )
    assert body == {
        "Cmd": ["sh", "-c", "id"],
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "Env": ["A=1"],
        "Privileged": False,
        "User": "nobody",
        "WorkingDir": "/tmp",
    }
    detached = exec_body(
        ["true"], interactive=True, tty=False, env=[], user=None, workdir=None, privileged=True, detach=True
    )
    assert not detached["AttachStdin"] and not detached["AttachStdout"] and detached["Privileged"]


def test_start_failures_map_to_dockers_codes():
    assert start_failure_code('exec: "nosuch": executable file not found in $PATH') == 127
    assert start_failure_code("permission denied") == 126


def test_pump_copies_both_ways_and_half_closes_at_our_eof(tmp_path):
    ours, theirs = socket.socketpair()
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    got_input: list[bytes] = []

    def daemon() -> None:  # echoes stdin to stdout frames until our half-close
        while data := theirs.recv(4096):
            got_input.append(data)
            theirs.sendall(encode_frame(1, data.upper()))
        theirs.sendall(encode_frame(2, b"bye\n"))
        theirs.close()

    t = threading.Thread(target=daemon)
    t.start()
    saved = [os.dup(0), os.dup(1), os.dup(2)]
    try:
        os.dup2(r_in, 0)
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        os.write(w_in, b"hello\n")
        os.close(w_in)
        pump(ours, encode_frame(1, b"early\n"), tty=False, stdin=True)
    finally:
        for fd, old in zip((0, 1, 2), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
    t.join(5)
    os.close(w_out)
    os.close(w_err)
    assert os.read(r_out, 4096) == b"early\nHELLO\n" and os.read(r_err, 4096) == b"bye\n"
    assert b"".join(got_input) == b"hello\n"
    for fd in (r_in, r_out, r_err):
        os.close(fd)
    ours.close()
