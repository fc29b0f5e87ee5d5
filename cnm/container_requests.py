"""The container requests the API accepts (Docker-shaped bodies), parsed and checked at
the edge. Pure: no I/O."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import InvalidParameter
from cnm.ids import check_name
from cnm.ports import PortBinding, normalize_ip
from cnm.restart_policy import RestartPolicy
from cnm.runtime import caps
from cnm.runtime import confine_opts as co
from cnm.strictnum import is_ascii_digits, parse_int

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _typed(body: dict, key: str, kind: type | tuple, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidParameter(f"field {key} has the wrong type ({type(value).__name__})")
    return value


def check_ip(value: str | None, version: int, flag: str) -> str | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidParameter(f"invalid {flag} address {value!r}") from None
    if ip.version != version:
        raise InvalidParameter(f"{flag} {value} is not an IPv{version} address")
    if getattr(ip, "scope_id", None) is not None:
        raise InvalidParameter(
            f"invalid {flag} address {value!r}: drop the zone index (%…); the network decides the interface"
        )
    if ip.is_multicast or ip.is_loopback or ip.is_unspecified:
        raise InvalidParameter(f"invalid {flag} address {value}: a container's address must be unicast")
    return str(ip)


def check_mac(value: str | None) -> str | None:
    if not value:
        return None
    if not _MAC.match(value) or int(value.split(":")[0], 16) & 1:
        raise InvalidParameter(f"invalid MAC address {value!r}: use six unicast hex pairs, e.g. 02:42:ac:11:00:02")
    return value.lower()


@dataclass
class EndpointRequest:
    ip: str | None = None
    ip6: str | None = None
    mac: str | None = None
    aliases: list[str] = field(default_factory=list)

    @classmethod
    def from_docker_json(cls, body: dict) -> EndpointRequest:
        if not isinstance(body, dict):
            raise InvalidParameter("EndpointConfig must be an object")
        ipam = _typed(body, "IPAMConfig", dict, {})
        aliases = _typed(body, "Aliases", list, [])
        for a in aliases:
            if not isinstance(a, str) or not a or len(a) > 255 or any(c.isspace() for c in a):
                raise InvalidParameter(f"invalid network alias {a!r}")
        return cls(
            ip=check_ip(_typed(ipam, "IPv4Address", str), 4, "--ip"),
            ip6=check_ip(_typed(ipam, "IPv6Address", str), 6, "--ip6"),
            mac=check_mac(_typed(body, "MacAddress", str)),
            aliases=list(aliases),
        )


@dataclass
class ContainerCreate:
    """`net run`: what to run and how to network it."""

    argv: list[str]  # Cmd (may be empty with an image: the image's CMD runs)
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None
    network_mode: str = "bridge"
    endpoint: EndpointRequest = field(default_factory=EndpointRequest)
    ports: list[PortBinding] = field(default_factory=list)
    rootfs: str | None = None
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    auto_remove: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    # Confinement (cnm.runtime.confine): Docker's HostConfig fields, normalized.
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)
    read_only: bool = False
    devices: list[dict] = field(default_factory=list)
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    attach_stdout: bool = True
    attach_stderr: bool = True
    # An image from the store ("" = the host-filesystem mode) and what overrides its config.
    image: str = ""
    entrypoint: list[str] | None = None
    workdir: str = ""
    user: str = ""
    restart_policy: dict = field(default_factory=lambda: RestartPolicy().to_docker_json())
    # Docker's -i/-t: a TTY, a standard input (closed after the first attach's input
    # ends with StdinOnce), whether create's client attaches stdin, the TTY's first size.
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdin: bool = False
    console_size: list[int] | None = None

    @classmethod
    def from_docker_json(cls, body: dict) -> ContainerCreate:
        image = _typed(body, "Image", str, "") or ""
        argv = _str_slice(body, "Cmd") or []
        entrypoint = _str_slice(body, "Entrypoint")
        if not image and not entrypoint and (not argv or not argv[0]):
            raise InvalidParameter(
                "no command given: net run [OPTIONS] IMAGE [CMD…], or /PATH/TO/CMD [ARG…] "
                "to run on the host's filesystem"
            )
        if any("\0" in a for a in [*argv, *(entrypoint or []), image]):
            raise InvalidParameter("invalid command: an argument contains a NUL byte")
        workdir = _typed(body, "WorkingDir", str, "") or ""
        if workdir and ("\0" in workdir or not workdir.startswith("/")):
            raise InvalidParameter(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
        user = _typed(body, "User", str, "") or ""
        if "\0" in user or "\n" in user:
            raise InvalidParameter(f"invalid user {user!r}")
        name = _typed(body, "Name", str)
        if name:
            check_name(name[1:] if name.startswith("/") else name, "container")
        env: dict[str, str] = {}
        for item in _typed(body, "Env", list, []):
            if not isinstance(item, str) or not item or item.startswith("=") or "\0" in item:
                raise InvalidParameter(f"invalid environment variable {item!r}: use KEY=VALUE")
            k, _, v = item.partition("=")
            env[k] = v
        host = _typed(body, "HostConfig", dict, {})
        policy = RestartPolicy.from_docker_json(host.get("RestartPolicy"))
        if not policy.is_none and _typed(host, "AutoRemove", bool, False):
            raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
        mode = _typed(host, "NetworkMode", str, "") or "bridge"
        if mode == "default":
            mode = "bridge"
        if mode.startswith("container:") and not mode.split(":", 1)[1]:
            raise InvalidParameter("network mode container: needs a container name or ID")
        eps = _typed(_typed(body, "NetworkingConfig", dict, {}), "EndpointsConfig", dict, {})
        if len(eps) > 1:
            raise InvalidParameter("a container can be started on one network; use net connect for more")
        endpoint = EndpointRequest.from_docker_json(next(iter(eps.values()))) if eps else EndpointRequest()
        if mode in ("host", "none") or mode.startswith("container:"):
            if endpoint.ip or endpoint.ip6 or endpoint.mac or endpoint.aliases:
                raise InvalidParameter(
                    f"--ip, --ip6, --mac-address and --network-alias need a bridge or user "
                    f"network, not network mode {mode}"
                )
        ports = _port_bindings(_typed(host, "PortBindings", dict, {}))
        if ports and (mode in ("host", "none") or mode.startswith("container:")):
            raise InvalidParameter(f"published ports need a bridge or user network, not network mode {mode}")
        mem, cpus, pids = resources(host)
        hostname = check_hostname(_typed(body, "Hostname", str) or None)
        if hostname and mode.startswith("container:"):
            raise InvalidParameter("--hostname cannot be used with network mode container:X (conflicting options)")
        rootfs = _typed(body, "Rootfs", str) or None
        if rootfs is not None and ("\0" in rootfs or not rootfs.startswith("/")):
            raise InvalidParameter(f"invalid rootfs {rootfs!r}: give an absolute path to a directory")
        if image and rootfs:
            raise InvalidParameter("an image and --rootfs cannot be combined: give one root filesystem")
        return cls(
            argv=list(argv),
            image=image,
            entrypoint=entrypoint,
            workdir=workdir,
            user=user,
            name=(name[1:] if name.startswith("/") else name) if name else None,
            env=env,
            hostname=hostname,
            network_mode=mode,
            endpoint=endpoint,
            ports=ports,
            rootfs=rootfs,
            memory=mem,
            cpus=cpus,
            pids_limit=pids,
            auto_remove=_typed(host, "AutoRemove", bool, False),
            labels=_labels(body),
            attach_stdout=_typed(body, "AttachStdout", bool, True),
            attach_stderr=_typed(body, "AttachStderr", bool, True),
            restart_policy=policy.to_docker_json(),
            tty=_typed(body, "Tty", bool, False),
            open_stdin=_typed(body, "OpenStdin", bool, False),
            stdin_once=_typed(body, "StdinOnce", bool, False),
            attach_stdin=_typed(body, "AttachStdin", bool, False),
            console_size=_console_size(host.get("ConsoleSize")),
            **confinement(host, rootfs is None and not image),
        )


def _console_size(raw: object) -> list[int] | None:
    """HostConfig.ConsoleSize [rows, columns] (API 1.42); [0, 0] or none: unset."""
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 65535 for n in raw)
    ):
        raise InvalidParameter("ConsoleSize must be [height, width], each 0-65535")
    return list(raw) if raw[0] and raw[1] else None


def _strings(host: dict, key: str) -> list[str]:
    value = _typed(host, key, list, [])
    if not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"field {key} must be a list of strings")
    return list(value)


def _str_slice(body: dict, key: str) -> list[str] | None:
    """Docker's strslice (Cmd, Entrypoint): a list of strings, a string, or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise InvalidParameter(f"invalid {key}: expected a list of strings")
    return list(value)


