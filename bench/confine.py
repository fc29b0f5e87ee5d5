"""What confinement costs a container start, as medians:

1. the container process's own work, isolated: a forked child that unshares a mount
   namespace and runs confine_apply.enter_root(plan) + lock(plan) (every mount, the
   capability drop, no_new_privs, the seccomp load), host-filesystem mode and --rootfs
   mode, against the same child doing only the mounts the runtime did before
   confinement (a fresh /proc; for --rootfs the overlay, /dev bound from the host,
   /proc, /sys, pivot_root);
2. the daemon's side: confine.plan() (capabilities, mount list, the seccomp program
   from its cache) and a cold compile of Docker's default profile;
3. Runtime.start() to its return (the container has exec'd `true`), default
   confinement against --privileged + seccomp=unconfined + systempaths=unconfined (the
   least confinement left), interleaved A B A B.

Needs root. Runs in a throwaway network namespace; everything it makes lives under a
temporary directory and is removed.

    python bench/confine.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnm.runtime import ContainerSpec, Runtime, confine, confine_apply, files, linux

BUSYBOX = "/bin/busybox"


def _child_ms(work) -> float:
    """Fork; the child unshares a mount namespace, runs work(), reports its duration."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
            t = time.perf_counter()
            work()
            os.write(w, f"{(time.perf_counter() - t) * 1000:.4f}".encode())
        except BaseException as exc:
            os.write(w, f"error {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    if out.startswith("error"):
        raise RuntimeError(out)
    return float(out)


def _before_host() -> None:
    linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


def _before_rootfs(cdir: str, lower: str):
    def work() -> None:
        merged = os.path.join(cdir, files.MERGED)
        linux.mount(
            "overlay",
            merged,
            "overlay",
            0,
            f"lowerdir={lower},upperdir={cdir}/{files.UPPER},workdir={cdir}/{files.WORK}",
        )
        for sub in ("dev", "proc", "sys"):
            os.makedirs(merged + "/" + sub, exist_ok=True)
        linux.mount("/dev", merged + "/dev", None, linux.MS_BIND | linux.MS_REC)
        linux.mount("proc", merged + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.mount(
            "sysfs", merged + "/sys", "sysfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        )
        os.chdir(merged)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")

    return work


def _median_pair(a, b, runs: int) -> tuple[float, float]:
    xs, ys = [], []
    for _ in range(runs):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/confine.py needs root (mount namespaces)")
    base = tempfile.mkdtemp(prefix="cnm-bench-confine-")
    ns = f"cnmb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        lower = os.path.join(base, "rootfs")
        os.makedirs(lower + "/bin")
        shutil.copy2(BUSYBOX, lower + "/bin/busybox")
        cdir = os.path.join(base, "c")
        for sub in (files.UPPER, files.WORK, files.MERGED):
            os.makedirs(os.path.join(cdir, sub))
        host = confine.HostFacts.probe(hide=(base,))
        spec_host = ContainerSpec(id="b", argv=["true"])
        spec_root = ContainerSpec(id="b", argv=["true"], rootfs=[lower])
        plan_host = confine.plan(spec_host, [], host)
        plan_root = confine.plan(spec_root, [], host, cdir)

        def confined(p):
            return lambda: _child_ms(lambda: (confine_apply.enter_root(p), confine_apply.lock(p)))

        print(
            f"confinement in the container process (median of {args.runs}, ms; before = the mounts the "
            "runtime made without confinement):"
        )
        for label, after, before in (
            ("host filesystem", confined(plan_host), lambda: _child_ms(_before_host)),
            ("--rootfs", confined(plan_root), lambda: _child_ms(_before_rootfs(cdir, lower))),
        ):
            a, b = _median_pair(after, before, args.runs)
            print(
                f"  {label:16} confined {a:6.2f}   before {b:6.2f}   added {a - b:+6.2f}   "
                f"({len(plan_host['ops'] if label.startswith('host') else plan_root['ops'])} mount operations)"
            )

        t = []
        for _ in range(args.runs):
            s = time.perf_counter()
            confine.plan(spec_host, [], host)
            t.append((time.perf_counter() - s) * 1000)
        confine._program.cache_clear()
        s = time.perf_counter()
        confine.plan(spec_host, [], host)
        cold = (time.perf_counter() - s) * 1000
        print(
            f"daemon side: confine.plan() {statistics.median(t):.3f} ms (seccomp program cached); "
            f"first plan, compiling Docker's profile: {cold:.1f} ms; program {len(plan_host['seccomp']) // 8} "
            "instructions"
        )

        rt = Runtime(os.path.join(base, "rt"), cgroup_root=f"cnm-bench-{os.getpid()}")
        netns = f"/run/netns/{ns}"
        loose = dict(privileged=True, security_opt=["seccomp=unconfined", "systempaths=unconfined"])
        n = [0]

        def start(**kw):
            def go() -> float:
                n[0] += 1
                cid = f"s{n[0]}"
                s = time.perf_counter()
                rt.start(ContainerSpec(id=cid, argv=[BUSYBOX, "true"], netns=netns, **kw))
                ms = (time.perf_counter() - s) * 1000
                rt.wait(cid, 10)
                rt.remove(cid)
                return ms

            return go

        a, b = _median_pair(start(), start(**loose), args.runs)
        print(
            f"Runtime.start() to exec (median of {args.runs}, ms): default {a:.1f}, privileged+unconfined {b:.1f} "
            f"(ratio {a / b:.2f})"
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
