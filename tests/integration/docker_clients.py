"""Docker's own clients pointed at our daemon: the docker CLI (Debian's 20.10 at
/usr/bin/docker, and a newer one at /usr/local/bin/docker where present), docker-py (a
test dependency) and docker-compose (Debian's 1.29).

    cli = DockerCLI(DOCKER_20, daemon.host)
    cli("network", "create", "n1")             # CompletedProcess; raises on failure
    cli("network", "rm", "n1", check=False)

Each client gets its own empty DOCKER_CONFIG folder (no contexts, credentials or
plugins of the machine's user reach it) and talks only to the daemon's socket.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Daemon, sh

DOCKER_20 = "/usr/bin/docker"  # Debian's docker.io (API 1.41)
DOCKER_NEW = "/usr/local/bin/docker"  # a newer CLI (28: API 1.50, negotiates down)
COMPOSE = "/usr/bin/docker-compose"  # Debian's docker-compose 1.29 (docker-py 5 inside)
BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"  # busybox:latest, built by scripts/setup.sh


def available_clis() -> list[str]:
    return [p for p in (DOCKER_20, DOCKER_NEW) if os.access(p, os.X_OK)]


def cli_params() -> list:
    """pytest params: one per docker CLI; a missing one is a skip that says so."""
    out = []
    for path in (DOCKER_20, DOCKER_NEW):
        marks = [] if os.access(path, os.X_OK) else [pytest.mark.skip(reason=f"{path} is not installed")]
        out.append(pytest.param(path, id="docker20" if path == DOCKER_20 else "docker-new", marks=marks))
    return out


def cli_version(path: str) -> str:
    r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    return r.stdout.split("version")[1].split(",")[0].strip() if "version" in r.stdout else "?"


@dataclass
class DockerCLI:
    path: str
    host: str
    config_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cnm-dcfg-"))
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": self.config_dir, "DOCKER_CLI_HINTS": "false"})
        env.update(self.env)
        env.update(extra)
        return env

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [self.path, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=self.environ(**(env or {})),
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{self.path} {' '.join(args)} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
        return r

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([self.path, *args], env=self.environ(), **kwargs)

    def json(self, *args: str) -> object:
        return json.loads(self(*args).stdout)

    def lines(self, *args: str) -> list[str]:
        return [line for line in self(*args).stdout.splitlines() if line.strip()]

    def close(self) -> None:
        shutil.rmtree(self.config_dir, ignore_errors=True)


def docker_py(host: str, version: str | None = None):
    """docker-py's high-level client on the daemon's socket (API version negotiated, as
    `docker.from_env()` does)."""
    docker = pytest.importorskip("docker", reason="docker-py is a test dependency: pip install -e '.[test]'")
    return docker.DockerClient(base_url=host, version=version or "auto", timeout=60)


def compose_or_skip() -> str:
    if not os.access(COMPOSE, os.X_OK):
        pytest.skip(f"{COMPOSE} is not installed (Debian package docker-compose; scripts/setup.sh installs it)")
    return COMPOSE


def error_line(r: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error (its last stderr line; a newer CLI's closing "exit
    status N" after a multi-object command is not it)."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("exit status ")]
    return lines[-1] if lines else ""


def short_tmp(prefix: str) -> Path:
    # AF_UNIX paths are limited to 108 bytes: keep daemon folders short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextmanager
def module_daemon(prefix: str) -> Iterator[Daemon]:
    """A daemon in a network namespace of its own, for a whole test module (the docker
    clients' tests share one: each test names its objects uniquely and removes them)."""
    ns = f"{prefix}-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    base = short_tmp(prefix + "-")
    d = Daemon(ns=ns, root=base / "root", run_dir=base / "run", sock=base / "run" / "cnm.sock", log=base / "daemon.log")
    try:
        d.start()
        # Docker's clients name an image: the set-up's busybox:latest (scripts/setup.sh).
        d.net("image", "load", "-q", "-i", str(BUSYBOX_TAR))
        yield d
    finally:
        d.teardown()
        sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(base, ignore_errors=True)


# Fixtures for a module with a module-scoped `daemon` (module_daemon) that Docker's
# clients drive; the module takes them by name: `dpy = docker_clients.dpy_fixture`.


@pytest.fixture(name="dpy", scope="module")
def dpy_fixture(daemon: Daemon) -> Iterator:
    """docker-py on the module's daemon, closed after the module."""
    client = docker_py(daemon.host)
    yield client
    client.close()


@pytest.fixture(name="cli", params=cli_params())
def cli_fixture(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[DockerCLI]:
    """Each docker CLI (20.10 and the newer one; a missing one is a skip) on the module's
    daemon, with a config folder of its own."""
    c = DockerCLI(request.param, daemon.host)
    yield c
    c.close()


def run_container(dpy, name: str, cmd: list[str], **kw):
    """A container made and started through docker-py (create, then start if create left
    it created: until the lifecycle lands, create also starts)."""
    ct = dpy.containers.create("busybox", cmd, name=name, **kw)
    ct.reload()
    if ct.status == "created":
        ct.start()
    return ct


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
