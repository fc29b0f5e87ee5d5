"""Every `net` command path and the module that declares it (imported only when that
command runs, or when help lists it), the groups' help, and the global flags.

To add a command: declare it in its area's module (see cnm/cli/spec.py), then add its
path(s) here, aliases included ("network list" runs the same command as "network
ls"). A new group (`net image …`) also gets a line in GROUPS.
"""

from __future__ import annotations

from cnm.cli.spec import DEFAULT_HOST, Command, arg, option

GROUPS: dict[str, str] = {
    "": "Manage cnm networks and containers, and run the cnm daemon.",
    "network": "Manage networks (the same commands as at the top level).",
    "container": "Manage containers.",
    "lab": (
        "Multi-host labs: each host a network namespace with its own daemon, joined by an "
        "underlay switch (state under /var/lib/cnm-lab, or $CNM_LAB_DIR)."
    ),
    "plugin": "Docker network and IPAM plugins: list, check, serve.",
    "image": "Manage images: load, import, list, inspect, tag, remove, save.",
}

_NETWORKS = "cnm.cli.networks"
_CONTAINERS = "cnm.cli.containers"
_LAB = "cnm.cli.lab"
_PLUGINS = "cnm.cli.plugins"
_IMAGES = "cnm.cli.images"

COMMANDS: dict[str, str] = {
    # networks: at the top level (the CLI's first commands) and under `network`, as Docker's
    "create": f"{_NETWORKS}:create",
    "ls": f"{_NETWORKS}:ls",
    "inspect": f"{_NETWORKS}:inspect",
    "rm": f"{_NETWORKS}:rm",
    "prune": f"{_NETWORKS}:prune",
    "connect": f"{_NETWORKS}:connect",
    "disconnect": f"{_NETWORKS}:disconnect",
    "network create": f"{_NETWORKS}:create",
    "network ls": f"{_NETWORKS}:ls",
    "network list": f"{_NETWORKS}:ls",
    "network inspect": f"{_NETWORKS}:inspect",
    "network rm": f"{_NETWORKS}:rm",
    "network remove": f"{_NETWORKS}:rm",
    "network prune": f"{_NETWORKS}:prune",
    "network connect": f"{_NETWORKS}:connect",
    "network disconnect": f"{_NETWORKS}:disconnect",
    # containers: the everyday ones at the top level, all under `container`
    "run": f"{_CONTAINERS}:run",
    "ps": f"{_CONTAINERS}:ps",
    "exec": f"{_CONTAINERS}:exec_",
    "attach": f"{_CONTAINERS}:attach",
    "logs": f"{_CONTAINERS}:logs",
    "stop": f"{_CONTAINERS}:stop",
    "kill": f"{_CONTAINERS}:kill",
    "container run": f"{_CONTAINERS}:run",
    "container ls": f"{_CONTAINERS}:ps",
    "container ps": f"{_CONTAINERS}:ps",
    "container list": f"{_CONTAINERS}:ps",
    "container exec": f"{_CONTAINERS}:exec_",
    "container attach": f"{_CONTAINERS}:attach",
    "container logs": f"{_CONTAINERS}:logs",
    "container stop": f"{_CONTAINERS}:stop",
    "container kill": f"{_CONTAINERS}:kill",
    "container rm": f"{_CONTAINERS}:rm",
    "container remove": f"{_CONTAINERS}:rm",
    "container inspect": f"{_CONTAINERS}:inspect",
    # images: under `image`, and Docker's top-level forms
    "image load": f"{_IMAGES}:load",
    "image import": f"{_IMAGES}:import_",
    "image ls": f"{_IMAGES}:ls",
    "image list": f"{_IMAGES}:ls",
    "image inspect": f"{_IMAGES}:inspect",
    "image history": f"{_IMAGES}:history",
    "image tag": f"{_IMAGES}:tag",
    "image rm": f"{_IMAGES}:rm",
    "image remove": f"{_IMAGES}:rm",
    "image prune": f"{_IMAGES}:prune",
    "image save": f"{_IMAGES}:save",
    "image pull": f"{_IMAGES}:pull",
    "images": f"{_IMAGES}:ls",
    "rmi": f"{_IMAGES}:rm",
    "load": f"{_IMAGES}:load",
    "import": f"{_IMAGES}:import_",
    "save": f"{_IMAGES}:save",
    "tag": f"{_IMAGES}:tag",
    "history": f"{_IMAGES}:history",
    "pull": f"{_IMAGES}:pull",
    # the daemon itself
    "daemon": "cnm.cli.system:daemon",
    "version": "cnm.cli.system:version",
    # labs and plugins (no daemon involved)
    "lab up": f"{_LAB}:up",
    "lab down": f"{_LAB}:down",
    "lab ls": f"{_LAB}:ls",
    "lab inspect": f"{_LAB}:inspect",
    "lab exec": f"{_LAB}:exec_",
    "lab check": f"{_LAB}:check",
    "lab graph": f"{_LAB}:graph",
    "lab capture": f"{_LAB}:capture",
    "lab impair": f"{_LAB}:impair",
    "lab stop": f"{_LAB}:stop",
    "lab start": f"{_LAB}:start",
    "plugin ls": f"{_PLUGINS}:ls",
    "plugin check": f"{_PLUGINS}:check",
    "plugin serve": f"{_PLUGINS}:serve",
    "plugin forget-host": f"{_PLUGINS}:forget_host",
}


def _top(cx: object, o: object) -> None:  # never run: `net` alone shows help
    return None


# The flags before the command (`net -H unix:///x.sock ls`); `rest` is the command and its own.
TOP = Command(
    "net",
    (
        option(
            "-H", "--host", envvar="NET_HOST", default=DEFAULT_HOST, help="Daemon socket to talk to (env NET_HOST)."
        ),
        arg("rest", nargs=-1, required=False, metavar="COMMAND [ARG]..."),
    ),
    _top,
    help=GROUPS[""],
    interspersed=False,
)


def load(path: str) -> Command:
    """The declared command at `path` ("network ls"); its module is imported now."""
    module, _, attr = COMMANDS[path].partition(":")
    cmd = getattr(__import__(module, fromlist=[attr]), attr)
    if not isinstance(cmd, Command):
        raise TypeError(f"{COMMANDS[path]} is not a declared command (use @command)")
    return cmd


def resolve(words: list[str]) -> tuple[str, list[str]]:
    """(path, the words after it): the longest command or group path `words` start with;
    ("", words) when the first word is neither."""
    path, i = "", 0
    while i < len(words):
        longer = f"{path} {words[i]}" if path else words[i]
        if longer not in COMMANDS and longer not in GROUPS:
            break
        path, i = longer, i + 1
        if path in COMMANDS:
            break
    return path, words[i:]
