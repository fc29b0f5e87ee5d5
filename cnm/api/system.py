"""System routes: `/_ping`, `/version`, `/info`, `/system/df`, and the prune endpoints
of things this daemon has none of (build cache, volumes), so `docker system prune`
runs to its end.

`/info` answers the fields Docker's clients read (`docker info`, docker-py's
`info()`); the daemon supplies what only it knows (container counts, images, its
root and ID) through `InfoSource`; host facts come from /proc and /etc.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cnm.api.common import Route, blocking, json_response
from cnm.api.version import API_VERSION, MIN_API_VERSION, package_version

# Go's names for machine architectures: Docker's clients compare Arch with these.
GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def _arch() -> str:
    machine = platform.machine()
    return GOARCH.get(machine, machine)


def version_info() -> dict:
    pkg_version = package_version()
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": _arch(),
        "KernelVersion": platform.release(),
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
        "PythonVersion": platform.python_version(),
    }
    return {
        "Platform": {"Name": "cnm"},
        "Version": pkg_version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux" if sys.platform.startswith("linux") else sys.platform,
        "Arch": _arch(),
        "KernelVersion": platform.release(),
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
        "PythonVersion": platform.python_version(),
        "Components": [{"Name": "Engine", "Version": pkg_version, "Details": details}],
    }


# -- /info -------------------------------------------------------------------------------


@dataclass
class InfoSource:
    """What only the daemon knows. `counts()` runs in the API's thread pool and
    returns {"Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped",
    "Images"}; `network_drivers()` names the network drivers it can use."""

    daemon_id: str
    root_dir: str
    counts: Callable[[], dict[str, int]]
    network_drivers: Callable[[], list[str]] = lambda: ["bridge", "host", "null", "overlay"]
    cgroup_version: Callable[[], str] = lambda: "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
    labels: list[str] = field(default_factory=list)
    debug: bool = False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def os_release(text: str) -> tuple[str, str]:
    """(PRETTY_NAME, VERSION_ID) of an /etc/os-release text; Docker's OperatingSystem
    and OSVersion."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values.get("PRETTY_NAME", "Linux"), values.get("VERSION_ID", "")


def mem_total(meminfo: str) -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else 0
    return 0


def _sysctl_on(path: str) -> bool:
    return _read(path).strip() == "1"


def info_json(source: InfoSource, counts: dict[str, int], now: datetime.datetime | None = None) -> dict:
    """The `GET /info` answer, Docker's field names. Features this daemon does not have
    (swarm, registries, volume and log plugins, storage drivers) are shown as absent,
    not faked."""
    now = now or datetime.datetime.now(datetime.UTC)
    pretty, version_id = os_release(_read("/etc/os-release"))
    pkg = package_version()
    cgv = source.cgroup_version()
    return {
        "ID": source.daemon_id,
        "Containers": counts.get("Containers", 0),
        "ContainersRunning": counts.get("ContainersRunning", 0),
        "ContainersPaused": counts.get("ContainersPaused", 0),
        "ContainersStopped": counts.get("ContainersStopped", 0),
        "Images": counts.get("Images", 0),
        "Driver": "overlayfs",
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": sorted(source.network_drivers()), "Authorization": None, "Log": []},
        "MemoryLimit": True,
        "SwapLimit": False,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": False,
        "CPUSet": False,
        "PidsLimit": True,
        "OomKillDisable": False,
        "IPv4Forwarding": _sysctl_on("/proc/sys/net/ipv4/ip_forward"),
        "BridgeNfIptables": _sysctl_on("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": _sysctl_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        "Debug": source.debug,
        "NFd": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0,
        "NGoroutines": 0,
        "SystemTime": now.isoformat().replace("+00:00", "Z"),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgv,
        "NEventsListener": counts.get("NEventsListener", 0),
        "KernelVersion": platform.release(),
        "OperatingSystem": pretty,
        "OSVersion": version_id,
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": [],
            "IndexConfigs": {},
            "Mirrors": [],
        },
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem_total(_read("/proc/meminfo")),
        "GenericResources": None,
        "DockerRootDir": source.root_dir,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": platform.node(),
        "Labels": list(source.labels),
        "ExperimentalBuild": False,
        "ServerVersion": pkg,
        "Runtimes": {"cnm": {"path": "cnm-supervisor"}},
        "DefaultRuntime": "cnm",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": True,  # containers outlive the daemon, by design
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": [],
        "Warnings": [],
    }


def routes(controller: Any) -> list[Route]:
    info = version_info()

    async def ping(request: web.Request) -> web.Response:
        # The headers Docker's CLI reads to pick its API version and features.
        headers = {
            "Api-Version": API_VERSION,
            "Docker-Experimental": "false",
            "Ostype": "linux",
            "Swarm": "inactive",
            "Cache-Control": "no-cache, no-store, must-revalidate",
            "Pragma": "no-cache",
        }
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Type": "text/plain; charset=utf-8"})
        return web.Response(text="OK", headers=headers)

    async def version(request: web.Request) -> web.Response:
        return json_response(info)

    return [
        Route("GET", "/_ping", ping),
        Route("HEAD", "/_ping", ping),
        Route("GET", "/version", version),
    ]


def info_routes(source: InfoSource, listeners: Callable[[], int] = lambda: 0) -> list[Route]:
    """`GET /info`, and the prunes of what this daemon has none of: it keeps no build
    cache and no volumes, so there is nothing to delete (honest zeros, not 404s, so
    `docker system prune` completes)."""

    async def info(request: web.Request) -> web.Response:
        counts = await blocking(request, source.counts)
        return json_response(info_json(source, {**counts, "NEventsListener": listeners()}))

    async def build_prune(request: web.Request) -> web.Response:
        return json_response({"CachesDeleted": [], "SpaceReclaimed": 0})

    async def volumes_prune(request: web.Request) -> web.Response:
        return json_response({"VolumesDeleted": [], "SpaceReclaimed": 0})

    async def volumes(request: web.Request) -> web.Response:
        return json_response({"Volumes": [], "Warnings": []})

    return [
        Route("GET", "/info", info),
        Route("POST", "/build/prune", build_prune),
        Route("POST", "/volumes/prune", volumes_prune),
        Route("GET", "/volumes", volumes),
    ]
