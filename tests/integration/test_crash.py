"""Safe at any instant: the daemon SIGKILLed at random points of a mixed multi-client
workload (sometimes again while it starts up; sometimes with damage done while it is
down, tests/integration/crash_damage.py), restarted, and checked against the kernel and
its store after every restart (tests/integration/crash_checks.py); at the end every
container is removed with rm -f, every network removed, nothing of ours is left, and
every subnet the workload used can be created again.

    CNM_CRASH_KILLS   kills (default 12, a CI-sized run; run >= 50 locally)
    CNM_CRASH_SEED    the seed (default: random, printed); with the kill number printed
                      on failure, `CNM_CRASH_SEED=S CNM_CRASH_KILLS=N` replays the run
    CNM_CRASH_CLIENTS concurrent clients (default 4)

Timing varies with the machine, so a replay kills at the same offsets and with the same
operation choices, not necessarily at the same instruction."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from cnm.api.client import APIClient
from tests.integration import crash_checks, crash_damage, crash_plugin, test_lab
from tests.integration.conftest import NET, Daemon, stop
from tests.integration.crash_workload import Workload

KILLS = int(os.environ.get("CNM_CRASH_KILLS", "12"))
CLIENTS = int(os.environ.get("CNM_CRASH_CLIENTS", "4"))


def _seed() -> int:
    return int(os.environ.get("CNM_CRASH_SEED") or random.SystemRandom().randrange(1, 1 << 31))


# Links another tool (a `net plugin serve`, another daemon) made in the daemon's namespace,
# marked for ids this daemon never had, and one named like a half-made link of ours: the
# daemon must never touch them.
FOREIGN = {
    "br-foreign": ("bridge", "cnm:bridge:" + "f" * 64),
    "vethforeign": ("veth", "cnm:ep:" + "e" * 64),
    "cnm0123456789ab": ("bridge", None),
}


def _plant_foreign(ns: str) -> None:
    for name, (kind, alias) in FOREIGN.items():
        extra = ["peer", "name", name + "p"] if kind == "veth" else []
        crash_checks.sh("ip", "-n", ns, "link", "add", name, "type", kind, *extra)
        if alias:
            crash_checks.sh("ip", "-n", ns, "link", "set", name, "alias", alias)


def _check(d: Daemon, context: str, tally: Counter | None = None, more: list[str] | None = None) -> None:
    assert d.proc is not None
    found = crash_checks.problems(d.ns, d.root, d.run_dir, d.proc.pid, str(d.sock), frozenset(FOREIGN), tally)
    found += more or []
    if found:
        lines = [ln for ln in d.log.read_text().splitlines() if " pyroute2" not in ln and " cnm.api.access:" not in ln]
        log = "\n".join(lines[-60:])
        raise AssertionError(f"{context}\n  " + "\n  ".join(found) + f"\n--- daemon log (tail) ---\n{log}")


# What a restarted daemon says it did (its log), counted for the test's report.
RECOVERY = {
    "reconcile: {}": re.compile(
        r"reconcile: (delete-link|remove-netns|unmount-foreign|remove-container|"
        r"release-pool|released(?= \d+ host port))"
    ),
    "endpoints repaired": re.compile(r"endpoint \w+ on network .* repaired"),
    "endpoints released": re.compile(r"endpoint \w+ released"),
    "orphans released": re.compile(r"releasing orphaned"),
    "network creations rolled back": re.compile(r"rolled back the creation of network"),
    "network removals finished": re.compile(r"finished removing network"),
    "container removals finished": re.compile(r"finishing the removal of container"),
}


def _recovered(log_text: str, into: Counter) -> None:
    for line in log_text.splitlines():
        for what, pattern in RECOVERY.items():
            m = pattern.search(line)
            if m:
                into[what.format(*m.groups())] += 1


def _start_then_kill(d: Daemon, at: float, context: str) -> bool:
    """Start the daemon and SIGKILL it `at` seconds later; whether it was serving by then."""
    try:
        d.start(timeout=at)
        answered = True
    except RuntimeError as exc:
        if "did not answer" not in str(exc):
            raise AssertionError(f"{context}: the daemon failed while starting up: {exc}") from None
        answered = False
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    return answered


def _settle_restarts(api: APIClient, context: str, timeout: float = 60.0) -> None:
    """Containers restarted by their policy at the daemon's start (after a back-off):
    wait until none is "restarting", so the checks see a state, not a transition."""
    deadline = time.monotonic() + timeout
    before: dict[str, str] = {}
    while True:
        now = {c["Id"]: c["State"] for c in api.containers(all=True)}
        waiting = [cid[:12] for cid, st in now.items() if st == "restarting"]
        if not waiting and now == before:  # twice the same: no start between timer and lock
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{context}: still restarting after {timeout:g}s: {waiting}")
        before = now
        time.sleep(0.25)


def test_daemon_killed_at_random_points(make_daemon, host_ns, capsys):
    seed = _seed()
    rng = random.Random(seed)
    _plant_foreign(host_ns)
    d: Daemon = make_daemon()
    work = Workload(seed, str(d.sock), clients=CLIENTS)
    with capsys.disabled():
        print(f"\ncrash test: seed {seed}, {KILLS} kills, {CLIENTS} clients (CNM_CRASH_SEED={seed} replays)")
    started = time.monotonic()
    checked: Counter = Counter()
    recovered: Counter = Counter()
    damage: Counter = Counter()
    for kill in range(1, KILLS + 1):
        offset = rng.uniform(0.15, 1.6)
        assert d.proc is not None
        pid = d.proc.pid
        flying = work.run_for(offset, lambda pid=pid: os.kill(pid, signal.SIGKILL))
        d.proc.wait(10)
        # While it is down, something else may break what it made (deterministic per seed).
        done = crash_damage.inflict(rng, d.ns, d.root, d.run_dir)
        context = f"seed {seed}, kill {kill}/{KILLS} at {offset:.2f}s into the workload; in flight: {flying}" + (
            f"; while down: {done}" if done else ""
        )
        log_from = d.log.stat().st_size
        if rng.random() < 0.3:  # killed again while it starts up (adopting, sweeping)
            at = rng.uniform(0.1, 1.5)
            answered = _start_then_kill(d, at, context)
            context += f"; killed again {at:.2f}s into its start-up" + (" (it was serving)" if answered else "")
            checked["kills during start-up" if not answered else "kills just after start-up"] += 1
        try:
            d.start(timeout=60)
        except RuntimeError as exc:
            raise AssertionError(f"{context}: the daemon did not come back: {exc}") from None
        api = APIClient(d.host)
        _settle_restarts(api, context)
        with open(d.log, errors="replace") as f:
            f.seek(log_from)
            said = f.read()
        _recovered(said, recovered)
        more = []
        if done is not None:
            states = {c["Id"]: c["State"] for c in api.containers(all=True)}
            policy = ""
            if done.owner in states:
                policy = (api.container_inspect(done.owner)["HostConfig"].get("RestartPolicy") or {}).get("Name", "")
            how, problem = crash_damage.outcome(done, d.root, states, said, policy)
            damage[f"{done.kind} -> {how}"] += 1
            more += [problem] if problem else []
        _check(d, context, checked, more)
        checked["restarts checked"] += 1
    errors = work.server_errors
    assert not errors, f"seed {seed}: the daemon answered 5xx:\n  " + "\n  ".join(errors)
    # The end: everything removable, nothing left, every subnet usable again.
    context = f"seed {seed}, after {KILLS} kills, removing everything"
    api = APIClient(d.host)
    left_cts = api.containers(all=True)
    ended = len(left_cts)
    for ct in left_cts:
        r = d.net("container", "rm", "-f", ct["Id"], check=False)
        assert r.returncode == 0, f"{context}: rm -f {ct['Names'][0]}: {r.stderr}"
    removed = 0
    for net in api.networks():
        if net["Name"] not in ("bridge", "host", "none"):
            removed += 1
            r = d.net("network", "rm", net["Name"], check=False)
            assert r.returncode == 0, f"{context}: network rm {net['Name']}: {r.stderr}"
    _check(d, context)
    left = [
        link["ifname"]
        for link in crash_checks.links(d.ns)
        if link["ifname"] not in ("lo", "cnm0", *FOREIGN, "vethforeignp")
    ]
    assert not left, f"{context}: links left: {left}"
    assert not list((d.run_dir / "netns").glob("*")), f"{context}: namespaces left"
    assert not [p for p in (d.run_dir / "containers").glob("*") if len(p.name) == 64], f"{context}: containers left"
    shims = [p for p in crash_checks.pids_in(d.ns) if crash_checks.comm(p) == "cnm-shim"]
    assert not shims, f"{context}: supervisors left: {shims}"
    for i, subnet in enumerate(sorted(work.subnets)):  # one at a time: an IPv6 one takes a default IPv4 pool
        v6 = ":" in subnet
        r = d.net("network", "create", *(["--ipv6"] if v6 else []), "--subnet", subnet, f"again-{i}", check=False)
        assert r.returncode == 0, f"{context}: subnet {subnet} cannot be used again: {r.stderr}"
        d.net("network", "rm", f"again-{i}")
    with capsys.disabled():
        print(
            f"crash test: {KILLS} kills in {time.monotonic() - started:.0f}s, "
            f"{sum(c.done for c in work.members)} operations completed; no 5xx"
        )
        print("  checked after the restarts (totals): " + _counts(checked))
        print("  the daemon's recovery (from its log): " + (_counts(recovered) or "nothing to do"))
        print("  damage done while it was down: " + (_counts(damage) or "none"))
        print(
            f"  at the end: {ended} containers removed with rm -f, {removed} networks removed, nothing left; "
            f"{len(work.subnets)} subnets created again"
        )


def _counts(c: Counter) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(c.items()))


# -- net plugin serve ----------------------------------------------------------------------------


def _serve(host_ns: str, argv: list[str], sock: Path, log: Path) -> subprocess.Popen:
    from tests.integration.test_plugins import start_in_ns

    if sock.exists():
        sock.unlink()  # a killed plugin's: wait for the new one's
    return start_in_ns(host_ns, argv, sock, log, timeout=60)


def test_plugin_serve_killed_at_random_points(host_ns, tmp_path, capsys):
    seed = _seed()
    rng = random.Random(seed)
    plugin_dir, root, log = tmp_path / "plugins", tmp_path / "root", tmp_path / "serve.log"
    plugin_dir.mkdir()
    sock = plugin_dir / "cnmbridge.sock"
    argv = [
        NET,
        "plugin",
        "serve",
        "--name",
        "cnmbridge",
        "--driver",
        "bridge",
        "--ipam",
        "--root",
        str(root),
        "--plugin-dir",
        str(plugin_dir),
    ]
    kills = max(KILLS * 2 // 3, 1)
    with capsys.disabled():
        print(f"\nplugin crash test: seed {seed}, {kills} kills (CNM_CRASH_SEED={seed} replays)")
    proc = _serve(host_ns, argv, sock, log)
    engine = crash_plugin.Engine("cnmbridge", plugin_dir, seed)
    checked: Counter = Counter()
    try:
        for kill in range(1, kills + 1):
            offset = rng.uniform(0.1, 1.2)
            flying = engine.run_for(offset, lambda p=proc: p.send_signal(signal.SIGKILL), kill)
            proc.wait(10)
            context = f"seed {seed}, plugin kill {kill}/{kills} at {offset:.2f}s; in flight: {flying}"
            proc = _serve(host_ns, argv, sock, log)
            found = crash_plugin.problems(host_ns, root, checked)
            checked["restarts checked"] += 1
            assert not found, (
                f"{context}\n  "
                + "\n  ".join(found)
                + "\n--- plugin log ---\n"
                + "\n".join(log.read_text().splitlines()[-40:])
            )
        assert not engine.server_errors, f"seed {seed}: the plugin answered 5xx:\n  " + "\n  ".join(
            engine.server_errors
        )
        context = f"seed {seed}, after {kills} plugin kills, the engine removing everything"
        left = engine.remove_everything()
        assert not left, f"{context}: " + "; ".join(left)
        assert crash_plugin.problems(host_ns, root) == []
        kv = crash_plugin.records(root)
        assert not [k for k in kv if k.startswith("served/")], f"{context}: records left: {sorted(kv)}"
        marked = [link["ifname"] for link in crash_checks.links(host_ns) if link.get("ifalias")]
        assert not marked, f"{context}: links left: {marked}"
        space, _ = engine.ipam.default_address_spaces()
        for subnet in sorted(engine.subnets):  # every subnet usable again
            pool = engine.ipam.request_pool(space, subnet, None, {}, False)
            engine.ipam.release_pool(pool.pool_id)
        said = {
            "recorded as left": "joined endpoints without a veth recorded as left",
            "cut short is undone": "interrupted Joins undone",
            "creation was interrupted": "interrupted network creations rolled back",
            "released pool": "pools of no network released",
        }
        recovered = Counter(said[m.group(1)] for m in re.finditer("(" + "|".join(said) + ")", log.read_text()))
        with capsys.disabled():
            print(f"plugin crash test: {kills} kills; no 5xx; checked after the restarts (totals): {_counts(checked)}")
            print(f"  the plugin's recovery (from its log): {_counts(recovered) or 'nothing to do'}")
            print(
                f"  at the end: the engine removed all it made, no record or marked link left, "
                f"{len(engine.subnets)} subnets reserved again"
            )
    finally:
        stop(proc)


# -- net lab up, killed half-way -------------------------------------------------------------------


def _lab_processes(name: str, builder: int | None = None) -> set[tuple[int, int]]:
    """(pid, start time) of every process in one of the lab's network namespaces, and
    their descendants (containers live in their sandboxes' namespaces); with `builder`
    (a `net lab up`), its descendants too (the daemon template it started)."""
    from cnm.lab import procs

    inodes = {procs.netns_inode(f"/run/netns/{ns}") for ns in test_lab.lab_namespaces(name)} - {None}
    found = set(procs.pids_in_netns(inodes)) if inodes else set()
    found |= {builder} if builder else set()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                pass
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return {(pid, start) for pid in found if (start := procs.start_time(pid)) is not None}


def _cmdline(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200].strip()
        return f"{comm}, state {state}: {argv}"
    except OSError:
        return "gone"


def _let_templates_finish(seen: set[tuple[int, int]], grace: float = 30.0) -> None:
    """The killed `up`'s daemon template (cnm.lab.zygote_main) exits on its own once its
    imports are done (it forks nothing after its lab command died): wait for that. And a
    process `down` SIGKILLed may still be in the kernel's exit (no memory left, so no
    command line; not yet a zombie): wait for those too, briefly."""

    def lingering(pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"cnm.lab.zygote_main" in argv or not argv

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(lingering(p) and test_lab.still_running(p, s) for p, s in seen):
        time.sleep(0.05)


def test_lab_up_killed_half_way(tmp_path, capsys):
    seed = _seed()
    rng = random.Random(seed)
    rounds = max(KILLS // 4, 2)
    name = "u" + format(seed % 16**5, "05x")
    doc = {
        "name": name,
        "hosts": ["h1", "h2"],
        "underlay": {"subnet": "198.18.7.0/24"},
        "networks": [
            {"name": "n1", "subnet": "10.95.0.0/24"},
            {"name": "n2", "subnet": "10.96.0.0/24", "internal": True, "hosts": ["h1"]},
        ],
        "containers": [
            {"name": "c1", "host": "h1", "network": "n1", "ports": ["8080:80"]},
            {"name": "c2", "host": "h1", "network": "n2"},
            {"name": "c3", "host": "h2", "network": "n1"},
        ],
        "checks": [{"from": "c1", "ping": "c3"}],
    }
    path = test_lab.write_lab(tmp_path / "lab.yaml", doc)
    env = {**os.environ, "CNM_LAB_DIR": str(tmp_path)}
    env.pop("NET_HOST", None)
    rounds_seen: list[str] = []
    processes = namespaces = 0
    with capsys.disabled():
        print(f"\nlab crash test: seed {seed}, {rounds} kills of `net lab up` (CNM_CRASH_SEED={seed} replays)")
    try:
        for kill in range(1, rounds + 1):
            offset = rng.uniform(0.05, 1.0)  # an up of this lab takes ~0.6 s here idle, 2-4 s loaded
            again = kill % 2 == 0  # then `up` again (it must clear what the killed one left), else `down`
            up = subprocess.Popen(
                [NET, "lab", "up", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                up.wait(offset)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            seen = _lab_processes(name, up.pid)
            namespaces += len(test_lab.lab_namespaces(name))
            up.kill()
            up.wait()
            again = again and not finished  # a lab that is up is "already up"
            context = (
                f"seed {seed}, lab up {kill}/{rounds} killed at {offset:.2f}s"
                + (f" (it had finished: {up.returncode})" if finished else "")
                + (", then up again" if again else ", then down")
            )
            if finished:
                assert up.returncode == 0, f"{context}: up failed on its own"
            if again:
                r = test_lab.lab_cmd(tmp_path, "up", str(path), check=False, timeout=300)
                assert r.returncode == 0, f"{context}: up again failed: {r.stdout}{r.stderr}"
                seen |= _lab_processes(name)
            r = test_lab.lab_cmd(tmp_path, "down", name, check=False, timeout=300)
            assert r.returncode == 0 and "warning" not in r.stderr, f"{context}: down: {r.stdout}{r.stderr}"
            _let_templates_finish(seen)
            left = [f"{pid} ({_cmdline(pid)})" for pid, start in seen if test_lab.still_running(pid, start)]
            assert not left, f"{context}: processes left: {left}"
            try:
                test_lab.assert_nothing_left(tmp_path, name, sorted(seen))
            except AssertionError as exc:
                raise AssertionError(f"{context}: {exc}") from None
            alive = [pid for pid, start in seen if test_lab.still_running(pid, start)]
            assert not alive, f"{context}: processes left: {alive}"
            processes += len(seen)
            rounds_seen.append(
                f"{offset:.1f}s{' (had finished)' if finished else ''} then {'up again + down' if again else 'down'}"
            )
        with capsys.disabled():
            print(
                f"lab crash test: {rounds} kills of `net lab up` ({'; '.join(rounds_seen)}); after each: "
                f"no namespace ({namespaces} existed at the kills), no process ({processes} seen, with their "
                f"descendants), no mount, no state directory left"
            )
    finally:
        test_lab.lab_cmd(tmp_path, "down", name, check=False, timeout=300)  # whatever a failure left
