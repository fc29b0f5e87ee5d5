"""overlayfs mount options for a container's root. Pure; cheap to import (the
supervisor imports it): os.path only.

The legacy mount(2) takes at most one page of options. An image's lower directories
are absolute paths under the daemon's root, which can be long (a lab's host root), so
with many layers they are given relative to their common directory and the mount runs
there (Docker's overlay2 does the same with its short `l/` links).
"""

from __future__ import annotations

import os

MOUNT_OPTIONS_MAX = 4096 - 1
_RELATIVE_AFTER = 1024  # bytes of lowerdir= before relative paths are worth a chdir


def overlay_lowerdir(lowers: list[str]) -> tuple[str, str]:
    """(directory to mount from, the lowerdir= value). Lower dirs topmost first."""
    joined = ":".join(lowers)
    if len(lowers) < 2 or len(joined) <= _RELATIVE_AFTER:
        return "/", joined
    base = os.path.commonpath(lowers)
    if base == "/":
        return "/", joined
    return base, ":".join(os.path.relpath(p, base) for p in lowers)


def overlay_options(lowers: list[str], upper: str, work: str) -> tuple[str, str]:
    """(directory to mount from, the whole option string); ValueError if it cannot fit."""
    cwd, lowerdir = overlay_lowerdir(lowers)
    data = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if len(data) > MOUNT_OPTIONS_MAX:
        raise ValueError(
            f"too many layers for one overlay mount: the options take {len(data)} bytes (at most {MOUNT_OPTIONS_MAX})"
        )
    return cwd, data
