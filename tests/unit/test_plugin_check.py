"""`net plugin check`: passes good plugins, flags a deliberately broken one."""

from __future__ import annotations

import json

from cnm.cli.testing import invoke
from cnm.osl.fake import FakeNetlink
from cnm.plugins.check import check
from cnm.plugins.client import PluginClient
from cnm.plugins.discovery import PluginSpec
from cnm.plugins.sdk import JoinResult, NetworkPlugin, make_server
from cnm.plugins.serve import DriverPlugin, IpamAdapter
from cnm.plugins.server import QuietHandler, UnixHTTPServer
from cnm.plugins.testing import FakePlugin
from cnm.store.memory import MemoryStore
from drivers.bridge import BridgeDriver
from ipam.default import DefaultIpam


class Broken(QuietHandler):
    """A plugin with many protocol bugs (standard library, no SDK)."""

    ANSWERS = {
        "/Plugin.Activate": (200, {"Implements": ["NetworkDriver", "IpamDriver"]}),
        "/NetworkDriver.GetCapabilities": (200, {"Scope": "universe"}),
        "/NetworkDriver.CreateNetwork": (200, {}),
        "/NetworkDriver.CreateEndpoint": (200, {"Interface": {"Address": "192.0.2.99/24", "MacAddress": "not-a-mac"}}),
        "/NetworkDriver.EndpointOperInfo": (200, {"Value": "running"}),
        "/NetworkDriver.Join": (
            200,
            {
                "InterfaceName": {"SrcName": 42, "DstPrefix": "eth"},
                "Gateway": "192.0.2.1/24",
                "StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": "1"}],
            },
        ),
        "/NetworkDriver.Leave": (200, {}),
        "/NetworkDriver.DeleteEndpoint": (500, {"Error": "wrong error field for a network driver"}),
        "/NetworkDriver.DeleteNetwork": (200, []),
        "/IpamDriver.GetCapabilities": (200, {}),
        "/IpamDriver.GetDefaultAddressSpaces": (200, {"LocalDefaultAddressSpace": "L"}),
        "/IpamDriver.RequestPool": (200, {"PoolID": "p", "Pool": "10.5.0.0/24"}),
        "/IpamDriver.RequestAddress": (200, {"Address": "10.5.0.2"}),
        "/IpamDriver.ReleaseAddress": (200, {}),
        "/IpamDriver.ReleasePool": (200, {}),
    }

    def do_POST(self) -> None:
        self.read_body()
        status, doc = self.ANSWERS.get(self.path, (200, {}))  # even unknown methods "succeed"
        self.send_json_bytes(status, json.dumps(doc).encode())


class Good(NetworkPlugin):
    def __init__(self) -> None:
        self.eps: set[str] = set()

    def create_endpoint(self, network_id, endpoint_id, iface, options):
        self.eps.add(endpoint_id)

    def join(self, network_id, endpoint_id, sandbox_key, options):
        if endpoint_id not in self.eps:
            raise KeyError(endpoint_id)  # a plugin bug still gets Docker's error shape
        return JoinResult("veth0", "eth", gateway="192.0.2.1")


def client(path, name) -> PluginClient:
    return PluginClient(PluginSpec(name, f"unix://{path}", str(path)), timeout=3, activate_retry=0)


def test_broken_plugin_is_flagged_on_every_deviation(tmp_path):
    server = UnixHTTPServer(str(tmp_path / "broken.sock"), Broken).start()
    try:
        report = check(client(server.path, "broken"))
    finally:
        server.close()
    assert not report.ok
    text = "\n".join(f"{f.step}: {f.message}" for f in report.findings)
    for expected in (
        'capabilities: field Scope must be "local" or "global"',
        "create endpoint: Interface.Address was set in the request",
        "create endpoint: field MacAddress must be a MAC address",
        "endpoint info: field Value must be an object",
        "join: field SrcName must be the name of an interface",
        "join: field Gateway must be an IP address",
        "join: field StaticRoutes[0].RouteType must be 0 (next hop) or 1",
        "delete endpoint: answered HTTP 500",
        "delete network: the answer must be a JSON object, got list",
        "unknown method answers 404: an unknown method answered 200",
        "error shape (Join of an unknown endpoint): accepted a call",
        "ipam default address spaces: missing field GlobalDefaultAddressSpace",
        "ipam request address: field Address must be an address with prefix length",
    ):
        assert expected in text, f"not flagged: {expected}\n--- findings:\n{text}"


