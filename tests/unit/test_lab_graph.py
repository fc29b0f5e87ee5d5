"""The lab picture as DOT text (pure), and the format chosen from the file name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cnm.errors import InvalidParameter
from cnm.lab.graph import _q, output_format, render
from cnm.lab.topology import load

LABS = Path(__file__).resolve().parents[2] / "labs"


def test_quickstart_graph_has_hosts_switch_overlay_and_containers():
    dot = render(load(LABS / "quickstart.yaml")[0])
    assert dot.startswith('graph "lab-quickstart" {') and dot.rstrip().endswith("}")
    assert 'subgraph "cluster_h1"' in dot and 'subgraph "cluster_h2"' in dot
    assert 'switch [label="underlay switch\\n198.18.0.0/24"' in dot
    # one overlay node outside the hosts, joined to every host by a dashed vxlan edge
    assert dot.count('"net:ov" [label="ov (overlay)\\n10.10.0.0/24"') == 1
    assert '"net:ov" -- "host:h1" [style="dashed", label="vxlan"]' in dot
    assert '"net:ov" -- "host:h2" [style="dashed", label="vxlan"]' in dot
    # a bridge network per host, containers on their networks
    assert '"net:local@h1" -- "host:h1"' in dot and '"net:local@h2" -- "host:h2"' in dot
    assert '"ctr:a1" -- "net:ov"' in dot and '"ctr:a1" -- "net:local@h1"' in dot
    assert '"ctr:b2" -- "net:local@h2"' in dot
    assert "etcd member" in dot.split('"host:h1"')[1].split(";")[0]


def test_impaired_links_are_labelled():
    dot = render(load(LABS / "impaired-underlay.yaml")[0])
    assert '"host:h1" -- switch [label="ul0 / p-h1\\nmtu 1400, rate 20mbit, loss 1%"]' in dot


def test_labels_are_quoted_for_dot():
    assert _q('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_dot_accepts_every_shipped_lab():
    for path in LABS.glob("*.yaml"):
        r = subprocess.run(["dot", "-Tcanon"], input=render(load(path)[0]), capture_output=True, text=True)
        assert r.returncode == 0, f"{path.name}: {r.stderr}"


def test_output_format():
    assert output_format("a/b.PNG") == "png" and output_format("x.dot") == "dot"
    with pytest.raises(InvalidParameter, match="end it in .dot, .png, .svg, .pdf"):
        output_format("picture.jpg")
