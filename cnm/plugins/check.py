"""Conformance checker: drive a plugin through the protocol with throwaway IDs and
report every deviation (missing or mistyped fields, wrong status codes, error shapes).

Network: Activate → GetCapabilities → CreateNetwork → CreateEndpoint → EndpointOperInfo →
Join → Leave → DeleteEndpoint → DeleteNetwork, then error shapes (Join of an unknown
endpoint, an unknown method). IPAM: GetCapabilities → GetDefaultAddressSpaces →
RequestPool → RequestAddress (gateway, then any) → ReleaseAddress ×2 → ReleasePool, then
error shapes. Whatever was created is deleted again, even after a failed step.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import CNMError
from cnm.plugins import IPAM_DRIVER, NETWORK_DRIVER
from cnm.plugins.client import PluginClient

ERROR, WARNING = "error", "warning"
CHECK_SUBNET = "192.0.2.0/24"  # TEST-NET-1: never routed anywhere


@dataclass(frozen=True)
class Finding:
    step: str
    message: str
    severity: str = ERROR


@dataclass
class Report:
    plugin: str
    implements: list[str] = field(default_factory=list)
    steps: list[tuple[str, bool]] = field(default_factory=list)  # (step, passed)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def lines(self) -> list[str]:
        out = []
        for step, passed in self.steps:
            out.append(f"{'ok  ' if passed else 'FAIL'} {step}")
            for f in self.findings:
                if f.step == step:
                    out.append(f"       {'error' if f.severity == ERROR else 'warning'}: {f.message}")
        return out


def _is_cidr(v: Any) -> bool:
    try:
        ipaddress.ip_interface(v)
        return isinstance(v, str) and "/" in v
    except ValueError:
        return False


def _is_ip(v: Any) -> bool:
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


def _is_mac(v: Any) -> bool:
    parts = v.split(":") if isinstance(v, str) else []
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


class _Run:
    def __init__(self, client: PluginClient, report: Report) -> None:
        self.client, self.report = client, report
        self.last_status: int | None = None  # HTTP status of the last call (None: no answer)

    def flag(self, step: str, message: str, severity: str = ERROR) -> None:
        self.report.findings.append(Finding(step, message, severity))

    def call(self, step: str, method: str, body: Any, err_field: str) -> dict | None:
        """One call that must succeed; its JSON object, or None after flagging why."""
        n = len(self.report.findings)
        doc = self._call(step, method, body, err_field)
        self.report.steps.append((step, not any(f.severity == ERROR for f in self.report.findings[n:])))
        return doc

    def _call(self, step: str, method: str, body: Any, err_field: str) -> dict | None:
        self.last_status = None
        try:
            resp = self.client.raw(method, body)
        except CNMError as exc:
            self.flag(step, str(exc))
            return None
        self.last_status = resp.status
        try:
            doc = json.loads(resp.body) if resp.body.strip() else None
        except ValueError:
            doc = None
            self.flag(step, f"the answer is not JSON: {resp.body[:60]!r}")
        if resp.status != 200:
            msg = doc.get(err_field) if isinstance(doc, dict) else resp.body[:80].decode(errors="replace")
            self.flag(step, f"answered HTTP {resp.status}: {msg}")
            return None
        if doc is None and not resp.body.strip():
            self.flag(step, "empty body: answer at least {}")
            return {}
        if not isinstance(doc, dict):
            if doc is not None:
                self.flag(step, f"the answer must be a JSON object, got {type(doc).__name__}")
            return None
        if doc.get(err_field):
            self.flag(step, f"HTTP 200 carrying {err_field}: {doc[err_field]}")
            return None
        return doc

    def want(
        self,
        step: str,
        doc: dict,
        key: str,
        check: Callable[[Any], bool],
        what: str,
        *,
        required: bool = False,
        severity: str = ERROR,
    ) -> Any:
        if key not in doc or doc[key] is None:
            if required:
                self.flag(step, f"missing field {key} ({what})", severity)
            return None
        if not check(doc[key]):
            self.flag(step, f"field {key} must be {what}, got {doc[key]!r:.60}", severity)
            return None
        return doc[key]

    def error_shape(self, step: str, method: str, body: Any, err_field: str) -> None:
        """A call that must fail: non-200 with {err_field: "message"}."""
        try:
            resp = self.client.raw(method, body)
        except CNMError as exc:
            self.flag(step, str(exc))
            self.report.steps.append((step, False))
            return
        n = len(self.report.findings)
        if resp.status == 200:
            self.flag(step, "accepted a call about an object that does not exist", WARNING)
        else:
            try:
                doc = json.loads(resp.body)
            except ValueError:
                doc = None
            if not (isinstance(doc, dict) and isinstance(doc.get(err_field), str) and doc[err_field]):
                self.flag(
                    step,
                    f'an error answer must be a JSON object {{"{err_field}": "message"}}, '
                    f"got HTTP {resp.status} {resp.body[:60]!r}",
                )
        self.report.steps.append((step, not any(f.severity == ERROR for f in self.report.findings[n:])))


def check(client: PluginClient, *, subnet: str = CHECK_SUBNET) -> Report:
    """Run every check the plugin's Implements calls for. Never raises CNMError."""
    report = Report(client.name)
    run = _Run(client, report)
    doc = run.call("activate", "Plugin.Activate", None, "Err")
    if doc is None:
        return report
    impl = run.want(
        "activate",
        doc,
        "Implements",
        lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "a list of strings",
        required=True,
    )
    report.implements = list(impl or [])
    if impl is not None and not ({NETWORK_DRIVER, IPAM_DRIVER} & set(impl)):
        run.flag("activate", f"Implements {impl} names neither {NETWORK_DRIVER} nor {IPAM_DRIVER}")
    if NETWORK_DRIVER in report.implements:
        _check_network(run, subnet)
    if IPAM_DRIVER in report.implements:
        _check_ipam(run, subnet)
    return report


