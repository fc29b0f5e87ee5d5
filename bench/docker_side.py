"""Docker's side of the container benchmarks (bench/containers.py, bench/supervisors.py):
a private dockerd (Debian's docker.io, 20.10: its own containerd, data and exec roots,
--bridge=none --iptables=false, vfs storage) in a throwaway network namespace, with two
user networks of Docker's built-in bridge driver, and the process figures the
benchmarks read (RSS/PSS, CPU) — found by pid and by this engine's paths, never by name.
Everything it made is removed on leaving it: errors, Ctrl-C and SIGTERM too."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time


class DockerUnusable(Exception):
    """Docker cannot be measured here; the message says why (for the fallback's label)."""


def smaps(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup (Rss, Pss, Private_Dirty, …); {} if gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return out


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds user+system) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_s(pids: list[int]) -> float:
    return sum(st[1] for p in pids if (st := proc_stat(p)))


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores; not idle, not iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class DockerSide:
    """A private dockerd in a throwaway network namespace, with two user networks of
    Docker's built-in bridge driver (bnet 10.88.0.0/16, bnet2 10.89.0.0/16). A context
    manager: leaving it (error, Ctrl-C, SIGTERM) tears the engine down and deletes the
    namespace."""

    def __init__(self) -> None:
        self.ns = f"cnmbench-dk-{secrets.token_hex(3)}"
        self.engine = None
        self.ns_made = False

    def __enter__(self) -> DockerSide:
        from tests.integration.dockerd import DockerEngine, DockerUnavailable, unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise DockerUnusable(reason)
        try:
            subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
            self.ns_made = True
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, capture_output=True)
            self.engine = DockerEngine(self.ns)
            try:
                self.engine.start()
            except DockerUnavailable as exc:
                raise DockerUnusable(f"dockerd cannot start here: {exc}") from None
            # Under --iptables=false the bridge driver skips its NAT/isolation chains (nothing
            # here needs them: the benchmark never leaves the namespace); the embedded DNS
            # still sets its DNAT rules, inside each container's own namespace.
            for name, subnet in (("bnet", "10.88.0.0/16"), ("bnet2", "10.89.0.0/16")):
                r = self.docker("network", "create", "-d", "bridge", "--subnet", subnet, name, check=False)
                if r.returncode != 0:
                    raise DockerUnusable(
                        f"Docker's built-in bridge driver cannot be used here "
                        f"(--bridge=none --iptables=false): {r.stderr.strip()}"
                    )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # Not to be cut short by a second Ctrl-C: half a teardown leaks a dockerd.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.engine is not None:
                try:
                    self.engine.teardown()
                except RuntimeError as err:
                    print(f"bench: {err}", file=sys.stderr)
            if self.ns_made:
                subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
                self.ns_made = False
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.engine.docker(*args, check=check, timeout=timeout)

    def timed(self, *args: str) -> float:
        t = time.perf_counter()
        self.docker(*args)
        return time.perf_counter() - t

    @property
    def sock(self) -> str:
        return str(self.engine.sock)

    @property
    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    @property
    def image(self) -> str:
        from tests.integration.dockerd import IMAGE

        return IMAGE

    @property
    def client(self) -> str:
        from tests.integration.dockerd import DOCKER

        return DOCKER

    # -- processes --------------------------------------------------------------------

    def dockerd_pid(self) -> int:
        # unshare and sh exec in place, nsenter --net too: the Popen pid is dockerd's.
        return self.engine.proc.pid

    def containerd_pid(self) -> int | None:
        marker = f"--config {self.engine.exec_root}/"
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = proc_stat(int(entry))
                if st and st[0] == self.dockerd_pid() and marker in cmdline(int(entry)):
                    return int(entry)
        return None

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 of this engine (one per container; they daemonize, so
        found by the containerd address in their command line, not by ancestry)."""
        marker = f"-address {self.engine.exec_root}/"
        return [
            int(e)
            for e in os.listdir("/proc")
            if e.isdigit() and "containerd-shim" in (c := cmdline(int(e))) and marker in c
        ]

    def remove_all(self) -> float:
        """`docker rm -f` of every container, 50 a call; seconds taken."""
        t = time.perf_counter()
        ids = self.docker("ps", "-aq").stdout.split()
        for chunk in range(0, len(ids), 50):
            self.docker("rm", "-f", *ids[chunk : chunk + 50], timeout=300)
        return time.perf_counter() - t
