"""Pure parts of the OS layer: namespace paths, sysctl keys, the subprocess seam,
and the namespace worker thread's plumbing (in the current namespace, no root)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from cnm.errors import InternalError, InvalidParameter, NotFound, Unavailable
from cnm.osl import netns, proc, sysctl


def test_netns_path():
    assert netns.netns_path("ns1") == "/run/netns/ns1"
    assert netns.netns_path("/run/cnm/netns/abc") == "/run/cnm/netns/abc"
    for bad in ("", ".", ".."):
        with pytest.raises(InvalidParameter):
            netns.netns_path(bad)


def test_is_netns(tmp_path):
    plain = tmp_path / "f"
    plain.write_text("")
    assert not netns.is_netns(str(plain))
    assert not netns.is_netns(str(tmp_path / "missing"))
    assert netns.is_netns("/proc/self/ns/net")
    with pytest.raises(NotFound):
        netns.require_netns(str(plain))


def test_delete_netns_on_plain_file_and_missing_path(tmp_path):
    plain = tmp_path / "f"
    plain.write_text("")
    netns.delete_netns(str(plain))
    assert not plain.exists()
    netns.delete_netns(str(plain))  # idempotent


def test_netns_thread_returns_results_and_raises_errors():
    worker = netns.NetnsThread()
    try:
        assert worker.call(lambda a, b=0: a + b, 2, b=3) == 5
        assert worker.call(threading.current_thread) is not threading.current_thread()
        with pytest.raises(ZeroDivisionError):
            worker.call(lambda: 1 / 0)
        assert worker.call(lambda: "still alive") == "still alive"
    finally:
        worker.close()
    worker.close()
    with pytest.raises(InternalError, match="closed"):
        worker.call(lambda: 1)


def test_netns_thread_missing_namespace_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        netns.NetnsThread(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "key,path",
    [
        ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("net/ipv6/conf/eth0.100/disable_ipv6", "/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6"),
    ],
)
def test_sysctl_path(key, path):
    assert sysctl.sysctl_path(key) == path


@pytest.mark.parametrize("key", ["", "net..ipv4", "net/../../etc/passwd", "net/./x"])
def test_sysctl_path_refuses_escapes(key):
    with pytest.raises(InvalidParameter):
        sysctl.sysctl_path(key)


def test_sysctl_conf_key_keeps_dots_in_names():
    assert sysctl.conf_key(6, "br.1", "disable_ipv6") == "net/ipv6/conf/br.1/disable_ipv6"


def test_sysctl_read_and_missing():
    lo, hi = sysctl.local_port_range()
    assert 0 < lo <= hi <= 65535
    with pytest.raises(NotFound):
        sysctl.read("net.ipv4.no_such_knob")


def test_sysctl_write_skips_unchanged_values(monkeypatch, tmp_path):
    knob = tmp_path / "net" / "knob"
    knob.parent.mkdir()
    knob.write_text("1\n")
    os.utime(knob, (1_000_000, 1_000_000))
    monkeypatch.setattr(sysctl, "PROC_SYS", str(tmp_path))
    sysctl.write("net.knob", 1)
    assert knob.stat().st_mtime == 1_000_000  # not rewritten
    sysctl.write("net.knob", "0")
    assert sysctl.read("net.knob") == "0"


def test_proc_run():
    cp = proc.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="hi")
    assert cp.stdout.strip() == "HI"
    with pytest.raises(InternalError, match="exited with 3: bad thing"):
        proc.run([sys.executable, "-c", "import sys; sys.stderr.write('bad thing\\n'); sys.exit(3)"])
    assert proc.run([sys.executable, "-c", "raise SystemExit(4)"], check=False).returncode == 4
    with pytest.raises(Unavailable, match="not installed"):
        proc.run(["/nonexistent/tool-xyz"])
    with pytest.raises(Unavailable, match="did not finish"):
        proc.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    with pytest.raises(InvalidParameter):
        proc.run([])
