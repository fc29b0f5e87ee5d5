"""bench/cluster_sim.py in a small configuration, as a smoke test: 24 simulated hosts on
real etcd (its own throwaway namespace), publishing, churn, joins and leaves; every
endpoint must reach every host of its network and no other, and the figures print."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.conftest import ROOT


def test_the_simulation_converges_and_reports():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cluster_sim.py"),
            "--hosts",
            "24",
            "--networks",
            "6",
            "--endpoints",
            "480",
            "--workers",
            "2",
            "--members",
            "1",
            "--churn-seconds",
            "3",
            "--churn-rate",
            "20",
            "--joins",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "every host holds exactly the peers of its networks" in out
    assert "NOT CONVERGED" not in out and "convergence, published" in out
    assert "a host joining a network" in out and "etcd (per member)" in out
    # Scoped: in all, the hosts hold far fewer peers than if each held every endpoint.
    line = next(ln for ln in out.splitlines() if ln.startswith("cluster:"))
    held, everything = (
        int(x.replace(",", ""))
        for x in (line.split("; ")[1].split(" peers held")[0], line.split("every peer: ")[1].rstrip(")"))
    )
    assert held < everything / 2, line
