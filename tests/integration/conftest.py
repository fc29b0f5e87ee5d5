"""Integration fixtures: every test gets its own throwaway network namespace (a fake
"host"), temporary state directories, and — when asked — a daemon running inside that
namespace. Nothing here touches the machine's root network namespace."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnm.osl.proc import stop

ROOT = Path(__file__).resolve().parents[2]
NET = str(Path(sys.executable).parent / "net")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (network namespaces); run as root")
        for item in items:
            item.add_marker(skip)
    for item in items:
        item.add_marker(pytest.mark.integration)


def sh(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout, input=input)


def ns_sh(ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def link_names(ns: str) -> set[str]:
    out = sh("ip", "-n", ns, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def host_ns():
    """A fresh network namespace standing in for a host; removed afterwards."""
    name = f"cnmt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@dataclass
class Daemon:
    ns: str
    root: Path
    run_dir: Path
    sock: Path
    log: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 20) -> Daemon:
        logf = open(self.log, "ab")
        argv = [
            "ip",
            "netns",
            "exec",
            self.ns,
            NET,
            "daemon",
            "--root",
            str(self.root),
            "--run-dir",
            str(self.run_dir),
            "--socket",
            str(self.sock),
            "--log-level",
            "debug",
            *self.args,
        ]
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.sock.exists() and self.net("ls", "-q", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def teardown(self) -> None:
        """Stop the daemon and every container it started (containers outlive their
        daemon by design, so a test must remove them itself)."""
        self.stop()
        from cnm.runtime.runtime import remove_all

        remove_all(str(self.run_dir / "containers"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        return stop(self.proc, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def net(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the `net` CLI against this daemon (from the test's own namespace: the
        socket is a file, so the CLI need not enter the host namespace)."""
        r = subprocess.run([NET, "-H", self.host, *args], capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"net {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r


@pytest.fixture
def make_daemon(host_ns, tmp_path):
    """Factory: make_daemon(*extra_args) -> a started daemon in host_ns. Stopped afterwards."""
    started: list[Daemon] = []

    def make(*args: str, ns: str | None = None, start: bool = True) -> Daemon:
        base = tmp_path / f"d{len(started)}"
        d = Daemon(
            ns=ns or host_ns,
            root=base / "root",
            run_dir=base / "run",
            sock=base / "run" / "cnm.sock",
            log=base / "daemon.log",
            args=args,
        )
        base.mkdir(parents=True, exist_ok=True)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.teardown()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()
