"""The CLI's execution parser (cnm.cli.parse) reads command lines the way Docker's
CLI does, from each command's one declaration; click's help is derived from the same
declarations; the requests sent for the everyday commands are Docker's."""

from __future__ import annotations

import json

import pytest

from cnm.api.transport import InMemoryTransport
from cnm.cli.commands import COMMANDS, GROUPS, load
from cnm.cli.parse import HelpRequested, UsageError, parse
from cnm.cli.spec import Command, arg, flag, option
from cnm.cli.testing import invoke
from cnm.cli.values import int_range, key_value


def _noop(cx, o):
    return None


CMD = Command(
    "t",
    (
        flag("-d", "--detach"),
        flag("-q", "--quiet"),
        option("--name"),
        option("-e", "--env", multiple=True),
        option("-p", "--port", value=int_range(1, 9)),
        option("--format", dest="fmt", choices=("table", "json"), default="table"),
        option("--need", envvar="T_NEED"),
        arg("first"),
        arg("rest", nargs=-1, required=False),
    ),
    _noop,
)
RUN = Command("r", (flag("-d", "--detach"), option("--name"), arg("cmd", nargs=-1)), _noop, interspersed=False)
EXEC = Command("x", (flag("-i"), arg("ref"), arg("cmd", nargs=-1)), _noop, interspersed=False)


def values(cmd, *argv, env=None):
    return vars(parse(cmd, list(argv), env))


@pytest.mark.parametrize(
    "argv, want",
    [
        (
            ["a"],
            {
                "detach": False,
                "quiet": False,
                "name": None,
                "env": [],
                "port": None,
                "fmt": "table",
                "first": "a",
                "rest": [],
            },
        ),
        (["-dq", "a"], {"detach": True, "quiet": True}),
        (["--name", "n", "a", "b", "-d"], {"name": "n", "first": "a", "rest": ["b"], "detach": True}),
        (["--name=x=y", "a"], {"name": "x=y"}),
        (["-eA=1", "-e", "B=2", "--env=C", "--env", "D", "a"], {"env": ["A=1", "B=2", "C", "D"]}),
        (["-e=A=1", "a"], {"env": ["A=1"]}),
        (["-p7", "a"], {"port": 7}),
        (["-dp", "7", "a"], {"detach": True, "port": 7}),
        (["--detach=false", "-d=true", "--quiet=0", "a"], {"detach": True, "quiet": False}),
        (["--name", "-d", "a"], {"name": "-d", "detach": False}),  # a value may look like a flag
        (["a", "--", "-d", "--x"], {"first": "a", "rest": ["-d", "--x"], "detach": False}),
        (["--", "-a"], {"first": "-a"}),
        (["-", "--format", "json"], {"first": "-", "fmt": "json"}),
    ],
)
def test_docker_style_command_lines(argv, want):
    got = values(CMD, *argv)
    assert {k: got[k] for k in want} == want


def test_defaults_are_fresh_lists_and_env_fills_in():
    a, b = values(CMD, "x"), values(CMD, "y")
    a["env"].append("z")
    assert b["env"] == [] and CMD.params[3].default == []
    assert values(CMD, "x", env={"T_NEED": "from-env"})["need"] == "from-env"
    assert values(CMD, "x", "--need", "flag", env={"T_NEED": "from-env"})["need"] == "flag"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus", "a"], "unknown flag: --bogus"),
        (["-x", "a"], "unknown shorthand flag: 'x' in -x"),
        (["-dx", "a"], "unknown shorthand flag: 'x' in -dx"),
        (["a", "--name"], "flag needs an argument: --name"),
        (["a", "-p"], "flag needs an argument: 'p' in -p"),
        ([], "missing argument FIRST"),
        (["-p", "0", "a"], "invalid value for '-p' / '--port': 0 is not between 1 and 9"),
        (["-p", "x", "a"], "invalid value for '-p' / '--port': 'x' is not an integer"),
        (["--format", "xml", "a"], "invalid value for '--format': 'xml' is not one of 'table', 'json'"),
        (["--detach=maybe", "a"], "invalid value for '-d' / '--detach': 'maybe' is not true or false"),
    ],
)
def test_bad_command_lines_are_one_usage_error(argv, message):
    with pytest.raises(UsageError) as err:
        parse(CMD, argv)
    assert err.value.message == message and err.value.exit_code == 2


