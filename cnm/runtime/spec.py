"""ContainerSpec: everything the runtime needs to start one container; ExecSpec: one
process run in a running container. Pure data."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields

from cnm.errors import InvalidParameter
from cnm.runtime import caps, confine_opts

HOST = "host"
# Docker's default PATH when the image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ID_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")
MIN_MEMORY = 6 * 1024 * 1024  # Docker's lower bound: "Minimum memory limit allowed is 6MB"
# Log rotation by default, as Docker's `local` log driver: 5 files of 20 MB at most.
DEFAULT_LOG_MAX_SIZE = 20 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 5


@dataclass
class ContainerSpec:
    """One container.

    netns:  "host" = the caller's own network namespace; otherwise the path of an
            existing namespace file to join (a bind-mounted /run/.../netns/<id>, or
            /proc/<pid>/ns/net of another container for `container:X`).
    rootfs: None = the host's filesystem as / (with private /proc, /dev/shm and
            /etc/{hosts,resolv.conf,hostname}); else directories used read-only as the
            lower layers of an overlay (topmost first: an image's layers, or one
            --rootfs DIR) whose upper layer lives in the container's dir.
    user:   Docker's User ("name", "uid", "uid:gid", "name:group"; "" = root),
            resolved in the container's own /etc/passwd and /etc/group at start.
    hosts, resolv_conf, etc_hostname: contents bind-mounted over the files in /etc
            inside the container (None = leave the file alone). etc_hostname None with
            a hostname set means "<hostname>\\n".
    memory: bytes; cpus: fraction of CPUs (1.5 = one and a half); pids_limit: tasks.

    Confinement (see cnm.runtime.confine for what the defaults give):
    cap_add, cap_drop: capability names (Docker's rules; "ALL" allowed);
    privileged: every capability, no seccomp filter, no masked paths, the host's devices;
    security_opt: Docker's --security-opt words (seccomp=..., no-new-privileges=..., ...);
    mounts: normalized bind/tmpfs mounts (cnm.runtime.confine_opts);
    read_only: the rootfs read-only (the host-filesystem mode is read-only anyway);
    devices: [{"host", "container"}] device nodes to bind in;
    masked_paths, readonly_paths: None = Docker's defaults.

    I/O (Docker's Config.Tty/OpenStdin/StdinOnce, HostConfig.ConsoleSize, LogConfig):
    tty:    a pty, allocated in the container, is its controlling terminal and stdio;
            its output is one stream (stdout), raw.
    open_stdin: stdin is a pipe (or the pty) that attached clients write; else /dev/null.
    stdin_once: the first attached client's end of input closes the container's stdin.
    console_size: [rows, columns] of the pty at start.
    log_max_size, log_max_files: the log rotates at max_size bytes, keeping max_files.
    """

    id: str
    argv: list[str]
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    workdir: str = "/"
    netns: str = HOST
    rootfs: list[str] | None = None
    user: str = ""
    hosts: str | None = None
    resolv_conf: str | None = None
    etc_hostname: str | None = None
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)
    read_only: bool = False
    devices: list[dict] = field(default_factory=list)
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    console_size: list[int] | None = None
    log_max_size: int = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES

    def validate(self) -> ContainerSpec:
        """Raise InvalidParameter for anything the kernel would reject later; return self."""
        if not ID_PATTERN.match(self.id or ""):
            raise InvalidParameter(f"invalid container id {self.id!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-], at most 128")
        if (
            not isinstance(self.argv, list)
            or not self.argv
            or not self.argv[0]
            or any(not isinstance(a, str) or "\0" in a for a in self.argv)
        ):
            raise InvalidParameter("no command given: argv must be a non-empty list of strings")
        for k, v in self.env.items():
            if not k or "=" in k or "\0" in k or "\0" in str(v):
                raise InvalidParameter(f"invalid environment variable {k!r}: names must be non-empty without '='")
        if self.hostname and not _HOSTNAME.match(self.hostname):
            raise InvalidParameter(f"invalid hostname {self.hostname!r}: letters, digits, '.', '-'; at most 63")
        if not self.workdir.startswith("/"):
            raise InvalidParameter(
                f"the working directory {self.workdir!r} is invalid: it needs to be an absolute path"
            )
        if self.netns != HOST and not os.path.isabs(self.netns):
            raise InvalidParameter(f'invalid netns {self.netns!r}: "host" or the absolute path of a namespace file')
        if self.rootfs is not None:
            if not isinstance(self.rootfs, list) or not self.rootfs:
                raise InvalidParameter("invalid rootfs: a non-empty list of lower directories")
            for lower in self.rootfs:
                if not isinstance(lower, str) or not os.path.isabs(lower):
                    raise InvalidParameter(f"invalid rootfs {lower!r}: it needs to be an absolute path")
                if any(c in lower for c in ",:\\"):
                    # overlayfs mount options are split on ',' and lowerdir on ':'
                    raise InvalidParameter(f"invalid rootfs {lower!r}: ',', ':' and '\\' are not allowed in the path")
        if not isinstance(self.user, str) or any(c in self.user for c in "\0\n"):
            raise InvalidParameter(f"invalid user {self.user!r}")
        if self.memory is not None and (isinstance(self.memory, bool) or self.memory < MIN_MEMORY):
            raise InvalidParameter(f"invalid memory limit {self.memory}: minimum memory limit allowed is 6MB")
        if self.cpus is not None and not (0.01 <= self.cpus <= 1024):
            raise InvalidParameter(f"invalid cpus {self.cpus}: range of CPUs is from 0.01 upwards")
        if self.pids_limit is not None and (isinstance(self.pids_limit, bool) or self.pids_limit < 1):
            raise InvalidParameter(f"invalid pids limit {self.pids_limit}: it must be at least 1")
        self._validate_confinement()
        check_io(self.tty, self.open_stdin, self.console_size, self.user)
        if not isinstance(self.stdin_once, bool):
            raise InvalidParameter("stdin_once must be true or false")
        for name, value, least in (("log max size", self.log_max_size, 1024), ("log max files", self.log_max_files, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidParameter(f"invalid {name} {value!r}: at least {least}")
        return self

    def _validate_confinement(self) -> None:
        for flag, names in (("--cap-add", self.cap_add), ("--cap-drop", self.cap_drop)):
            if not isinstance(names, list):
                raise InvalidParameter(f"{flag}: a list of capability names")
            caps.normalize(names, frozenset(caps.NAMES), flag)
        if not isinstance(self.privileged, bool) or not isinstance(self.read_only, bool):
            raise InvalidParameter("privileged and read_only are booleans")
        confine_opts.parse_security_opts(self.security_opt)
        if not isinstance(self.mounts, list) or not all(
            isinstance(m, dict) and m.get("type") in ("bind", "tmpfs") for m in self.mounts
        ):
            raise InvalidParameter("mounts: a list of normalized bind or tmpfs mounts")
        confine_opts.check_mounts(self.mounts, host_mode=self.rootfs is None)
        for m in self.mounts:
            if m["type"] == "bind" and not os.path.isabs(m.get("source") or ""):
                raise InvalidParameter(f"bind mount {m.get('target')}: the source must be an absolute path")
        for d in self.devices:
            confine_opts.parse_device({"PathOnHost": d.get("host"), "PathInContainer": d.get("container")})
        for fld in ("masked_paths", "readonly_paths"):
            confine_opts.check_paths(getattr(self, fld), fld)

    def hostname_file(self) -> str | None:
        """What /etc/hostname should contain inside, or None to leave it alone."""
        if self.etc_hostname is not None:
            return self.etc_hostname
        return f"{self.hostname}\n" if self.hostname else None

    def full_env(self) -> dict[str, str]:
        """The environment the process gets: PATH and HOSTNAME defaulted like Docker."""
        env = {"PATH": DEFAULT_PATH}
        if self.hostname:
            env["HOSTNAME"] = self.hostname
        env.update(self.env)
        return env

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ContainerSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidParameter(f"unknown container spec field(s): {', '.join(sorted(unknown))}")
        try:
            spec = cls(**data)
        except TypeError as exc:
            raise InvalidParameter(f"invalid container spec: {exc}") from exc
        spec.argv = list(spec.argv)
        spec.env = dict(spec.env)
        if isinstance(spec.rootfs, str):  # a spec.json written when rootfs was one directory
            spec.rootfs = [spec.rootfs]
        return spec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContainerSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidParameter(f"container spec is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidParameter("container spec must be a JSON object")
        return cls.from_dict(data)


def check_io(tty: object, stdin: object, console_size: object, user: object) -> None:
    """The I/O fields a container and an exec share."""
    if not isinstance(tty, bool) or not isinstance(stdin, bool):
        raise InvalidParameter("tty and stdin must be true or false")
    if console_size is not None and not (
        isinstance(console_size, (list, tuple))
        and len(console_size) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 65535 for n in console_size)
    ):
        raise InvalidParameter(f"invalid console size {console_size!r}: [rows, columns], each 0-65535")
    if (
        not isinstance(user, str)
        or any(c in user for c in "\0\n")
        or user.count(":") > 1
        or (user and not all(user.split(":")))
    ):
        raise InvalidParameter(f"invalid user {user!r}: name, uid, name:group or uid:gid")


@dataclass
class ExecSpec:
    """A process to run in a running container (Docker's ExecConfig, checked).

    env: added to the container's environment; user/workdir "" = the container's;
    stdin: the requester writes the process's stdin (else /dev/null), and its end of
    input closes it; stdout/stderr: the streams the requester takes (with a TTY, one);
    privileged: every capability, no seccomp filter (Docker's exec --privileged)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    console_size: list[int] | None = None
    privileged: bool = False

    def validate(self) -> ExecSpec:
        if (
            not isinstance(self.argv, list)
            or not self.argv
            or not self.argv[0]
            or any(not isinstance(a, str) or "\0" in a for a in self.argv)
        ):
            raise InvalidParameter("no command given to exec: argv must be a non-empty list of strings")
        for k, v in self.env.items():
            if not k or "=" in k or "\0" in k or "\0" in str(v):
                raise InvalidParameter(f"invalid environment variable {k!r}: names must be non-empty without '='")
        if self.workdir and not self.workdir.startswith("/"):
            raise InvalidParameter(
                f"the working directory {self.workdir!r} is invalid: it needs to be an absolute path"
            )
        check_io(self.tty, self.stdin, self.console_size, self.user)
        return self

    def streams(self) -> str:
        """The attach letters of the streams the requester takes."""
        return ("o" if self.stdout else "") + ("e" if self.stderr else "")
