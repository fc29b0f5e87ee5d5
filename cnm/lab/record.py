"""A lab's record: what `up` made, written as each step succeeds (JSON, atomic).

`down` works from the record alone, so it can remove a lab whose file is gone or whose
`up` failed half-way. Layout of a lab's directory (default /var/lib/cnm-lab/<name>,
base overridable with CNM_LAB_DIR):

    lab.json                   this record
    <host>/root, <host>/run    the host's daemon state and run directories
    <host>/cnm.sock            its API socket
    <host>/daemon.log          its log
    etcd/<member>/, .log       etcd members' data and logs
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnm.errors import InvalidParameter, NotFound

DEFAULT_BASE = "/var/lib/cnm-lab"
RECORD = "lab.json"
LAB_DIR_MODE = 0o710  # root's group may reach the daemons' sockets inside
SOCKET_MAX = 107  # sun_path holds 108 bytes with the NUL


def base_dir() -> Path:
    return Path(os.environ.get("CNM_LAB_DIR") or DEFAULT_BASE)


def lab_dir(name: str) -> Path:
    return base_dir() / name


@dataclass
class HostPaths:
    root: str
    run: str
    socket: str
    log: str

    @classmethod
    def for_host(cls, lab_directory: Path, host: str) -> HostPaths:
        d = lab_directory / host
        paths = cls(root=str(d / "root"), run=str(d / "run"), socket=str(d / "cnm.sock"), log=str(d / "daemon.log"))
        if len(paths.socket) > SOCKET_MAX:
            raise InvalidParameter(
                f"socket path {paths.socket} is longer than {SOCKET_MAX} bytes: set CNM_LAB_DIR to a shorter directory"
            )
        return paths


@dataclass
class LabRecord:
    name: str
    dir: str
    topology: Any  # the raw lab document (YAML as data)
    source: str | None = None
    status: str = "building"  # building | up | failed
    builder: dict = field(default_factory=dict)  # {pid, start} of the `net lab up` building it
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    hosts: dict[str, dict] = field(default_factory=dict)  # host -> {netns, address, **HostPaths}
    daemons: dict[str, dict] = field(default_factory=dict)  # host -> {pid, start}
    etcd: dict[str, dict] = field(default_factory=dict)  # member -> {host, pid, start, client_url, log}
    cluster_store: str | None = None  # the daemons' --cluster-store value
    networks: list[list[str]] = field(default_factory=list)  # [name, host]
    containers: list[list[str]] = field(default_factory=list)  # [name, host]
    impair: dict[str, dict] = field(default_factory=dict)  # host -> Impairment.to_json()
    failed_step: str | None = None
    error: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.dir) / RECORD

    def save(self) -> None:
        """Write atomically (tmp + rename): a crash never leaves half a record. The lab
        directory must be root's alone (the record holds containers' environments, and
        the daemons run as root below it): Forbidden, one line, otherwise."""
        from cnm.statedirs import private_dir

        private_dir(self.dir, LAB_DIR_MODE, "lab directory")
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, name: str) -> LabRecord:
        path = lab_dir(name) / RECORD
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no lab named {name!r} (see net lab ls)") from None
        except (OSError, ValueError) as exc:
            raise InvalidParameter(f"{path}: unreadable lab record ({exc}); remove the directory by hand") from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def host_paths(self, host: str) -> HostPaths:
        h = self.hosts.get(host)
        if h is None:
            raise NotFound(f"lab {self.name} has no host {host!r} (hosts: {', '.join(self.hosts) or 'none'})")
        return HostPaths(root=h["root"], run=h["run"], socket=h["socket"], log=h["log"])


def list_labs() -> list[LabRecord]:
    """Every recorded lab under the base directory (unreadable records skipped)."""
    base = base_dir()
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if (d / RECORD).is_file():
            try:
                out.append(LabRecord.load(d.name))
            except (NotFound, InvalidParameter):
                continue
    return out
