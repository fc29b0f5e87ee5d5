"""Image store figures: `load` against GNU tar extracting the same layers (the work no
loader can skip), and the loader's peak memory as layers grow (it must stay flat:
members stream, file data in 1 MiB chunks).

    .venv/bin/python bench/images.py [--runs 5] [--files 4000] [--mb 40,160]

Each measurement runs in a fresh child process (its peak RSS is its own), ours and tar
alternating (A B A B …); medians are printed, with the ratio ours/tar taken pair by pair.
No root needed (run as root, whiteouts and ownership are applied as in the daemon).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.unit.image_fixtures import Img, docker_save


def layer_tar(files: int, total_mb: int, seed: int) -> bytes:
    """A layer of `files` files in 50 directories, `total_mb` MiB of incompressible data."""
    size = total_mb * (1 << 20) // files
    rnd = os.urandom(size + 4096)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(50):
            ti = tarfile.TarInfo(f"d{d}")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        for i in range(files):
            ti = tarfile.TarInfo(f"d{i % 50}/f{seed}-{i}")
            ti.size, ti.mode = size, 0o644
            off = (i * 131) % 4096
            tf.addfile(ti, io.BytesIO(rnd[off : off + size]))
    return buf.getvalue()


def child_ours(archive: str, store: str) -> None:
    from cnm.images.service import ImageService
    from cnm.images.store import ImageStore

    t = time.perf_counter()
    with open(archive, "rb") as f:
        ImageService(ImageStore(store)).load(f)
    print(time.perf_counter() - t, peak_kib())


def peak_kib() -> int:
    """This process's own peak RSS (VmHWM: per address space; getrusage's ru_maxrss
    would carry the forking parent's size across the exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def child_tar(layers: list[str], dest: str) -> None:
    t = time.perf_counter()
    for i, path in enumerate(layers):
        os.makedirs(f"{dest}/{i}")
        subprocess.run(["tar", "-xf", path, "-C", f"{dest}/{i}"], check=True)
    print(time.perf_counter() - t, 0)


def run_child(*args: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    secs, rss = out.split()
    return float(secs), int(rss)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--mb", default="40,160", help="layer sizes to try, MiB (comma-separated)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        if a.child[0] == "ours":
            child_ours(a.child[1], a.child[2])
        else:
            child_tar(a.child[1:-1], a.child[-1])
        return 0
    print(
        f"bench/images.py: {a.runs} runs each, {a.files} files per layer, load average "
        f"{os.getloadavg()[0]:.1f} at start (other helpers share the machine)"
    )
    work = tempfile.mkdtemp(prefix="cnm-bench-images-")
    try:
        for mb in (int(x) for x in a.mb.split(",")):
            base, top = layer_tar(a.files, mb, 1), layer_tar(a.files // 10, max(1, mb // 10), 2)
            archive = os.path.join(work, f"img{mb}.tar")
            with open(archive, "wb") as f:
                f.write(docker_save(Img([base, top], tags=[f"bench:{mb}"])))
            layer_files = []
            for i, data in enumerate((base, top)):
                p = os.path.join(work, f"layer{mb}-{i}.tar")
                with open(p, "wb") as f:
                    f.write(data)
                layer_files.append(p)
            ours, tars, ratios, rss = [], [], [], []
            for r in range(a.runs):
                store, dest = os.path.join(work, f"s{r}"), os.path.join(work, f"t{r}")
                o_secs, o_rss = run_child("--child", "ours", archive, store)
                t_secs, _ = run_child("--child", "tar", *layer_files, dest)
                ours.append(o_secs)
                tars.append(t_secs)
                ratios.append(o_secs / t_secs)
                rss.append(o_rss)
                shutil.rmtree(store, ignore_errors=True)
                shutil.rmtree(dest, ignore_errors=True)
            size = (len(base) + len(top)) / (1 << 20)
            print(
                f"layers {size:6.1f} MiB, {a.files + a.files // 10} files: load median {statistics.median(ours):.2f} s "
                f"(min {min(ours):.2f}, max {max(ours):.2f}); GNU tar -x {statistics.median(tars):.2f} s; "
                f"ratio ours/tar {statistics.median(ratios):.2f}; peak RSS of the loader "
                f"{statistics.median(rss) / 1024:.0f} MiB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
