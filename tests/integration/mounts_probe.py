"""Run by tests/integration/test_runtime_mounts.py in a mount namespace of its own
(`unshare --mount --propagation slave`): a Runtime whose namespace directory holds K
bind mounts of one network namespace, as a daemon with K sandboxes holds them; prints,
as JSON, what the mount namespaces of its containers and supervisors hold."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from cnm.runtime import ContainerSpec, ExecSpec, Runtime, linux
from cnm.runtime.runtime import remove_all

BUSYBOX = "/bin/busybox"


def mounts(pid: int | str, under: str, netns_ino: int) -> tuple[int, int, int]:
    """(all mounts, mounts at or under `under`, mounts of the network namespace
    `netns_ino` wherever they are) in the mount namespace of `pid`. Only the last two
    are this scenario's own: the total also moves with whatever the rest of the machine
    mounts meanwhile (our namespace is a slave of the host's)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        fields = [ln.split(" ") for ln in f]
    points = [fs[4] for fs in fields]
    ns_root = f"net:[{netns_ino}]"
    return (
        len(points),
        sum(1 for p in points if p == under or p.startswith(under + "/")),
        sum(1 for fs in fields if fs[3] == ns_root),
    )


def main() -> None:
    base, netns, cgroup_root = sys.argv[1:4]
    nsdir = os.path.join(base, "netns")
    fixed = Runtime(os.path.join(base, "fixed"), cgroup_root=cgroup_root + "-f", namespace_dirs=(nsdir,))
    copying = Runtime(os.path.join(base, "copying"), cgroup_root=cgroup_root + "-c")
    made = 0
    ino = os.stat(netns).st_ino
    out: dict = {"netns_ino": ino, "runs": []}

    def grow(k: int) -> None:
        nonlocal made
        while made < k:
            target = os.path.join(nsdir, f"sb{made}")
            open(target, "w").close()
            linux.mount(netns, target, None, linux.MS_BIND)
            made += 1

    try:
        for k in (0, 40, 80):
            grow(k)
            if k == 80:
                fixed.template.kill()  # a new template drops what exists when it starts
            run: dict = {"k": k, "ours": mounts("self", nsdir, ino)}
            for name, rt in (("fixed", fixed), ("copying", copying)):
                st = rt.start(ContainerSpec(id=f"c{k}", argv=[BUSYBOX, "sleep", "30"], netns=netns))
                run[name] = {
                    "container": mounts(st.pid, nsdir, ino),
                    "container_netns_ino": os.stat(f"/proc/{st.pid}/ns/net").st_ino,
                    "supervisor_in_our_mount_ns": os.stat(f"/proc/{st.shim_pid}/ns/mnt").st_ino
                    == os.stat("/proc/self/ns/mnt").st_ino,
                    "supervisor": mounts(st.shim_pid, nsdir, ino),
                }
            out["runs"].append(run)
        # Exec still reaches the container (it joins the container's namespaces).
        sess = fixed.exec("c80", ExecSpec([BUSYBOX, "echo", "hi"]))
        data = b""
        while (frame := sess.read_frame(10)) is not None:
            data += frame[2] if frame[0] == 1 else b""
        out["exec"] = [data.decode(), sess.exit_code]
    finally:
        for rt, d in ((fixed, "fixed"), (copying, "copying")):
            remove_all(os.path.join(base, d))
            rt.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
