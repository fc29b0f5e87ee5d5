"""Network routes of Docker's Engine API, on top of the controller."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from cnm.api.common import Route, blocking, json_response, parse_body
from cnm.api.filters import NETWORK_PRUNE_FILTERS, Filters, labels_selected, network_matches, parse_filters, until_nanos
from cnm.api.timestamps import rfc3339_to_nanos
from cnm.model import Network
from cnm.render import network_json
from cnm.requests import NetworkCreate


class NetworkController(Protocol):
    """The part of `cnm.controller.Controller` these routes use. Synchronous and
    thread-safe: routes call it from a thread pool."""

    def create_network(self, req: NetworkCreate) -> Network:
        """Create the network (IPAM, driver, store) or roll back; Conflict on a taken name."""

    def list_networks(self) -> list[Network]:
        """Every network, builtin ones included."""

    def get_network(self, ref: str) -> Network:
        """By name, full id or unique id prefix. NotFound; InvalidParameter if ambiguous."""

    def delete_network(self, ref: str) -> None:
        """Remove the network; Forbidden for builtin ones, Conflict while it has endpoints."""

    def prune_networks(self, select: Callable[[Network], bool] = ...) -> list[str]:
        """Remove every unused custom network `select` accepts; returns the names removed."""

    def network_containers(self, network_id: str) -> dict[str, dict]:
        """Endpoint data keyed by container id: {"Name", "EndpointID", "MacAddress",
        "IPv4Address", "IPv6Address"}."""


def prune_selector(filters: Filters, now: datetime.datetime | None = None) -> Callable[[Network], bool]:
    """Docker's network prune filters: `label`/`label!` (KEY or KEY=VALUE) and `until`
    (only networks created before it). Parsed here, so bad input fails before anything
    is removed."""
    until = until_nanos(filters, now or datetime.datetime.now().astimezone())

    def select(net: Network) -> bool:
        if not labels_selected(filters, net.labels):
            return False
        created = rfc3339_to_nanos(net.created)
        return until is None or (created is not None and created <= until)

    return select


def routes(controller: NetworkController) -> list[Route]:
    async def list_(request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"))

        def load() -> list[dict]:
            nets = controller.list_networks()
            if "dangling" in filters:  # only then is each network's use looked up
                return [
                    network_json(n)
                    for n in nets
                    if network_matches(n, filters, in_use=bool(controller.network_containers(n.id)))
                ]
            return [network_json(n) for n in nets if network_matches(n, filters)]

        return json_response(await blocking(request, load))

    async def inspect(request: web.Request) -> web.Response:
        ref = request.match_info["ref"]

        def load() -> dict:
            net = controller.get_network(ref)
            return network_json(net, controller.network_containers(net.id))

        return json_response(await blocking(request, load))

    async def create(request: web.Request) -> web.Response:
        req = await parse_body(request, NetworkCreate.from_docker_json)
        net = await blocking(request, controller.create_network, req)
        return json_response({"Id": net.id, "Warning": ""}, status=201)

    async def delete(request: web.Request) -> web.Response:
        await blocking(request, controller.delete_network, request.match_info["ref"])
        return web.Response(status=204)

    async def prune(request: web.Request) -> web.Response:
        select = prune_selector(parse_filters(request.query.get("filters"), NETWORK_PRUNE_FILTERS))
        names = await blocking(request, controller.prune_networks, select)
        return json_response({"NetworksDeleted": list(names)})

    return [
        Route("GET", "/networks", list_),
        Route("POST", "/networks/create", create),
        Route("POST", "/networks/prune", prune),
        Route("GET", "/networks/{ref}", inspect),
        Route("DELETE", "/networks/{ref}", delete),
    ]
