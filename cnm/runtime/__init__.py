"""The minimal container runtime: namespaced processes under a per-container supervisor.

    spec.ContainerSpec     what to run (pure data, JSON round trip)
    runtime.Runtime        start/state/list/wait/stop/kill/remove/exec_argv/adopt/exit_fd
    state.ContainerState   what `state()` answers
    shim                   the supervisor process (`python -I -S` + cnm.runtime.shim)
    cgroups                v1/v2 detection, per-container cgroups and limits
    linux                  the syscall seam (ctypes: unshare, setns, mount, pivot_root)
    files                  the container directory's layout

Names are loaded lazily: the shim imports this package and must not pay for
dataclasses, json or subprocess at start-up.
"""
from __future__ import annotations

_LAZY = {
    "ContainerSpec": "cnm.runtime.spec",
    "ContainerState": "cnm.runtime.state",
    "Runtime": "cnm.runtime.runtime",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cnm.runtime' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(mod), name)
