"""A real Docker engine (Debian's docker.io: /usr/sbin/dockerd, /usr/bin/docker) inside a
network namespace the test made, for tests of our plugins under Docker itself.

    with docker_engine("cnmt-1234", plugin_dir) as eng:      # or DockerEngine(...).start()
        eng.docker("network", "create", "-d", "cnmbr", "n1")
        eng.docker("run", "-d", "--net", "n1", IMAGE, "sleep", "1000")

    eng = start_or_skip(ns, plugin_dir)      # in a fixture: a started engine, or a skip saying
    ...; eng.teardown()                      # why (dockerd missing, or its log when it fails)

Each engine lives in its own short temporary folder TMP (/tmp/cnmdk-XXXX: unix socket
paths must stay under 108 bytes and containerd nests them deep under the exec root):
data root, exec root, socket, pid file, log, config and a cgroup parent of its own. dockerd
runs in a private mount namespace (nothing it mounts is seen outside it) where

    TMP/plugins-or-the-given-dir  is bind-mounted over /run/docker/plugins  (plugin discovery)
    TMP/etc                       over /etc/docker       (no host daemon.json or key.json)
    TMP/empty                     over /run/containerd   (never a system containerd: its own)

and joins the given network namespace with `nsenter --net` (`ip netns exec` remounts /sys,
which hides the cgroup mounts; dockerd then fails with "Devices cgroup isn't mounted").
dockerd starts its own containerd under TMP/exec. Engines run side by side (each has its own
TMP, containerd, containerd namespace and cgroup parent); give each its own network
namespace and plugin dir, as two "hosts" joined by a veth pair would have.

teardown() removes every container, stops dockerd (SIGTERM, then SIGKILL), kills what is
left of the containerd, shims and container processes it started (found by pid ancestry,
by TMP in their command line and by its cgroup, never by name), unmounts anything under
TMP, removes its cgroups and deletes TMP. Nothing here touches the root network namespace.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # not /usr/local/bin/docker: the client must match the 20.10 engine
BUSYBOX = "/bin/busybox"  # busybox-static: the whole image is this one binary
IMAGE = "cnm-busybox"
APPLETS = ("sh", "ping", "ip", "sleep", "cat", "hostname", "nslookup", "ifconfig", "true", "wget")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# The mount namespace's set-up; the paths come in as "$@" so no quoting is needed.
_LAUNCH = r"""
set -e
plugins=$1 etc=$2 empty=$3 netns=$4; shift 4
mount --make-rprivate /
mount --bind "$plugins" /run/docker/plugins
if [ -d /etc/docker ]; then mount --bind "$etc" /etc/docker; fi
if [ -d /run/containerd ]; then mount --bind "$empty" /run/containerd; fi
exec nsenter --net="$netns" "$@"
"""


class DockerUnavailable(RuntimeError):
    """dockerd is not installed here, or cannot start here (the message says why)."""


def unavailable_reason() -> str | None:
    """Why a Docker engine cannot be tried on this machine at all, or None."""
    if os.geteuid() != 0:
        return "a Docker engine needs root"
    for path, pkg in ((DOCKERD, "docker.io"), (DOCKER, "docker.io"), (BUSYBOX, "busybox-static")):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian package {pkg}; scripts/setup.sh installs it)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux)"
    return None


_IMAGE_TAR: bytes | None = None


def image_tar() -> bytes:
    """The busybox image as a tar stream (built once per process): /bin/busybox and its
    applets as symlinks, plus the empty folders a container's mounts land on."""
    global _IMAGE_TAR
    if _IMAGE_TAR is None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(info)
        _IMAGE_TAR = buf.getvalue()
    return _IMAGE_TAR


# -- processes and mounts (by pid, by path: never by name) ------------------------------


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, start time, command line) for every process visible now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), fields[19], cmd)
    return table


def _descendants(table: dict[int, tuple[int, str, str]], roots: set[int]) -> set[int]:
    found, todo = set(), list(roots)
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == str(base) or target.startswith(prefix):
                out.append(target)
    return sorted(out, key=lambda t: t.count("/"), reverse=True)


