"""Bounds on untrusted image input, and the decompression every layer reader shares."""

from __future__ import annotations

import bz2
import gzip
import lzma
from dataclasses import dataclass
from typing import Any, cast

from cnm.errors import InvalidParameter
from cnm.images.digest import Reader

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one load or import may bring. The defaults fit any real image; tests shrink
    them. JSON documents are parsed in memory, so they get the tightest bound."""

    max_archive: int = 64 * GiB  # bytes read from a docker-save / import stream
    max_layer: int = 64 * GiB  # uncompressed bytes of one layer (gzip bombs)
    max_members: int = 2_000_000  # tar members in one layer
    max_archive_members: int = 100_000  # members of the outer docker-save tarball
    max_json: int = 16 * MiB  # manifest.json, index.json, a config, a manifest
    max_layers: int = 125  # per image: Docker's overlay2 limit too


DEFAULT_LIMITS = Limits()

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


class _Prefixed:
    """A reader that first returns `head`, then the rest of `raw` (a peek without seek)."""

    def __init__(self, head: bytes, raw: Reader) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.raw.read(n)


def compression_of(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def decompressed(raw: Reader) -> tuple[Reader, str | None]:
    """(a reader of the uncompressed bytes, the compression found), by magic number as
    Docker's DecompressStream does: gzip, bzip2 and xz; plain tar passes through."""
    head = b""
    while len(head) < 6:
        chunk = raw.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    kind = compression_of(head)
    src = _Prefixed(head, raw)
    if kind is None:
        return src, None
    if kind == "gzip":
        return gzip.GzipFile(fileobj=cast(Any, src), mode="rb"), kind
    if kind == "bzip2":
        return bz2.BZ2File(cast(Any, src), mode="rb"), kind
    if kind == "xz":
        return lzma.LZMAFile(cast(Any, src), mode="rb"), kind
    raise InvalidParameter("zstd-compressed layers are not supported: load an uncompressed or gzip docker-save tarball")
