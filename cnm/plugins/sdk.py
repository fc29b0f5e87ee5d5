"""Write a Docker network or IPAM plugin in a few methods.

    class MyDriver(NetworkPlugin):
        def create_endpoint(self, network_id, endpoint_id, iface, options): ...
        def join(self, network_id, endpoint_id, sandbox_key, options):
            return JoinResult(src_ifname="veth0", gateway="10.0.0.1")

    serve(MyDriver(), name="mydriver")          # /run/docker/plugins/mydriver.sock

Arguments and answers are plain Python (the cnm.driverapi / cnm.ipamapi dataclasses);
the SDK handles activation, field names, Docker's rules (CreateEndpoint answers only
fields that were empty in the request) and errors: raise a cnm.errors class to choose
the status (InvalidParameter 400, NotFound 404, Conflict 409, Forbidden 403, anything
else 500); the message goes back as {"Err": ...} ({"Error": ...} for IPAM). Every
method has a do-nothing default. Standard library only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

from cnm import labels
from cnm.driverapi import EndpointInterface, IPAMData, JoinResult, StaticRoute
from cnm.errors import CNMError, InternalError, InvalidParameter, NotFound
from cnm.ipamapi import GLOBAL_DEFAULT, LOCAL_DEFAULT, Pool
from cnm.plugins import IPAM_DRIVER, NETWORK_DRIVER
from cnm.plugins.discovery import DEFAULT_DIRS, check_name
from cnm.plugins.server import QuietHandler, UnixHTTPServer
from cnm.statedirs import trusted_parent

__all__ = [
    "NetworkPlugin",
    "IpamPlugin",
    "EndpointInterface",
    "IPAMData",
    "JoinResult",
    "Pool",
    "StaticRoute",
    "make_server",
    "serve",
]

log = logging.getLogger(__name__)
GENERIC = labels.GENERIC
_IFACE = (("Address", "address"), ("AddressIPv6", "address_v6"), ("MacAddress", "mac"))


def ipam_data(raw: Any) -> list[IPAMData]:
    out = []
    for d in raw or []:
        out.append(
            IPAMData(
                pool=d.get("Pool", ""),
                gateway=d.get("Gateway") or None,
                aux_addresses=dict(d.get("AuxAddresses") or {}),
                address_space=d.get("AddressSpace", ""),
            )
        )
    return out


class NetworkPlugin:
    """Override what your driver needs. Calls may arrive concurrently (one thread each)."""

    scope = "local"  # "global": networks are known to every host of a cluster
    connectivity_scope = ""  # "" = same as scope

    def create_network(
        self, network_id: str, options: dict[str, str], ipv4: list[IPAMData], ipv6: list[IPAMData]
    ) -> None:
        """`options` are the -o options. The full request is on_create_network's `body`."""

    def on_create_network(self, body: Mapping[str, Any]) -> None:
        """Raw hook: the whole CreateNetwork request (Options also carries
        com.docker.network.enable_ipv6 and com.docker.network.internal)."""
        opts = body.get("Options") or {}
        self.create_network(
            body["NetworkID"],
            dict(opts.get(GENERIC) or {}),
            ipam_data(body.get("IPv4Data")),
            ipam_data(body.get("IPv6Data")),
        )

    def delete_network(self, network_id: str) -> None: ...

    def allocate_network(
        self, network_id: str, options: dict[str, str], ipv4: list[IPAMData], ipv6: list[IPAMData]
    ) -> dict[str, str]:
        return {}

    def free_network(self, network_id: str) -> None: ...

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: dict[str, Any]
    ) -> EndpointInterface | None:
        """Return the interface with the fields you filled (only empty ones may be filled)."""
        return None

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None: ...

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict[str, Any]:
        return {}

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: dict[str, Any]) -> JoinResult:
        """Name the host interface the core moves into the sandbox."""
        raise NotFound(f"{type(self).__name__} does not implement join")

    def leave(self, network_id: str, endpoint_id: str) -> None: ...

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: dict[str, Any]) -> None: ...

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None: ...

    def discover_new(self, discovery_type: int, data: dict[str, Any]) -> None: ...

    def discover_delete(self, discovery_type: int, data: dict[str, Any]) -> None: ...


class IpamPlugin:
    """Same signatures as cnm.ipamapi.Ipam (an Ipam object can be served as is)."""

    requires_mac_address = False
    requires_request_replay = False

    def default_address_spaces(self) -> tuple[str, str]:
        return LOCAL_DEFAULT, GLOBAL_DEFAULT

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        raise InvalidParameter(f"{type(self).__name__} does not hand out pools")

    def release_pool(self, pool_id: str) -> None: ...

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        raise InvalidParameter(f"{type(self).__name__} does not hand out addresses")

    def release_address(self, pool_id: str, address: str) -> None: ...


# -- wire mapping (pure) ------------------------------------------------------------------


