"""Docker's own clients against our daemon: the docker CLI (20.10 and a newer one),
docker-py. One daemon for the module (in its own throwaway network namespace); each
test names its objects uniquely and removes them.

Covers what does not need the container lifecycle: version negotiation, info, error
shapes, events, network filters and prune, ps filters, container prune."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import time

import pytest

from tests.integration import docker_clients
from tests.integration.docker_clients import (
    DOCKER_NEW,
    error_line,
    module_daemon,
    run_container,
    uniq,
)


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmdc") as d:
        yield d


cli = docker_clients.cli_fixture
dpy = docker_clients.dpy_fixture


run_ct = run_container


# -- versions, info, errors ---------------------------------------------------------------


def test_cli_negotiates_the_api_version(cli):
    server = cli("version", "--format", "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}").stdout.split()
    assert server == ["1.43", "1.24"]
    client = cli("version", "--format", "{{.Client.APIVersion}}").stdout.strip()
    # 20.10 speaks 1.41 (below ours); a newer CLI lowers its own to ours from /_ping's Api-Version.
    assert client == ("1.43" if cli.path == DOCKER_NEW else "1.41")


def test_versions_out_of_range_are_refused_as_docker_does(cli, daemon):
    r = cli("network", "ls", check=False, env={"DOCKER_API_VERSION": "1.99"})
    assert r.returncode != 0
    assert error_line(r).endswith("client version 1.99 is too new. Maximum supported API version is 1.43")
    r = cli("version", check=False, env={"DOCKER_API_VERSION": "1.12"})  # (network ls: the CLI refuses it)
    assert "client version 1.12 is too old. Minimum supported API version is 1.24" in error_line(r)
    from cnm.api.transport import UnixSocketTransport

    status, headers, _ = UnixSocketTransport(str(daemon.sock)).request("GET", "/v1.41/networks")
    assert status == 200 and headers["api-version"] == "1.43" and headers["ostype"] == "linux"


def test_info(cli, daemon, dpy):
    r = cli("info", "--format", "{{json .}}")
    info = json.loads(r.stdout)
    assert info["DockerRootDir"] == str(daemon.root) and info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["NCPU"] >= 1 and info["MemTotal"] > 0 and info["OSType"] == "linux"
    assert {"bridge", "overlay", "null", "host"} <= set(info["Plugins"]["Network"])
    assert info["ID"] == dpy.info()["ID"] != ""  # stable across calls and clients
    r = cli("info")  # the human form prints with no error
    assert "Server Version" in r.stdout and "ERROR" not in r.stdout + r.stderr


def test_errors_are_one_line_messages(cli):
    r = cli("network", "rm", "bridge", check=False)
    assert r.returncode == 1
    assert error_line(r) == "Error response from daemon: bridge is a pre-defined network and cannot be removed"
    r = cli("network", "inspect", "nosuchnet", check=False)  # 20.10 words a 404 itself, newer ones don't
    assert r.returncode == 1 and error_line(r) in (
        "Error: No such network: nosuchnet",
        "Error response from daemon: network nosuchnet not found",
    )
    r = cli("network", "create", "--scope", "swarm", uniq("sw"), check=False)
    assert error_line(r) == (
        'Error response from daemon: This node is not a swarm manager. Use "docker '
        'swarm init" or "docker swarm join" to connect this node to swarm and try again.'
    )
    for flags in (["--config-only"], ["--config-from", "base"]):
        r = cli("network", "create", *flags, uniq("cfg"), check=False)
        assert r.returncode == 1 and "not supported" in error_line(r)
    assert not [n for n in cli.lines("network", "ls", "--format", "{{.Name}}") if n.startswith(("sw-", "cfg-"))]


# -- networks: ls filters, prune filters ----------------------------------------------------


def test_network_prune_keeps_what_the_filters_exclude(cli):
    tag = secrets.token_hex(3)
    keep, other, bare = f"keep-{tag}", f"other-{tag}", f"bare-{tag}"
    cli("network", "create", "--label", f"t={tag}", "--label", "keep=yes", keep)
    cli("network", "create", "--label", f"t={tag}", "--label", "keep=no", other)
    cli("network", "create", "--label", f"t={tag}", bare)
    mine = lambda: sorted(cli.lines("network", "ls", "--filter", f"label=t={tag}", "--format", "{{.Name}}"))  # noqa: E731
    assert mine() == sorted([keep, other, bare])
    # Once, `prune --filter label=nomatch` deleted every unused network.
    out = cli("network", "prune", "-f", "--filter", "label=nomatch").stdout
    assert mine() == sorted([keep, other, bare]) and "Deleted" not in out
    cli("network", "prune", "-f", "--filter", "until=1h")  # all younger than that
    assert mine() == sorted([keep, other, bare])
    out = cli("network", "prune", "-f", "--filter", f"label=t={tag}", "--filter", "label!=keep").stdout
    assert bare in out and mine() == sorted([keep, other])
    cli("network", "prune", "-f", "--filter", f"label=t={tag}", "--filter", "label=keep=no")
    assert mine() == [keep]
    cli("network", "rm", keep)


def test_network_ls_dangling_and_docker_py_prune(dpy, cli):
    tag = secrets.token_hex(3)
    used, unused = f"used-{tag}", f"unused-{tag}"
    for name in (used, unused):
        dpy.networks.create(name, labels={"t": tag})
    ct = run_ct(dpy, uniq("dangle"), ["sleep", "60"], network=used)
    try:
        dangling = cli.lines("network", "ls", "--filter", "dangling=true", "--format", "{{.Name}}")
        assert unused in dangling and used not in dangling and "bridge" not in dangling
        in_use = cli.lines("network", "ls", "--filter", "dangling=false", "--format", "{{.Name}}")
        assert used in in_use and "bridge" in in_use and unused not in in_use
        assert dpy.networks.prune(filters={"label": ["t=nomatch"]})["NetworksDeleted"] in (None, [])
        assert {n.name for n in dpy.networks.list(filters={"label": f"t={tag}"})} == {used, unused}
        assert dpy.networks.prune(filters={"label": f"t={tag}"})["NetworksDeleted"] == [unused]
    finally:
        ct.remove(force=True)
        dpy.networks.get(used).remove()


# -- events -----------------------------------------------------------------------------------


def test_events_since_until_and_filters(dpy, cli):
    start = time.time()
    name = uniq("evnet")
    n = dpy.networks.create(name)
    n.remove()
    time.sleep(1.1)  # the CLI's `--until 0s` is whole seconds
    until = time.time()
    events = list(dpy.events(since=start - 1, until=until, decode=True, filters={"network": name}))
    assert [(e["Type"], e["Action"], e["Actor"]["Attributes"]["name"]) for e in events] == [
        ("network", "create", name),
        ("network", "destroy", name),
    ]
    assert events[0]["Actor"]["ID"] == n.id and events[0]["scope"] == "local"
    lines = cli.lines(
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "--filter",
        f"network={name}",
        "--filter",
        "event=destroy",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    )
    assert lines == [f"network destroy {name}"]
    r = cli("events", "--since", "1m", "--until", "0s", "--filter", "bogus=1", check=False)
    assert r.returncode != 0 and "invalid filter 'bogus'" in error_line(r)


def test_events_stream_live(cli, dpy):
    """Events reach a client that is already listening. Waits on conditions, not on
    sleeps (under load the CLI may take seconds to subscribe): a probe network is made and
    removed until its events come through — then the stream is live — and only then the
    network under test (both names in one `network` filter: Docker ORs a key's values)."""
    name, probe = uniq("live"), uniq("probe")
    proc = cli.popen(
        "events",
        "--filter",
        "type=network",
        "--filter",
        f"network={name}",
        "--filter",
        f"network={probe}",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
        stdout=subprocess.PIPE,
    )
    out = b""

    def read_until(done, timeout: float) -> bool:
        nonlocal out
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
        return done()

    try:
        deadline = time.monotonic() + 60
        while not read_until(lambda: f"destroy {probe}\n".encode() in out, 1.0):
            assert proc.poll() is None and time.monotonic() < deadline, f"the CLI never subscribed: {out!r}"
            dpy.networks.create(probe).remove()
        dpy.networks.create(name).remove()
        read_until(lambda: f"destroy {name}\n".encode() in out, 30)
        lines = [line for line in out.decode().splitlines() if not line.endswith(" " + probe)]
        assert lines == [f"create {name}", f"destroy {name}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_container_and_connect_events(dpy):
    start = time.time()
    name, netname = uniq("evct"), uniq("evn")
    net = dpy.networks.create(netname)
    ct = run_ct(dpy, name, ["sh", "-c", "exit 7"], network=netname, labels={"app": "ev"})
    assert ct.wait(timeout=30)["StatusCode"] == 7
    ct.remove()
    net.remove()
    until = time.time() + 0.01
    got = [
        (e["Type"], e["Action"])
        for e in dpy.events(since=start - 1, until=until, decode=True, filters={"label": "app=ev"})
    ]
    assert ("container", "create") in got and ("container", "start") in got and ("container", "destroy") in got
    die = [
        e for e in dpy.events(since=start - 1, until=until, decode=True, filters={"container": name, "event": "die"})
    ]
    assert [e["Actor"]["Attributes"]["exitCode"] for e in die] == ["7"]
    assert die[0]["id"] == ct.id and die[0]["status"] == "die"  # the legacy fields too
    conn = [
        e["Action"]
        for e in dpy.events(since=start - 1, until=until, decode=True, filters={"network": netname, "type": "network"})
    ]
    assert conn[:1] == ["create"] and "connect" in conn and "disconnect" in conn and conn[-1] == "destroy"


# -- containers: ps filters, prune ------------------------------------------------------------


def test_ps_filters_and_container_prune(dpy, cli):
    tag = secrets.token_hex(3)
    netname = f"psnet-{tag}"
    dpy.networks.create(netname)
    up = run_ct(
        dpy, f"up-{tag}", ["sleep", "60"], network=netname, labels={"t": tag, "role": "web"}, ports={"80/tcp": None}
    )
    three = run_ct(dpy, f"three-{tag}", ["sh", "-c", "exit 3"], labels={"t": tag})
    zero = run_ct(dpy, f"zero-{tag}", ["true"], labels={"t": tag, "keep": "1"})
    try:
        for ct in (three, zero):
            ct.wait(timeout=30)
        fmt = ["--format", "{{.Names}}"]
        lab = ["--filter", f"label=t={tag}"]
        assert cli.lines("ps", *lab, *fmt) == [up.name]
        assert cli.lines("ps", "-a", *lab, *fmt) == [zero.name, three.name, up.name]
        assert cli.lines("ps", "-a", *lab, "--filter", "exited=3", *fmt) == [three.name]
        assert cli.lines("ps", *lab, "--filter", "status=exited", *fmt) == [zero.name, three.name]
        assert cli.lines("ps", "-a", "--filter", f"network={netname}", *fmt) == [up.name]
        assert cli.lines("ps", "-a", *lab, "--filter", f"since={up.name}", *fmt) == [zero.name, three.name]
        assert cli.lines("ps", "-a", *lab, "--filter", f"before={zero.name}", *fmt) == [three.name, up.name]
        assert cli.lines("ps", *lab, "--filter", "expose=80", *fmt) == [up.name]
        assert cli.lines("ps", "-a", *lab, "--filter", "label=role=web", *fmt) == [up.name]
        assert [c.name for c in dpy.containers.list(all=True, filters={"label": [f"t={tag}", "keep"]})] == [zero.name]
        r = cli("ps", "--filter", "status=sleeping", check=False)
        assert r.returncode != 0 and "invalid filter 'status=sleeping'" in error_line(r)
        out = cli("container", "prune", "-f", "--filter", f"label=t={tag}", "--filter", "label!=keep").stdout
        assert three.id in out and zero.id not in out and up.id not in out
        assert dpy.containers.prune(filters={"label": "t=nomatch"})["ContainersDeleted"] in (None, [])
        assert dpy.containers.prune(filters={"label": f"t={tag}"})["ContainersDeleted"] == [zero.id]
        assert [c.name for c in dpy.containers.list(all=True, filters={"label": f"t={tag}"})] == [up.name]
    finally:
        for ct in (up, three, zero):
            try:
                ct.remove(force=True)
            except Exception:
                pass
        dpy.networks.get(netname).remove()


# -- wait --------------------------------------------------------------------------------------


def test_wait_conditions_and_headers_at_once(dpy, daemon, cli):
    import threading

    from cnm.api.transport import UnixSocketTransport

    name = uniq("wait")
    ct = run_ct(dpy, name, ["sh", "-c", "sleep 2; exit 4"])
    raw = UnixSocketTransport(str(daemon.sock))
    began = time.monotonic()
    resp = raw.stream("POST", f"/v1.43/containers/{name}/wait?condition=not-running")
    assert resp.status == 200 and time.monotonic() - began < 1.5  # headers before the exit
    assert json.loads(resp.read()) == {"StatusCode": 4, "Error": None}
    resp.close()
    assert ct.wait(condition="not-running", timeout=10)["StatusCode"] == 4  # at once now
    assert cli("wait", name).stdout.strip() == "4"
    removed: list = []
    waiter = threading.Thread(target=lambda: removed.append(ct.wait(condition="removed", timeout=20)))
    waiter.start()
    time.sleep(0.5)
    assert not removed  # still there: still waiting
    ct.remove()
    waiter.join(10)
    assert removed == [{"StatusCode": 4, "Error": None}]
    r = cli("wait", name, check=False)
    assert r.returncode != 0
    status, _, body = raw.request("POST", "/v1.43/containers/nosuch/wait?condition=bogus")
    assert status == 400 and b'invalid condition: \\"bogus\\"' in body


# -- system df, system prune ----------------------------------------------------------------


def test_system_df_and_system_prune(cli, dpy):
    tag = secrets.token_hex(3)
    net = dpy.networks.create(f"sysp-{tag}", labels={"t": tag})
    keep = dpy.networks.create(f"sysk-{tag}")
    ct = run_ct(dpy, f"sysp-{tag}", ["true"], labels={"t": tag})
    ct.wait(timeout=20)
    try:
        df = dpy.df()
        assert ct.id in [c["Id"] for c in df["Containers"]] and df["Volumes"] == [] and df["BuildCache"] == []
        out = cli("system", "df").stdout
        assert out.splitlines()[0].split()[:2] == ["TYPE", "TOTAL"] and "Containers" in out
        out = cli("system", "prune", "-f", "--filter", f"label=t={tag}").stdout
        assert ct.id in out and net.name in out and keep.name not in out
        assert [n.name for n in dpy.networks.list(names=[keep.name])] == [keep.name]
    finally:
        keep.remove()