def confinement(host: dict, host_mode: bool) -> dict:
    """The confinement fields of a Docker HostConfig, checked (capability names, security
    options and seccomp profile, binds, mounts, tmpfs, devices)."""
    cap_add, cap_drop = _strings(host, "CapAdd"), _strings(host, "CapDrop")
    known = frozenset(caps.NAMES)
    caps.normalize(cap_add, known, "--cap-add")
    caps.normalize(cap_drop, known, "--cap-drop")
    security_opt = _strings(host, "SecurityOpt")
    co.parse_security_opts(security_opt)
    mounts = [co.parse_bind(b) for b in _strings(host, "Binds")]
    mounts += [co.parse_mount(m) for m in _typed(host, "Mounts", list, [])]
    mounts += co.parse_tmpfs(_typed(host, "Tmpfs", dict, None))
    mounts = co.check_mounts(mounts, host_mode)
    devices = [co.parse_device(d) for d in _typed(host, "Devices", list, [])]
    return {
        "cap_add": cap_add,
        "cap_drop": cap_drop,
        "privileged": _typed(host, "Privileged", bool, False),
        "security_opt": security_opt,
        "mounts": mounts,
        "read_only": _typed(host, "ReadonlyRootfs", bool, False),
        "devices": devices,
        "masked_paths": co.check_paths(host.get("MaskedPaths"), "MaskedPaths"),
        "readonly_paths": co.check_paths(host.get("ReadonlyPaths"), "ReadonlyPaths"),
    }


