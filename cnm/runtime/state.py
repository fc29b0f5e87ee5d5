"""ContainerState and how it is read back from a container's directory.

`derive()` is pure: it takes the parsed files and whether the shim is alive, so every
case (running, exited, shim lost, start never finished) is unit-tested without root.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from cnm.runtime import files, linux

CREATED = "created"
RUNNING = "running"
EXITED = "exited"


@dataclass(frozen=True)
class ContainerState:
    id: str
    status: str  # created | running | exited
    pid: int | None = None  # the container's PID 1, as seen from the host
    shim_pid: int | None = None
    exit_code: int | None = None
    started_at: str | None = None  # RFC 3339, UTC
    finished_at: str | None = None
    error: str | None = None  # why the exit code is synthetic (a lost shim), if it is
    pid_start: int | None = None  # the container PID 1's start time: (pid, pid_start) names it for good

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DirFiles:
    """What a container's directory says, parsed; None for a missing file."""

    shim: tuple[int, int, str | None] | None  # (pid, start time, boot id) from shim.pid
    started: dict | None  # state.json
    exited: dict | None  # exit.json
    fenced: bool = False  # shim.pid exists and is empty: a start was given up; none may claim it


def read_dir(cdir: str) -> DirFiles:
    """Parse the state files of one container directory (missing or torn files = None;
    the shim renames files into place, so a torn file is only ever a crash leftover)."""

    def load(name: str) -> dict | None:
        try:
            with open(os.path.join(cdir, name)) as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    shim = None
    fenced = False
    try:
        with open(os.path.join(cdir, files.SHIM_PID)) as f:
            text = f.read()
        fenced = not text
        shim = files.parse_pid_file(text)
    except (FileNotFoundError, ValueError):
        pass
    return DirFiles(shim=shim, started=load(files.STATE), exited=load(files.EXIT), fenced=fenced)


def derive(cid: str, d: DirFiles, shim_alive: bool) -> ContainerState:
    """The state a directory describes.

    exit.json present                  -> exited with its code
    state.json, shim alive             -> running
    state.json, shim gone, no exit.json-> exited, LOST_EXIT_CODE (137): the shim was
                                          killed; the container died with it (pdeathsig)
    no state.json                      -> created (a start in progress, or one that
                                          crashed half-way if the shim is gone)
    """
    started = d.started or {}
    pid = started.get("pid")
    pid_start = started.get("pid_start")
    shim_pid = started.get("shim_pid") or (d.shim[0] if d.shim else None)
    if d.exited is not None:
        return ContainerState(
            cid,
            EXITED,
            pid,
            shim_pid,
            d.exited.get("exit_code"),
            started.get("started_at"),
            d.exited.get("finished_at"),
            d.exited.get("error"),
            pid_start,
        )
    if d.started is not None:
        if shim_alive:
            return ContainerState(cid, RUNNING, pid, shim_pid, None, started.get("started_at"), pid_start=pid_start)
        return ContainerState(
            cid,
            EXITED,
            pid,
            shim_pid,
            files.LOST_EXIT_CODE,
            started.get("started_at"),
            None,
            "supervisor died without recording the exit status",
            pid_start,
        )
    if d.fenced:
        return ContainerState(cid, CREATED, error="its last start never finished (timed out): remove it")
    return ContainerState(cid, CREATED, None, shim_pid)


def supervisor_ident(d: DirFiles) -> tuple[int, int] | None:
    """(pid, start time) of the supervisor a directory names: its claim (shim.pid), or
    state.json's record (directories from before claims)."""
    if d.shim is not None:
        return d.shim[0], d.shim[1]
    started = d.started or {}
    if isinstance(started.get("shim_pid"), int) and isinstance(started.get("shim_start"), int):
        return started["shim_pid"], started["shim_start"]
    return None


def supervisor_alive(d: DirFiles, boot_id: str) -> bool:
    """Is the supervisor `d` names running? Checked by pid, start time, name and boot id
    (a state directory that survived a reboot names processes of another boot)."""
    if d.shim is not None and d.shim[2] is not None and d.shim[2] != boot_id:
        return False
    ident = supervisor_ident(d)
    return ident is not None and linux.is_alive(ident[0], ident[1], files.SHIM_COMM)
