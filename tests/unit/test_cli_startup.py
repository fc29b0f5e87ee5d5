"""The CLI must start fast: no command's execution path imports click or another heavy
module (cnm.cli.testing.HEAVY) unless its declaration says it needs it (`heavy=`).
Checked for EVERY declared command, generically from the declarations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnm.cli.commands import COMMANDS, load
from cnm.cli.testing import HEAVY, heavy_imports, run_lean, run_net


def sample_argv(path: str) -> list[str]:
    """The command with a value for each required argument and flag (never run here
    for commands that declare heavy imports: those build labs or run daemons)."""
    params = load(path).params
    argv = path.split()
    for p in params:
        if p.kind != "arg" and p.required:
            argv += [p.names[-1], "x"]
    return argv + ["x" for p in params if p.kind == "arg" and p.required]


ROOT = str(Path(__file__).resolve().parents[2])
# Up to the handler, started as the launcher starts `net` (python -IS, site on demand): the
# entry point, the flags parsed, the command's module imported.
_LOADED = (
    "import sys\n"
    f"sys.path.append({ROOT!r})\n"
    "from cnm.cli import lazysite\n"
    "lazysite.install()\n"
    "from cnm.cli.commands import load, resolve\n"
    "from cnm.cli.parse import parse\n"
    "import cnm.cli.entry\n"
    "path, rest = resolve(sys.argv[1:])\n"
    "parse(load(path), rest, {})\n"
    "print(' '.join(sorted(sys.modules)))\n"
)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_no_command_module_imports_heavy_modules(path):
    out = subprocess.run(
        [sys.executable, "-IS", "-c", _LOADED, *sample_argv(path)], capture_output=True, text=True, check=True
    ).stdout
    bad = heavy_imports(frozenset(out.split()), frozenset(load(path).heavy))
    assert not bad, f"net {path}: importing its command module loads {', '.join(bad)}"


LEAN = sorted(p for p in COMMANDS if not load(p).heavy)


@pytest.mark.parametrize("path", LEAN)
def test_every_lean_command_runs_without_heavy_modules(path, server):
    """Run against the API server (over a fake controller and runtime): the whole path,
    request and answer (an error answer for most: the objects named "x" are missing)
    included. run_lean fails if a HEAVY module was imported."""
    r = run_lean(["-H", server.host, *sample_argv(path)])
    assert "Traceback" not in r.stderr, r.stderr


def test_commands_that_need_heavy_modules_are_few_and_say_so():
    heavy = {p: load(p).heavy for p in COMMANDS if load(p).heavy}
    assert set(heavy) <= {p for p in COMMANDS if p.startswith(("lab ", "plugin "))} | {"daemon"}
    for p, mods in heavy.items():
        assert "click" not in mods and set(mods) <= HEAVY | {"*"}, (p, mods)


def test_help_loads_click_but_nothing_that_runs_commands():
    """`net --help` imports click and every command module, but none of the machinery the
    commands run (the daemon, labs, netlink, asyncio): listing them must stay quick."""
    r = run_net(["--help"])
    assert r.exit_code == 0 and r.stdout.startswith("Usage: net ")
    allowed = HEAVY - {
        "aiohttp",
        "asyncio",
        "pyroute2",
        "yaml",
        "rich",
        "cnm.daemon",
        "cnm.runtime",
        "cnm.controller",
        "sqlite3",
        "etcd3gw",
        "dnslib",
        "netaddr",
        "scapy",
    }
    assert "click" in r.modules and not heavy_imports(r.modules, frozenset(allowed))


def test_the_launcher_starts_python_without_site_and_loads_it_on_demand(tmp_path, server):
    from cnm.cli.launcher import write

    net = tmp_path / "net"
    write(str(net))
    assert net.read_text().splitlines()[0] == f"#!{sys.executable} -IS"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": "/nonexistent"}
    r = subprocess.run([str(net), "-H", server.host, "ls", "-q"], capture_output=True, text=True, env=env, check=False)
    assert (r.returncode, r.stderr, len(r.stdout.split())) == (0, "", 3)
    r = subprocess.run([str(net), "run", "--help"], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0 and r.stdout.startswith("Usage: net run ")  # click, from site-packages


def test_lazysite_finds_third_party_modules_only_when_asked():
    code = (
        "import sys\n"
        "from cnm.cli import lazysite\n"
        "lazysite.install()\n"
        "import json, cnm.cli.entry\n"
        "before = 'site' in sys.modules\n"
        "import yaml\n"
        "print(before, 'site' in sys.modules, yaml.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", f"import sys; sys.path.append({ROOT!r})\n" + code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["False", "True", "yaml"]


EVERYDAY = [
    ["ls", "-q"],
    ["ls"],
    ["inspect", "bridge"],
    ["ps", "-a"],
    ["ps", "--format", "json"],
    ["run", "-d", "--name", "every", "--cap-add", "NET_ADMIN", "-p", "8080:80", "sh", "-c", "sleep 30"],
    ["container", "inspect", "every"],
    ["logs", "every"],
    ["connect", "bridge", "nosuch"],
    ["disconnect", "bridge", "nosuch"],
    ["container", "rm", "-f", "every"],
    ["create", "everyday"],
    ["rm", "everyday"],
]


def test_everyday_commands_import_nothing_but_cnm_and_c_modules(server):
    """The commands people run most stay at the interpreter's own start-up set plus
    cnm's modules and the C halves of json and socket (and struct): no os, re, json, enum, collections
    (each costs milliseconds on a ~11 ms call). A flag's converter or a handler that needs
    more imports it inside the function that needs it."""
    start = set(
        subprocess.run(
            [sys.executable, "-IS", "-c", "import sys; print(' '.join(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    allowed = start | {"atexit", "__future__", "_json", "_socket", "_struct", "struct"}  # struct: logs' frames
    for argv in EVERYDAY:
        r = run_lean(["-H", server.host, *argv])
        extra = sorted(m for m in r.modules if m not in allowed and m.split(".")[0] != "cnm")
        assert not extra, f"net {' '.join(argv)} (exit {r.exit_code}) imported {', '.join(extra)}"
