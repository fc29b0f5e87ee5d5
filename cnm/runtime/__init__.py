"""The minimal container runtime: namespaced processes under a per-container supervisor.

    spec.ContainerSpec     what to run (pure data, JSON round trip); spec.ExecSpec: an exec
    runtime.Runtime        create/start/run/state/list/adopt/wait/stop/kill/remove/exit_fd
    runtime_io             …and attach/resize/exec/logs/stats/pids (a mixin of Runtime)
    state.ContainerState   what `state()` answers
    session.Session        a connection to a supervisor (attach, exec, start_attached)
    wire                   the frames between supervisors and clients, the log's records
    logs                   reading a container's log (tail, since, until, lines)
    stats                  one-shot usage from cgroups (or /proc)
    relay                  the supervisor's I/O loop; prexec: fork-to-exec steps; users: --user
    exec_shim              the exec supervisor; teardown: ending and removing by identity
    template.Template      the daemon's side of the template process that forks supervisors
    template_main          the template process itself (`python -I -S`, pre-imported, gc-frozen)
    shim                   the supervisor, forked from the template; and the container's pre-exec
    cgroups                v1/v2 detection, per-container cgroups and limits
    linux                  the syscall seam (ctypes: unshare, setns, mount, pivot_root)
    files                  the container directory's layout

Names are loaded lazily: the template imports this package and must not pay for
dataclasses, json or subprocess (whatever it imports, every supervisor shares).
"""

from __future__ import annotations

_LAZY = {
    "ContainerSpec": "cnm.runtime.spec",
    "ExecSpec": "cnm.runtime.spec",
    "ContainerState": "cnm.runtime.state",
    "Runtime": "cnm.runtime.runtime",
    "Session": "cnm.runtime.session",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cnm.runtime' has no attribute {name!r}")
    import importlib  # (start-up: the package's names load only when asked for)

    return getattr(importlib.import_module(mod), name)
