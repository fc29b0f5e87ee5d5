"""Fixtures shared by the unit tests: pytest finds them here, so a test names them as
parameters without importing them (an import would shadow them, and linters say so)."""

from tests.unit.container_fixtures import host, server, service, workdir

__all__ = ["host", "server", "service", "workdir"]
