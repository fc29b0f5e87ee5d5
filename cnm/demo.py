"""The README's main job: a guided tour on the embedded default (SQLite, one host).

It never touches the machine's root network namespace: it makes a throwaway network
namespace standing in for a host, runs a daemon inside it with temporary state
directories, drives it with the `net` CLI exactly as a user would, and removes
everything afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnm.runtime.runtime import remove_all

NET = str(Path(sys.executable).parent / "net")
BB = "/bin/busybox"


class DemoHost:
    """A network namespace with its own daemon; removed on exit."""

    def __init__(self) -> None:
        self.ns = f"cnm-demo-{secrets.token_hex(3)}"
        self.dir = Path(tempfile.mkdtemp(prefix="cnm-demo-"))
        self.sock = self.dir / "run" / "cnm.sock"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> DemoHost:
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        log = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                NET,
                "daemon",
                "--root",
                str(self.dir / "root"),
                "--run-dir",
                str(self.dir / "run"),
                "--socket",
                str(self.sock),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(200):
            if self.sock.exists() and self.net("ls", "-q", quiet=True).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit("demo: the daemon did not start:\n" + (self.dir / "daemon.log").read_text())

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        remove_all(str(self.dir / "run" / "containers"))  # containers outlive their daemon
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def net(self, *args: str, quiet: bool = False, expect_fail: bool = False) -> subprocess.CompletedProcess:
        if not quiet:
            print(f"\n$ net {' '.join(args)}", flush=True)
        r = subprocess.run([NET, "-H", f"unix://{self.sock}", *args], capture_output=True, text=True)
        if not quiet:
            sys.stdout.write(r.stdout)
            sys.stdout.write(r.stderr)
            if (r.returncode != 0) != expect_fail:
                raise SystemExit(f"demo: unexpected exit {r.returncode} from net {' '.join(args)}")
        return r

    def ip_of(self, name: str) -> str:
        info = json.loads(self.net("container", "inspect", name, quiet=True).stdout)[0]
        return next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]

    def http(self, url: str) -> None:
        print(f"\n[host {self.ns}]$ GET {url}", flush=True)
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode().strip())"
        r = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code], capture_output=True, text=True)
        sys.stdout.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"demo: {url} did not answer")

    def sh(self, *argv: str) -> None:
        print(f"\n[host {self.ns}]$ {' '.join(argv)}", flush=True)
        r = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True)
        sys.stdout.write(r.stdout + r.stderr)


ROOT = Path(__file__).resolve().parents[1]
BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"  # scripts/setup.sh builds it


def lab_tour() -> None:
    """The main job: a two-host lab (etcd, an overlay, a bridge per host), its checks,
    its picture, and a clean teardown."""
    env = dict(os.environ, CNM_LAB_DIR=tempfile.mkdtemp(prefix="cnm-demo-lab-"))
    out = ROOT / "out"
    out.mkdir(exist_ok=True)

    def net(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        print(f"\n$ net {' '.join(args)}", flush=True)
        r = subprocess.run([NET, *args], text=True, env=env, capture_output=True)
        sys.stdout.write(r.stdout + r.stderr)
        if check and r.returncode != 0:
            raise SystemExit(f"demo: net {' '.join(args)} failed ({r.returncode})")
        return r

    lab = str(ROOT / "labs" / "quickstart.yaml")
    print("== A two-host lab: hosts are network namespaces, each with its own daemon; etcd holds the cluster")
    try:
        net("lab", "up", lab)
        net("lab", "check", "quickstart")
        print("\n-- containers on h2, and a2 finding a1 (on h1) by name over the overlay")
        net("lab", "exec", "quickstart", "h2", "--", "net", "ps")
        net("lab", "exec", "quickstart", "h2", "--", "net", "exec", "a2", "--", BB, "nslookup", "a1")
        net("lab", "exec", "quickstart", "h1", "--", "net", "ls")
        net("lab", "graph", "quickstart", "-o", str(out / "quickstart.dot"))
        if shutil.which("dot"):
            net("lab", "graph", "quickstart", "-o", str(out / "quickstart.svg"))
        print((out / "quickstart.dot").read_text())
    finally:
        net("lab", "down", "quickstart", check=False)
        shutil.rmtree(env["CNM_LAB_DIR"], ignore_errors=True)


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if sys.argv[1:2] != ["single"]:
        lab_tour()
        print("\n== And one host up close")
    single_host_tour()
    return 0


def single_host_tour() -> None:
    with DemoHost() as host:
        print(f"== A daemon runs in the throwaway namespace {host.ns}")
        host.net("ls")
        host.net(
            "create",
            "--subnet",
            "10.77.0.0/24",
            "--ip-range",
            "10.77.0.128/25",
            "--gateway",
            "10.77.0.1",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--label",
            "demo=yes",
            "frontend",
        )
        host.net("create", "backend")
        host.net("ls")

        print("\n== An image: busybox:latest, which the set-up made from busybox-static")
        host.net("image", "load", "-i", str(BUSYBOX_TAR))
        host.net("images")

        print("\n== Containers on two bridge networks: two on the image, db on the host's filesystem")
        host.net(
            "run",
            "-d",
            "--name",
            "web",
            "--net",
            "frontend",
            "-p",
            "8080:8080",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/etc",
        )
        host.net("run", "-d", "--name", "client", "--net", "frontend", "busybox", "sleep", "600")
        host.net("run", "-d", "--name", "db", "--net", "backend", BB, "sleep", "600")
        host.net("ps")
        web_ip = host.ip_of("web")
        db_ip = host.ip_of("db")
        print("\n-- same network: client reaches web")
        host.net("exec", "client", "--", BB, "ping", "-c", "2", "-W", "1", web_ip)
        print("\n-- different networks are isolated: client cannot reach db")
        host.net("exec", "client", "--", BB, "ping", "-c", "1", "-W", "1", db_ip, expect_fail=True)
        print("\n-- connect client to backend too: now it reaches db")
        host.net("connect", "backend", "client")
        host.net("exec", "client", "--", BB, "ping", "-c", "1", "-W", "1", db_ip)
        host.net("exec", "client", "--", BB, "ip", "-o", "-4", "addr", "show")
        print("\n-- web's port 8080 is published on the host: ask it from the host itself")
        host.http("http://127.0.0.1:8080/hostname")
        host.net("inspect", "frontend")

        print("\n== Bad input answers with one line and changes nothing")
        host.net("create", "--subnet", "10.77.0.0/16", "overlapping", expect_fail=True)
        host.net("run", "-p", "8080:80", BB, "true", expect_fail=True)
        host.net("rm", "host", expect_fail=True)
        host.net("rm", "frontend", expect_fail=True)
        host.net("rmi", "busybox", expect_fail=True)  # containers use it

        print("\n== Clean up")
        host.net("container", "rm", "-f", "web", "client", "db")
        host.net("rmi", "busybox")
        host.net("rm", "frontend")
        host.net("prune", "-f")
        host.net("ls")
    print("\ndemo: done; namespaces, daemons, containers and state removed")


if __name__ == "__main__":
    sys.exit(main())
