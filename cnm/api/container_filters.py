"""Docker's container list filters (`docker ps --filter …`) and container prune filters.
Pure: the caller gathers each container's record, state and networks into a `Row`.

Rules as Docker's daemon applies them (daemon/list.go): `name` and `id` are regular
expressions; `label` all of KEY or KEY=VALUE; `status` one of Docker's states (and
lists stopped containers too); `exited` an exit code of a container that ran;
`network` a network name or ID prefix; `ancestor` the image (name, name:tag or ID
prefix); `before`/`since` a container created before/after the one named;
`publish`/`expose` a host/container port (PORT[/PROTO] or a range); `health` none (no
container here has a healthcheck); `volume` and `is-task=true` match nothing (no
volumes, no swarm tasks).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from cnm.api.filters import Filters, labels_match, labels_selected, regex, until_nanos
from cnm.api.timestamps import rfc3339_to_nanos
from cnm.errors import InvalidParameter
from cnm.strictnum import is_ascii_digits, parse_int

LIST_FILTERS = frozenset(
    {
        "ancestor",
        "before",
        "expose",
        "exited",
        "health",
        "id",
        "isolation",
        "is-task",
        "label",
        "name",
        "network",
        "publish",
        "since",
        "status",
        "volume",
    }
)
PRUNE_FILTERS = frozenset({"until", "label", "label!"})
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
# What `docker ps` lists without --all: moby's container.Running holds for these too.
ALIVE = ("running", "restarting", "paused")
HEALTH = ("starting", "healthy", "unhealthy", "none")


@dataclass
class Row:
    """What the filters look at for one container."""

    id: str
    name: str
    created: str  # RFC 3339
    status: str  # Docker's State: running, exited, created, dead, …
    exit_code: int | None = None
    started: bool = False  # has run at least once
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""  # as the user named it
    image_id: str = ""
    networks: dict[str, str] = field(default_factory=dict)  # name -> network id
    published: list[tuple[int, str]] = field(default_factory=list)  # (host port, proto)
    exposed: list[tuple[int, str]] = field(default_factory=list)  # (container port, proto)


@dataclass
class ListQuery:
    """Parsed `GET /containers/json` filters; `check()` before any container is read."""

    filters: Filters
    all: bool = False
    exited: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, filters: Filters, all_: bool) -> ListQuery:
        for value in filters.get("status", []):
            if value not in STATES:
                raise InvalidParameter(f"invalid filter 'status={value}': use one of {', '.join(STATES)}")
            all_ = True  # asking for a state lists stopped containers too
        for value in filters.get("health", []):
            if value not in HEALTH:
                raise InvalidParameter(f"invalid filter 'health={value}': use one of {', '.join(HEALTH)}")
        for value in filters.get("isolation", []):
            if value != "default":
                raise InvalidParameter(f"invalid filter 'isolation={value}': only default exists on Linux")
        for value in filters.get("is-task", []):
            if value not in ("true", "false"):
                raise InvalidParameter(f"invalid filter 'is-task={value}': use true or false")
        exited = []
        for value in filters.get("exited", []):
            try:
                exited.append(parse_int(value, lo=-(2**31), hi=2**31))
            except ValueError:
                raise InvalidParameter(f"invalid filter 'exited={value}': an exit code is a number") from None
        for key in ("publish", "expose"):
            for value in filters.get(key, []):
                _port_range(value, key)
        return cls(filters=filters, all=all_, exited=exited)


def _port(text: str) -> bool:
    return 0 < len(text) <= 5 and is_ascii_digits(text)  # (isdigit() takes "²")


def _port_range(value: str, key: str) -> tuple[int, int, str | None]:
    """PORT, PORT/PROTO, START-END[/PROTO] -> (start, end, proto or None)."""
    ports, _, proto = value.partition("/")
    lo, _, hi = ports.partition("-")
    if (not _port(lo) or (hi and not _port(hi))) or (proto and proto not in ("tcp", "udp", "sctp")):
        raise InvalidParameter(f"invalid filter '{key}={value}': use PORT[/PROTO] or START-END[/PROTO]")
    return int(lo), int(hi or lo), proto or None


def _port_matches(values: list[str], key: str, ports: list[tuple[int, str]]) -> bool:
    for value in values:
        lo, hi, proto = _port_range(value, key)
        if any(lo <= port <= hi and (proto is None or proto == p) for port, p in ports):
            return True
    return False


def _ancestor_matches(values: list[str], row: Row) -> bool:
    """The image as named (with or without its tag, `:latest` implied) or an ID prefix."""
    name = row.image
    bare = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    for value in values:
        plain = value[7:] if value.startswith("sha256:") else value
        if value in (name, bare) or (":" not in value and f"{value}:latest" == name):
            return True
        image_id = row.image_id[7:] if row.image_id.startswith("sha256:") else row.image_id
        if image_id and plain and image_id.startswith(plain):
            return True
    return False


def _network_matches(values: list[str], row: Row) -> bool:
    return any(v in row.networks or any(nid.startswith(v) for nid in row.networks.values()) for v in values)


def select(rows: list[Row], query: ListQuery, find: Callable[[str], Row]) -> list[Row]:
    """The rows `docker ps` shows. `rows` newest first; `find(ref)` resolves a
    `before`/`since` container (NotFound if there is none)."""
    f = query.filters
    before = [find(v) for v in f.get("before", [])]
    since = [find(v) for v in f.get("since", [])]
    out = []
    for row in rows:
        if row.status not in ALIVE and not query.all:
            continue
        if before or since:
            created = rfc3339_to_nanos(row.created) or 0
            if before and not all(created < (rfc3339_to_nanos(b.created) or 0) and row.id != b.id for b in before):
                continue
            if since and not all(created > (rfc3339_to_nanos(s.created) or 0) and row.id != s.id for s in since):
                continue
        if not (regex(f, "name", row.name) or regex(f, "name", "/" + row.name)) or not regex(f, "id", row.id):
            continue
        if not labels_match(f, "label", row.labels):
            continue
        if f.get("status") and row.status not in f["status"]:
            continue
        if query.exited and not (row.status != "running" and row.started and row.exit_code in query.exited):
            continue
        if f.get("health") and "none" not in f["health"]:
            continue
        if f.get("volume") or "true" in f.get("is-task", []):
            continue
        if f.get("network") and not _network_matches(f["network"], row):
            continue
        if f.get("ancestor") and not _ancestor_matches(f["ancestor"], row):
            continue
        if f.get("publish") and not _port_matches(f["publish"], "publish", row.published):
            continue
        if f.get("expose") and not _port_matches(f["expose"], "expose", row.exposed):
            continue
        out.append(row)
    return out


def prune_selector(filters: Filters, now: datetime.datetime | None = None) -> Callable[[Row], bool]:
    """Docker's container prune: stopped containers whose labels pass `label`/`label!`
    and, with `until`, created before it."""
    until = until_nanos(filters, now or datetime.datetime.now().astimezone())

    def chosen(row: Row) -> bool:
        if row.status in ("running", "paused", "restarting", "removing"):
            return False
        if not labels_selected(filters, row.labels):
            return False
        created = rfc3339_to_nanos(row.created)
        return until is None or (created is not None and created <= until)

    return chosen
