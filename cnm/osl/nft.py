"""The one seam to `nft`: apply a rendered script atomically, delete our tables, read
the ruleset back. Runs in the calling process's network namespace (the daemon runs
inside its own); `netns` (a name under /run/netns or a path) is for tests and labs.

`apply` in the process's own namespace goes through libnftables in-process (ctypes,
one context per process, behind a lock): ~0.25 ms of CPU, where running the `nft`
binary costs ~5 ms (fork, exec, its start-up) and ~18 ms of wall time. That matters
where rules change often: the overlay's VXLAN filter is rewritten on every new VTEP
(a 100-host lab: ~10,000 times). The binary remains the fallback (no libnftables,
a thread inside another namespace, `netns=`) and reads rulesets back.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
from typing import Any

from cnm.errors import InternalError, InvalidParameter
from cnm.osl.proc import run

NFT = "nft"
_OURS = re.compile(r"^cnm[A-Za-z0-9_\-]*$")
_FAMILIES = {"ip", "ip6", "inet", "bridge", "arp", "netdev"}


def _ns_path(netns: str | None) -> str | None:
    if netns is None:
        return None
    return netns if "/" in netns else os.path.join("/run/netns", netns)


def apply(script: str, netns: str | None = None) -> None:
    """Run the script as `nft -f -` would: one transaction, all or nothing.
    Raises InternalError carrying nft's message when the kernel or nft refuses it."""
    done = _LIB.run(script) if netns is None else None
    if done is not None:
        code, detail = done
    else:
        cp = run([NFT, "-f", "-"], input=script, netns=_ns_path(netns), check=False)
        code, detail = cp.returncode, (cp.stderr or cp.stdout).strip()
    if code != 0:
        raise InternalError(f"nft refused the firewall ruleset: {detail or f'exit {code}'}")


class _Libnftables:
    """libnftables in this process, for its own network namespace. run() -> (rc,
    error text), or None when it cannot serve the call (no library; the calling
    thread is in another namespace than the context's socket; a new process after a
    fork): the caller runs the binary instead."""

    SONAME = "libnftables.so.1"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: Any = None
        self._ctx: int | None = None
        self._owner: tuple[int, int] | None = None  # (pid, netns inode) the context serves
        self._missing = False

    def _load(self) -> Any:
        lib = ctypes.CDLL(self.SONAME)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        return lib

    def run(self, script: str) -> tuple[int, str] | None:
        if self._missing:
            return None
        try:
            here = (os.getpid(), os.stat("/proc/thread-self/ns/net").st_ino)
            main = os.stat(f"/proc/{here[0]}/ns/net").st_ino
        except OSError:
            return None
        if here[1] != main:
            return None  # a thread inside a sandbox or overlay namespace
        with self._lock:
            if self._owner != here:
                try:
                    self._lib = self._lib or self._load()
                except OSError:
                    self._missing = True
                    return None
                # A context inherited across fork() belongs to the parent: leak it rather
                # than free memory the parent's copy may still describe.
                self._ctx = self._lib.nft_ctx_new(0)
                if not self._ctx:
                    return None
                self._lib.nft_ctx_buffer_output(self._ctx)
                self._lib.nft_ctx_buffer_error(self._ctx)
                self._owner = here
            self._lib.nft_ctx_get_error_buffer(self._ctx)  # reading empties it
            code = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace").strip()
            self._lib.nft_ctx_get_output_buffer(self._ctx)
            return (1 if code else 0), error

    def load(self) -> None:
        """Load the library now (a process that forks daemons: they share it)."""
        with self._lock:
            try:
                self._lib = self._lib or self._load()
            except OSError:
                self._missing = True


_LIB = _Libnftables()
preload = _LIB.load


def delete_tables(tables: list[tuple[str, str]] | tuple[tuple[str, str], ...], netns: str | None = None) -> None:
    """Delete the given (family, name) tables in one transaction. Idempotent: each
    table is created first if missing. Only tables named cnm* are accepted."""
    lines = []
    for family, name in tables:
        if family not in _FAMILIES or not _OURS.match(name):
            raise InvalidParameter(f"refusing to delete table {family} {name}: not one of ours (cnm*)")
        lines += [f"table {family} {name}", f"delete table {family} {name}"]
    if lines:
        apply("\n".join(lines) + "\n", netns)


def list_ruleset_json(netns: str | None = None) -> dict:
    """`nft -j list ruleset`, parsed. For tests and diagnostics."""
    cp = run([NFT, "-j", "list", "ruleset"], netns=_ns_path(netns))
    try:
        return json.loads(cp.stdout or '{"nftables": []}')
    except ValueError as exc:
        raise InternalError(f"nft printed unparsable JSON: {exc}") from exc


def list_tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every table in the namespace."""
    items = list_ruleset_json(netns).get("nftables", [])
    return [(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i]