class DockerEngine:
    """One dockerd (and its containerd) in network namespace `netns` (a name under
    /run/netns, or a path), discovering plugins in `plugin_dir` (default TMP/plugins)."""

    def __init__(
        self,
        netns: str,
        plugin_dir: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        base: str | os.PathLike | None = None,
        log_level: str = "info",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.netns = netns
        self.netns_path = netns if netns.startswith("/") else f"/run/netns/{netns}"
        self.name = name or f"cnmdk-{secrets.token_hex(3)}"
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="cnmdk-", dir="/tmp"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.plugin_dir = Path(plugin_dir) if plugin_dir else self.base / "plugins"
        self.sock = self.base / "docker.sock"
        self.log = self.base / "dockerd.log"
        self.pidfile = self.base / "dockerd.pid"
        self.exec_root = self.base / "exec"
        self.cgroup_parent = f"/{self.name}"
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self._started: set[tuple[int, str]] = set()  # (pid, start time) of dockerd's tree
        self._torn_down = False

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def __repr__(self) -> str:
        return f"<DockerEngine {self.name} netns={self.netns} base={self.base}>"

    # -- start ------------------------------------------------------------------------

    def argv(self) -> list[str]:
        return [
            DOCKERD,
            "--data-root",
            str(self.base / "data"),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "-H",
            self.host,
            "--config-file",
            str(self.base / "etc" / "daemon.json"),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
            "--storage-driver",
            "vfs",
            "--userland-proxy=false",
            "--cgroup-parent",
            self.cgroup_parent,
            "--log-level",
            self.log_level,
            "--containerd-namespace",
            self.name,
            "--containerd-plugins-namespace",
            f"{self.name}-plugins",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30, image: bool = True) -> DockerEngine:
        """Start dockerd, wait until it answers (else DockerUnavailable with its log's
        tail, after cleaning up), and import the busybox image as IMAGE."""
        reason = unavailable_reason()
        if reason:
            raise DockerUnavailable(reason)
        if not os.path.exists(self.netns_path):
            raise DockerUnavailable(f"no network namespace {self.netns_path}")
        for d in (self.plugin_dir, self.base / "etc", self.base / "empty", self.base / "cli"):
            d.mkdir(parents=True, exist_ok=True)
        (self.base / "etc" / "daemon.json").write_text("{}\n")
        os.makedirs("/run/docker/plugins", exist_ok=True)  # a mount point only
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    _LAUNCH,
                    "sh",
                    str(self.plugin_dir),
                    str(self.base / "etc"),
                    str(self.base / "empty"),
                    self.netns_path,
                    *self.argv(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env(),
            )
        try:
            self._wait(timeout)
            if image:
                self.import_image()
        except BaseException:
            self.teardown()
            raise
        return self

    def restart(self, timeout: float = 30) -> DockerEngine:
        """Stop dockerd with SIGTERM (it stops its containers, as on a host's service
        restart) and start it again on the same data; the image is kept."""
        if self.alive():
            self._remember_tree()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.start(timeout=timeout, image=False)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._remember_tree()
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited with status {self.proc.returncode}:\n{self.log_tail()}")
            if self.sock.exists():
                r = self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=5)
                if r.returncode == 0 and r.stdout.strip():
                    self._remember_tree()
                    return
            if time.monotonic() > deadline:
                raise DockerUnavailable(f"dockerd did not answer within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def import_image(self, name: str = IMAGE) -> None:
        r = subprocess.run(
            [DOCKER, "-H", self.host, "import", "-", name],
            input=image_tar(),
            capture_output=True,
            timeout=60,
            env=self._env(),
        )
        if r.returncode != 0:
            raise RuntimeError(f"docker import failed: {r.stderr.decode(errors='replace')}")

    # -- use --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.base / "cli")  # not root's ~/.docker
        return env

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """/usr/bin/docker -H <this engine> ARGS (text output). With check, a failure
        raises AssertionError carrying the command, its status and its output."""
        r = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=self._env(),
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def nsenter(self, *argv: str) -> list[str]:
        """argv entering this engine's network *and* mount namespaces. The SandboxKey
        Docker passes in Join (TMP/exec/netns/ID) is a bind mount that exists only in
        dockerd's private mount namespace: a plugin that opens it must run this way."""
        if not self.alive():
            raise RuntimeError(f"{self!r} is not running")
        return ["nsenter", f"--net={self.netns_path}", f"--mount=/proc/{self.proc.pid}/ns/mnt", *argv]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remove_all(self) -> None:
        """Remove every container and every network but Docker's own (none/host)."""
        if not self.alive():
            return
        ids = self.docker("ps", "-aq", check=False, timeout=20).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False, timeout=60)
        nets = self.docker("network", "ls", "-q", "--filter", "type=custom", check=False, timeout=20).stdout.split()
        if nets:
            self.docker("network", "rm", *nets, check=False, timeout=60)

    # -- stop -------------------------------------------------------------------------

    def _remember_tree(self) -> None:
        """Record dockerd's process tree (containerd, shims, containers) while it is known
        by ancestry: after dockerd dies its children are re-parented and lose that link."""
        if self.proc is None:
            return
        table = _proc_table()
        mine = {self.proc.pid} | _descendants(table, {self.proc.pid}) | self._by_path(table)
        self._started |= {(p, table[p][1]) for p in mine if p in table}

    def _by_path(self, table: dict[int, tuple[int, str, str]]) -> set[int]:
        """Processes whose command line names our exec root (containerd --config
        TMP/exec/…, shims -address TMP/exec/…), the processes in our cgroups, and their
        descendants. (Not all of TMP: a plugin serving from TMP/plugins is the caller's.)"""
        marker = str(self.exec_root) + "/"
        pids = {pid for pid, (_, _, cmd) in table.items() if marker in cmd and pid != os.getpid()}
        pids |= self._cgroup_pids()
        return pids | _descendants(table, pids)

    def _cgroups(self) -> list[Path]:
        """Our cgroup folders in every v1 hierarchy (and v2), deepest first."""
        found = []
        if CGROUP_ROOT.is_dir():
            name = self.cgroup_parent.strip("/")
            roots = [CGROUP_ROOT / name] + [h / name for h in CGROUP_ROOT.iterdir() if h.is_dir()]
            for root in roots:
                if root.is_dir():
                    found += [Path(dp) for dp, _, _ in os.walk(root)]
        return sorted(set(found), key=lambda p: len(p.parts), reverse=True)

    def _cgroup_pids(self) -> set[int]:
        pids = set()
        for cg in self._cgroups():
            try:
                pids |= {int(p) for p in (cg / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return pids

    def _leftovers(self) -> set[int]:
        """Live processes that are ours: recorded ones (same pid *and* start time, so a
        reused pid is never hit) and any found now by path or cgroup."""
        self_pid = os.getpid()
        table = _proc_table()
        live = {pid for pid, start in self._started if pid in table and table[pid][1] == start}
        live |= self._by_path(table)
        live |= _descendants(table, live)
        return {p for p in live if p != self_pid and p in table}

    def teardown(self, timeout: float = 20) -> None:
        """Remove containers, stop dockerd and everything it started, unmount, remove its
        cgroups, delete TMP. Idempotent; raises RuntimeError (after doing all it can) only
        when something of ours survived."""
        if self._torn_down:
            return
        self._torn_down = True
        problems = []
        if self.alive():
            self._remember_tree()
            try:
                ids = self.docker("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("docker rm -f timed out")
            self._remember_tree()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"dockerd ignored SIGTERM for {timeout:g}s; killed")
                self.proc.kill()
                self.proc.wait(10)
        elif self.proc is not None:
            self.proc.wait(5)
        # containerd stops with dockerd; give it a moment, then kill whatever is left
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            for pid in self._leftovers() if sig else ():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 2
            while self._leftovers() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self._leftovers():
            problems.append(f"processes survived SIGKILL: {sorted(self._leftovers())}")
        for target in _mounts_under(self.base):
            subprocess.run(["umount", "-R", "-l", target], capture_output=True)
        for cg in self._cgroups():
            try:
                cg.rmdir()
            except OSError as exc:
                problems.append(f"cgroup {cg}: {exc}")
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            problems.append(f"{self.base} could not be removed")
        if problems:
            raise RuntimeError(f"{self!r} teardown: " + "; ".join(problems))

    def __enter__(self) -> DockerEngine:
        return self if self.alive() else self.start()

    def __exit__(self, *exc) -> None:
        self.teardown()


@contextmanager
def docker_engine(
    netns: str, plugin_dir: str | os.PathLike | None = None, *, timeout: float = 30, image: bool = True, **kw
) -> Iterator[DockerEngine]:
    """A started engine for the `with` block; torn down after it, whatever happens."""
    engine = DockerEngine(netns, plugin_dir, **kw)
    engine.start(timeout=timeout, image=image)
    try:
        yield engine
    finally:
        engine.teardown()


# -- for pytest fixtures ----------------------------------------------------------------


def skip(reason: str) -> None:
    """pytest.skip saying why, also as a warning (pytest's warnings summary shows it
    without -rs); with CNM_REQUIRE_DOCKER=1 (a CI that installs docker.io) pytest.fail."""
    import pytest

    if os.environ.get("CNM_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker engine required (CNM_REQUIRE_DOCKER=1): {reason}")
    warnings.warn(f"Docker engine tests skipped: {reason}", UserWarning, stacklevel=2)
    pytest.skip(f"Docker engine tests: {reason}")


def skip_unless_available() -> None:
    """Skip now if dockerd cannot even be tried here (before making namespaces for it)."""
    reason = unavailable_reason()
    if reason:
        skip(reason)


def start_or_skip(
    netns: str, plugin_dir: str | os.PathLike | None = None, *, timeout: float = 30, **kw
) -> DockerEngine:
    """A started engine, or a skip carrying dockerd's own reason (its log's tail).
    The caller tears it down."""
    skip_unless_available()
    engine = DockerEngine(netns, plugin_dir, **kw)
    try:
        return engine.start(timeout=timeout)
    except DockerUnavailable as exc:
        skip(f"dockerd cannot start here: {exc}")
        raise  # not reached
