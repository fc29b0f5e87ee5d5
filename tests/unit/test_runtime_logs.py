"""The container log: the supervisor's writer (rotation) and the daemon's reader
(tail from the end, since/until, streams, lines split over records, a torn end, the
HELLO point a follower reads up to). No root, no processes."""

from __future__ import annotations

import os

import pytest

from cnm.runtime import logs, wire
from cnm.runtime.relay import LogWriter

OUT, ERR = wire.STDOUT, wire.STDERR


@pytest.fixture
def cdir(tmp_path):
    return str(tmp_path)


def write(w: LogWriter, stream: int, data: bytes, t: int) -> None:
    w.write(wire.OUT_HEADER.pack(stream, len(data), t), data)


def texts(found) -> list[tuple[int, int, bytes]]:
    return [(ln.stream, ln.time_ns, ln.data) for ln in found]


def test_lines_tail_since_until_and_streams(cdir):
    w = LogWriter(os.open(cdir, os.O_RDONLY), 1 << 20, 3)
    write(w, OUT, b"a1\na2\n", 10)
    write(w, ERR, b"e1\n", 20)
    write(w, OUT, b"a3 part", 30)  # a line split over two records
    write(w, OUT, b"ial\na4\n", 40)
    write(w, ERR, b"e2 open", 50)  # the last line of stderr, no newline yet
    every = [
        (OUT, 10, b"a1\n"),
        (OUT, 10, b"a2\n"),
        (ERR, 20, b"e1\n"),
        (OUT, 30, b"a3 partial\n"),
        (OUT, 40, b"a4\n"),
        (ERR, 50, b"e2 open"),
    ]
    assert texts(logs.read_lines(cdir)) == every
    assert texts(logs.read_lines(cdir, tail=3)) == every[-3:]
    assert texts(logs.read_lines(cdir, tail=0)) == []
    assert texts(logs.read_lines(cdir, tail=100)) == every
    assert texts(logs.read_lines(cdir, since_ns=20)) == every[2:]
    assert texts(logs.read_lines(cdir, until_ns=30)) == every[:4]
    assert texts(logs.read_lines(cdir, stderr=False)) == [x for x in every if x[0] == OUT]
    # tail counts both streams, then the filter applies (moby's json-file reader does so)
    assert texts(logs.read_lines(cdir, tail=2, stdout=False)) == [(ERR, 50, b"e2 open")]


def test_rotation_keeps_max_files_and_reads_across_them(cdir):
    w = LogWriter(os.open(cdir, os.O_RDONLY), 200, 3)
    for i in range(40):
        write(w, OUT, b"line %02d\n" % i, i)
    names = sorted(os.listdir(cdir))
    assert names == ["container.log", "container.log.1", "container.log.2"]
    assert all(os.path.getsize(os.path.join(cdir, n)) < 200 + 100 for n in names)
    got = [ln.data for ln in logs.read_lines(cdir)]
    assert got == [b"line %02d\n" % i for i in range(40 - len(got), 40)]  # the newest, in order
    assert [ln.data for ln in logs.read_lines(cdir, tail=5)] == got[-5:]


def test_one_file_rotation_truncates(cdir):
    w = LogWriter(os.open(cdir, os.O_RDONLY), 50, 1)
    for i in range(10):
        write(w, OUT, b"x%d\n" % i, i)
    assert os.listdir(cdir) == ["container.log"]
    assert os.path.getsize(os.path.join(cdir, "container.log")) < 50 + 30


def test_a_torn_end_is_not_read(cdir):
    w = LogWriter(os.open(cdir, os.O_RDONLY), 1 << 20, 2)
    write(w, OUT, b"whole\n", 1)
    with open(os.path.join(cdir, "container.log"), "ab") as f:
        f.write(wire.OUT_HEADER.pack(OUT, 100, 2) + b"cut sho")  # a writer still at it, or a crash
    assert [ln.data for ln in logs.read_lines(cdir)] == [b"whole\n"]
    assert [ln.data for ln in logs.read_lines(cdir, tail=5)] == [b"whole\n"]  # read forwards instead


def test_upto_the_hello_point(cdir):
    w = LogWriter(os.open(cdir, os.O_RDONLY), 120, 4)
    for i in range(6):
        write(w, OUT, b"before %d\n" % i, i)
    inode, offset = (int(x) for x in w.position().split())
    for i in range(6):
        write(w, OUT, b"after %d\n" % i, 10 + i)  # rotates: the HELLO file is now .1 or older
    before = [ln.data for ln in logs.read_lines(cdir, upto=(inode, offset))]
    assert before and all(b.startswith(b"before") for b in before)
    assert before == [b"before %d\n" % i for i in range(6 - len(before), 6)]
    assert [ln.data for ln in logs.read_lines(cdir, upto=(inode, offset), tail=2)] == before[-2:]
    assert list(logs.read_lines(cdir, upto=(123456789, 0))) == []  # that file rotated away


def test_rfc3339_nano():
    assert logs.rfc3339_nano(1700000000_000000042) == "2023-11-14T22:13:20.000000042Z"
    line = logs.LogLine(OUT, 1700000000_123456789, b"hi\n")
    assert logs.format_line(line, True) == b"2023-11-14T22:13:20.123456789Z hi\n"
    assert logs.format_line(line) == b"hi\n"


def test_out_decoder_takes_frames_split_anywhere():
    frames = wire.out_frame(OUT, b"hello", 5) + wire.out_frame(wire.EXIT, b"0", 6)
    dec = wire.OutDecoder()
    got = []
    for i in range(len(frames)):
        got += dec.feed(frames[i : i + 1])
    assert got == [(OUT, 5, b"hello"), (wire.EXIT, 6, b"0")] and dec.pending == 0
    assert frames[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x05"  # Docker's frame header, byte for byte
