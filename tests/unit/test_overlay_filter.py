"""The VXLAN source filter: render(state) against golden nft scripts.

Regenerate after an intended change with
    CNM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_overlay_filter.py
and review the diff. tests/integration/test_overlay_driver.py applies every golden file
with the real nft, so they stay valid nftables.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.overlay.filter import TABLE_FAMILY, TABLE_NAME, FilterState, render

GOLDEN = Path(__file__).parent / "golden"

CASES: dict[str, FilterState] = {
    "no_nodes": FilterState(),
    "nodes": FilterState(vteps=frozenset({"198.18.0.2", "198.18.0.10", "10.0.0.7"})),
    "port": FilterState(port=8472, vteps=frozenset({"192.0.2.1"})),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    got = render(CASES[name])
    path = GOLDEN / f"overlay_filter_{name}.nft"
    if os.environ.get("CNM_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"missing {path}; run with CNM_UPDATE_GOLDEN=1 to create it"
    assert got == path.read_text()


def test_replaces_only_our_table():
    script = render(CASES["nodes"])
    tables = {line.split("{")[0].strip() for line in script.splitlines() if line.startswith(("table", "delete"))}
    assert tables == {f"table {TABLE_FAMILY} {TABLE_NAME}", f"delete table {TABLE_FAMILY} {TABLE_NAME}"}
    assert "inet cnm " not in script and "flush ruleset" not in script


def test_nodes_add_elements_not_rules_and_order_is_numeric():
    def rules(s: str) -> list[str]:
        return [line for line in s.splitlines() if "dport" in line]

    assert rules(render(CASES["no_nodes"])) == rules(render(CASES["nodes"]))
    script = render(CASES["nodes"])
    assert script.index("10.0.0.7") < script.index("198.18.0.2") < script.index("198.18.0.10")
    assert render(FilterState(vteps=frozenset({"1.1.1.1", "2.2.2.2"}))) == render(
        FilterState(vteps=frozenset({"2.2.2.2", "1.1.1.1"}))
    )


def test_accept_from_known_then_drop_the_rest_on_the_port():
    script = render(CASES["port"])
    accept = script.index("udp dport 8472 ip saddr @vteps counter accept")
    drop = script.index("udp dport 8472 counter drop")
    assert accept < drop and "4789" not in script
