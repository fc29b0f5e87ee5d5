"""VxlanNetlink's FDB and neighbour entries (packed by cnm.osl.rtnl, sent raw) as the
kernel shows them to `bridge fdb` and `ip neigh`, in a throwaway namespace."""

from __future__ import annotations

import pytest

from cnm.errors import NotFound
from cnm.osl.vxlan import VxlanNetlink
from tests.integration.conftest import ns_sh

MAC = "02:42:0a:3d:00:07"


def fdb(ns: str) -> str:
    return ns_sh(ns, "bridge", "fdb", "show", "dev", "vx0").stdout


def neigh(ns: str) -> str:
    return ns_sh(ns, "ip", "neigh", "show", "dev", "vx0").stdout


@pytest.fixture
def vx(host_ns):
    nl = VxlanNetlink(host_ns)
    nl.create_vxlan("vx0", 4242, local="198.18.0.1")
    try:
        yield host_ns, nl
    finally:
        nl.close()


def test_fdb_entries_replace_and_delete(vx):
    ns, nl = vx
    nl.fdb_replace("vx0", MAC.upper(), "198.18.0.9")
    assert f"{MAC} dst 198.18.0.9 self permanent" in fdb(ns)
    nl.fdb_replace("vx0", MAC, "198.18.0.10")  # the MAC moved to another VTEP
    assert f"{MAC} dst 198.18.0.10 self permanent" in fdb(ns) and "198.18.0.9" not in fdb(ns)
    nl.fdb_delete("vx0", MAC, "198.18.0.9")  # not the entry to that VTEP (the kernel ACKs it)
    assert f"{MAC} dst 198.18.0.10 self permanent" in fdb(ns)
    assert nl.fdb_delete("vx0", MAC, "198.18.0.10") is True
    assert MAC not in fdb(ns)
    nl.fdb_replace("vx0", MAC, "198.18.0.9")
    assert nl.fdb_delete("vx0", MAC) is True and MAC not in fdb(ns)
    assert nl.fdb_delete("vx0", MAC) is False  # idempotent


def test_neighbour_entries_v4_and_v6(vx):
    ns, nl = vx
    nl.neigh_replace("vx0", "10.61.0.7", MAC)
    nl.neigh_replace("vx0", "fd00::7", MAC)
    shown = neigh(ns)
    assert f"10.61.0.7 lladdr {MAC} PERMANENT" in shown and f"fd00::7 lladdr {MAC} PERMANENT" in shown
    nl.neigh_replace("vx0", "10.61.0.7", "02:42:0a:3d:00:08")
    assert "10.61.0.7 lladdr 02:42:0a:3d:00:08 PERMANENT" in neigh(ns)
    assert nl.neigh_delete("vx0", "10.61.0.7") is True
    assert "10.61.0.7 " not in neigh(ns)
    assert nl.neigh_delete("vx0", "10.61.0.7") is False


def test_a_device_made_again_under_its_name_is_found_again(vx):
    """The handle caches the device's index; a new device of the same name has another."""
    ns, nl = vx
    nl.fdb_replace("vx0", MAC, "198.18.0.9")
    assert nl.delete_link("vx0")
    with pytest.raises(NotFound, match="vx0"):
        nl.neigh_replace("vx0", "10.61.0.7", MAC)
    assert nl.fdb_delete("vx0", MAC) is False and nl.neigh_delete("vx0", "10.61.0.7") is False
    nl.create_vxlan("vx0", 4242, local="198.18.0.1")
    nl.fdb_replace("vx0", MAC, "198.18.0.9")
    nl.neigh_replace("vx0", "10.61.0.7", MAC)
    assert f"{MAC} dst 198.18.0.9 self permanent" in fdb(ns)
    assert f"10.61.0.7 lladdr {MAC} PERMANENT" in neigh(ns)


def test_a_stale_cached_index_is_looked_up_again(vx):
    """Delete and re-create behind the handle's back (another handle), then use it."""
    ns, nl = vx
    nl.fdb_replace("vx0", MAC, "198.18.0.9")
    with VxlanNetlink(ns) as other:
        other.delete_link("vx0")
        other.create_vxlan("vx0", 4242, local="198.18.0.1")
    nl.fdb_replace("vx0", MAC, "198.18.0.10")
    assert f"{MAC} dst 198.18.0.10 self permanent" in fdb(ns)
    assert nl.fdb_delete("vx0", MAC) is True


def test_bad_input_changes_nothing(vx):
    ns, nl = vx
    from cnm.errors import InvalidParameter

    with pytest.raises(InvalidParameter):
        nl.fdb_replace("vx0", "02:42:0a", "198.18.0.9")
    with pytest.raises(InvalidParameter):
        nl.fdb_replace("vx0", MAC, "fd00::1")
    with pytest.raises(ValueError):
        nl.neigh_replace("vx0", "10.61.0.300", MAC)
    assert MAC not in fdb(ns) and "10.61" not in neigh(ns)
