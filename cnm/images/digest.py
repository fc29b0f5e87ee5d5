"""Content digests and Docker's layer identities (pure).

- a *diff ID* is the sha256 of a layer's uncompressed tar;
- a *chain ID* names a layer together with everything below it (moby layer/layer.go):
  ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
  Two images share a stored layer exactly when they share its chain ID;
- an *image ID* is the sha256 of the image's config JSON, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Protocol

from cnm.errors import InvalidParameter

SHA256 = "sha256"
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def of_bytes(data: bytes) -> str:
    return f"{SHA256}:{hashlib.sha256(data).hexdigest()}"


def check(digest: object, what: str = "digest") -> str:
    """A `sha256:<64 lowercase hex>` string, or InvalidParameter naming `what`."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidParameter(f"invalid {what} {digest!r}: expected sha256:<64 hex digits>")
    return digest


def hex_of(digest: str) -> str:
    return check(digest).split(":", 1)[1]


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of every layer prefix, bottom first."""
    out: list[str] = []
    for diff in diff_ids:
        check(diff, "diff ID")
        out.append(diff if not out else of_bytes(f"{out[-1]} {diff}".encode()))
    return out


class Reader(Protocol):
    """Anything with read(n) -> bytes: files, HTTP bodies, decompressors, HashingReader."""

    def read(self, n: int = -1, /) -> bytes: ...


class HashingReader:
    """A read-only file object that hashes (and counts) every byte read through it."""

    def __init__(self, raw: Reader, limit: int | None = None, what: str = "input", hashing: bool = True) -> None:
        self.raw = raw
        self.hash = hashlib.sha256() if hashing else None
        self.count = 0
        self.limit = limit
        self.what = what

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.count += len(data)
            if self.limit is not None and self.count > self.limit:
                raise InvalidParameter(f"{self.what} is larger than the limit of {self.limit} bytes")
            if self.hash is not None:
                self.hash.update(data)
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read to the end: a digest covers every byte, trailing padding included."""
        while self.read(chunk):
            pass

    def digest(self) -> str:
        assert self.hash is not None, "a counting-only reader has no digest"
        return f"{SHA256}:{self.hash.hexdigest()}"