def test_sdk_plugin_and_fake_pass(tmp_path):
    server = make_server(Good(), name="good", plugin_dir=str(tmp_path)).start()
    try:
        report = check(client(server.path, "good"))
    finally:
        server.close()
    assert report.ok, report.lines()
    assert [s for s, ok in report.steps if not ok] == []
    assert ("join", True) in report.steps and ("delete network", True) in report.steps
    with FakePlugin(str(tmp_path / "fake.sock")) as fake:
        report = check(client(fake.path, "fake"))
    assert report.implements == ["NetworkDriver", "IpamDriver"]
    errors = [f for f in report.findings if f.severity == "error"]
    # The fake accepts an unknown method with {}: exactly that is flagged.
    assert [f.step for f in errors] == ["unknown method answers 404"]
    # Whatever the checker created it deleted, in order.
    assert fake.calls("NetworkDriver.")[-3:] == [
        "NetworkDriver.Join",
        "NetworkDriver.DeleteNetwork",
        "NetworkDriver.CnmCheckNoSuchMethod",
    ]


def test_served_bridge_and_ipam_pass_check(tmp_path):
    store = MemoryStore()
    server = make_server(
        DriverPlugin(BridgeDriver(lambda: FakeNetlink())),
        IpamAdapter(DefaultIpam({"LocalDefault": store, "GlobalDefault": store})),
        name="br",
        plugin_dir=str(tmp_path),
    ).start()
    try:
        report = check(client(server.path, "br"))
    finally:
        server.close()
    assert report.ok, report.lines()
    assert store.list("") == []  # every pool and address released again


def test_an_ipam_that_needs_a_subnet_passes_with_a_warning(tmp_path):
    from cnm.plugins.shared_ipam import SharedPoolIpam

    store = MemoryStore("global")
    shared = SharedPoolIpam(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}), store, "h1")
    server = make_server(None, IpamAdapter(shared), name="sh", plugin_dir=str(tmp_path)).start()
    try:
        report = check(client(server.path, "sh"), subnet="192.0.2.0/24")
    finally:
        server.close()
    assert report.ok, report.lines()
    [warning] = [f for f in report.findings if f.step == "ipam request pool"]
    assert warning.severity == "warning" and "checked with Pool 192.0.2.0/24" in warning.message
    assert store.list("") == []  # the pool it was given is released again


def test_cli_check_and_ls(tmp_path):
    server = UnixHTTPServer(str(tmp_path / "broken.sock"), Broken).start()
    good = make_server(Good(), name="good", plugin_dir=str(tmp_path)).start()
    (tmp_path / "dead.spec").write_text("unix:///nonexistent/dead.sock")
    try:
        r = invoke(["plugin", "check", "broken", "--plugin-dir", str(tmp_path)])
        assert r.exit_code == 1 and "FAIL" in r.output and "Scope" in r.output
        r = invoke(["plugin", "check", "good", "--plugin-dir", str(tmp_path)])
        assert r.exit_code == 0 and "PASS: 0 error(s)" in r.output, r.output
        r = invoke(["plugin", "check", "nope", "--plugin-dir", str(tmp_path)])
        assert r.exit_code == 3 and "network plugin nope not found" in r.output
        r = invoke(["plugin", "ls", "--plugin-dir", str(tmp_path), "--timeout", "1"])
        assert r.exit_code == 0, r.output
        rows = {line.split()[0]: line for line in r.output.splitlines()[1:]}
        assert "NetworkDriver,IpamDriver" in rows["broken"] and " ok " in rows["broken"]
        assert "NetworkDriver" in rows["good"]
        assert "not answering" in rows["dead"] and "does not exist" in rows["dead"]
    finally:
        server.close(), good.close()


def test_cli_serve_overlay_needs_a_cluster_store(tmp_path):
    r = invoke(
        [
            "plugin",
            "serve",
            "--name",
            "ov",
            "--driver",
            "overlay",
            "--plugin-dir",
            str(tmp_path),
            "--root",
            str(tmp_path / "root"),
        ]
    )
    assert r.exit_code == 2 and "--cluster-store" in r.output and "--advertise" in r.output
    assert not (tmp_path / "ov.sock").exists()
