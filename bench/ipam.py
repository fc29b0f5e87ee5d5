"""IPAM benchmark: allocation rate, memory of large pools, pool-choice time.

A plain script: prints each figure next to its goal; no asserts. Runs in well under 60 s.
    .venv/bin/python bench/ipam.py
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnm.ipamapi import LOCAL_DEFAULT
from cnm.store.memory import MemoryStore
from cnm.store.sqlite import SQLiteStore
from ipam.default import Allocator, DefaultIpam, choose_subnet, pool_specs
from ipam.default.ipam import usable_bounds
from ipam.default.pools import LOCAL_DEFAULT_POOLS

RATE_GOAL = 100_000
SLASH8_GOAL_MB = 4.0
V6_GOAL_MB = 20.0


def line(what: str, value: str, goal: str | None = None, met: bool | None = None) -> None:
    tail = f"   goal {goal}: {'met' if met else 'NOT met'}" if goal else ""
    print(f"{what:<58} {value:>16}{tail}")


def rate_allocator() -> None:
    first, last = usable_bounds(ipaddress.ip_network("172.20.0.0/16"))
    for serial in (False, True):
        a = Allocator(first, last, serial=serial)
        n = last - first + 1
        t0 = time.perf_counter()
        offs = [a.allocate() for _ in range(n)]
        t1 = time.perf_counter()
        for off in offs:
            a.release(off)
        t2 = time.perf_counter()
        rate = n / (t1 - t0)
        mode = "serial" if serial else "first-free"
        line(
            f"allocator /16 {mode}: allocate {n} addresses", f"{rate:,.0f}/s", f">= {RATE_GOAL:,}/s", rate >= RATE_GOAL
        )
        line(f"allocator /16 {mode}: release {n} addresses", f"{n / (t2 - t1):,.0f}/s")


def rate_ipam(kind: str, count: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = MemoryStore() if kind == "memory" else SQLiteStore(os.path.join(tmp, "s.db"))
        ipam = DefaultIpam({LOCAL_DEFAULT: store})
        pool = ipam.request_pool(LOCAL_DEFAULT, "172.20.0.0/16", None, {}, False)
        n = count or 65534
        t0 = time.perf_counter()
        got = [ipam.request_address(pool.pool_id, None, {}) for _ in range(n)]
        t1 = time.perf_counter()
        for addr in got:
            ipam.release_address(pool.pool_id, addr)
        t2 = time.perf_counter()
        what = f"DefaultIpam + {kind} store /16: " + ("every address" if n == 65534 else f"{n} addresses")
        line(f"{what}: allocate", f"{n / (t1 - t0):,.0f}/s")
        line(f"{what}: release", f"{n / (t2 - t1):,.0f}/s")
        store.close()


def measure(build) -> tuple[float, object]:
    gc.collect()
    tracemalloc.start()
    obj = build()
    gc.collect()
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current / 1e6, obj


def memory() -> None:
    net8 = ipaddress.ip_network("10.0.0.0/8")

    def slash8(k: int):
        def build():
            a = Allocator(*usable_bounds(net8))
            for _ in range(k):
                a.allocate()
            return a

        return build

    mb, _ = measure(slash8(0))
    line("memory: /8 pool, nothing allocated", f"{mb:.3f} MB", f"< {SLASH8_GOAL_MB} MB", mb < SLASH8_GOAL_MB)
    mb, _ = measure(slash8(10_000))
    line("memory: /8 pool, 10,000 addresses allocated", f"{mb:.3f} MB", f"< {SLASH8_GOAL_MB} MB", mb < SLASH8_GOAL_MB)

    net64 = ipaddress.ip_network("fd00::/64")

    def v6_sequential():
        a = Allocator(*usable_bounds(net64))
        for _ in range(100_000):
            a.allocate()
        return a

    def v6_scattered():
        # static addresses spread over the /64: large ints, the worst case per entry
        a = Allocator(*usable_bounds(net64))
        step = (1 << 64) // 100_001
        for i in range(1, 100_001):
            a.take(i * step)
        return a

    mb, _ = measure(v6_sequential)
    line("memory: IPv6 /64, 100,000 addresses (first-free)", f"{mb:.3f} MB", f"< {V6_GOAL_MB} MB", mb < V6_GOAL_MB)
    mb, _ = measure(v6_scattered)
    line("memory: IPv6 /64, 100,000 addresses (scattered)", f"{mb:.3f} MB", f"< {V6_GOAL_MB} MB", mb < V6_GOAL_MB)

    def ipam_v6():
        ipam = DefaultIpam({LOCAL_DEFAULT: _NullStore()})
        p = ipam.request_pool(LOCAL_DEFAULT, "fd00::/64", None, {}, True)
        for _ in range(100_000):
            ipam.request_address(p.pool_id, None, {})
        return ipam

    mb, _ = measure(ipam_v6)
    line(
        "memory: DefaultIpam IPv6 /64, 100,000 addresses (no store)",
        f"{mb:.3f} MB",
        f"< {V6_GOAL_MB} MB",
        mb < V6_GOAL_MB,
    )


class _NullStore(MemoryStore):
    """Accepts writes and keeps nothing, so tracemalloc sees the IPAM's own memory."""

    def atomic(self, ops, expect=None):
        return 0


def pool_choice() -> None:
    ipam = DefaultIpam({LOCAL_DEFAULT: MemoryStore()})
    for _ in range(30):
        ipam.request_pool(LOCAL_DEFAULT, None, None, {}, False)
    rounds = 2000
    t0 = time.perf_counter()
    for _ in range(rounds):
        p = ipam.request_pool(LOCAL_DEFAULT, None, None, {}, False)
        ipam.release_pool(p.pool_id)
    per = (time.perf_counter() - t0) / rounds
    line("pool choice, 30 of 31 local defaults taken (request+release)", f"{per * 1e6:,.1f} us")

    specs = pool_specs(LOCAL_DEFAULT_POOLS)
    taken = [n for s in specs for n in s.subnets()][:30]
    t0 = time.perf_counter()
    for _ in range(rounds):
        choose_subnet(specs, taken)
    per = (time.perf_counter() - t0) / rounds
    line("pool choice, pure choose_subnet, 30 of 31 taken", f"{per * 1e6:,.1f} us")

    glob = pool_specs([("10.0.0.0/8", 24)])
    taken = [ipaddress.IPv4Network((0x0A000000 + i * 256, 24)) for i in range(65535)]
    t0 = time.perf_counter()
    got = choose_subnet(glob, taken)
    line(f"pool choice, global /24s, 65,535 of 65,536 taken -> {got}", f"{(time.perf_counter() - t0) * 1e3:,.1f} ms")


def main() -> None:
    t0 = time.perf_counter()
    print("== IPAM benchmark")
    rate_allocator()
    rate_ipam("memory")
    rate_ipam("sqlite")
    memory()
    pool_choice()
    print(f"(total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
