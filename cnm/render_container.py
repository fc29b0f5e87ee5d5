"""Docker-shaped JSON for containers: `GET /containers/{id}/json` (inspect) and
`GET /containers/json` (ps). Pure: the caller gathers the record, the runtime state,
the endpoints and their networks.

`state` is the runtime's ContainerState (status, pid, exit_code, started_at,
finished_at, error) or None when the runtime no longer knows the container.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cnm.addresses import IPInterface, text
from cnm.humanunits import duration_changes_at, human_duration
from cnm.model import Endpoint, Network
from cnm.naming import GATEWAY_BRIDGE
from cnm.runtime.confine import MASKED_PATHS, READONLY_PATHS

if TYPE_CHECKING:
    from cnm.containers import Container

ZERO_TIME = "0001-01-01T00:00:00Z"


def _plain(address: IPInterface | None) -> str:
    return str(address.ip) if address is not None else ""


def _prefix(address: IPInterface | None) -> int:
    return address.network.prefixlen if address is not None else 0


def _status(state: Any) -> str:
    return state.status if state is not None else "dead"


def state_json(state: Any) -> dict:
    status = _status(state)
    running = status == "running"
    return {
        "Status": status,
        "Running": running or status == "restarting",  # Docker counts a restarting container as running
        "Paused": False,
        "Restarting": status == "restarting",
        "OOMKilled": False,
        "Dead": state is None,
        "Pid": (state.pid or 0) if running else 0,
        "ExitCode": (state.exit_code or 0) if state is not None else 0,
        "Error": (getattr(state, "error", None) or "") if state is not None else "",
        "StartedAt": (state.started_at if state is not None else None) or ZERO_TIME,
        "FinishedAt": (state.finished_at if state is not None else None) or ZERO_TIME,
    }


def _port_key(rec: dict) -> str:
    return f"{rec['container_port']}/{rec['proto']}"


def port_bindings_json(requested: Iterable[dict]) -> dict:
    """HostConfig.PortBindings: what the user asked for ("" host port = ephemeral)."""
    out: dict[str, list[dict]] = {}
    for rec in requested:
        host_port = "" if rec.get("host_port") is None else str(rec["host_port"])
        if host_port and rec.get("host_port_end") is not None:
            host_port += f"-{rec['host_port_end']}"
        out.setdefault(_port_key(rec), []).append({"HostIp": rec.get("host_ip") or "", "HostPort": host_port})
    return out


def ports_json(requested: Iterable[dict], allocated: Iterable[dict]) -> dict:
    """NetworkSettings.Ports: every requested container port, with the host ports it
    got, or null while it has none (an exited container gave its ports back)."""
    out: dict[str, list[dict] | None] = {_port_key(rec): None for rec in requested}
    for rec in allocated:
        if rec.get("host_port") is None:
            continue
        entry = {"HostIp": rec.get("host_ip") or "0.0.0.0", "HostPort": str(rec["host_port"])}
        out.setdefault(_port_key(rec), None)
        out[_port_key(rec)] = (out[_port_key(rec)] or []) + [entry]
    return out


def endpoint_json(ep: Endpoint | None, net: Network | None) -> dict:
    """One NetworkSettings.Networks entry; ep None = attached in name only (host,
    none, or a stopped container whose endpoint was released)."""
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": list(ep.aliases) if ep is not None and ep.aliases else None,
        "NetworkID": net.id if net is not None else (ep.network_id if ep is not None else ""),
        "EndpointID": ep.id if ep is not None else "",
        "Gateway": (text(ep.gateway) or "") if ep is not None else "",
        "IPAddress": _plain(ep.address) if ep is not None else "",
        "IPPrefixLen": _prefix(ep.address) if ep is not None else 0,
        "IPv6Gateway": (text(ep.gateway_v6) or "") if ep is not None else "",
        "GlobalIPv6Address": _plain(ep.address_v6) if ep is not None else "",
        "GlobalIPv6PrefixLen": _prefix(ep.address_v6) if ep is not None else 0,
        "MacAddress": (ep.mac or "") if ep is not None else "",
        "DriverOpts": None,
    }


def _mode_network(ct: Container, networks: dict[str, Network]) -> Network | None:
    for net in networks.values():
        if ct.network_mode in (net.name, net.id):
            return net
    return None


def networks_json(ct: Container, endpoints: list[Endpoint], networks: dict[str, Network]) -> dict:
    """NetworkSettings.Networks keyed by network name. container:X has none of its
    own; host and none show their network with empty addresses; a created or stopped
    container names the networks it will join."""
    if ct.network_mode.startswith("container:") or ct.shared_with:
        return {}
    out: dict[str, dict] = {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if net is not None and net.name == GATEWAY_BRIDGE:
            continue  # plumbing for overlay egress, hidden as Docker hides docker_gwbridge
        out[net.name if net is not None else ep.network_id[:12]] = endpoint_json(ep, net)
    if not out:
        # Not running: the networks it will join (with their aliases), as configured.
        for att in getattr(ct, "networks", None) or []:
            net = networks.get(att.get("network", ""))
            entry = endpoint_json(None, net)
            entry["Aliases"] = list(att.get("aliases") or []) or None
            out[net.name if net is not None else att.get("network", "")[:12]] = entry
    if not out:
        net = _mode_network(ct, networks)
        name = net.name if net is not None else ct.network_mode
        out[name] = endpoint_json(None, net)
    return out


def network_mode(ct: Container) -> str:
    if ct.shared_with:
        return f"container:{ct.shared_with}"
    return ct.network_mode


def confinement_json(c: dict) -> dict:
    """HostConfig's confinement fields as Docker's inspect shows them."""
    mounts = c.get("mounts") or []
    binds = []
    for m in mounts:
        if m["type"] == "bind" and m.get("create"):
            opts = [
                o
                for o in ("ro" if m["read_only"] else "", m["propagation"] if m["propagation"] != "rprivate" else "")
                if o
            ]
            binds.append(":".join([m["source"], m["target"]] + ([",".join(opts)] if opts else [])))
    api_mounts = [
        {"Type": "bind", "Source": m["source"], "Target": m["target"], "ReadOnly": m["read_only"]}
        for m in mounts
        if m["type"] == "bind" and not m.get("create")
    ]
    tmpfs = {
        m["target"]: ",".join((["ro"] if m["read_only"] else []) + list(m["options"]))
        for m in mounts
        if m["type"] == "tmpfs"
    }
    privileged = bool(c.get("privileged"))
    masked, ro = c.get("masked_paths"), c.get("readonly_paths")
    return {
        "CapAdd": c.get("cap_add") or None,
        "CapDrop": c.get("cap_drop") or None,
        "Privileged": privileged,
        "SecurityOpt": c.get("security_opt") or None,
        "Binds": binds or None,
        "Mounts": api_mounts or None,
        "Tmpfs": tmpfs or None,
        "ReadonlyRootfs": bool(c.get("read_only")),
        "Devices": [
            {"PathOnHost": d["host"], "PathInContainer": d["container"], "CgroupPermissions": "rwm"}
            for d in c.get("devices") or []
        ],
        "MaskedPaths": [] if privileged else list(MASKED_PATHS if masked is None else masked),
        "ReadonlyPaths": [] if privileged else list(READONLY_PATHS if ro is None else ro),
    }


def mount_points_json(mounts: list[dict]) -> list[dict]:
    """inspect's top-level Mounts: what the container sees mounted."""
    return [
        {
            "Type": m["type"],
            "Source": m.get("source", ""),
            "Destination": m["target"],
            "Mode": "ro" if m["read_only"] else "",
            "RW": not m["read_only"],
            "Propagation": m.get("propagation", ""),
        }
        for m in mounts
    ]


