"""API version negotiation as Docker's daemon does it.

Every route is served as `/path` and `/v{version}/path`. A version above ours is
refused ("client version 1.99 is too new. Maximum supported API version is 1.43"),
one below the minimum too, both as 400; every answer carries the `Api-Version`,
`Ostype` and `Server` headers, which Docker's CLI reads (from `/_ping`) to pick the
version it speaks.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from aiohttp import web

from cnm.errors import InvalidParameter

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"
VERSION_KEY = "api_version"  # the route's match_info key (see cnm.api.server)


def parse_version(text: str) -> tuple[int, ...]:
    """ "1.43" -> (1, 43). Docker compares versions numerically part by part; a part
    that is not a number counts as 0, as in Docker's versions.compare."""
    # ASCII digits only, and not more than fit a 64-bit int (Go's Atoi fails beyond
    # that, giving 0); Python's int() would take "٤٣" and fail on 5,000 digits.
    return tuple(int(p) if p.isascii() and p.isdigit() and len(p) <= 18 else 0 for p in text.split("."))


def compare(a: str, b: str) -> int:
    """-1, 0 or 1, like Docker's versions.compare (missing parts are 0)."""
    pa, pb = parse_version(a), parse_version(b)
    width = max(len(pa), len(pb))
    pa, pb = pa + (0,) * (width - len(pa)), pb + (0,) * (width - len(pb))
    return (pa > pb) - (pa < pb)


def check_version(requested: str | None) -> str:
    """The API version a request speaks (ours when the path has none); InvalidParameter
    with Docker's own words when it is out of range."""
    if not requested:
        return API_VERSION
    if compare(requested, MIN_API_VERSION) < 0:
        raise InvalidParameter(
            f"client version {requested} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if compare(requested, API_VERSION) > 0:
        raise InvalidParameter(f"client version {requested} is too new. Maximum supported API version is {API_VERSION}")
    return requested


def package_version() -> str:
    """This installation's version (`docker version`'s Version), "0.0.0" from a checkout."""
    try:
        return importlib.metadata.version("cnm")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def server_headers() -> dict[str, str]:
    return {"Api-Version": API_VERSION, "Ostype": "linux", "Server": f"cnm/{package_version()} (linux)"}


@web.middleware
async def version_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuses a path's version out of range before the handler runs (inside the error
    middleware, so the refusal is Docker's JSON error)."""
    version = request.match_info.get(VERSION_KEY, "")
    check_version(version[1:] if version.startswith("v") else version)
    return await handler(request)


def add_headers(headers: dict[str, str]) -> Any:
    """An `on_response_prepare` hook: `headers` on every answer, streamed and error
    ones included (they are sent before the handler's first write)."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)

    return hook