def test_extra_arguments_and_required_flags():
    one = Command("o", (option("--name", required=True), arg("ref")), _noop)
    with pytest.raises(UsageError, match="unexpected argument 'b'"):
        parse(one, ["--name", "n", "a", "b"])
    with pytest.raises(UsageError, match="missing flag --name"):
        parse(one, ["a"])


@pytest.mark.parametrize("argv", [["--help"], ["a", "-h"], ["-dh"], ["a", "--help", "--bogus"]])
def test_help_anywhere_among_the_options(argv):
    with pytest.raises(HelpRequested):
        parse(CMD, argv)


def test_not_interspersed_options_end_at_the_first_argument():
    assert values(RUN, "-d", "sh", "-c", "x", "--name", "n") == {
        "detach": True,
        "name": None,
        "cmd": ["sh", "-c", "x", "--name", "n"],
    }
    assert values(RUN, "--", "-x")["cmd"] == ["-x"]
    assert values(RUN, "sh", "--", "x")["cmd"] == ["sh", "--", "x"]  # the command's own --
    assert values(RUN, "sh", "--help")["cmd"] == ["sh", "--help"]  # the command's, not ours
    with pytest.raises(UsageError, match=r"missing argument CMD"):
        parse(RUN, ["-d"])


def test_a_dashdash_after_the_fixed_arguments_only_separates():
    assert values(EXEC, "c", "--", "ls", "-l") == {"i": False, "ref": "c", "cmd": ["ls", "-l"]}
    assert values(EXEC, "-i", "c", "ls", "--", "x") == {"i": True, "ref": "c", "cmd": ["ls", "--", "x"]}
    assert values(EXEC, "c", "--", "--")["cmd"] == ["--"]


def test_a_declaration_with_clashing_names_is_refused():
    with pytest.raises(ValueError):
        Command("bad", (flag("-q", "--quiet"), flag("-q", "--quick")), _noop)
    with pytest.raises(ValueError):
        flag("-quiet")


