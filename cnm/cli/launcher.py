"""Write `net` as a script that starts Python the quick way:

    python -m cnm.cli.launcher .venv/bin/net        (scripts/setup.sh runs this)

pip's console script starts a normal interpreter: `site` runs first (site-packages,
every .pth file: ~3 ms of the ~10 ms an empty interpreter costs here) and the PYTHON*
variables apply (PYTHONDONTWRITEBYTECODE alone makes every call recompile the CLI).
This script starts `python -I -S` instead, finds cnm where this installation keeps it,
and adds site-packages only when a command imports something from there
(cnm.cli.lazysite). `python -m cnm.cli …` runs the same CLI with the interpreter's usual
start-up, when you need PYTHON* variables (a debugger, warnings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cnm

TEMPLATE = """#!{python} -IS
# `net`, written by `python -m cnm.cli.launcher` (scripts/setup.sh): Python starts isolated
# and without site; site-packages are added by the first import that needs them.
import sys
sys.path.append({root!r})
from cnm.cli import lazysite
lazysite.install()
from cnm.cli.entry import main
main()
"""


def script(python: str = sys.executable) -> str:
    """The launcher's text for this interpreter and this installation of cnm."""
    root = str(Path(cnm.__file__).resolve().parent.parent)
    return TEMPLATE.format(python=python, root=root)


def write(path: str, python: str = sys.executable) -> None:
    """Write the launcher to `path` (atomically: a `net` running meanwhile keeps its file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(script(python))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cnm.cli.launcher PATH   (e.g. .venv/bin/net)")
    write(sys.argv[1])