def join_answer(result: JoinResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.src_ifname:
        out["InterfaceName"] = {"SrcName": result.src_ifname, "DstPrefix": result.dst_prefix or "eth"}
    out["Gateway"] = result.gateway or ""
    out["GatewayIPv6"] = result.gateway_v6 or ""
    out["StaticRoutes"] = [
        {"Destination": r.destination, "RouteType": r.route_type, "NextHop": r.next_hop or ""}
        for r in result.static_routes
    ]
    out["DisableGatewayService"] = bool(result.disable_gateway_service)
    return out


def interface_answer(asked: EndpointInterface, got: EndpointInterface | None) -> dict[str, Any]:
    """Only fields empty in the request; changing a set field is the driver's bug."""
    if got is None:
        return {}
    iface: dict[str, str] = {}
    for wire, attr in _IFACE:
        before, after = getattr(asked, attr), getattr(got, attr)
        if before and after and after != before:
            raise InternalError(
                f"driver changed Interface.{wire} from {before} to {after}; only empty fields may be filled"
            )
        if after and not before:
            iface[wire] = after
    return {"Interface": iface} if iface else {}


def _done(step: Callable[[dict], object]) -> Callable[[dict], dict]:
    """A route that runs `step` and answers `{}` (the protocol's "done, nothing to say")."""

    def route(body: dict) -> dict:
        step(body)
        return {}

    return route


def network_routes(p: NetworkPlugin) -> dict[str, Callable[[dict], dict]]:
    def create_endpoint(b: dict) -> dict:
        raw = b.get("Interface") or {}
        asked = EndpointInterface(
            raw.get("Address") or None, raw.get("AddressIPv6") or None, raw.get("MacAddress") or None
        )
        got = p.create_endpoint(b["NetworkID"], b["EndpointID"], asked, dict(b.get("Options") or {}))
        return interface_answer(asked, got)

    def caps(b: dict) -> dict:
        return {"Scope": p.scope, "ConnectivityScope": p.connectivity_scope or p.scope}

    def allocate(b: dict) -> dict:
        return {
            "Options": p.allocate_network(
                b["NetworkID"], dict(b.get("Options") or {}), ipam_data(b.get("IPv4Data")), ipam_data(b.get("IPv6Data"))
            )
        }

    return {
        "GetCapabilities": caps,
        "CreateNetwork": _done(lambda b: p.on_create_network(b)),
        "DeleteNetwork": _done(lambda b: p.delete_network(b["NetworkID"])),
        "AllocateNetwork": allocate,
        "FreeNetwork": _done(lambda b: p.free_network(b["NetworkID"])),
        "CreateEndpoint": create_endpoint,
        "DeleteEndpoint": _done(lambda b: p.delete_endpoint(b["NetworkID"], b["EndpointID"])),
        "EndpointOperInfo": lambda b: {"Value": p.endpoint_info(b["NetworkID"], b["EndpointID"]) or {}},
        "Join": lambda b: join_answer(
            p.join(b["NetworkID"], b["EndpointID"], b.get("SandboxKey", ""), dict(b.get("Options") or {}))
        ),
        "Leave": _done(lambda b: p.leave(b["NetworkID"], b["EndpointID"])),
        "ProgramExternalConnectivity": _done(
            lambda b: p.program_external_connectivity(b["NetworkID"], b["EndpointID"], dict(b.get("Options") or {}))
        ),
        "RevokeExternalConnectivity": _done(lambda b: p.revoke_external_connectivity(b["NetworkID"], b["EndpointID"])),
        "DiscoverNew": _done(
            lambda b: p.discover_new(int(b.get("DiscoveryType", 0)), dict(b.get("DiscoveryData") or {}))
        ),
        "DiscoverDelete": _done(
            lambda b: p.discover_delete(int(b.get("DiscoveryType", 0)), dict(b.get("DiscoveryData") or {}))
        ),
    }


def ipam_routes(p: Any) -> dict[str, Callable[[dict], dict]]:
    def request_pool(b: dict) -> dict:
        if not b.get("Pool") and b.get("SubPool"):
            raise InvalidParameter("SubPool needs a Pool")
        got = p.request_pool(
            b.get("AddressSpace", ""),
            b.get("Pool") or None,
            b.get("SubPool") or None,
            dict(b.get("Options") or {}),
            bool(b.get("V6")),
        )
        return {"PoolID": got.pool_id, "Pool": got.subnet, "Data": dict(got.data)}

    def spaces(b: dict) -> dict:
        local, glob = p.default_address_spaces()
        return {"LocalDefaultAddressSpace": local, "GlobalDefaultAddressSpace": glob}

    return {
        "GetCapabilities": lambda b: {
            "RequiresMACAddress": bool(getattr(p, "requires_mac_address", False)),
            "RequiresRequestReplay": bool(getattr(p, "requires_request_replay", False)),
        },
        "GetDefaultAddressSpaces": spaces,
        "RequestPool": request_pool,
        "ReleasePool": _done(lambda b: p.release_pool(b["PoolID"])),
        "RequestAddress": lambda b: {
            "Address": p.request_address(b["PoolID"], b.get("Address") or None, dict(b.get("Options") or {})),
            "Data": {},
        },
        "ReleaseAddress": _done(lambda b: p.release_address(b["PoolID"], b["Address"])),
    }


_NEEDS = {
    "NetworkID": (
        "DeleteNetwork",
        "CreateNetwork",
        "AllocateNetwork",
        "FreeNetwork",
        "CreateEndpoint",
        "DeleteEndpoint",
        "EndpointOperInfo",
        "Join",
        "Leave",
        "ProgramExternalConnectivity",
        "RevokeExternalConnectivity",
    ),
    "EndpointID": (
        "CreateEndpoint",
        "DeleteEndpoint",
        "EndpointOperInfo",
        "Join",
        "Leave",
        "ProgramExternalConnectivity",
        "RevokeExternalConnectivity",
    ),
    "PoolID": ("ReleasePool", "RequestAddress", "ReleaseAddress"),
    "Address": ("ReleaseAddress",),
}


def missing_field(path: str, doc: Mapping[str, Any]) -> str | None:
    """The first required request field absent from `doc` (checked before the plugin runs,
    so a KeyError inside a plugin is not mistaken for a bad request)."""
    method = path.rsplit(".", 1)[-1]
    for key, methods in _NEEDS.items():
        if method in methods and key not in doc:
            return key
    return None


def error_body(field: str, message: str) -> dict[str, str]:
    """The error answer. IPAM errors carry "Err" too: the protocol names "Error", but
    Docker's plugin client reads only "Err" from a non-200 answer and would show the
    user the raw JSON otherwise."""
    return {field: message, "Err": message} if field == "Error" else {field: message}


class Dispatcher:
    """Path -> handler, plus Docker's error shapes. Pure apart from the plugin's calls."""

    def __init__(self, network: NetworkPlugin | None = None, ipam: Any = None) -> None:
        self.routes: dict[str, tuple[str, Callable[[dict], dict]]] = {}
        self.implements: list[str] = []
        if network is not None:
            self.implements.append(NETWORK_DRIVER)
            for m, fn in network_routes(network).items():
                self.routes[f"/{NETWORK_DRIVER}.{m}"] = ("Err", fn)
        if ipam is not None:
            self.implements.append(IPAM_DRIVER)
            for m, fn in ipam_routes(ipam).items():
                self.routes[f"/{IPAM_DRIVER}.{m}"] = ("Error", fn)

    def handle(self, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/Plugin.Activate":
            return 200, {"Implements": list(self.implements)}
        route = self.routes.get(path)
        err = "Error" if path.startswith(f"/{IPAM_DRIVER}.") else "Err"
        if route is None:
            return 404, error_body(err, f"{path.lstrip('/')} is not implemented by this plugin")
        err, fn = route
        try:
            doc = json.loads(body) if body.strip() else {}
            if not isinstance(doc, dict):
                raise InvalidParameter("the request body must be a JSON object")
        except ValueError:
            return 400, error_body(err, "the request body is not JSON")
        missing = missing_field(path, doc)
        if missing:
            return 400, error_body(err, f"the request lacks field {missing}")
        try:
            return 200, fn(doc)
        except CNMError as exc:
            return exc.status, error_body(err, exc.message)
        except Exception as exc:  # a plugin bug: answer it, keep serving
            log.exception("plugin call %s failed", path)
            return 500, error_body(err, f"{type(exc).__name__}: {exc}")


def make_server(
    network: NetworkPlugin | None = None, ipam: Any = None, *, name: str, plugin_dir: str = DEFAULT_DIRS[0]
) -> UnixHTTPServer:
    """A server on <plugin_dir>/<name>.sock (not yet serving: call .start() or
    .serve_forever(); .close() removes the socket)."""
    check_name(name)
    if network is None and ipam is None:
        raise InvalidParameter("serve a NetworkPlugin, an IpamPlugin, or both")
    dispatcher = Dispatcher(network, ipam)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            status, doc = dispatcher.handle(self.path, self.read_body())
            self.send_json_bytes(status, json.dumps(doc).encode())

    return UnixHTTPServer(os.path.join(plugin_dir, f"{name}.sock"), Handler)


def serve(
    network: NetworkPlugin | None = None,
    ipam: Any = None,
    *,
    name: str,
    plugin_dir: str = DEFAULT_DIRS[0],
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then remove the socket."""
    if isinstance(network, IpamPlugin) and ipam is None:
        network, ipam = None, network
    # A socket in a folder another user can change could be swapped under Docker.
    trusted_parent(os.path.join(plugin_dir, f"{name}.sock"), "--plugin-dir", mode=0o755)
    server = make_server(network, ipam, name=name, plugin_dir=plugin_dir).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready:
        ready(server.path)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
