"""The CLI must start fast: no aiohttp/asyncio/pyroute2/rich on its import path."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("aiohttp", "asyncio", "pyroute2", "rich")
NET = str(Path(sys.executable).parent / "net")


def test_cli_and_client_import_no_heavy_modules():
    code = ("import sys, cnm.cli.main, cnm.api.client; "
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"heavy modules imported by the CLI path: {out.strip()}"


def test_net_help_is_fast():
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        r = subprocess.run([NET, "--help"], capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        assert r.returncode == 0 and "Usage: net" in r.stdout
    assert best < 0.3, f"net --help took {best:.3f}s"


def test_the_fast_path_imports_neither_click_nor_typing():
    """`net run/connect/disconnect` go through cnm.cli.fast to skip click's start-up;
    typing (~4 ms) is for type checkers only. Either creeping in undoes the fast path."""
    code = ("import sys, cnm.cli.fast, cnm.cli.runflow, cnm.api.client, cnm.errors; "
            "print(','.join(m for m in ('click', 'typing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"imported on the fast path: {out.strip()}"
