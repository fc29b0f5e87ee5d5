"""Linux capabilities: names, Docker's default set and its --cap-add/--cap-drop rules.

Pure, except `available()`, which reads what this process may grant (a container can
never get a capability its daemon lacks; this machine's own bounding set, for one,
has no CAP_SYS_RESOURCE).

Docker's rules (moby daemon/pkg/oci/caps): names are case-insensitive, "CAP_" optional;
`privileged` gives every available capability; `--cap-add ALL` gives every available one
except those dropped; `--cap-drop ALL` keeps only those added; otherwise the default set
minus the drops plus the adds. An unknown name is refused, naming it.
"""

from __future__ import annotations

from cnm.errors import InvalidParameter

# Index = capability number (include/uapi/linux/capability.h).
NAMES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBER = {name: i for i, name in enumerate(NAMES)}

# Docker's default set (moby daemon/pkg/oci/caps/defaults.go): 14 capabilities.
DEFAULT: frozenset[str] = frozenset(
    {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    }
)
ALL = "ALL"


def normalize(names: list[str] | tuple[str, ...], available: frozenset[str], flag: str) -> list[str]:
    """Upper-case, add "CAP_", check each name; "ALL" passes through. InvalidParameter
    naming the first unknown (or unavailable) capability."""
    out = []
    for raw in names:
        if not isinstance(raw, str):
            raise InvalidParameter(f"{flag}: capability names must be strings, not {type(raw).__name__}")
        name = raw.strip().upper()
        if name == ALL:
            out.append(ALL)
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in NUMBER:
            raise InvalidParameter(f'{flag}: unknown capability: "{name}"')
        if name not in available:
            raise InvalidParameter(
                f'{flag}: capability not supported by your kernel or not available in the current environment: "{name}"'
            )
        out.append(name)
    return out


def effective_set(add: list[str], drop: list[str], privileged: bool, available: frozenset[str]) -> frozenset[str]:
    """The capability set of a container, by Docker's rules (see the module docstring)."""
    if privileged:
        return available
    if not add and not drop:
        return DEFAULT & available
    adds = normalize(add, available, "--cap-add")
    drops = normalize(drop, available, "--cap-drop")
    if ALL in adds:
        return frozenset(c for c in available if c not in drops)
    if ALL in drops:
        return frozenset(c for c in adds if c != ALL)
    return frozenset((DEFAULT & available) - set(drops)) | set(adds)


def mask(caps: frozenset[str] | set[str]) -> int:
    """The kernel's bit mask of a set of names (as /proc/PID/status shows it)."""
    m = 0
    for c in caps:
        m |= 1 << NUMBER[c]
    return m


def names(m: int) -> frozenset[str]:
    return frozenset(n for i, n in enumerate(NAMES) if m >> i & 1)


def parse_status_mask(status_text: str, field: str = "CapBnd") -> int:
    """The hex mask of one Cap* line of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise ValueError(f"no {field} line in /proc status")


def available() -> frozenset[str]:
    """The capabilities this process holds in its bounding set and can therefore grant
    (Docker: "not available in the current environment" otherwise), limited to the names
    this module knows and the kernel supports."""
    with open("/proc/self/status") as f:
        text = f.read()
    m = parse_status_mask(text, "CapBnd") & parse_status_mask(text, "CapPrm")
    return frozenset(n for n in names(m))
