"""What must hold after a daemon restart, whatever instant it was killed at, checked from
outside against the kernel and the store: links, addresses, namespace mounts under the
run dir (in the daemon's mount namespace and its supervisors'), the nft table, IPAM
allocations against endpoints, containers' states. `problems()` returns one line per
thing found wrong (empty = consistent)."""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

from cnm import marks
from cnm.api.client import APIClient

PROTO = {6: "tcp", 17: "udp"}


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30).stdout


def store(root: Path) -> dict[str, dict]:
    """Every record in the daemon's SQLite store (read while it runs: WAL readers
    see the last committed state)."""
    db = sqlite3.connect(str(root / "local-kv.db"), timeout=10)
    try:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM kv")}
    finally:
        db.close()


def links(ns: str) -> list[dict]:
    return json.loads(sh("ip", "-n", ns, "-j", "-d", "link", "show") or "[]")


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (the daemon, its template, supervisors)."""
    ino, out = netns_inode(ns), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def nsfs_mounts(pid: int, under: Path) -> set[str]:
    """Namespace mounts under `under` in the mount namespace of `pid`."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return set()
    base = str(under).rstrip("/") + "/"
    out = set()
    for line in text.splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[4].startswith(base) and parts[sep + 1] == "nsfs":
            out.add(parts[4])
    return out


def mount_namespaces(pids: list[int]) -> dict[int, int]:
    """mount namespace inode -> one pid in it."""
    out: dict[int, int] = {}
    for pid in pids:
        try:
            out.setdefault(os.stat(f"/proc/{pid}/ns/mnt").st_ino, pid)
        except OSError:
            pass
    return out


def nft_table(ns: str) -> list[dict]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "cnm"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout)["nftables"] if out.returncode == 0 else []


def _published(table: list[dict]) -> set[tuple[str, int]]:
    got = set()
    for item in table:
        m = item.get("map")
        if m and m["name"].startswith("dnat_"):
            for key, _value in m.get("elem") or []:
                parts = key["concat"]
                got.add((parts[-2], int(parts[-1])))
    return got


def _set(table: list[dict], name: str) -> set[str]:
    for item in table:
        s = item.get("set")
        if s and s["name"] == name:
            return {e for e in s.get("elem") or [] if isinstance(e, str)}
    return set()