def container_json(ct: Container, state: Any, endpoints: list[Endpoint], networks: dict[str, Network]) -> dict:
    """The container as Docker's `container inspect` shows it. `endpoints` in attach
    order; `networks` maps network id to Network for them (and the mode's network)."""
    first = endpoints[0] if endpoints else None
    image = getattr(ct, "image", None) or ""
    return {
        "Id": ct.id,
        "Created": ct.created,
        "Path": ct.argv[0] if ct.argv else "",
        "Args": list(ct.argv[1:]),
        "State": state_json(state),
        "Image": getattr(ct, "image_id", None) or "",
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": "/" + ct.name,
        "RestartCount": getattr(ct, "restart_count", 0),
        "Driver": "overlayfs" if ct.rootfs or image else "",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "NetworkMode": network_mode(ct),
            "PortBindings": port_bindings_json(ct.requested_ports),
            "RestartPolicy": dict(getattr(ct, "restart_policy", None) or {"Name": "no", "MaximumRetryCount": 0}),
            "AutoRemove": ct.auto_remove,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Binds": None,
            "Privileged": False,
            "PublishAllPorts": False,
            "ReadonlyRootfs": False,
            "Memory": ct.memory or 0,
            "NanoCpus": int(round(ct.cpus * 1e9)) if ct.cpus else 0,
            "PidsLimit": ct.pids_limit,
            **confinement_json(ct.confine),
        },
        "Mounts": mount_points_json(ct.confine.get("mounts") or []),
        "Config": {
            "Hostname": ct.hostname,
            "Domainname": "",
            "User": getattr(ct, "user", "") or "",
            "AttachStdin": getattr(ct, "attach_stdin", False),
            "AttachStdout": ct.attach_stdout,
            "AttachStderr": ct.attach_stderr,
            "ExposedPorts": {_port_key(p): {} for p in ct.requested_ports} or None,
            "Tty": getattr(ct, "tty", False),
            "OpenStdin": getattr(ct, "open_stdin", False),
            "StdinOnce": getattr(ct, "stdin_once", False),
            "Env": [f"{k}={v}" for k, v in ct.env.items()],
            # The merged command as Docker shows it (records from before images: argv)
            "Cmd": list(ct.cmd) if (ct.cmd or ct.entrypoint) else list(ct.argv),
            "Image": image,
            "Volumes": None,
            "WorkingDir": getattr(ct, "workdir", None) or "",
            "Entrypoint": list(ct.entrypoint) or None,
            "OnBuild": None,
            "Labels": dict(ct.labels),
        },
        "NetworkSettings": {
            "SandboxID": ct.sandbox_id or "",
            "SandboxKey": ct.sandbox_key or "",
            "Ports": ports_json(ct.requested_ports, ct.ports),
            "Gateway": (text(first.gateway) or "") if first else "",
            "IPAddress": _plain(first.address) if first else "",
            "IPPrefixLen": _prefix(first.address) if first else 0,
            "IPv6Gateway": (text(first.gateway_v6) or "") if first else "",
            "GlobalIPv6Address": _plain(first.address_v6) if first else "",
            "GlobalIPv6PrefixLen": _prefix(first.address_v6) if first else 0,
            "MacAddress": (first.mac or "") if first else "",
            "Networks": networks_json(ct, endpoints, networks),
        },
    }


