"""A tiny classic-BPF interpreter for seccomp programs: enough to check the compiler's
decisions without loading anything into the kernel (tests also load the programs into
a child process and compare; this one shows *which* decision and why)."""

from __future__ import annotations

import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003


def seccomp_data(nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()) -> bytes:
    a = list(args) + [0] * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch, 0, *a)


def run(program: bytes, data: bytes, max_steps: int = 100_000) -> int:
    """Run `program` on a struct seccomp_data; return the SECCOMP_RET_* value."""
    insns = [struct.unpack_from("=HBBI", program, off) for off in range(0, len(program), 8)]
    acc = 0
    pc = 0
    for _ in range(max_steps):
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x54:  # and #k
            acc &= k
            pc += 1
        elif code == 0x05:  # ja k
            pc += 1 + k
        elif code in (0x15, 0x25, 0x35):
            hit = acc == k if code == 0x15 else acc > k if code == 0x25 else acc >= k
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise ValueError(f"unknown opcode {code:#x} at {pc}")
    raise RuntimeError("program did not return")