def _labels(body: dict) -> dict[str, str]:
    labels = _typed(body, "Labels", dict, {})
    for k, v in labels.items():
        if not isinstance(v, str):
            raise InvalidParameter(f"label {k} must have a string value")
    return dict(labels)


def _port_bindings(raw: dict) -> list[PortBinding]:
    """Docker's HostConfig.PortBindings {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}."""
    out: list[PortBinding] = []
    for key, binds in sorted(raw.items()):
        port, _, proto = key.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp") or not is_ascii_digits(port) or not 1 <= int(port[:6]) <= 65535:
            raise InvalidParameter(f"invalid container port {key!r}: use PORT[/tcp|udp] with PORT 1-65535")
        if binds is not None and not isinstance(binds, list):
            raise InvalidParameter(f"port bindings for {key} must be an array, not {type(binds).__name__}")
        for b in binds or [{}]:
            if not isinstance(b, dict):
                raise InvalidParameter(f"invalid port binding for {key}")
            hp = _typed(b, "HostPort", str, "")
            lo = hi = None
            if hp:
                lo_s, dash, hi_s = hp.partition("-")
                try:
                    lo = parse_int(lo_s, 1, 65535)
                    hi = parse_int(hi_s, lo, 65535) if dash else None
                except ValueError as exc:
                    raise InvalidParameter(f"invalid host port {hp!r} for {key}: {exc} (ports are 1-65535)") from None
            host_ip = _typed(b, "HostIp", str, "")
            out.append(
                PortBinding(
                    proto=proto,
                    container_port=int(port),
                    host_ip=normalize_ip(host_ip or None, key),
                    host_port=lo,
                    host_port_end=hi,
                )
            )
    return out


# Docker's bounds on resources (daemon/daemon_unix.go): at least 6 MiB of memory, CPUs
# from 0.01 to the host's count, a CFS period of 1 ms..1 s and a quota of at least 1 ms.
MIN_MEMORY = 6 * 1024 * 1024
MAX_INT64 = 2**63 - 1
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's pids.max ceiling (PID_MAX_LIMIT)


def resources(host: dict, cpu_count: int | None = None) -> tuple[int | None, float | None, int | None]:
    """(memory bytes, CPUs, pids limit) of a HostConfig, None meaning no limit; refused
    with Docker's words where Docker refuses, and with a line of our own for what the
    kernel would refuse or silently wrap (2^64 bytes of memory wraps to nothing)."""
    ncpu = cpu_count or os.cpu_count() or 1
    mem = _typed(host, "Memory", int, 0)
    if mem > MAX_INT64:
        raise InvalidParameter(f"invalid Memory {mem}: at most {MAX_INT64} bytes (a signed 64-bit number)")
    if mem != 0 and mem < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    nano = _typed(host, "NanoCpus", int, 0)
    quota = _typed(host, "CpuQuota", int, 0)
    period = _typed(host, "CpuPeriod", int, 0)
    if nano and period:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano and quota:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano < 0 or nano > ncpu * 10**9 or 0 < nano < 10**7:
        raise InvalidParameter(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidParameter("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if quota != -1 and (quota < 0 or 0 < quota < 1000):
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    cpus = nano / 1e9 if nano else None
    if quota > 0:
        cpus = quota / (period or 100_000)
        if cpus > ncpu:
            raise InvalidParameter(
                f"CPU quota {quota} per period {period or 100_000} is {cpus:g} CPUs: "
                f"there are only {ncpu} CPUs available"
            )
    pids = _typed(host, "PidsLimit", int, 0)
    if pids > PID_MAX_LIMIT:
        raise InvalidParameter(
            f"invalid PidsLimit {pids}: the kernel allows at most {PID_MAX_LIMIT} tasks (0 or -1: no limit)"
        )
    return (mem or None), cpus, (pids if pids > 0 else None)


_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def check_hostname(name: str | None) -> str | None:
    """RFC 1123: letters, digits, '-' and '.', not starting or ending with '-' or '.', at
    most 64 characters (the kernel's limit for sethostname)."""
    if name is None:
        return None
    if len(name) > 64 or not set(name) <= _HOSTNAME_CHARS or name[0] in "-." or name[-1] in "-." or ".." in name:
        raise InvalidParameter(
            f"invalid hostname {name[:70]!r}: use letters, digits, '-' and '.' (RFC 1123), at most 64 characters"
        )
    return name
