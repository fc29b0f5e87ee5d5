"""Discovery by Docker's rules, in configurable folders (files only, no connection)."""

from __future__ import annotations

import json
import socket

import pytest

from cnm.errors import InvalidParameter, NotFound
from cnm.plugins.discovery import DEFAULT_DIRS, Discovery, discovery


def _sock(path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def test_socket_then_spec_then_json(tmp_path):
    run, etc = tmp_path / "run", tmp_path / "etc"
    etc.mkdir()
    (etc / "a.spec").write_text("tcp://127.0.0.1:9999\n")
    (etc / "b.json").write_text(
        json.dumps(
            {"Name": "b", "Addr": "unix:///x/b.sock", "TLSConfig": {"InsecureSkipVerify": True, "CAFile": "/ca"}}
        )
    )
    s1, s2 = _sock(run / "a.sock"), _sock(run / "c" / "c.sock")
    try:
        d = Discovery([str(run), str(etc)])
        a = d.find("a")
        assert (a.address, a.source) == (f"unix://{run}/a.sock", f"{run}/a.sock")  # socket wins
        b = d.find("b")
        assert b.address == "unix:///x/b.sock" and b.tls.insecure_skip_verify and b.tls.ca_file == "/ca"
        assert d.find("c").address == f"unix://{run}/c/c.sock"
        assert d.find("zzz") is None
        with pytest.raises(NotFound, match="network plugin zzz not found"):
            d.get("zzz")
        assert sorted(d.names()) == ["a", "b", "c"]
    finally:
        s1.close(), s2.close()


def test_regular_file_named_sock_is_not_a_plugin(tmp_path):
    (tmp_path / "x.sock").write_text("")
    assert Discovery([str(tmp_path)]).find("x") is None


def test_malformed_specs_are_reported(tmp_path):
    (tmp_path / "bad.spec").write_text("ftp://nope")
    (tmp_path / "rel.spec").write_text("unix://relative.sock")
    (tmp_path / "j.json").write_text("{")
    d = Discovery([str(tmp_path)])
    for name, text in (("bad", "not a unix://"), ("rel", "absolute"), ("j", "not valid JSON")):
        with pytest.raises(InvalidParameter, match=text):
            d.find(name)
    assert {n: e is not None for n, _, e in d.all()} == {"bad": True, "j": True, "rel": True}


def test_names_are_checked(tmp_path):
    with pytest.raises(InvalidParameter, match="invalid plugin name"):
        Discovery([str(tmp_path)]).find("../etc/passwd")


def test_defaults_and_daemon_hook():
    assert discovery(None).dirs == DEFAULT_DIRS
    assert discovery(["/a", "/b"]).dirs == ("/a", "/b")
