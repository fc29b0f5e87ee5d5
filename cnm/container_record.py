"""A container's record: what the daemon keeps about it (the runtime holds its process
state, the sandbox its network). Pure data."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields

from cnm.container_requests import EndpointRequest
from cnm.errors import Forbidden
from cnm.model import Network


@dataclass
class Attachment:
    """A network the container asks to be on, with its endpoint settings."""

    network: str  # the network's ID
    ip: str | None = None
    ip6: str | None = None
    mac: str | None = None
    aliases: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, network_id: str, req: EndpointRequest) -> Attachment:
        return cls(network_id, req.ip, req.ip6, req.mac, list(req.aliases))

    @classmethod
    def from_record(cls, rec: dict) -> Attachment:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in rec.items() if k in names})

    def request(self) -> EndpointRequest:
        return EndpointRequest(ip=self.ip, ip6=self.ip6, mac=self.mac, aliases=list(self.aliases))


@dataclass
class Container:
    """The daemon's record of a container (the runtime holds the process state)."""

    id: str
    name: str
    created: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    rootfs: str | None = None
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    auto_remove: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    attach_stdout: bool = True  # Config.AttachStdout/Stderr as created (docker run -d: False)
    attach_stderr: bool = True
    # Asked for:
    network_mode: str = "bridge"  # as the user gave it: bridge, host, none, container:X, NET
    networks: list[dict] = field(default_factory=list)  # Attachment records, in order
    requested_ports: list[dict] = field(default_factory=list)  # PortBinding records
    # Given (Docker's NetworkSettings), while the container runs:
    shared_with: str | None = None  # container:X -> X's id
    sandbox_id: str | None = None
    sandbox_key: str | None = None
    ports: list[dict] = field(default_factory=list)  # published PortBinding records
    released: bool = False  # network resources given back after exit
    confine: dict = field(default_factory=dict)  # cap_add, privileged, mounts, ... (ContainerSpec's names)
    started: bool = False  # has been started at least once (else Docker's "created")
    # Its image ("" = the host's filesystem or --rootfs): the name as given, the ID, and
    # the config merged from the image and the request (argv = entrypoint + cmd).
    image: str = ""
    image_id: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    # Docker's HostConfig.RestartPolicy, the restarts it made since a user last started
    # it, and whether a user stopped it (`unless-stopped` reads it after a daemon restart).
    restart_policy: dict = field(default_factory=lambda: {"Name": "no", "MaximumRetryCount": 0})
    restart_count: int = 0
    manually_stopped: bool = False
    # -i/-t (Config.Tty, OpenStdin, StdinOnce, AttachStdin; HostConfig.ConsoleSize).
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdin: bool = False
    console_size: list[int] | None = None

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict) -> Container:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in rec.items() if k in names})

    def attachments(self) -> list[Attachment]:
        return [Attachment.from_record(a) for a in self.networks]


# The request's confinement fields, kept in the record under the runtime's ContainerSpec names.
CONFINEMENT_FIELDS = (
    "cap_add",
    "cap_drop",
    "privileged",
    "security_opt",
    "mounts",
    "read_only",
    "devices",
    "masked_paths",
    "readonly_paths",
)


_ADJ = ["brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quirky", "sharp", "vivid"]
_NOUN = ["babbage", "curie", "hopper", "lovelace", "noether", "pike", "ritchie", "shannon", "turing", "wozniak"]


def created_now() -> str:
    """A record's creation time: RFC 3339 in UTC, as Docker writes it."""
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def generated_name(cid: str, taken: Collection[str]) -> str:
    n = int(cid[:8], 16)
    name = f"{_ADJ[n % 10]}_{_NOUN[(n // 10) % 10]}"
    return name if name not in taken else f"{name}_{cid[:6]}"


def start_failure_code(message: str) -> int:
    """Docker's exit code for a container that could not start."""
    if "not found" in message or "no such file" in message.lower():
        return 127
    if "permission denied" in message.lower():
        return 126
    return 128


def check_connectable(ct: Container, net: Network) -> None:
    """Forbidden if `ct` cannot be connected to `net` at all (Docker's rules)."""
    if ct.network_mode == "host" or net.driver == "host":
        raise Forbidden("container cannot be disconnected from host network or connected to host network")
    if ct.shared_with:
        raise Forbidden(
            f"container {ct.name} shares the network namespace of another container "
            "and cannot be connected to any other network"
        )
    if ct.network_mode == "none" or net.driver == "null":
        raise Forbidden(f"container {ct.name} is in network mode none and cannot be connected to other networks")
