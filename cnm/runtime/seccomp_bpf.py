"""Compile a resolved seccomp profile into a classic-BPF program for seccomp(2). Pure.

Why our own compiler rather than libseccomp: the Python binding (Debian's
python3-seccomp) is built for Debian's python3, not the project's interpreter, and
libseccomp 2.5.4 (Debian 12) does not know the syscalls added since Linux 6.1 that
Docker's profile allows (fchmodat2, futex_wait, cachestat, mseal, ...): with it they
would fail with EPERM where C libraries expect ENOSYS or success. A compiler of a few
hundred lines, with the syscall tables generated from the kernel's headers, is
readable, testable without root (tests run the program through an interpreter and load
it in a child process), and costs nothing per container: the daemon compiles once per
(profile, capability set) and the container only loads the bytes.

The program (x86_64 machine; SCMP_ARCH_X86_64 and SCMP_ARCH_X86 are compiled):

    load arch; one branch per compiled architecture; any other architecture: kill
    per branch: load nr;
        [x86_64] nr >= 0x40000000 (the x32 ABI): ENOSYS (or kill if x32 is not listed)
        nr > the highest syscall the profile names: ENOSYS (runc's rule), unless the
            default action lets syscalls run
        binary search over ranges of syscall numbers with the same outcome; a syscall
        with argument rules gets its rules inline: the first rule whose comparisons all
        hold returns its action, else the default action.

Arguments are 64-bit on x86_64 (compared as two 32-bit words, little-endian) and
32-bit on i386 (only the low word is compared, as libseccomp does).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cnm.runtime import seccomp_syscalls
from cnm.runtime.seccomp_profile import AUDIT_ARCH, ENOSYS, RET_ERRNO, RET_KILL_PROCESS, Arg, Resolved

# classic BPF opcodes (include/uapi/linux/filter.h)
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
JA = 0x05  # BPF_JMP | BPF_JA
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGT = 0x25
JGE = 0x35
RET = 0x06  # BPF_RET | BPF_K
MAX_INSNS = 4096

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16
X32_SYSCALL_BIT = 0x40000000
TABLES = {"SCMP_ARCH_X86_64": seccomp_syscalls.X86_64, "SCMP_ARCH_X86": seccomp_syscalls.I386}
RET_ENOSYS = RET_ERRNO | ENOSYS


class Label:
    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: int | None = None


@dataclass
class _Insn:
    code: int
    k: int | Label = 0
    jt: Label | None = None
    jf: Label | None = None


@dataclass
class Asm:
    """Instructions with symbolic jump targets; `assemble` resolves them, adding `ja`
    trampolines where a conditional jump would reach further than 255 instructions."""

    insns: list[_Insn] = field(default_factory=list)

    def place(self, label: Label) -> None:
        label.at = len(self.insns)

    def ld(self, offset: int) -> None:
        self.insns.append(_Insn(LD_ABS, offset))

    def and_(self, k: int) -> None:
        self.insns.append(_Insn(AND_K, k & 0xFFFFFFFF))

    def ret(self, k: int) -> None:
        self.insns.append(_Insn(RET, k & 0xFFFFFFFF))

    def jump(self, code: int, k: int, jt: Label, jf: Label) -> None:
        self.insns.append(_Insn(code, k & 0xFFFFFFFF, jt, jf))

    def assemble(self) -> bytes:
        insns = list(self.insns)
        while True:
            far = _first_far_jump(insns)
            if far is None:
                break
            i, which = far
            ins = insns[i]
            target = ins.jt if which == "jt" else ins.jf
            assert target is not None
            tramp = Label()
            insns.insert(i + 1, _Insn(JA, target))
            for lab in _labels(insns):  # everything after i moved down by one
                if lab.at is not None and lab.at > i and lab is not tramp:
                    lab.at += 1
            tramp.at = i + 1
            if which == "jt":
                ins.jt = tramp
            else:
                ins.jf = tramp
        if len(insns) > MAX_INSNS:
            raise ValueError(f"seccomp program too long: {len(insns)} instructions (the kernel takes {MAX_INSNS})")
        out = []
        for i, ins in enumerate(insns):
            k = ins.k
            if isinstance(k, Label):  # ja: 32-bit offset in k
                k = _offset(k, i)
            jt = _offset(ins.jt, i) if ins.jt is not None else 0
            jf = _offset(ins.jf, i) if ins.jf is not None else 0
            out.append(struct.pack("=HBBI", ins.code, jt, jf, k))
        return b"".join(out)


def _labels(insns: list[_Insn]) -> set[Label]:
    seen: set[Label] = set()
    for ins in insns:
        for lab in (ins.jt, ins.jf, ins.k):
            if isinstance(lab, Label):
                seen.add(lab)
    return seen


def _offset(label: Label, i: int) -> int:
    if label.at is None:
        raise ValueError("jump to a label that was never placed")
    off = label.at - (i + 1)
    if off < 0:
        raise ValueError("classic BPF jumps forward only")
    return off


def _first_far_jump(insns: list[_Insn]) -> tuple[int, str] | None:
    for i, ins in enumerate(insns):
        for which in ("jt", "jf"):
            lab = getattr(ins, which)
            if lab is not None and _offset(lab, i) > 255:
                return i, which
    return None


# --- compiling ------------------------------------------------------------------------

Outcome = tuple  # ("ret", value) or ("rules", ((value, args), ...))


def _outcomes(res: Resolved, table: dict[str, int]) -> dict[int, Outcome]:
    by_nr: dict[int, list[tuple[int, tuple[Arg, ...]]]] = {}
    for name, value, args in res.rules:
        nr = table.get(name)
        if nr is not None:
            by_nr.setdefault(nr, []).append((value, args))
    out: dict[int, Outcome] = {}
    for nr, entries in by_nr.items():
        kept = []
        for value, args in entries:
            kept.append((value, args))
            if not args:  # unconditional: later rules of this syscall never decide
                break
        if len(kept) == 1 and not kept[0][1]:
            out[nr] = ("ret", kept[0][0])
        else:
            out[nr] = ("rules", tuple(kept))
    return out


def _ranges(outcomes: dict[int, Outcome], default: int, top: int) -> list[tuple[int, Outcome]]:
    """(first number, outcome) for 0..top, merging neighbours with equal outcomes;
    numbers with no rule get the default."""
    ranges: list[tuple[int, Outcome]] = []
    dflt: Outcome = ("ret", default)
    for nr in range(top + 1):
        o = outcomes.get(nr, dflt)
        if not ranges or ranges[-1][1] != o or o[0] == "rules":
            ranges.append((nr, o))
    return ranges


def _emit_outcome(asm: Asm, o: Outcome, default: int, wide: bool) -> None:
    if o[0] == "ret":
        asm.ret(o[1])
        return
    for value, args in o[1]:
        if not args:
            asm.ret(value)
            return
        nxt = Label()
        for a in args:
            _emit_compare(asm, a, nxt, wide)
        asm.ret(value)
        asm.place(nxt)
    asm.ret(default)


def _emit_tree(asm: Asm, ranges: list[tuple[int, Outcome]], default: int, wide: bool) -> None:
    if len(ranges) == 1:
        _emit_outcome(asm, ranges[0][1], default, wide)
        return
    mid = len(ranges) // 2
    left, right = Label(), Label()
    asm.jump(JGE, ranges[mid][0], right, left)
    asm.place(left)
    _emit_tree(asm, ranges[:mid], default, wide)
    asm.place(right)
    _emit_tree(asm, ranges[mid:], default, wide)


def _emit_compare(asm: Asm, a: Arg, fail: Label, wide: bool) -> None:
    """Fall through when argument a.index compares true, else jump to `fail`."""
    lo_off = OFF_ARGS + 8 * a.index
    hi_off = lo_off + 4
    v_lo, v_hi = a.value & 0xFFFFFFFF, a.value >> 32 & 0xFFFFFFFF
    ok, low = Label(), Label()
    op = a.op
    if op == "SCMP_CMP_MASKED_EQ":
        w_lo, w_hi = a.value_two & 0xFFFFFFFF, a.value_two >> 32 & 0xFFFFFFFF
        if wide:
            asm.ld(hi_off)
            asm.and_(v_hi)
            asm.jump(JEQ, w_hi, low, fail)
            asm.place(low)
        asm.ld(lo_off)
        asm.and_(v_lo)
        asm.jump(JEQ, w_lo, ok, fail)
    elif op in ("SCMP_CMP_EQ", "SCMP_CMP_NE"):
        yes, no = (ok, fail) if op == "SCMP_CMP_EQ" else (fail, ok)
        if wide:
            asm.ld(hi_off)
            asm.jump(JEQ, v_hi, low, no)
            asm.place(low)
        asm.ld(lo_off)
        asm.jump(JEQ, v_lo, yes, no)
    else:
        # GT/GE hold when hi > v_hi, or hi == v_hi and lo >(=) v_lo; LT/LE are their negations.
        code = JGT if op in ("SCMP_CMP_GT", "SCMP_CMP_LE") else JGE
        yes, no = (ok, fail) if op in ("SCMP_CMP_GT", "SCMP_CMP_GE") else (fail, ok)
        if wide:
            eq = Label()
            asm.ld(hi_off)
            asm.jump(JGT, v_hi, yes, eq)
            asm.place(eq)
            asm.jump(JEQ, v_hi, low, no)
            asm.place(low)
        asm.ld(lo_off)
        asm.jump(code, v_lo, yes, no)
    asm.place(ok)


def compile_filter(res: Resolved) -> bytes:
    """The BPF program (struct sock_filter[], native byte order) for `res`."""
    asm = Asm()
    arches = [a for a in res.arches if a in TABLES]
    branches = {a: Label() for a in arches}
    asm.ld(OFF_ARCH)
    for a in arches:
        nxt = Label()
        asm.jump(JEQ, AUDIT_ARCH[a], branches[a], nxt)
        asm.place(nxt)
    asm.ret(RET_KILL_PROCESS)
    for a in arches:
        asm.place(branches[a])
        asm.ld(OFF_NR)
        if a == "SCMP_ARCH_X86_64":
            native = Label()
            x32 = RET_ENOSYS if "SCMP_ARCH_X32" in res.arches else RET_KILL_PROCESS
            _ret_if(asm, JGE, X32_SYSCALL_BIT, x32, native)
            asm.place(native)
        outcomes = _outcomes(res, TABLES[a])
        top = max(outcomes, default=-1)
        if top < 0:
            asm.ret(res.default)
            continue
        if res.enosys_above:
            known = Label()
            _ret_if(asm, JGT, top, RET_ENOSYS, known)
            asm.place(known)
            ranges = _ranges(outcomes, res.default, top)
        else:
            ranges = _ranges(outcomes, res.default, top) + [(top + 1, ("ret", res.default))]
        _emit_tree(asm, ranges, res.default, wide=(a == "SCMP_ARCH_X86_64"))
    return asm.assemble()


def _ret_if(asm: Asm, code: int, k: int, value: int, otherwise: Label) -> None:
    hit = Label()
    asm.jump(code, k, hit, otherwise)
    asm.place(hit)
    asm.ret(value)
