"""Reading a container's log (the daemon's side; the supervisor writes it, see
cnm.runtime.relay.LogWriter and the record format in cnm.runtime.wire).

    for line in read_lines(cdir, tail=100, since_ns=t0):     # LogLine(stream, time_ns, data)
        out.write(format_line(line, timestamps=True))

Files: container.log (newest), container.log.1 … (older), in the container directory.
Records hold what one read from the process gave; lines are cut here: a line split over
records of the same stream is joined and keeps its first record's time.

Why our own format and not Docker's json-file: the supervisor must stay tiny, and
JSON-escaping every byte in Python would cost it CPU and memory on every write; ours is
a header, the bytes as they came (binary-safe: a TTY's output is kept exactly) and a
trailer, written with one writev. The trailer lets `--tail N` read the last N lines from
the end of the file instead of parsing everything before them. Docker's clients never
read the file: the API turns records into Docker's frames.

Docker's semantics: `tail` counts lines of both streams, before the stream filter (as
moby's json-file reader does); `since`/`until` compare the line's time; a line's
timestamp prints as RFC 3339 with nanoseconds (`--timestamps`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cnm.runtime import wire

NAME = "container.log"
_HEAD = wire.OUT_HEADER.size
_TAIL = wire.TRAILER.size
_READ = 256 * 1024


@dataclass(frozen=True, slots=True)
class LogRecord:
    stream: int  # wire.STDOUT or wire.STDERR
    time_ns: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LogLine:
    stream: int
    time_ns: int
    data: bytes  # ends with b"\n", except a last line still open


def files(cdir: str) -> list[str]:
    """The log files, oldest first."""
    names = [n for n in os.listdir(cdir) if n == NAME or (n.startswith(NAME + ".") and n[len(NAME) + 1 :].isdigit())]
    return [os.path.join(cdir, n) for n in sorted(names, key=lambda n: -int(n[len(NAME) + 1 :] or 0))]


def _records_forward(path: str, stop_at: int | None = None) -> Iterator[LogRecord]:
    """Records of one file from its start; up to byte `stop_at` if given. A record cut
    short (still being written) ends the iteration."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        buf = b""
        pos = 0
        while True:
            want = _READ if stop_at is None else min(_READ, stop_at - pos - len(buf))
            chunk = f.read(want) if want > 0 else b""
            buf += chunk
            off = 0
            while len(buf) - off >= _HEAD:
                kind, length, t = wire.OUT_HEADER.unpack_from(buf, off)
                end = off + _HEAD + length + _TAIL
                if end > len(buf):
                    break
                yield LogRecord(kind, t, buf[off + _HEAD : off + _HEAD + length])
                off = end
            pos += off
            buf = buf[off:]
            if not chunk:
                return


