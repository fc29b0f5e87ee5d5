"""Small file helpers of the image store: atomic writes, a tee, tree removal."""

from __future__ import annotations

import json
import os
import threading
from typing import BinaryIO

from cnm.images.digest import Reader
from cnm.rmtree import remove_tree


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
    """Delete a file or a tree, also one holding read-only directories (a layer's 0555
    dirs stop a non-root removal) or nested deeper than Python's recursion limit (an
    image's author chooses: shutil.rmtree raised RecursionError). Best effort."""
    remove_tree(path)