def interfaces(pid: int) -> dict[str, set[str]]:
    """ifname -> addresses ("a/len") inside the network namespace of `pid`."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        return {}
    return {
        i["ifname"]: {
            f"{a['local']}/{a['prefixlen']}"
            for a in i.get("addr_info", [])
            if a.get("scope") != "link" and a.get("local") not in ("127.0.0.1", "::1")
        }
        for i in json.loads(out.stdout or "[]")
    }


def problems(
    ns: str,
    root: Path,
    run_dir: Path,
    daemon_pid: int,
    sock: str,
    foreign: frozenset[str] = frozenset(),
    tally: Counter | None = None,
) -> list[str]:
    """`foreign`: links another tool made in the namespace, marked as ours would be for
    ids this daemon never had: they must be left exactly as they are. `tally` counts
    what was checked (for the test's report)."""
    out: list[str] = []
    seen: Counter = tally if tally is not None else Counter()
    kv = store(root)
    api = APIClient(f"unix://{sock}")

    def rec(prefix: str) -> dict[str, dict]:
        return {k[len(prefix) :]: v for k, v in kv.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]}

    nets, eps, sbs, cts = rec("network/"), rec("endpoint/"), rec("sandbox/"), rec("container/")
    out += [f"intent left in the store: {k}" for k in kv if k.startswith("intent/")]
    states = {c["Id"]: c["State"] for c in api.containers(all=True)}
    out += [f"container {cid[:12]} is {s}" for cid, s in states.items() if s not in ("running", "exited", "created")]
    out += [f"container record {cid[:12]} is not listed by the API" for cid in cts if cid not in states]
    running = {cid for cid, s in states.items() if s == "running"}
    seen.update(f"containers {s}" for s in states.values())

    # links of ours in the daemon's namespace
    have_bridge = set()
    veths: set[str] = set()
    present = links(ns)
    out += [f"{name}, not ours, is gone" for name in sorted(foreign - {link["ifname"] for link in present})]
    for link in present:
        if link["ifname"] in foreign:
            continue
        mark = marks.parse(link.get("ifalias"))
        if mark is None:
            continue
        kind, id_ = mark
        seen["marked links"] += 1
        if kind == "network":
            have_bridge.add(id_)
            if id_ not in nets:
                out.append(f"bridge {link['ifname']} has no network record ({id_[:12]})")
        else:
            veths.add(id_)
            ep = eps.get(id_)
            if ep is None:
                out.append(f"veth {link['ifname']} has no endpoint record ({id_[:12]})")
            elif ep.get("sandbox_id") not in sbs:
                out.append(f"veth {link['ifname']}: its endpoint {id_[:12]} is in no sandbox")
    out += [
        f"network {n['name']} has no bridge"
        for nid, n in nets.items()
        if n["driver"] == "bridge" and nid not in have_bridge
    ]
    seen["networks"] += len(nets)

    # sandboxes, endpoints, interfaces
    owned: set[str] = set()
    for sid, sb in sbs.items():
        owned |= set(sb["endpoint_ids"])
        if sb["container_id"] not in running:
            out.append(f"sandbox {sid[:12]} of container {sb['container_id'][:12]}, which is not running")
            continue
        pid = api.container_inspect(sb["container_id"])["State"]["Pid"]
        inside = interfaces(pid)
        seen["sandboxes of running containers"] += 1
        # A container's own mount namespace holds no sandbox's namespace mount (none would
        # be unmounted there: each would pin a namespace after its sandbox went).
        pinned = nsfs_mounts(pid, run_dir / "netns")
        out += [f"netns {m} mounted in container {sb['container_id'][:12]}'s mount namespace" for m in sorted(pinned)]
        for eid in sb["endpoint_ids"]:
            ep = eps.get(eid)
            if ep is None:
                out.append(f"sandbox {sid[:12]} lists endpoint {eid[:12]}, which has no record")
                continue
            seen["endpoints with their interface checked"] += 1
            net = nets.get(ep["network_id"])
            if net is not None and net["driver"] == "bridge" and eid not in veths:
                out.append(f"endpoint {eid[:12]} of bridge network {net['name']} has no host veth")
            want = {a for a in (ep.get("address"), ep.get("address_v6")) if a}
            if ep.get("ifname") not in inside:
                out.append(f"endpoint {eid[:12]} has no interface {ep.get('ifname')} in container {pid}")
            elif not want <= inside[ep["ifname"]]:
                out.append(
                    f"endpoint {eid[:12]}: {ep['ifname']} has {sorted(inside[ep['ifname']])}, not {sorted(want)}"
                )
    out += [f"endpoint {eid[:12]} ({e['name']}) is in no sandbox" for eid, e in eps.items() if eid not in owned]

    # namespace mounts under the run dir, in every mount namespace of ours
    keys = {sb["key"] for sb in sbs.values()}
    files = {str(p) for p in (run_dir / "netns").glob("*")}
    out += [f"netns file {f} of no sandbox" for f in sorted(files - keys)]
    procs = [daemon_pid] + [p for p in pids_in(ns) if comm(p) == "cnm-shim"]
    for pid in mount_namespaces(procs).values():
        where = "the daemon's" if pid == daemon_pid else f"supervisor {pid}'s"
        mounted = nsfs_mounts(pid, run_dir / "netns")
        seen["mount namespaces"] += 1
        seen["netns mounts"] += len(mounted)
        out += [f"netns {m} mounted in {where} mount namespace, of no sandbox" for m in sorted(mounted - keys)]
        if pid == daemon_pid:
            out += [f"sandbox {k} not mounted in the daemon's mount namespace" for k in sorted(keys - mounted)]
    dirs = {p.name for p in (run_dir / "containers").glob("*") if len(p.name) == 64}
    seen["container directories"] += len(dirs)
    out += [f"container directory {d[:12]} of no container record" for d in sorted(dirs - set(cts))]

    # the nft table: bridges and published ports
    table = nft_table(ns)
    bridges = {link["ifname"] for link in present if (marks.parse(link.get("ifalias")) or ("", ""))[1] in nets}
    got_bridges = _set(table, "bridges")
    out += [f"nft set bridges lacks {b}" for b in sorted(bridges - got_bridges)]
    out += [f"nft set bridges holds {b}, no network's" for b in sorted(got_bridges - bridges)]
    want_ports = {
        (PROTO[int(b["Proto"])], int(b["HostPort"])) for e in eps.values() for b in e.get("port_bindings") or []
    }
    got_ports = _published(table)
    seen["published ports"] += len(got_ports)
    out += [f"nft publishes {p}/{port}, no endpoint's" for p, port in sorted(got_ports - want_ports)]
    out += [f"endpoint ports {p}/{port} not in nft" for p, port in sorted(want_ports - got_ports)]

    # IPAM: pools and addresses against networks and endpoints
    pools = {unquote(k.split("/", 3)[3]) for k in kv if k.startswith("ipam/LocalDefault/pools/")}
    held = {p["pool_id"] for n in nets.values() for p in n.get("pools") or []}
    out += [f"IPAM pool {p} of no network" for p in sorted(pools - held)]
    out += [f"network pool {p} not reserved in IPAM" for p in sorted(held - pools)]
    seen["IPAM pools"] += len(pools)
    allocated: dict[str, set[str]] = {}
    for k in kv:
        if k.startswith("ipam/LocalDefault/addrs/"):
            esc, addr = k[len("ipam/LocalDefault/addrs/") :].rsplit("/", 1)
            allocated.setdefault(unquote(esc), set()).add(addr)
    for n in nets.values():
        for p in n.get("pools") or []:
            subnet = ipaddress.ip_network(p["subnet"])
            want = {a for a in [p.get("gateway"), *(p.get("aux_addresses") or {}).values()] if a}
            want |= {
                a.split("/")[0]
                for e in eps.values()
                if e["network_id"] == n["id"]
                for a in (e.get("address"), e.get("address_v6"))
                if a and ipaddress.ip_interface(a).ip in subnet
            }
            got = allocated.get(p["pool_id"], set())
            seen["IPAM addresses"] += len(got)
            out += [f"address {a} of {p['subnet']} allocated to no one" for a in sorted(got - want)]
            out += [f"address {a} of {p['subnet']} in use but not allocated" for a in sorted(want - got)]
    return out
