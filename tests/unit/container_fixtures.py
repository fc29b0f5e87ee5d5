"""Fixtures shared by the container API and CLI tests: the real API server on a tmp
unix socket over the real ContainerService (and controller, sandboxes, IPAM, bridge
driver) of a FakeHost: fakes only at the OS seam and a runtime of plain child
processes (no namespaces, no root) — real output, exit codes and signals."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from cnm.api.testing import ServerThread
from tests.unit.fakehost import FakeHost


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="cnm-ct-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host(workdir):
    h = FakeHost(workdir / "host")
    yield h
    h.close()


@pytest.fixture
def service(host):
    return host.containers


@pytest.fixture
def server(host, workdir):
    with ServerThread(host.app(), workdir / "cnm.sock") as srv:
        host.start_watching(srv.loop)
        yield srv
