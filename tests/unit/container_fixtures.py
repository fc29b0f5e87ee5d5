"""Fixtures shared by the container API and CLI tests: the real API server on a tmp
unix socket over a fake ContainerService whose runtime runs plain child processes."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from cnm.api import containers as container_routes
from cnm.api.server import make_app
from cnm.api.testing import FakeContainerService, FakeController, ServerThread, SubprocessRuntime


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="cnm-ct-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def service(workdir):
    runtime = SubprocessRuntime(workdir / "rt")
    svc = FakeContainerService(FakeController(), runtime)
    yield svc
    runtime.kill_all()


@pytest.fixture
def server(service, workdir):
    app = make_app(service.ctl, extra_routes=container_routes.routes(service))
    with ServerThread(app, workdir / "cnm.sock") as srv:
        yield srv
