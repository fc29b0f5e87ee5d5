"""Our side of the container benchmarks: a daemon in a throwaway namespace
(cnm.demo.DemoHost) driven by the `net` CLI and by a raw HTTP client, and the process
figures of it and its containers' supervisors (found through the runtime's own state,
never by name: other helpers' daemons run here too)."""

from __future__ import annotations

import os
import statistics
import time

from bench.docker_side import proc_stat, smaps
from cnm.demo import DemoHost


class OursSide:
    def __init__(self, host: DemoHost) -> None:
        from cnm.api.transport import UnixSocketTransport

        self.host = host
        self.sock = str(host.sock)
        self._api = UnixSocketTransport(self.sock)

    def cli(self, *args: str) -> float:
        """Seconds a `net` command takes; exits the benchmark if it fails."""
        t = time.perf_counter()
        r = self.host.net(*args, quiet=True)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"bench: net {' '.join(args)} failed: {r.stderr.strip()}")
        return dt

    def out(self, *args: str) -> str:
        r = self.host.net(*args, quiet=True)
        if r.returncode != 0:
            raise SystemExit(f"bench: net {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def api(self, method: str, path: str, body: dict | None = None) -> float:
        """Seconds one raw API request takes (a new connection, as the CLI makes)."""
        t = time.perf_counter()
        status, _, data = self._api.request(method, path, body)
        dt = time.perf_counter() - t
        if status >= 300:
            raise SystemExit(f"bench: {method} {path}: HTTP {status}: {data[:300]!r}")
        return dt

    # -- processes --------------------------------------------------------------------

    @property
    def daemon_pid(self) -> int:
        return self.host.proc.pid  # `ip netns exec` execs the daemon in place

    @property
    def state_dir(self) -> str:
        return str(self.host.dir / "run" / "containers")

    def supervisor_pids(self) -> list[int]:
        from cnm.runtime import Runtime

        return [st.shim_pid for st in Runtime(self.state_dir).list() if st.status == "running" and st.shim_pid]

    def template_pids(self) -> list[int]:
        """The daemon's supervisor template (its child named cnm-template): the
        supervisors share its pages, so its PSS counts with theirs."""
        out = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            st = proc_stat(int(entry))
            try:
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if st and st[0] == self.daemon_pid and comm == "cnm-template":
                out.append(int(entry))
        return out

    def memory(self) -> dict:
        """PSS (kB) of the daemon, each supervisor and the template, while they run."""
        sups = [s for s in (smaps(p) for p in self.supervisor_pids()) if s]
        tmpl = sum(smaps(p).get("Pss", 0) for p in self.template_pids())
        sup_pss = sum(s["Pss"] for s in sups)
        return {
            "supervisors": len(sups),
            "supervisor_pss_kb": sup_pss,
            "template_pss_kb": tmpl,
            "pss_each_kb": statistics.median(s["Pss"] for s in sups) if sups else 0,
            "private_dirty_each_kb": statistics.median(s.get("Private_Dirty", 0) for s in sups) if sups else 0,
            "per_container_kb": (sup_pss + tmpl) / max(1, len(sups)),
            "daemon_pss_kb": smaps(self.daemon_pid).get("Pss", 0),
            "daemon_rss_kb": smaps(self.daemon_pid).get("Rss", 0),
        }

    def remove_all(self) -> float:
        """`net container rm -f` of every container, 50 a call; seconds taken."""
        t = time.perf_counter()
        ids = self.out("ps", "-aq").split()
        for chunk in range(0, len(ids), 50):
            self.cli("container", "rm", "-f", *ids[chunk : chunk + 50])
        return time.perf_counter() - t
