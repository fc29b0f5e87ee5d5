"""System routes: `GET /_ping`, `GET /version`."""
from __future__ import annotations

import platform
import sys
from typing import Any

from aiohttp import web

from cnm.api.common import Route, json_response

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"


def version_info() -> dict:
    try:
        from importlib.metadata import version
        pkg_version = version("cnm")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        pkg_version = "0.0.0"
    return {
        "Version": pkg_version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": sys.platform,
        "Arch": platform.machine(),
        "KernelVersion": platform.release(),
        "PythonVersion": platform.python_version(),
        "Components": [{"Name": "cnm", "Version": pkg_version, "Details": {}}],
    }


def routes(controller: Any) -> list[Route]:
    info = version_info()

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION, "Cache-Control": "no-cache"})

    async def version(request: web.Request) -> web.Response:
        return json_response(info)

    return [
        Route("GET", "/_ping", ping),
        Route("HEAD", "/_ping", ping),
        Route("GET", "/version", version),
    ]
