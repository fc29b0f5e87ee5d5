"""`docker exec` latency on our daemon: exec create + start (hijacked) + inspect of
`true` through the Engine API (what docker-py's exec_run does), and `net exec C -- true`
(the CLI's start included). Medians, p90, load average before and after.

Needs root: a private daemon runs in a throwaway network namespace (cnm.demo.DemoHost).
Other helpers share the machine: quote the load average with the figures.

    sudo .venv/bin/python bench/exec.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnm.api.client import APIClient
from cnm.cli.interactive import Demux
from cnm.demo import BB, NET, DemoHost


def api_exec(client: APIClient, ref: str) -> int:
    """One exec of `true`, as docker-py's exec_run: create, start (hijacked), inspect."""
    eid = client.exec_create(ref, {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True})
    stream = client.exec_start(eid, tty=False)
    assert stream is not None
    sock, early = stream
    demux = Demux()
    demux.feed(early)
    while data := sock.recv(65536):
        demux.feed(data)
    sock.close()
    return int(client.exec_inspect(eid)["ExitCode"])


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    return f"{name:<10} median {statistics.median(ms):6.1f} ms   p90 {ms[int(len(ms) * 0.9)]:6.1f} ms   (n={len(ms)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    load0 = os.getloadavg()
    with DemoHost() as host:
        host.net("run", "-d", "--name", "bx", BB, "sleep", "3600")
        client = APIClient(f"unix://{host.sock}")
        for _ in range(3):  # warm: the template, caches
            api_exec(client, "bx")
        api, cli = [], []
        for _ in range(args.runs):  # interleaved: a slower moment slows both
            t = time.perf_counter()
            assert api_exec(client, "bx") == 0
            api.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            subprocess.run([NET, "-H", f"unix://{host.sock}", "exec", "bx", "--", "true"], check=True)
            cli.append((time.perf_counter() - t) * 1000)
    load1 = os.getloadavg()
    print(summary("API exec", api))
    print(summary("net exec", cli))
    print(f"load average {load0[0]:.1f} before, {load1[0]:.1f} after")


if __name__ == "__main__":
    main()
