"""The fast path of `net` (cnm.cli.fast) sends exactly what the click CLI sends, and
hands everything it does not fully understand to the click CLI."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cnm.api.client import APIClient
from cnm.api.transport import InMemoryTransport
from cnm.cli import fast
from cnm.cli.main import CLIState, main

CID = "c" * 64


def handler(method, path, body):
    if path.startswith("/containers/create"):
        return 201, {"Content-Type": "application/json"}, json.dumps({"Id": CID}).encode()
    if path.endswith("/connect") or path.endswith("/disconnect"):
        return 200, {}, b""
    if path.endswith("/json") and method == "GET":
        return 404, {"Content-Type": "application/json"}, b'{"message": "no such container: x"}'
    return 404, {"Content-Type": "application/json"}, b'{"message": "page not found"}'


def via_click(argv):
    t = InMemoryTransport(handler)
    r = CliRunner().invoke(main, argv, obj=CLIState(host="unix:///x.sock", transport=t))
    return r.exit_code, r.output, t.calls


def via_fast(argv, monkeypatch, capsys):
    t = InMemoryTransport(handler)
    monkeypatch.setattr(fast, "_client", lambda host: APIClient(host, transport=t))
    code = fast.fast(["-H", "unix:///x.sock", *argv])
    return code, capsys.readouterr().out, t.calls


SAME = [
    ["run", "-d", "busybox", "true"],
    ["run", "-d", "--name", "web", "--net", "front", "--ip", "10.1.0.5", "--network-alias", "www",
     "--network-alias", "w2", "-e", "A=1", "--env=B=2", "--hostname", "h", "busybox", "sleep", "9"],
    ["run", "-d", "--rm", "--network=back", "--", "sh", "-c", "echo -d --rm"],
    ["run", "-d", "--mac-address", "02:42:00:00:00:09", "--ip6", "fd00::5", "busybox", "-x"],
    ["connect", "--ip", "10.2.0.9", "--alias", "a", "net1", "ct"],
    ["disconnect", "-f", "net1", "ct"],
    ["disconnect", "net1", "ct"],
]


@pytest.mark.parametrize("argv", SAME, ids=lambda a: " ".join(a)[:40])
def test_fast_path_sends_what_click_sends(argv, monkeypatch, capsys):
    code, out, calls = via_fast(argv, monkeypatch, capsys)
    ccode, cout, ccalls = via_click(argv)
    assert code == ccode == 0
    assert calls == ccalls and calls
    assert out == cout


@pytest.mark.parametrize("argv", [
    ["run", "-p", "80:80", "busybox", "true"],          # -p: the click path parses it
    ["run", "-dit", "busybox"],                          # combined short flags
    ["run", "--ip", "not-an-ip", "busybox", "true"],     # bad value: click prints the error
    ["run", "-d"],                                       # no command
    ["run", "--name"],                                   # missing value
    ["run", "--help"],
    ["ps"], ["ls"], ["connect", "net1"], ["connect", "--bogus", "n", "c"],
    ["--log-level", "x", "run", "busybox"],
])
def test_everything_else_falls_through_to_click(argv):
    assert fast.fast(argv) is None


def test_tcp_hosts_fall_through(monkeypatch):
    monkeypatch.setenv("NET_HOST", "tcp://1.2.3.4:2375")
    assert fast.fast(["run", "-d", "busybox", "true"]) is None


def test_daemon_error_is_one_line_and_exit_125(monkeypatch, capsys):
    def refuse(method, path, body):
        return 404, {"Content-Type": "application/json"}, b'{"message": "network nosuch not found"}'
    t = InMemoryTransport(refuse)
    monkeypatch.setattr(fast, "_client", lambda host: APIClient(host, transport=t))
    assert fast.fast(["run", "--net", "nosuch", "busybox", "true"]) == 125
    assert capsys.readouterr().err == "Error: network nosuch not found\n"
    assert fast.fast(["connect", "nosuch", "ct"]) == 3
