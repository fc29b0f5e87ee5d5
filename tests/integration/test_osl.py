"""The OS layer against a real kernel, inside throwaway namespaces only.

Checks go through `ip` (an independent reader), not through the code under test."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.osl import netns, sysctl
from cnm.osl.netlink import Netlink
from tests.integration.conftest import link_names, sh


def my_netns() -> str:
    return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def in_ns(path: str, *argv: str) -> str:
    return sh("nsenter", f"--net={path}", "--", *argv).stdout


@pytest.fixture
def nl(host_ns):
    with Netlink(host_ns) as handle:
        yield handle


@pytest.fixture
def sandbox(tmp_path):
    path = str(tmp_path / "netns" / "sb1")
    netns.create_netns(path)
    yield path
    netns.delete_netns(path)


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_bridge_lifecycle(host_ns, nl):
    nl.create_bridge("br-test", 1400, mac="02:42:00:00:00:aa", alias="cnm:bridge:t")
    nl.add_address("br-test", "172.30.0.1/16")

    out = sh("ip", "-n", host_ns, "-d", "link", "show", "br-test").stdout
    assert "mtu 1400" in out and "UP" in out.split(">")[0]
    assert "stp_state 0" in out and "forward_delay 0" in out
    assert "02:42:00:00:00:aa" in out and "alias cnm:bridge:t" in out
    addr = sh("ip", "-n", host_ns, "-o", "addr", "show", "dev", "br-test").stdout
    assert "inet 172.30.0.1/16 brd 172.30.255.255" in addr
    assert nl.addresses("br-test", 4) == ["172.30.0.1/16"]
    assert nl.link("br-test").kind == "bridge"

    with pytest.raises(Conflict, match="File exists"):
        nl.create_bridge("br-test")
    with pytest.raises(Conflict):
        nl.add_address("br-test", "172.30.0.1/16")
    nl.add_address("br-test", "172.30.0.1/16", exist_ok=True)

    assert nl.del_address("br-test", "172.30.0.1/16") is True
    assert nl.del_address("br-test", "172.30.0.1/16") is False
    assert nl.delete_link("br-test") is True
    assert "br-test" not in link_names(host_ns)
    assert nl.delete_link("br-test") is False  # already gone: success
    with pytest.raises(NotFound):
        nl.set_link_up("br-test")


def test_bad_names_refused_before_kernel(nl):
    for bad in ("", "x" * 16, "a/b", "a b", "a:b"):
        with pytest.raises(InvalidParameter):
            nl.create_bridge(bad)


def test_veth_into_created_namespace(host_ns, nl, tmp_path):
    path = str(tmp_path / "run" / "netns" / "sb")
    netns.create_netns(path)
    try:
        assert netns.is_netns(path)
        with pytest.raises(Conflict):
            netns.create_netns(path)
        nl.create_bridge("br0", 1400)
        nl.create_veth("vethA", "tmpA", 1400, peer_mac="02:42:ac:1e:00:02")
        nl.set_master("vethA", "br0")
        nl.set_link_up("vethA")
        assert nl.bridge_ports("br0") == ["vethA"] and nl.bridge_port_count("br0") == 1

        nl.move_link_to_netns("tmpA", path, new_name="eth0")
        assert "tmpA" not in link_names(host_ns)
        with Netlink(path) as sb:
            sb.set_link_up("lo")
            sb.set_link_up("eth0")
            sb.add_address("eth0", "172.30.0.2/16")
            sb.add_default_route("172.30.0.1")
            assert sb.route_cidrs() == ["172.30.0.0/16"]  # the default route left out
            assert {r.destination for r in sb.routes(4)} == {"0.0.0.0/0", "172.30.0.0/16"}
        inside = in_ns(path, "ip", "-o", "link", "show", "eth0")
        assert "mtu 1400" in inside and "02:42:ac:1e:00:02" in inside
        assert "inet 172.30.0.2/16" in in_ns(path, "ip", "-o", "addr", "show", "eth0")
        assert "default via 172.30.0.1 dev eth0" in in_ns(path, "ip", "route")
    finally:
        netns.delete_netns(path)
    assert not os.path.exists(path)
    # The namespace dies with its last reference (no handle of ours may keep it), and
    # its veth end with it; the kernel tears namespaces down asynchronously.
    assert wait_for(lambda: "vethA" not in link_names(host_ns))
    netns.delete_netns(path)  # idempotent


def test_calling_thread_never_changes_namespace(host_ns, sandbox):
    before = my_netns()
    with Netlink(host_ns) as nl:
        nl.create_bridge("brx")
        assert my_netns() == before
        with pytest.raises(Conflict):
            nl.create_bridge("brx")
        assert my_netns() == before
    inner = netns.run_in_netns(sandbox, my_netns)
    assert inner == f"net:[{os.stat(sandbox).st_ino}]" != before
    with pytest.raises(ZeroDivisionError):
        netns.run_in_netns(sandbox, lambda: 1 / 0)
    with pytest.raises(NotFound):
        Netlink("/nonexistent/netns/path")
    assert my_netns() == before


def test_create_netns_starts_empty_and_distinct(sandbox):
    assert link_names_at(sandbox) == {"lo"}
    ino = os.stat(sandbox).st_ino
    assert ino != os.stat("/proc/self/ns/net").st_ino


def link_names_at(path: str) -> set[str]:
    out = in_ns(path, "ip", "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


def test_sysctl_through_handle_stays_in_that_namespace(host_ns, nl):
    root_before = sysctl.read("net.ipv4.ip_forward")
    nl.sysctl_write("net.ipv4.ip_forward", 1)
    assert nl.sysctl_read("net.ipv4.ip_forward") == "1"
    assert sh("ip", "netns", "exec", host_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert sysctl.read("net.ipv4.ip_forward") == root_before
    nl.sysctl_write("net.ipv4.ip_forward", 0)
    assert nl.sysctl_read("net.ipv4.ip_forward") == "0"


def test_one_handle_shared_by_threads(host_ns, nl):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            nl.create_bridge(f"brt{i}")
            nl.add_address(f"brt{i}", f"10.{i}.0.1/24")
            assert nl.addresses(f"brt{i}", 4) == [f"10.{i}.0.1/24"]
            nl.delete_link(f"brt{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert link_names(host_ns) == {"lo"}


def test_packets_flow_between_namespaces(host_ns, nl, sandbox):
    """A real datagram from the host namespace's bridge to the sandbox and back."""
    nl.create_bridge("br0")
    nl.add_address("br0", "172.30.0.1/24")
    nl.create_veth("vethB", "tmpB")
    nl.set_master("vethB", "br0")
    nl.set_link_up("vethB")
    nl.move_link_to_netns("tmpB", sandbox, "eth0")
    with Netlink(sandbox) as sb:
        sb.set_link_up("eth0")
        sb.add_address("eth0", "172.30.0.2/24")

    def udp(addr: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, 0))
        s.settimeout(5)
        return s

    # A socket belongs to the namespace it was created in, whatever thread uses it.
    inside = netns.run_in_netns(sandbox, udp, "172.30.0.2")
    outside = netns.run_in_netns(netns.netns_path(host_ns), udp, "172.30.0.1")
    try:
        outside.sendto(b"ping", inside.getsockname())
        data, peer = inside.recvfrom(100)
        assert data == b"ping" and peer[0] == "172.30.0.1"
        inside.sendto(b"pong", peer)
        assert outside.recvfrom(100)[0] == b"pong"
    finally:
        inside.close()
        outside.close()


