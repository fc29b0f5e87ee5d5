"""Our overlay against Docker's own, on the same two Docker engines in the same run.

Two "hosts" (network namespaces on a 198.18.73.0/24 veth underlay) each run a private
dockerd (Debian's docker.io; tests/integration/dockerd.py). Docker's overlay needs
swarm: host a inits one, host b joins, and an --attachable overlay is made. Beside it,
`net plugin serve --driver overlay --ipam` on both hosts (etcd on host a) gives the
same engines our overlay. Figures, each against the other in this run:

- TCP throughput (iperf3, container to container across hosts; underlay host to host
  as the baseline), median of ROUNDS interleaved runs;
- convergence: `docker run -d` on a returning -> first ping answered from a container
  on b (median, p95 over BENCH_CONTAINERS containers, default 20).

Skips with a reason where dockerd cannot run. Run as root; takes about 1.5 minutes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from overlay import PROBE  # noqa: E402  (bench/overlay.py: the same probe for both)

from cnm.cluster.etcd_server import EtcdMember  # noqa: E402
from tests.integration.dockerd import IMAGE, DockerEngine, unavailable_reason  # noqa: E402

NET = str(Path(sys.executable).parent / "net")
PLUGIN = "cnmov"
ADDR = {"a": "198.18.73.1", "b": "198.18.73.2"}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
N = int(os.environ.get("BENCH_CONTAINERS", "20"))
NETS = {"docker": ("dov", "10.96"), "cnm": ("cov", "10.97")}


def sh(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=timeout)


def pid_of(eng: DockerEngine, name: str) -> int:
    return int(eng.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())


def iperf(server: list[str], client: list[str], target: str) -> float:
    srv = subprocess.Popen([*server, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.4)
        r = subprocess.run(
            [*client, "iperf3", "-c", target, "-t", "4", "-J"], capture_output=True, text=True, timeout=60
        )
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.wait(10)


def convergence(a: DockerEngine, b: DockerEngine, kind: str) -> list[float]:
    net, prefix = NETS[kind]
    prober = pid_of(b, f"prober-{kind}")
    samples = []
    for i in range(N):
        ip = f"{prefix}.1.{10 + i}"
        probe = subprocess.Popen(
            ["nsenter", f"--target={prober}", "--net", sys.executable, "-c", PROBE, ip],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout.readline().strip() == "ready"
        a.docker("run", "-d", "--name", f"t-{kind}-{i}", "--net", net, "--ip", ip, IMAGE, "sleep", "3600")
        t0 = time.monotonic()
        out, _ = probe.communicate("go\n", timeout=40)
        line = out.strip().splitlines()[-1] if out.strip() else "timeout"
        if line != "timeout":
            samples.append(max(0.0, float(line) - t0) * 1000)
    return samples


def serve(ns: str, key: str, base: Path) -> subprocess.Popen:
    plugins = base / key / "plugins"
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            NET,
            "plugin",
            "serve",
            "--name",
            PLUGIN,
            "--driver",
            "overlay",
            "--ipam",
            "--cluster-store",
            f"etcd://{ADDR['a']}:2379",
            "--advertise",
            ADDR[key],
            "--plugin-dir",
            str(plugins),
            "--root",
            str(base / key / "root"),
        ],
        stdout=open(base / f"serve-{key}.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while not (plugins / f"{PLUGIN}.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: the plugin did not start: {(base / f'serve-{key}.log').read_text()[-500:]}")
        time.sleep(0.05)
    return proc


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    reason = unavailable_reason()
    if reason or not shutil.which("iperf3"):
        print(f"Docker overlay comparison skipped: {reason or 'iperf3 is not installed'}")
        return 0
    tag = secrets.token_hex(2)
    ns = {k: f"cnmbo-{tag}-{k}" for k in "ab"}
    base = Path(tempfile.mkdtemp(prefix="cnmbo-", dir="/tmp"))
    engines: dict[str, DockerEngine] = {}
    plugins: list[subprocess.Popen] = []
    etcd = None
    try:
        for k in "ab":
            sh("ip", "netns", "add", ns[k])
            sh("ip", "-n", ns[k], "link", "set", "lo", "up")
            (base / k / "plugins").mkdir(parents=True)
        sh(
            "ip",
            "link",
            "add",
            f"bo{tag}a",
            "netns",
            ns["a"],
            "type",
            "veth",
            "peer",
            "name",
            f"bo{tag}b",
            "netns",
            ns["b"],
        )
        for k in "ab":
            sh("ip", "-n", ns[k], "addr", "add", f"{ADDR[k]}/24", "dev", f"bo{tag}{k}")
            sh("ip", "-n", ns[k], "link", "set", f"bo{tag}{k}", "up")
        etcd = EtcdMember(
            name="e1",
            data_dir=base / "etcd",
            client_url=f"http://{ADDR['a']}:2379",
            peer_url=f"http://{ADDR['a']}:2380",
            initial_cluster={"e1": f"http://{ADDR['a']}:2380"},
            netns=ns["a"],
        ).start()
        for k in "ab":
            engines[k] = DockerEngine(ns[k], base / k / "plugins").start()
            plugins.append(serve(ns[k], k, base))
        a, b = engines["a"], engines["b"]
        a.docker("swarm", "init", "--advertise-addr", ADDR["a"])
        b.docker(
            "swarm",
            "join",
            "--token",
            a.docker("swarm", "join-token", "-q", "worker").stdout.strip(),
            f"{ADDR['a']}:2377",
        )
        a.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.96.0.0/16", "dov")
        for eng in (a, b):
            eng.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--subnet", "10.97.0.0/16", "cov")
        for kind, (net, prefix) in NETS.items():
            a.docker("run", "-d", "--name", f"srv-{kind}", "--net", net, "--ip", f"{prefix}.0.10", IMAGE, "sleep", "1d")
            b.docker("run", "-d", "--name", f"prober-{kind}", "--net", net, IMAGE, "sleep", "1d")
            # the first cross-host packet on Docker's overlay waits for its gossip: warm both up
            for _ in range(50):
                if (
                    b.docker("exec", f"prober-{kind}", "ping", "-c1", "-W1", f"{prefix}.0.10", check=False).returncode
                    == 0
                ):
                    break

        print(
            f"Docker {a.docker('version', '-f', '{{.Server.Version}}').stdout.strip()}: swarm overlay vs "
            f"cnm overlay served to the same engines; {ROUNDS} rounds, 4 s each"
        )
        host = {k: ["ip", "netns", "exec", ns[k]] for k in "ab"}
        got: dict[str, list[float]] = {"underlay": [], "docker": [], "cnm": []}
        for _ in range(ROUNDS):  # interleaved: drift hits all three alike
            got["underlay"].append(iperf(host["a"], host["b"], ADDR["a"]))
            for kind, (_, prefix) in NETS.items():
                srv = ["nsenter", f"--target={pid_of(a, f'srv-{kind}')}", "--net"]
                cli = ["nsenter", f"--target={pid_of(b, f'prober-{kind}')}", "--net"]
                got[kind].append(iperf(srv, cli, f"{prefix}.0.10"))
        under = statistics.median(got["underlay"])
        for kind in ("underlay", "docker", "cnm"):
            med = statistics.median(got[kind])
            print(
                f"  TCP throughput {kind:9s} median {med:6.2f} Gbit/s  ({', '.join(f'{x:.1f}' for x in got[kind])})"
                f"  / underlay {med / under:.2f}"
            )
        print(f"  cnm / Docker throughput: {statistics.median(got['cnm']) / statistics.median(got['docker']):.2f}")

        for kind in ("docker", "cnm"):
            conv = sorted(convergence(a, b, kind))
            if not conv:
                print(f"  convergence {kind}: no container answered")
                continue
            p95 = conv[min(len(conv) - 1, int(0.95 * len(conv)))]
            print(
                f"  convergence {kind:6s} (docker run -d on a -> first ping answered from b), {len(conv)}/{N} "
                f"containers: median {statistics.median(conv):7.1f} ms, p95 {p95:7.1f} ms"
            )
    finally:
        for eng in engines.values():
            try:
                eng.remove_all()
                eng.docker("swarm", "leave", "--force", check=False, timeout=30)
            except Exception as exc:  # teardown below still runs
                print(f"bench: cleanup: {exc}", file=sys.stderr)
        for p in plugins:
            p.terminate()
            p.wait(10)
        for eng in engines.values():
            eng.teardown()
        if etcd is not None:
            etcd.stop()
        for k in "ab":
            subprocess.run(["ip", "netns", "del", ns[k]], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
