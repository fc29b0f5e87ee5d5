"""Resource usage from captured cgroup files (v1 and v2) and /proc lines. No root."""

from __future__ import annotations

from cnm.runtime import stats


def write(d, files: dict[str, str]) -> str:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return str(d)


def test_v1(tmp_path):
    mem = write(
        tmp_path / "memory",
        {
            "memory.usage_in_bytes": "1048576\n",
            "memory.limit_in_bytes": "67108864\n",
            "memory.max_usage_in_bytes": "2097152\n",
            "memory.failcnt": "3\n",
            "memory.stat": "cache 4096\nrss 8192\ntotal_inactive_file 4096\n",
        },
    )
    acct = write(
        tmp_path / "cpuacct",
        {
            "cpuacct.usage": "5000000\n",
            "cpuacct.usage_user": "3000000\n",
            "cpuacct.usage_sys": "2000000\n",
            "cpuacct.usage_percpu": "4000000 1000000 \n",
        },
    )
    cpu = write(tmp_path / "cpu", {"cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 7000\n"})
    pids = write(tmp_path / "pids", {"pids.current": "4\n", "pids.max": "max\n"})
    st = stats.read({"memory": (1, mem), "cpuacct": (1, acct), "cpu": (1, cpu), "pids": (1, pids)})
    assert (st.memory_usage, st.memory_limit, st.memory_max_usage, st.memory_failcnt) == (1 << 20, 64 << 20, 2 << 20, 3)
    assert st.memory_stat == {"cache": 4096, "rss": 8192, "total_inactive_file": 4096}
    assert (st.cpu_total_ns, st.cpu_user_ns, st.cpu_system_ns, st.percpu_ns) == (
        5000000,
        3000000,
        2000000,
        [4000000, 1000000],
    )
    assert st.throttling == (10, 2, 7000) and st.online_cpus == 2
    assert (st.pids_current, st.pids_limit) == (4, None)


def test_v1_unlimited_memory_is_the_hosts(tmp_path):
    mem = write(tmp_path / "m", {"memory.usage_in_bytes": "10\n", "memory.limit_in_bytes": "9223372036854771712\n"})
    assert stats.read({"memory": (1, mem)}).memory_limit == stats.host_memory()


def test_v2(tmp_path):
    d = write(
        tmp_path / "c",
        {
            "memory.current": "4096\n",
            "memory.max": "max\n",
            "memory.peak": "8192\n",
            "memory.events": "low 0\nhigh 0\nmax 5\noom 1\n",
            "memory.stat": "anon 4096\nfile 0\n",
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
            "nr_throttled 1\nthrottled_usec 20\n",
            "pids.current": "2\n",
            "pids.max": "10\n",
        },
    )
    st = stats.read({"memory": (2, d), "pids": (2, d)})  # no cpu controller: cpu.stat is there anyway
    assert (st.memory_usage, st.memory_limit, st.memory_max_usage, st.memory_failcnt) == (
        4096,
        stats.host_memory(),
        8192,
        5,
    )
    assert (st.cpu_total_ns, st.cpu_user_ns, st.cpu_system_ns) == (1_500_000, 1_000_000, 500_000)
    assert st.throttling is None
    assert (st.pids_current, st.pids_limit) == (2, 10)


def test_proc_figures():
    line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 11 2 20 0 3 0 12345 1000 256 ..."
    assert stats.parse_proc_stat(line) == (7, 3, 11, 2, 3, 256)
    assert stats.system_cpu_ns("cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 1 2 3\n", 100) == 116 * 10_000_000
    st = stats.Stats(read_ns=0)
    stats.fill_from_procs(st, [])  # no processes: zeros, not None
    assert (st.cpu_total_ns, st.memory_usage, st.pids_current) == (0, 0, 0)