def test_usable_from_a_coroutine(host_ns):
    """The daemon lives in asyncio: a handle made and used inside a running loop must
    work (pyroute2 runs its own loop on the handle's thread, not the caller's)."""
    import asyncio

    async def main() -> list[str]:
        with Netlink(host_ns) as nl:
            nl.create_bridge("bra")
            names = await asyncio.to_thread(nl.link_names)
            nl.delete_link("bra")
            return names

    assert "bra" in asyncio.run(main())
    assert "bra" not in link_names(host_ns)


def test_bind_existing_keeps_a_namespace_alive(sandbox, tmp_path):
    """What the runtime does after a restart: re-bind a container's namespace."""
    second = str(tmp_path / "again")
    with pytest.raises(NotFound):
        netns.bind_existing(str(tmp_path / "nothing"), second)
    netns.bind_existing(sandbox, second)
    try:
        assert os.stat(second).st_ino == os.stat(sandbox).st_ino
        with pytest.raises(Conflict):
            netns.bind_existing(sandbox, second)
        netns.delete_netns(sandbox)  # the other handle keeps it alive
        with Netlink(second) as nl:
            assert nl.link_names() == ["lo"]
    finally:
        netns.delete_netns(second)
    assert not os.path.exists(second)


def test_link_with_address_finds_the_holder_in_one_dump(host_ns, nl):
    nl.create_bridge("ulx0", mtu=1400)
    nl.add_address("ulx0", "198.18.99.1/24")
    assert nl.link_with_address("198.18.99.1").name == "ulx0"
    assert nl.link_with_address("198.18.99.1").mtu == 1400
    assert nl.link_with_address("198.18.99.2") is None


@pytest.mark.parametrize("fresh_procfs", [True, False], ids=["own-procfs", "fallback-to-proc"])
def test_ipv6_off_by_default_in_a_new_namespace_only(tmp_path, monkeypatch, fresh_procfs):
    """The write goes through a procfs instance of its own (cnm.osl.procsys), or /proc
    where the mount API is refused; either way it lands in the new namespace alone."""
    from cnm.osl import procsys

    if not fresh_procfs:
        monkeypatch.setattr(procsys, "_fresh_procfs", lambda: None)
    else:
        fd = procsys._fresh_procfs()
        if fd is None:
            pytest.skip("this kernel or these rights refuse fsopen(2) of procfs: only the /proc path runs here")
        os.close(fd)
    mounts_before = open("/proc/self/mountinfo").read()
    ours_before = sysctl.read("net.ipv6.conf.default.disable_ipv6")
    path = str(tmp_path / "netns" / "v6off")
    netns.create_netns(path, ipv6_off_by_default=True)
    try:
        assert in_ns(path, "cat", "/proc/sys/net/ipv6/conf/default/disable_ipv6").strip() == "1"
        assert sysctl.read("net.ipv6.conf.default.disable_ipv6") == ours_before
        # the detached procfs is in no mount table, before or after
        assert [ln for ln in open("/proc/self/mountinfo").read().splitlines() if " proc " in ln] == [
            ln for ln in mounts_before.splitlines() if " proc " in ln
        ]
    finally:
        netns.delete_netns(path)
