"""The default seccomp profile: the same decisions as Docker's default profile
(moby/profiles seccomp, as of moby b985e23, 2025), in this project's own form — the
allow-list grouped by what the syscalls do, then the rules that depend on arguments,
architecture and capabilities. Names a machine does not have are skipped when the
filter is compiled (e.g. the *32 and *_time64 variants exist only on 32-bit ABIs).

Everything not allowed fails with EPERM; clone3 without CAP_SYS_ADMIN fails with
ENOSYS so that C libraries fall back to clone, whose namespace flags are checked.
"""

from __future__ import annotations

from cnm.runtime.seccomp_profile import Arg, Condition, Profile, Rule

_FILES = """
    access faccessat faccessat2 open openat openat2 creat close close_range read readv pread64
    preadv preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek dup dup2 dup3 fcntl
    fcntl64 flock fsync fdatasync sync syncfs sync_file_range fallocate fadvise64 fadvise64_64
    readahead truncate truncate64 ftruncate ftruncate64 sendfile sendfile64 splice tee vmsplice
    copy_file_range stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs
    statfs64 fstatfs fstatfs64 getdents getdents64 getcwd chdir fchdir mkdir mkdirat mknod mknodat
    rmdir link linkat symlink symlinkat unlink unlinkat rename renameat renameat2 readlink
    readlinkat chmod fchmod fchmodat fchmodat2 chown chown32 fchown fchown32 fchownat lchown
    lchown32 umask utime utimes utimensat utimensat_time64 futimesat name_to_handle_at
    statmount listmount
    getxattr getxattrat lgetxattr fgetxattr setxattr setxattrat lsetxattr fsetxattr listxattr
    listxattrat llistxattr flistxattr removexattr removexattrat lremovexattr fremovexattr
    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    ioctl ioprio_get ioprio_set
"""
_POLL = """
    select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1
    epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 eventfd eventfd2
    signalfd signalfd4 timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime
    timerfd_gettime64 pipe pipe2
"""
_PROCESSES = """
    fork vfork execve execveat exit exit_group wait4 waitid waitpid getpid getppid gettid getpgid
    setpgid getpgrp getsid setsid getuid getuid32 geteuid geteuid32 getgid getgid32 getegid
    getegid32 getresuid getresuid32 getresgid getresgid32 getgroups getgroups32 setuid setuid32
    setgid setgid32 setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid
    setresgid32 setfsuid setfsuid32 setfsgid setfsgid32 setgroups setgroups32 capget capset
    prctl seccomp getrlimit ugetrlimit setrlimit prlimit64 getrusage getpriority setpriority
    sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam
    sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
    sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64 getcpu
    set_tid_address set_robust_list get_robust_list set_thread_area get_thread_area rseq
    restart_syscall membarrier pidfd_open pidfd_send_signal process_mrelease uname sysinfo
    landlock_create_ruleset landlock_add_rule landlock_restrict_self uretprobe riscv_hwprobe
"""
_SIGNALS = """
    kill tkill tgkill rt_sigaction rt_sigprocmask rt_sigpending rt_sigqueueinfo
    rt_tgsigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    sigaltstack sigprocmask sigreturn pause
"""
_TIME = """
    time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
    clock_nanosleep clock_nanosleep_time64 nanosleep alarm getitimer setitimer times adjtimex
    clock_adjtime clock_adjtime64 timer_create timer_delete timer_settime timer_settime64
    timer_gettime timer_gettime64 timer_getoverrun
"""
_MEMORY = """
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock
    munlockall remap_file_pages memfd_create memfd_secret pkey_alloc pkey_free pkey_mprotect
    map_shadow_stack mseal futex futex_time64 futex_waitv futex_wake futex_wait futex_requeue
    cachestat getrandom
"""
_NETWORK = """
    socketpair bind connect listen accept accept4 getsockname getpeername getsockopt setsockopt
    shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
    socketcall
"""
_IPC = """
    ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl shmget shmat
    shmdt shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive
    mq_timedreceive_time64 mq_notify mq_getsetattr
"""

# Syscalls allowed only with a capability in the container's bounding set.
_BY_CAPABILITY = (
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
                         lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr
                         move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
                         sethostname setns syslog umount umount2 unshare""",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    ("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
)

# Syscalls of one architecture family (Go's architecture names, as Docker's profiles use).
_BY_ARCH = (
    (("ppc64le",), "sync_file_range2 swapcontext"),
    (("arm", "arm64"), "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls"),
    (("amd64", "x32"), "arch_prctl"),
    (("amd64", "x32", "x86"), "modify_ldt"),
    (("s390", "s390x"), "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    (("riscv64",), "riscv_flush_icache"),
)

AF_ALG, AF_VSOCK = 38, 40
# clone(2) flags that create namespaces: refused without CAP_SYS_ADMIN.
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
# 0xffffffff (a query).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
ARCH_MAP = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
    ("SCMP_ARCH_LOONGARCH64", ()),
)

ALLOW = "SCMP_ACT_ALLOW"


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _build() -> Profile:
    rules = [
        Rule(names=_names(_FILES + _POLL + _PROCESSES + _SIGNALS + _TIME + _MEMORY + _NETWORK + _IPC), action=ALLOW),
        Rule(
            names=("process_vm_readv", "process_vm_writev", "ptrace"),
            action=ALLOW,
            includes=Condition(min_kernel=(4, 8)),
            comment="ptrace is safe from 4.8 on: seccomp is re-checked after a tracer changes a syscall",
        ),
    ]
    # socket(2): every address family except AF_ALG (kernel crypto) and AF_VSOCK.
    rules += [
        Rule(names=("socket",), action=ALLOW, args=(Arg(0, AF_ALG, "SCMP_CMP_LT"),)),
        Rule(names=("socket",), action=ALLOW, args=(Arg(0, AF_ALG + 1, "SCMP_CMP_EQ"),)),
        Rule(names=("socket",), action=ALLOW, args=(Arg(0, AF_VSOCK, "SCMP_CMP_GT"),)),
    ]
    rules += [Rule(names=("personality",), action=ALLOW, args=(Arg(0, p, "SCMP_CMP_EQ"),)) for p in PERSONALITIES]
    rules += [Rule(names=_names(n), action=ALLOW, includes=Condition(arches=a)) for a, n in _BY_ARCH]
    for cap, n in _BY_CAPABILITY:
        rules.append(Rule(names=_names(n), action=ALLOW, includes=Condition(caps=(cap,))))
        if cap == "CAP_SYS_ADMIN":
            rules += [
                Rule(
                    names=("clone",),
                    action=ALLOW,
                    args=(Arg(0, CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ", 0),),
                    excludes=Condition(caps=("CAP_SYS_ADMIN",), arches=("s390", "s390x")),
                ),
                Rule(
                    names=("clone",),
                    action=ALLOW,
                    args=(Arg(1, CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ", 0),),
                    includes=Condition(arches=("s390", "s390x")),
                    excludes=Condition(caps=("CAP_SYS_ADMIN",)),
                    comment="s390 parameter ordering for clone is different",
                ),
                Rule(
                    names=("clone3",),
                    action="SCMP_ACT_ERRNO",
                    errno_ret=38,
                    excludes=Condition(caps=("CAP_SYS_ADMIN",)),
                    comment="ENOSYS, so that C libraries fall back to clone",
                ),
            ]
    return Profile(default_action="SCMP_ACT_ERRNO", default_errno_ret=1, arch_map=ARCH_MAP, syscalls=tuple(rules))


DEFAULT = _build()