def _check_network(run: _Run, subnet: str) -> None:
    nd = f"{NETWORK_DRIVER}."
    net = ipaddress.ip_network(subnet)
    gw, addr = f"{net.network_address + 1}/{net.prefixlen}", f"{net.network_address + 2}/{net.prefixlen}"
    nid, eid = secrets.token_hex(32), secrets.token_hex(32)
    ids = {"NetworkID": nid, "EndpointID": eid}

    caps = run.call("capabilities", nd + "GetCapabilities", None, "Err")
    if caps is not None:
        run.want(
            "capabilities", caps, "Scope", lambda v: v in ("local", "global"), '"local" or "global"', required=True
        )
        run.want(
            "capabilities",
            caps,
            "ConnectivityScope",
            lambda v: v in ("", "local", "global"),
            '"local", "global" or empty',
        )
    created = (
        run.call(
            "create network",
            nd + "CreateNetwork",
            {
                "NetworkID": nid,
                "Options": {
                    "com.docker.network.generic": {},
                    "com.docker.network.enable_ipv6": False,
                    "com.docker.network.internal": False,
                },
                "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gw, "AuxAddresses": {}}],
                "IPv6Data": [],
            },
            "Err",
        )
        is not None
    )
    if not created:
        return
    ep = run.call(
        "create endpoint",
        nd + "CreateEndpoint",
        {**ids, "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}},
        "Err",
    )
    if ep is not None:
        iface = run.want("create endpoint", ep, "Interface", lambda v: isinstance(v, dict), "an object")
        if iface:
            if iface.get("Address"):
                run.flag(
                    "create endpoint",
                    "Interface.Address was set in the request: a driver may only "
                    "fill empty fields (Docker refuses the endpoint)",
                )
            run.want("create endpoint", iface, "AddressIPv6", lambda v: v == "" or _is_cidr(v), "a CIDR")
            run.want("create endpoint", iface, "MacAddress", lambda v: v == "" or _is_mac(v), "a MAC address")
        info = run.call("endpoint info", nd + "EndpointOperInfo", ids, "Err")
        if info is not None:
            run.want("endpoint info", info, "Value", lambda v: isinstance(v, dict), "an object")
        join = run.call(
            "join", nd + "Join", {**ids, "SandboxKey": f"/var/run/cnm-check/{nid[:12]}", "Options": {}}, "Err"
        )
        if join is not None:
            _check_join(run, join)
            run.call("leave", nd + "Leave", ids, "Err")
        run.call("delete endpoint", nd + "DeleteEndpoint", ids, "Err")
    run.error_shape(
        "error shape (Join of an unknown endpoint)",
        nd + "Join",
        {"NetworkID": nid, "EndpointID": secrets.token_hex(32), "SandboxKey": "/nonexistent", "Options": {}},
        "Err",
    )
    run.call("delete network", nd + "DeleteNetwork", {"NetworkID": nid}, "Err")
    _unknown_method(run, nd + "CnmCheckNoSuchMethod")


def _check_join(run: _Run, join: dict) -> None:
    step = "join"
    names = run.want(
        step, join, "InterfaceName", lambda v: isinstance(v, dict), "an object", required=True, severity=WARNING
    )
    if names is not None:
        run.want(
            step,
            names,
            "SrcName",
            lambda v: isinstance(v, str) and v != "",
            "the name of an interface in the host namespace",
            required=True,
        )
        run.want(
            step,
            names,
            "DstPrefix",
            lambda v: isinstance(v, str) and v != "",
            'a non-empty name prefix (e.g. "eth")',
            required=True,
            severity=WARNING,
        )
    run.want(step, join, "Gateway", lambda v: v == "" or (isinstance(v, str) and _is_ip(v)), "an IP address")
    run.want(step, join, "GatewayIPv6", lambda v: v == "" or (isinstance(v, str) and _is_ip(v)), "an IP address")
    run.want(step, join, "DisableGatewayService", lambda v: isinstance(v, bool), "a boolean")
    routes = run.want(step, join, "StaticRoutes", lambda v: isinstance(v, list), "a list")
    for i, r in enumerate(routes or []):
        if not isinstance(r, dict):
            run.flag(step, f"StaticRoutes[{i}] must be an object")
            continue
        where = f"StaticRoutes[{i}]."
        run.want(
            step,
            {where + k: v for k, v in r.items()},
            where + "Destination",
            lambda v: isinstance(v, str) and _is_cidr(v),
            "a CIDR",
            required=True,
        )
        kind = run.want(
            step,
            {where + k: v for k, v in r.items()},
            where + "RouteType",
            lambda v: v in (0, 1) and not isinstance(v, bool),
            "0 (next hop) or 1 (connected)",
            required=True,
        )
        if kind == 0 and not (isinstance(r.get("NextHop"), str) and _is_ip(r.get("NextHop"))):
            run.flag(step, f"{where}NextHop must be an IP address for RouteType 0")


def _unknown_method(run: _Run, method: str) -> None:
    step = "unknown method answers 404"
    try:
        resp = run.client.raw(method, {})
    except CNMError as exc:
        run.flag(step, str(exc))
    else:
        if resp.status == 200:
            run.flag(
                step,
                "an unknown method answered 200; it must fail (404: Docker then treats "
                "optional calls such as ProgramExternalConnectivity as not implemented)",
            )
        elif resp.status != 404:
            run.flag(step, f"an unknown method answered HTTP {resp.status}; 404 is expected", WARNING)
    run.report.steps.append((step, not any(f.step == step and f.severity == ERROR for f in run.report.findings)))


def _request_pool(run: _Run, ip: str, space: str, subnet: str) -> dict | None:
    """RequestPool letting the IPAM choose; an IPAM that refuses to choose (a clean
    4xx: some need the subnet, e.g. one shared by the hosts of a cluster) is asked
    again for `subnet`, with a warning instead of an error."""
    step = "ipam request pool"
    body = {"AddressSpace": space, "Pool": "", "SubPool": "", "Options": {}, "V6": False}
    n = len(run.report.findings)
    pool = run.call(step, ip + "RequestPool", body, "Error")
    refused = run.report.findings[n:]
    if pool is not None or len(refused) != 1 or not 400 <= (run.last_status or 0) < 500:
        return pool
    del run.report.findings[n:]
    run.report.steps.pop()
    run.flag(step, f"does not choose a pool itself ({refused[0].message}); checked with Pool {subnet}", WARNING)
    return run.call(step, ip + "RequestPool", {**body, "Pool": subnet}, "Error")


def _check_ipam(run: _Run, subnet: str = CHECK_SUBNET) -> None:
    ip = f"{IPAM_DRIVER}."
    caps = run.call("ipam capabilities", ip + "GetCapabilities", None, "Error")
    if caps is not None:
        for key in ("RequiresMACAddress", "RequiresRequestReplay"):
            run.want("ipam capabilities", caps, key, lambda v: isinstance(v, bool), "a boolean")
    spaces = run.call("ipam default address spaces", ip + "GetDefaultAddressSpaces", None, "Error")
    local = "LocalDefault"
    if spaces is not None:
        for key in ("LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"):
            run.want(
                "ipam default address spaces",
                spaces,
                key,
                lambda v: isinstance(v, str) and v != "",
                "a non-empty string",
                required=True,
            )
        local = spaces.get("LocalDefaultAddressSpace") or local
    pool = _request_pool(run, ip, local, subnet)
    if pool is None:
        return
    pool_id = run.want(
        "ipam request pool",
        pool,
        "PoolID",
        lambda v: isinstance(v, str) and v != "",
        "a non-empty string",
        required=True,
    )
    subnet = run.want(
        "ipam request pool",
        pool,
        "Pool",
        lambda v: isinstance(v, str) and _is_cidr(v) and ipaddress.ip_interface(v).version == 4,
        "an IPv4 CIDR",
        required=True,
    )
    run.want(
        "ipam request pool",
        pool,
        "Data",
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "an object of strings",
    )
    if pool_id is None:
        return
    got: list[str] = []
    for step, opts in (
        ("ipam request gateway address", {"RequestAddressType": "com.docker.network.gateway"}),
        ("ipam request address", {}),
    ):
        a = run.call(step, ip + "RequestAddress", {"PoolID": pool_id, "Address": "", "Options": opts}, "Error")
        if a is None:
            continue
        addr = run.want(
            step,
            a,
            "Address",
            lambda v: isinstance(v, str) and _is_cidr(v),
            "an address with prefix length",
            required=True,
        )
        if addr:
            if subnet and ipaddress.ip_interface(addr).ip not in ipaddress.ip_interface(subnet).network:
                run.flag(step, f"address {addr} is outside the pool {subnet}")
            if addr in got:
                run.flag(step, f"address {addr} was handed out twice")
            got.append(addr)
    for addr in got:
        run.call(
            "ipam release address", ip + "ReleaseAddress", {"PoolID": pool_id, "Address": addr.split("/")[0]}, "Error"
        )
    run.error_shape(
        "ipam error shape (RequestAddress of an unknown pool)",
        ip + "RequestAddress",
        {"PoolID": "cnm-check-no-such-pool", "Address": "", "Options": {}},
        "Error",
    )
    run.call("ipam release pool", ip + "ReleasePool", {"PoolID": pool_id}, "Error")