# -- ps ---------------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp; None for missing or Docker's zero time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def status_until(state: Any, now: float) -> tuple[str, float]:
    """status_text(state, now), and the time until which it stays that text (inf:
    for good). Listings keep the text that long instead of rendering it again."""
    text = status_text(state, now)
    status = _status(state)
    if status == "running":
        since = parse_time(state.started_at)
    elif status in ("restarting", "exited"):
        since = parse_time(state.finished_at)
    else:
        since = None
    if since is None:
        return text, math.inf
    # A millisecond early: the float sums of absolute times round by ~1e-7 s.
    return text, since + duration_changes_at(max(0.0, now - since)) - 0.001


def status_text(state: Any, now: float) -> str:
    """ "Up 5 seconds", "Exited (3) 2 seconds ago", "Created" or "Dead"."""
    status = _status(state)
    if status == "running":
        started = parse_time(state.started_at)
        return "Up " + human_duration(max(0.0, now - started)) if started is not None else "Up"
    if status == "restarting":  # Docker: "Restarting (1) 2 seconds ago"
        finished = parse_time(state.finished_at)
        ago = f" {human_duration(max(0.0, now - finished))} ago" if finished is not None else ""
        return f"Restarting ({state.exit_code or 0}){ago}"
    if status == "exited":
        finished = parse_time(state.finished_at)
        ago = f" {human_duration(max(0.0, now - finished))} ago" if finished is not None else ""
        return f"Exited ({state.exit_code or 0}){ago}"
    return status.capitalize()


def ports_summary(requested: Iterable[dict], allocated: Iterable[dict]) -> list[dict]:
    """The `Ports` list of `GET /containers/json`: published ports with their host
    side, requested but unpublished ones without."""
    out, seen = [], set()
    for rec in allocated:
        if rec.get("host_port") is None:
            continue
        seen.add(_port_key(rec))
        out.append(
            {
                "IP": rec.get("host_ip") or "0.0.0.0",
                "PrivatePort": rec["container_port"],
                "PublicPort": rec["host_port"],
                "Type": rec["proto"],
            }
        )
    for rec in requested:
        if _port_key(rec) not in seen:
            seen.add(_port_key(rec))
            out.append({"PrivatePort": rec["container_port"], "Type": rec["proto"]})
    return out


def container_summary(
    ct: Container,
    state: Any,
    endpoints: list[Endpoint],
    networks: dict[str, Network],
    now: float | None = None,
    nets: dict | None = None,
) -> dict:
    """One entry of Docker's `GET /containers/json`; `nets`: networks_json's answer
    for these, when the caller has it already."""
    now = datetime.datetime.now(datetime.UTC).timestamp() if now is None else now
    created = parse_time(ct.created)
    return {
        "Id": ct.id,
        "Names": ["/" + ct.name],
        "Image": getattr(ct, "image", None) or "",
        "ImageID": getattr(ct, "image_id", None) or "",
        "Command": " ".join(ct.argv),
        "Created": int(created) if created is not None else 0,
        "State": _status(state),
        "Status": status_text(state, now),
        "Ports": ports_summary(ct.requested_ports, ct.ports),
        "Labels": dict(ct.labels),
        "HostConfig": {"NetworkMode": network_mode(ct)},
        "NetworkSettings": {"Networks": networks_json(ct, endpoints, networks) if nets is None else nets},
        "Mounts": [],
    }
