"""Run etcd members (Debian's `etcd-server`, /usr/bin/etcd) as plain processes.

Used by the integration tests and the lab tool: each member is one `etcd` process,
optionally inside a network namespace (`ip netns exec NS etcd …`; `ip` execs etcd,
so the pid we hold is etcd's own). Flags are tuned for a lab on one machine: fast
heartbeats and elections, a small backend quota, no auto-compaction (so a watcher
never loses history behind its back), and a short watch progress interval so idle
watch streams carry a heartbeat.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cnm.errors import InvalidParameter, Unavailable
from cnm.osl.netns import netns_path, run_in_netns
from cnm.osl.proc import stop

ETCD_BINARY = "/usr/bin/etcd"
DEFAULT_TOKEN = "cnm-etcd"

# Tuning for members on one machine. Heartbeat and election timeout are per member
# (EtcdMember.heartbeat_ms/election_ms): 50/500 ms settles elections in well under a
# second for tests; a lab on a loaded machine asks for more (a lab file's
# cluster_store.heartbeat/election), or heartbeats that wait for a core cost elections.
HEARTBEAT_MS, ELECTION_MS = 50, 500
TUNING: tuple[str, ...] = (
    "--quota-backend-bytes",
    str(256 * 1024 * 1024),
    "--auto-compaction-retention",
    "0",
    "--max-txn-ops",
    "1024",
    "--snapshot-count",
    "10000",
    "--experimental-watch-progress-notify-interval",
    "5s",
    "--logger",
    "zap",
    "--log-outputs",
    "stderr",
)


def etcd_binary() -> str:
    """Path of the etcd executable, or Unavailable saying what to install."""
    path = shutil.which("etcd") or (ETCD_BINARY if os.path.exists(ETCD_BINARY) else None)
    if path is None:
        raise Unavailable("etcd is not installed: apt-get install etcd-server")
    return path


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise InvalidParameter(f"{what} {url!r} must look like http://HOST:PORT")


@dataclass
class EtcdMember:
    """One etcd member. `initial_cluster` maps every member's name to its peer URL
    (this member included). start() is idempotent while the process runs; a member
    restarted on an existing data dir rejoins with its old identity."""

    name: str
    data_dir: str | Path
    client_url: str
    peer_url: str
    initial_cluster: Mapping[str, str]
    netns: str | None = None
    log_path: str | Path | None = None  # default: <data_dir>.log
    token: str = DEFAULT_TOKEN
    extra_args: Sequence[str] = ()
    heartbeat_ms: int = HEARTBEAT_MS
    election_ms: int = ELECTION_MS
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_url(self.client_url, "etcd client URL")
        _check_url(self.peer_url, "etcd peer URL")
        if self.name not in self.initial_cluster:
            raise InvalidParameter(f"etcd member {self.name} is missing from its initial cluster")
        self.data_dir = Path(self.data_dir)
        self.log_path = Path(self.log_path) if self.log_path else self.data_dir.with_suffix(".log")

    # --- pure -------------------------------------------------------------------

    def argv(self) -> list[str]:
        """The command line, `ip netns exec` included when netns is set."""
        cluster = ",".join(f"{n}={u}" for n, u in self.initial_cluster.items())
        argv = [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            *TUNING,
            *self.extra_args,
        ]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    # --- process ----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def log_file(self) -> Path:
        return Path(self.log_path or Path(self.data_dir).with_suffix(".log"))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to be healthy."""
        if self.running:
            return
        Path(self.data_dir).parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "ab") as log:
            # Own session: a Ctrl-C in the test runner or lab shell does not reach etcd.
            self._proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self, timeout: float = 15.0) -> EtcdMember:
        """Start and return once /health says true (a single member, or a member
        of a cluster that already has quorum). Raises Unavailable with the log tail."""
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def health(self, timeout: float = 1.0) -> bool:
        """True when this member answers /health with health=true."""

        def probe() -> bool:
            try:
                with urllib.request.urlopen(self.client_url.rstrip("/") + "/health", timeout=timeout) as resp:
                    return json.loads(resp.read() or b"{}").get("health") == "true"
            except (OSError, ValueError, urllib.error.URLError):
                return False

        if self.netns is None:
            return probe()
        return run_in_netns(netns_path(self.netns), probe)

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise Unavailable(f"etcd member {self.name} exited with {code}: {self.log_tail()}")
            if self.health(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return
            time.sleep(0.05)
        raise Unavailable(
            f"etcd member {self.name} not healthy at {self.client_url} after {timeout:g}s: {self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code. Idempotent."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL now (a crash). Idempotent."""
        return self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: int, timeout: float) -> int | None:
        return stop(self._proc, sig, timeout)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.strip().splitlines()[-lines:]
        return "\n".join(tail) if tail else "(empty log)"


def make_members(
    names_hosts: Sequence[tuple[str, str]],
    base_dir: str | Path,
    *,
    client_port: int = 2379,
    peer_port: int = 2380,
    netns: Mapping[str, str | None] | None = None,
    token: str = DEFAULT_TOKEN,
    heartbeat_ms: int = HEARTBEAT_MS,
    election_ms: int = ELECTION_MS,
) -> list[EtcdMember]:
    """Members for (name, host address) pairs: client on host:client_port, peers on
    host:peer_port, data under base_dir/<name>, log at base_dir/<name>.log. Several
    members on one address need distinct ports: give them distinct hosts, or build
    EtcdMember objects yourself."""
    base = Path(base_dir)
    cluster = {name: f"http://{host}:{peer_port}" for name, host in names_hosts}
    return [
        EtcdMember(
            name=name,
            data_dir=base / name,
            client_url=f"http://{host}:{client_port}",
            peer_url=cluster[name],
            initial_cluster=cluster,
            netns=(netns or {}).get(name),
            token=token,
            heartbeat_ms=heartbeat_ms,
            election_ms=election_ms,
        )
        for name, host in names_hosts
    ]


def start_cluster(members: Sequence[EtcdMember], timeout: float = 20.0) -> list[EtcdMember]:
    """Start all members, then wait until each is healthy (a member reports healthy
    only once the cluster has a leader, so they must all be spawned first). On
    failure every member started here is stopped and Unavailable is raised."""
    try:
        for m in members:
            m.spawn()
        deadline = time.monotonic() + timeout
        for m in members:
            m.wait_healthy(max(0.5, deadline - time.monotonic()))
    except BaseException:
        for m in members:
            m.stop()
        raise
    return list(members)


def client_endpoints(members: Sequence[EtcdMember]) -> list[str]:
    """The members' client URLs, for EtcdStore(endpoints=...)."""
    return [m.client_url for m in members]


def cluster_store_url(members: Sequence[EtcdMember]) -> str:
    """The daemon's --cluster-store value for these members: etcd://h:p,h:p."""
    return "etcd://" + ",".join(urlsplit(m.client_url).netloc for m in members)