# -- every declared command ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_good_help_derived_from_its_declaration(path):
    cmd = load(path)
    r = invoke([*path.split(), "--help"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"Usage: net {path} ")
    assert cmd.help and cmd.help.splitlines()[0] in " ".join(r.stdout.split()) or cmd.help.split()[0] in r.stdout
    for p in cmd.params:
        if p.kind != "arg" and not p.hidden:
            assert p.help, f"net {path} {p.names[-1]} has no help text"
            assert all(name in r.stdout for name in p.names), (path, p.names)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_lists_its_commands(group):
    r = invoke([*group.split(), "--help"])
    assert r.exit_code == 0 and r.stdout.startswith(f"Usage: net {group}".rstrip() + " ")
    prefix = f"{group} " if group else ""
    for path in COMMANDS:
        if path.startswith(prefix) and " " not in path[len(prefix) :]:
            assert f"  {path[len(prefix) :]} " in r.stdout, path


def test_usage_errors_are_one_line_pointing_at_help():
    r = invoke(["ls", "--bogus"])
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", "Error: unknown flag: --bogus (see 'net ls --help')\n")
    r = invoke(["network", "rm"])
    assert (r.exit_code, r.stderr) == (2, "Error: missing argument NAME|ID... (see 'net network rm --help')\n")
    r = invoke(["frobnicate"])
    assert (r.exit_code, r.stderr) == (2, "Error: unknown command 'frobnicate' (see 'net --help')\n")
    r = invoke(["lab", "frobnicate"])
    assert (r.exit_code, r.stderr) == (
        2,
        "Error: unknown command 'frobnicate' for \"net lab\" (see 'net lab --help')\n",
    )


def test_completion_is_served_by_click(monkeypatch):
    monkeypatch.setenv("_NET_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "net ne")
    monkeypatch.setenv("COMP_CWORD", "1")
    r = invoke([])
    assert r.exit_code == 0 and "network" in r.stdout
    monkeypatch.setenv("COMP_WORDS", "net ls --f")
    monkeypatch.setenv("COMP_CWORD", "2")
    r = invoke([])
    assert "--filter" in r.stdout and "--format" in r.stdout
    monkeypatch.setenv("COMP_WORDS", "net network ls --format ")
    monkeypatch.setenv("COMP_CWORD", "4")
    assert invoke([]).stdout.split() == ["plain,table", "plain,json"]


# -- what the everyday commands send ------------------------------------------------------------

CID = "c" * 64


def handler(method, path, body):
    if path.startswith("/containers/create"):
        return 201, {"Content-Type": "application/json"}, json.dumps({"Id": CID}).encode()
    if path.endswith(("/connect", "/disconnect")):
        return 200, {}, b""
    if path == f"/containers/{CID}/start":
        return 204, {}, b""
    return 404, {"Content-Type": "application/json"}, b'{"message": "page not found"}'


def sent(*argv):
    t = InMemoryTransport(handler)
    r = invoke(list(argv), transport=t)
    assert r.exit_code == 0, r.output
    return r, t.calls


def test_run_detached_sends_docker_s_create_body():
    r, calls = sent(
        "run",
        "-d",
        "--name",
        "web",
        "--net",
        "front",
        "--ip",
        "10.1.0.5",
        "--network-alias",
        "www",
        "--network-alias",
        "w2",
        "-e",
        "A=1",
        "--env=B=2",
        "--hostname",
        "h",
        "-p",
        "8080:80/udp",
        "busybox",
        "sleep",
        "9",
    )
    assert r.stdout == CID + "\n"
    assert calls == [
        (
            "POST",
            "/containers/create?name=web",
            {
                "Image": "busybox",
                "Cmd": ["sleep", "9"],
                "Env": ["A=1", "B=2"],
                "Hostname": "h",
                "HostConfig": {
                    "NetworkMode": "front",
                    "AutoRemove": False,
                    "PortBindings": {"80/udp": [{"HostIp": "", "HostPort": "8080"}]},
                },
                "NetworkingConfig": {
                    "EndpointsConfig": {"front": {"IPAMConfig": {"IPv4Address": "10.1.0.5"}, "Aliases": ["www", "w2"]}}
                },
            },
        ),
        ("POST", f"/containers/{CID}/start", None),
    ]


def test_run_options_end_at_the_command():
    _, calls = sent("run", "-d", "--rm", "--network=back", "--", "/bin/sh", "-c", "echo -d --rm")
    assert (calls[0][2]["Image"], calls[0][2]["Cmd"]) == ("", ["/bin/sh", "-c", "echo -d --rm"])  # host filesystem
    assert calls[0][2]["HostConfig"] == {"NetworkMode": "back", "AutoRemove": True}
    _, calls = sent("run", "-d", "busybox", "-x", "--name", "n")
    assert calls[0][1] == "/containers/create"
    assert (calls[0][2]["Image"], calls[0][2]["Cmd"]) == ("busybox", ["-x", "--name", "n"])
    _, calls = sent("run", "-d", "-w", "/srv", "-u", "nobody", "--entrypoint", "", "app:1")
    body = calls[0][2]
    assert (body["Image"], body["Cmd"], body["Entrypoint"]) == ("app:1", None, [""])  # the image's CMD
    assert (body["WorkingDir"], body["User"]) == ("/srv", "nobody")
    _, calls = sent("run", "-d", "--rootfs", "/srv/root", "sh", "-c", "x")
    assert (calls[0][2]["Image"], calls[0][2]["Cmd"]) == ("", ["sh", "-c", "x"])


def test_connect_and_disconnect_send_docker_s_bodies():
    _, calls = sent("connect", "--ip", "10.2.0.9", "--alias", "a", "--mac-address", "02:42:00:00:00:09", "net1", "ct")
    assert calls == [
        (
            "POST",
            "/networks/net1/connect",
            {
                "Container": "ct",
                "EndpointConfig": {
                    "IPAMConfig": {"IPv4Address": "10.2.0.9"},
                    "Aliases": ["a"],
                    "MacAddress": "02:42:00:00:00:09",
                },
            },
        )
    ]
    _, calls = sent("network", "disconnect", "-f", "net 1", "ct")
    assert calls == [("POST", "/networks/net%201/disconnect", {"Container": "ct", "Force": True})]


def test_daemon_errors_keep_their_category():
    def refuse(method, path, body):
        return 404, {"Content-Type": "application/json"}, b'{"message": "network nosuch not found"}'

    r = invoke(["run", "--net", "nosuch", "busybox", "true"], transport=InMemoryTransport(refuse))
    assert (r.exit_code, r.stderr) == (125, "Error: network nosuch not found\n")
    r = invoke(["connect", "nosuch", "ct"], transport=InMemoryTransport(refuse))
    assert (r.exit_code, r.stderr) == (3, "Error: network nosuch not found\n")


def test_key_value_converter():
    assert key_value("a=b=c") == ("a", "b=c")
    with pytest.raises(ValueError):
        key_value("novalue")