def _records_backward(path: str, end: int | None = None) -> Iterator[LogRecord]:
    """Records of one file, newest first (whole records only), before byte `end` (None:
    the end of the file). Trailers are trusted while each matches its header; a torn end
    (a supervisor killed mid-write) makes this file be read forwards instead."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        end = size if end is None else min(end, size)
        while end >= _HEAD + _TAIL:
            f.seek(end - _TAIL)
            (length,) = wire.TRAILER.unpack(f.read(_TAIL))
            start = end - _TAIL - length - _HEAD
            raw = b""
            if start >= 0:
                f.seek(start)
                raw = f.read(_HEAD + length)
            if len(raw) < _HEAD or wire.OUT_HEADER.unpack_from(raw)[1] != length:
                yield from reversed(list(_records_forward(path, end)))
                return
            kind, _, t = wire.OUT_HEADER.unpack_from(raw)
            yield LogRecord(kind, t, raw[_HEAD:])
            end = start


def records(cdir: str) -> Iterator[LogRecord]:
    """Every record, oldest first."""
    for path in files(cdir):
        yield from _records_forward(path)


def records_until(cdir: str, inode: int, offset: int) -> Iterator[LogRecord]:
    """Records written before the point (file inode, byte offset) a supervisor's HELLO
    named: older files whole, that file up to the offset, nothing newer. If that file
    was rotated away meanwhile, every file left is newer: nothing."""
    paths = files(cdir)
    at = next((i for i, p in enumerate(paths) if _inode(p) == inode), None)
    if at is None:
        return
    for path in paths[:at]:
        yield from _records_forward(path)
    yield from _records_forward(paths[at], offset)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _split(rec: LogRecord) -> Iterator[LogLine]:
    start = 0
    data = rec.data
    while start < len(data):
        nl = data.find(b"\n", start)
        end = len(data) if nl < 0 else nl + 1
        yield LogLine(rec.stream, rec.time_ns, data[start:end])
        start = end


def lines(recs: Iterable[LogRecord]) -> Iterator[LogLine]:
    """Lines from records in time order: a line spread over several records of its
    stream comes out once, whole, with its first piece's time."""
    open_: dict[int, LogLine] = {}
    for rec in recs:
        for piece in _split(rec):
            held = open_.pop(piece.stream, None)
            if held is not None:
                piece = LogLine(piece.stream, held.time_ns, held.data + piece.data)
            if piece.data.endswith(b"\n"):
                yield piece
            else:
                open_[piece.stream] = piece
    yield from sorted(open_.values(), key=lambda ln: ln.time_ns)


def _backward(cdir: str, upto: tuple[int, int] | None) -> Iterator[LogRecord]:
    """Every record, newest first; with `upto`, only those before that point."""
    paths = list(reversed(files(cdir)))
    if upto is not None:
        at = next((i for i, p in enumerate(paths) if _inode(p) == upto[0]), None)
        if at is None:
            return  # that file is gone (rotated away): nothing before the point is left
        yield from _records_backward(paths[at], upto[1])
        paths = paths[at + 1 :]
    for path in paths:
        yield from _records_backward(path)


def _last_lines(cdir: str, n: int, since_ns: int | None, upto: tuple[int, int] | None) -> list[LogLine]:
    """The last `n` lines (n < 0: no limit), not older than `since_ns`: records read from
    the end until enough newlines are seen (plus the record that opens the oldest)."""
    picked: list[LogRecord] = []
    newlines = 0
    for rec in _backward(cdir, upto):
        picked.append(rec)
        newlines += rec.data.count(b"\n")
        if (0 <= n < newlines) or (since_ns is not None and rec.time_ns < since_ns):
            break
    out = list(lines(reversed(picked)))
    if n >= 0:
        out = out[-n:] if n else []
    return out


def read_lines(
    cdir: str,
    *,
    tail: int | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    stdout: bool = True,
    stderr: bool = True,
    upto: tuple[int, int] | None = None,
) -> Iterator[LogLine]:
    """The log's lines, oldest first: the last `tail` (None: all), not older than
    `since_ns`, not newer than `until_ns`, of the chosen streams. `upto` = (inode,
    offset) from a HELLO: only what was written before it (a follower takes the rest
    from the supervisor)."""
    source: Iterable[LogLine]
    if tail is not None or since_ns is not None:
        source = _last_lines(cdir, -1 if tail is None else tail, since_ns, upto)
    elif upto is not None:
        source = lines(records_until(cdir, *upto))
    else:
        source = lines(records(cdir))
    keep = {s for s, on in ((wire.STDOUT, stdout), (wire.STDERR, stderr)) if on}
    for line in source:
        if since_ns is not None and line.time_ns < since_ns:
            continue
        if until_ns is not None and line.time_ns > until_ns:
            continue
        if line.stream in keep:
            yield line


def rfc3339_nano(time_ns: int) -> str:
    """Docker's RFC3339NanoFixed in UTC: 2024-05-01T12:00:00.123456789Z."""
    secs, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns:09d}Z"


def format_line(line: LogLine, timestamps: bool = False) -> bytes:
    return (rfc3339_nano(line.time_ns).encode() + b" " + line.data) if timestamps else line.data
