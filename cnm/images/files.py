"""Small file helpers of the image store: atomic writes, a tee, tree removal."""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO

from cnm.images.digest import Reader


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Tee:
    """Reads from `src`, copying every byte to `copy` (an import keeps its blob)."""

    def __init__(self, src: Reader, copy: BinaryIO) -> None:
        self.src = src
        self.copy = copy

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        if data:
            self.copy.write(data)
        return data


def remove(path: str) -> None:
    """Delete a file or a tree, also one holding read-only directories (a layer's
    0555 dirs stop a non-root rmtree)."""
    def writable_retry(func: Callable[[str], object], p: str, _exc: object) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            func(p)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=writable_retry)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
