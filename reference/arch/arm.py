"""32-bit arm (EABI, little-endian), as Linux 6.1 applies REL relocations
(arch/arm/kernel/module.c apply_relocate, the 5.19-6.9 form; spec §5.4).

REL: every addend is the field already at the place, decoded per type (a word, a branch's
imm24, a MOVW/MOVT imm4:imm12, an ADD/SUB modified immediate, ...). Per entry, in the
kernel's order: the symbol index is checked (`> count`: an index equal to the count reads one
symbol past the table), then the place (`r_offset > sh_size - 4` in unsigned 32-bit
arithmetic: a section shorter than 4 bytes passes any offset), then the type. Nothing is
written for a failing entry; the entries before it are written. Every failure is -ENOEXEC.

Config-dependent types (`RelocType.requires`): the group relocations exist under
CONFIG_ARM_HAS_GROUP_RELOCS (Debian armmp: y), the Thumb-2 ones under CONFIG_THUMB2_KERNEL
(armmp: n, so "unknown relocation" unless a vector turns it on). With CONFIG_ARM_MODULE_PLTS a
branch out of range goes through a module PLT entry (reference/arch/arm_plt.py), a module too
large for the module area is allocated in vmalloc, and every SHT_REL section whose target is
executable has been sorted by (type, symbol index) in the file copy before it is applied
(module_frob_arch_sections): entry numbers in messages, which entries are written before a
failure and the order of PLT emission follow that order.

Bulk: the table, the symbol values and the places are read with numpy, each type's value is
computed for all its entries at once, and the words are scattered back. Only PLT emission is
sequential. Entries whose places overlap (each other, the symbol table or a PLT area), or
that read outside the known tables, take the entry-by-entry path, which sees every earlier
write as the kernel does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..elf import ELF32
from ..errors import RelocationError
from ..memory import MemoryFault
from . import Arch, RangeCheck, RelocType, signed
from .arm_plt import get_module_plt, module_frob_arch_sections, plt_ranges

EM_ARM = 40
_CITE = "arch/arm/kernel/module.c: apply_relocate (6.1)"
U32 = 0xFFFFFFFF

# Relocation numbers (ELF for the Arm Architecture, IHI 0044; arch/arm/include/asm/elf.h).
R_ARM_NONE, R_ARM_PC24, R_ARM_ABS32, R_ARM_REL32 = 0, 1, 2, 3
R_ARM_THM_CALL, R_ARM_CALL, R_ARM_JUMP24, R_ARM_THM_JUMP24 = 10, 28, 29, 30
R_ARM_TARGET1, R_ARM_V4BX, R_ARM_PREL31 = 38, 40, 42
R_ARM_MOVW_ABS_NC, R_ARM_MOVT_ABS, R_ARM_MOVW_PREL_NC, R_ARM_MOVT_PREL = 43, 44, 45, 46
R_ARM_THM_MOVW_ABS_NC, R_ARM_THM_MOVT_ABS, R_ARM_THM_MOVW_PREL_NC, R_ARM_THM_MOVT_PREL = 47, 48, 49, 50
R_ARM_ALU_PC_G0_NC, R_ARM_ALU_PC_G1_NC, R_ARM_LDR_PC_G2 = 57, 59, 63

GROUP_RELOCS = "CONFIG_ARM_HAS_GROUP_RELOCS"
THUMB2 = "CONFIG_THUMB2_KERNEL"
PLTS = "CONFIG_ARM_MODULE_PLTS"

# Accepted branch displacements: the kernel rejects off <= (s32)0xfe000000 or off >= 0x02000000
# (ARM BL/B), off <= (s32)0xff000000 or off >= 0x01000000 (Thumb-2 BL/B.W): both ends excluded,
# so exactly -32 MiB (-16 MiB), which the instruction can encode, is refused.
ARM_BRANCH = RangeCheck(-0x2000000 + 1, 0x2000000 - 1, signed=True)
THUMB_BRANCH = RangeCheck(-0x1000000 + 1, 0x1000000 - 1, signed=True)
PREL31_RANGE = signed(31)          # -0x40000000 <= off < 0x40000000

RELOCATIONS = {r.number: r for r in (
    RelocType(R_ARM_NONE, "R_ARM_NONE", "none", 0, cite=_CITE),
    RelocType(R_ARM_PC24, "R_ARM_PC24", "S+A-P", 4, check=ARM_BRANCH,
              cite=_CITE + " (imm24; ARM -> Thumb refused; PLT with ARM_MODULE_PLTS)"),
    RelocType(R_ARM_ABS32, "R_ARM_ABS32", "S+A", 4, cite=_CITE + " (*P += S)"),
    RelocType(R_ARM_REL32, "R_ARM_REL32", "S+A-P", 4, cite=_CITE + " (*P += S - P)"),
    RelocType(R_ARM_THM_CALL, "R_ARM_THM_CALL", "S+A-P", 4, check=THUMB_BRANCH, requires=THUMB2,
              cite=_CITE + " (S:I1:I2:imm10:imm11; Thumb -> ARM refused)"),
    RelocType(R_ARM_CALL, "R_ARM_CALL", "S+A-P", 4, check=ARM_BRANCH, cite=_CITE + " (as R_ARM_PC24)"),
    RelocType(R_ARM_JUMP24, "R_ARM_JUMP24", "S+A-P", 4, check=ARM_BRANCH, cite=_CITE + " (as R_ARM_PC24)"),
    RelocType(R_ARM_THM_JUMP24, "R_ARM_THM_JUMP24", "S+A-P", 4, check=THUMB_BRANCH, requires=THUMB2,
              cite=_CITE + " (as R_ARM_THM_CALL)"),
    RelocType(R_ARM_TARGET1, "R_ARM_TARGET1", "S+A", 4, cite=_CITE + " (as R_ARM_ABS32)"),
    RelocType(R_ARM_V4BX, "R_ARM_V4BX", "none", 4, cite=_CITE + " (bx rm -> mov pc, rm)"),
    RelocType(R_ARM_PREL31, "R_ARM_PREL31", "S+A-P", 4, check=PREL31_RANGE,
              cite=_CITE + " (low 31 bits; bit 31 kept)"),
    RelocType(R_ARM_MOVW_ABS_NC, "R_ARM_MOVW_ABS_NC", "S+A", 4, cite=_CITE + " (imm4:imm12)"),
    RelocType(R_ARM_MOVT_ABS, "R_ARM_MOVT_ABS", "S+A", 4, cite=_CITE + " ((S+A) >> 16 in imm4:imm12)"),
    RelocType(R_ARM_MOVW_PREL_NC, "R_ARM_MOVW_PREL_NC", "S+A-P", 4, cite=_CITE + " (imm4:imm12)"),
    RelocType(R_ARM_MOVT_PREL, "R_ARM_MOVT_PREL", "S+A-P", 4, cite=_CITE + " ((S+A-P) >> 16)"),
    RelocType(R_ARM_THM_MOVW_ABS_NC, "R_ARM_THM_MOVW_ABS_NC", "S+A", 4, requires=THUMB2,
              cite=_CITE + " (imm4:i:imm3:imm8)"),
    RelocType(R_ARM_THM_MOVT_ABS, "R_ARM_THM_MOVT_ABS", "S+A", 4, requires=THUMB2, cite=_CITE),
    RelocType(R_ARM_THM_MOVW_PREL_NC, "R_ARM_THM_MOVW_PREL_NC", "S+A-P", 4, requires=THUMB2, cite=_CITE),
    RelocType(R_ARM_THM_MOVT_PREL, "R_ARM_THM_MOVT_PREL", "S+A-P", 4, requires=THUMB2, cite=_CITE),
    RelocType(R_ARM_ALU_PC_G0_NC, "R_ARM_ALU_PC_G0_NC", "S+A-P", 4, requires=GROUP_RELOCS,
              cite=_CITE + " (ADD/SUB imm12, group 0, get_group_rem)"),
    RelocType(R_ARM_ALU_PC_G1_NC, "R_ARM_ALU_PC_G1_NC", "S+A-P", 4, requires=GROUP_RELOCS,
              cite=_CITE + " (ADD/SUB imm12, group 1)"),
    RelocType(R_ARM_LDR_PC_G2, "R_ARM_LDR_PC_G2", "S+A-P", 4, requires=GROUP_RELOCS,
              cite=_CITE + " (LDR imm12 and U bit, group 2 residual <= 0xfff)"),
)}
BRANCHES = (R_ARM_PC24, R_ARM_CALL, R_ARM_JUMP24)
THUMB_BRANCHES = (R_ARM_THM_CALL, R_ARM_THM_JUMP24)
MOVW_MOVT = (R_ARM_MOVW_ABS_NC, R_ARM_MOVT_ABS, R_ARM_MOVW_PREL_NC, R_ARM_MOVT_PREL)
THM_MOVW_MOVT = (R_ARM_THM_MOVW_ABS_NC, R_ARM_THM_MOVT_ABS, R_ARM_THM_MOVW_PREL_NC, R_ARM_THM_MOVT_PREL)
STT_FUNC = 2

# arch/arm/kernel/module.c defines no pr_fmt: pr_err prints these as they are, at KERN_ERR.
MESSAGES = {
    "bad_sym": (3, "%s: section %u reloc %u: bad relocation sym offset\n"),
    "bounds": (3, "%s: section %u reloc %u sym '%s': out of bounds relocation, offset %d size %u\n"),
    "unknown": (3, "%s: unknown relocation: %u\n"),
    "arm_to_thumb": (3, "%s: section %u reloc %u sym '%s': unsupported interworking call (ARM -> Thumb)\n"),
    "thumb_to_arm": (3, "%s: section %u reloc %u sym '%s': unsupported interworking call (Thumb -> ARM)\n"),
    "range": (3, "%s: section %u reloc %u sym '%s': relocation %u out of range (%#lx -> %#x)\n"),
    # arch/arm/kernel/module-plts.c module_frob_arch_sections
    "plt_missing": (3, "%s: module PLT section(s) missing\n"),
    "symtab_missing": (3, "%s: module symtab section missing\n"),
}

# Failure codes, in the order the kernel tests them for one entry.
OK, BAD_SYM, BOUNDS, UNKNOWN, ARM_TO_THUMB, THUMB_TO_ARM, RANGE = range(7)


# ---- field codecs (u32 numpy arrays in, u32 out; int64 for signed intermediates) --------
def _s32(v: np.ndarray) -> np.ndarray:
    """The low 32 bits as a signed value (int64)."""
    v = v.astype(np.int64) & U32
    return np.where(v >= 1 << 31, v - (1 << 32), v)


def _fits(check: RangeCheck, off: np.ndarray) -> np.ndarray:
    return (off >= check.lo) & (off <= check.hi)


def _u32(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.int64) & U32).astype(np.int64)


def branch_offset(word: np.ndarray) -> np.ndarray:
    """ARM B/BL: imm24 << 2, sign-extended from bit 25."""
    off = (word & 0x00FFFFFF) << 2
    return np.where(off & 0x02000000, off - 0x04000000, off)


def branch_encode(word: np.ndarray, off: np.ndarray) -> np.ndarray:
    return (word & 0xFF000000) | ((off >> 2) & 0x00FFFFFF)


def thumb_branch_offset(word: np.ndarray) -> np.ndarray:
    """Thumb-2 BL/B.W (upper halfword at P, lower at P+2): S:I1:I2:imm10:imm11:0, I = ~(J ^ S)."""
    upper, lower = word & 0xFFFF, word >> 16
    sign = (upper >> 10) & 1
    j1, j2 = (lower >> 13) & 1, (lower >> 11) & 1
    off = ((sign << 24) | ((~(j1 ^ sign) & 1) << 23) | ((~(j2 ^ sign) & 1) << 22)
           | ((upper & 0x03FF) << 12) | ((lower & 0x07FF) << 1))
    return np.where(off & 0x01000000, off - 0x02000000, off)


def thumb_branch_encode(word: np.ndarray, off: np.ndarray) -> np.ndarray:
    upper, lower = word & 0xFFFF, word >> 16
    sign = (off >> 24) & 1
    j1 = sign ^ (~(off >> 23) & 1)
    j2 = sign ^ (~(off >> 22) & 1)
    upper = (upper & 0xF800) | (sign << 10) | ((off >> 12) & 0x03FF)
    lower = (lower & 0xD000) | (j1 << 13) | (j2 << 11) | ((off >> 1) & 0x07FF)
    return (upper | (lower << 16)) & U32


def movw_imm(word: np.ndarray) -> np.ndarray:
    """ARM MOVW/MOVT imm4 (bits 19:16) : imm12 (bits 11:0), sign-extended from 16 bits."""
    imm = ((word & 0xF0000) >> 4) | (word & 0xFFF)
    return (imm ^ 0x8000) - 0x8000


def movw_encode(word: np.ndarray, value: np.ndarray) -> np.ndarray:
    return (word & 0xFFF0F000) | ((value & 0xF000) << 4) | (value & 0x0FFF)


def thumb_movw_imm(word: np.ndarray) -> np.ndarray:
    """Thumb-2 MOVW/MOVT: imm16 = imm4 (upper 3:0) : i (upper 10) : imm3 (lower 14:12) : imm8 (lower 7:0)."""
    upper, lower = word & 0xFFFF, word >> 16
    imm = ((upper & 0x000F) << 12) | ((upper & 0x0400) << 1) | ((lower & 0x7000) >> 4) | (lower & 0x00FF)
    return (imm ^ 0x8000) - 0x8000


def thumb_movw_encode(word: np.ndarray, value: np.ndarray) -> np.ndarray:
    upper, lower = word & 0xFFFF, word >> 16
    upper = (upper & 0xFBF0) | ((value & 0xF000) >> 12) | ((value & 0x0800) >> 1)
    lower = (lower & 0x8F00) | ((value & 0x0700) << 4) | (value & 0x00FF)
    return (upper | (lower << 16)) & U32


def ror32(value: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shift = shift & 31
    return ((value >> shift) | (value << ((32 - shift) & 31))) & U32


def _clz32(v: np.ndarray) -> np.ndarray:
    """Leading zeros of u32 values (32 for zero): frexp is exact for integers below 2**53."""
    _, exponent = np.frexp(v.astype(np.float64))
    return np.where(v == 0, 32, 32 - exponent.astype(np.int64))


def get_group_rem(group: int, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_group_rem: (shift, remaining offset) after taking `group` leading 8-bit chunks, each
    starting at an even bit position (AAELF group relocations). shift is the even leading-zero
    count of the remainder (32 for zero)."""
    val = offset.copy()
    shift = np.zeros_like(val)
    out = val.copy()
    live = np.ones(val.shape, dtype=bool)
    for _ in range(group + 1):
        lz = _clz32(val)
        step_shift = np.where(val != 0, lz & ~1, 32)
        shift = np.where(live, step_shift, shift)
        out = np.where(live, val, out)
        live &= val != 0
        val = np.where(live, val & (0xFFFFFF >> np.where(live, step_shift, 0)), val)
    return shift, out


def alu_group(word: np.ndarray, s: np.ndarray, p: np.ndarray, group: int) -> np.ndarray:
    """R_ARM_ALU_PC_G0_NC / G1_NC: ADD/SUB with a rotated 8-bit immediate (never an error)."""
    off = ror32(word & 0xFF, (word & 0xF00) >> 7)
    off = np.where(word & (1 << 22), -off, off)
    off = _s32(off + s - p)
    negative = off < 0
    off = _u32(np.where(negative, -off, off))
    word = np.where(negative, (word & ~(1 << 23)) | (1 << 22), (word & ~(1 << 22)) | (1 << 23))
    shift, off = get_group_rem(group, off)
    small = shift < 24
    imm12 = np.where(small, (off >> np.where(small, 24 - shift, 0)) | ((shift + 8) << 7), off)
    return ((word & ~0xFFF) | imm12) & U32


def ldr_group(word: np.ndarray, s: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R_ARM_LDR_PC_G2: (new word, fits) with the residual after two ALU groups in imm12 and U."""
    off = word & 0xFFF
    off = np.where(word & (1 << 23), off, -off)
    off = _s32(off + s - p)
    negative = off < 0
    off = _u32(np.where(negative, -off, off))
    word = np.where(negative, word & ~(1 << 23), word | (1 << 23))
    _, off = get_group_rem(2, off)
    return ((word & ~0xFFF) | (off & 0xFFFFFFFF)) & U32, off <= 0xFFF


# ---- one batch ------------------------------------------------------------------------
@dataclass
class Batch:
    """Entries of one section in the kernel's order, with everything apply_relocate reads."""
    index: np.ndarray       # entry numbers i (int64)
    r_offset: np.ndarray    # int64 (u32 values)
    rtype: np.ndarray       # int64
    rsym: np.ndarray        # int64
    p: np.ndarray           # place addresses (int64, u32 values)
    word: np.ndarray        # the 32 bits at the place (int64; 0 where not read)
    s: np.ndarray           # st_value (int64, u32 values)
    st_info: np.ndarray     # int64


@dataclass
class Outcome:
    word: np.ndarray        # the word to write (where writes)
    writes: np.ndarray      # bool: the type writes 4 bytes at P
    fail: np.ndarray        # failure code per entry (OK: none)
    plt: np.ndarray         # bool: a branch that needs a PLT entry (then `off` is its displacement)
    off: np.ndarray         # branch displacement (int64) for PLT candidates


def enabled_types(ld: Any) -> dict[int, RelocType]:
    """The types this kernel build compiles in (RelocType.requires)."""
    return {n: r for n, r in RELOCATIONS.items() if r.requires is None or ld.profile.enabled(r.requires)}


def early_failures(ld: Any, rsym: np.ndarray, r_offset: np.ndarray, rtype: np.ndarray, nsyms: int,
                   dst_size: int) -> np.ndarray:
    """The checks made before the type is looked at: symbol index (`> count`), then place
    (`r_offset > sh_size - sizeof(u32)`, unsigned: sh_size < 4 wraps and lets any offset by)."""
    fail = np.full(len(rsym), OK, dtype=np.int64)
    fail[rsym > nsyms] = BAD_SYM
    fail[(fail == OK) & (r_offset > ((dst_size - 4) & U32))] = BOUNDS
    known = np.isin(rtype, list(enabled_types(ld)))
    fail[(fail == OK) & ~known] = UNKNOWN
    return fail


def compute(ld: Any, b: Batch, fail: np.ndarray) -> Outcome:
    """Every type's new word and failure, all entries at once (PLT routing decided later)."""
    n = len(b.index)
    word, s, p, t = b.word, b.s, b.p, b.rtype
    new = word.copy()
    writes = np.isin(t, [r for r in RELOCATIONS if r != R_ARM_NONE]) & (fail == OK)
    fail = fail.copy()
    plt = np.zeros(n, dtype=bool)
    off_out = np.zeros(n, dtype=np.int64)
    use_plts = ld.profile.enabled(PLTS)

    sel = np.isin(t, (R_ARM_ABS32, R_ARM_TARGET1))
    new[sel] = (word[sel] + s[sel]) & U32
    sel = t == R_ARM_REL32
    new[sel] = (word[sel] + s[sel] - p[sel]) & U32
    sel = t == R_ARM_V4BX
    new[sel] = (word[sel] & 0xF000000F) | 0x01A0F000

    sel = np.isin(t, BRANCHES) & (fail == OK)
    fail[sel & ((s & 3) != 0)] = ARM_TO_THUMB
    sel &= fail == OK
    off = _s32(branch_offset(word) + s - p)
    out = sel & ~_fits(ARM_BRANCH, off)
    if use_plts:
        plt |= out
    else:
        fail[out] = RANGE
    off_out[sel] = off[sel]
    new[sel] = branch_encode(word[sel], off[sel])

    sel = t == R_ARM_PREL31
    off = _s32((word << 1) & U32) >> 1          # sign-extend bit 30
    off = _s32(off + s - p)
    fail[sel & (fail == OK) & ~_fits(PREL31_RANGE, off)] = RANGE
    new[sel] = (word[sel] & 0x80000000) | (off[sel] & 0x7FFFFFFF)

    sel = np.isin(t, MOVW_MOVT)
    off = movw_imm(word) + s
    off = np.where(np.isin(t, (R_ARM_MOVW_PREL_NC, R_ARM_MOVT_PREL)), off - p, off)
    off = _s32(off)
    off = np.where(np.isin(t, (R_ARM_MOVT_ABS, R_ARM_MOVT_PREL)), off >> 16, off)
    new[sel] = movw_encode(word[sel], off[sel] & U32)

    for rtype, group in ((R_ARM_ALU_PC_G0_NC, 0), (R_ARM_ALU_PC_G1_NC, 1)):
        sel = (t == rtype) & (fail == OK)
        if sel.any():
            new[sel] = alu_group(word[sel], s[sel], p[sel], group)
    sel = (t == R_ARM_LDR_PC_G2) & (fail == OK)
    if sel.any():
        ldr, fits = ldr_group(word[sel], s[sel], p[sel])
        new[sel] = ldr
        idx = np.flatnonzero(sel)
        fail[idx[~fits]] = RANGE

    sel = np.isin(t, THUMB_BRANCHES) & (fail == OK)
    fail[sel & ((b.st_info & 0xF) == STT_FUNC) & ((s & 1) == 0)] = THUMB_TO_ARM
    sel &= fail == OK
    off = _s32(thumb_branch_offset(word) + s - p)
    out = sel & ~_fits(THUMB_BRANCH, off)
    if use_plts:
        plt |= out
    else:
        fail[out] = RANGE
    off_out[sel] = off[sel]
    new[sel] = thumb_branch_encode(word[sel], off[sel])

    sel = np.isin(t, THM_MOVW_MOVT)
    off = thumb_movw_imm(word) + s
    off = np.where(np.isin(t, (R_ARM_THM_MOVW_PREL_NC, R_ARM_THM_MOVT_PREL)), off - p, off)
    off = _s32(off)
    off = np.where(np.isin(t, (R_ARM_THM_MOVT_ABS, R_ARM_THM_MOVT_PREL)), off >> 16, off)
    new[sel] = thumb_movw_encode(word[sel], off[sel] & U32)

    writes &= fail == OK
    return Outcome(new & U32, writes, fail, plt & (fail == OK), off_out)


def route_through_plt(ld: Any, b: Batch, k: int, off: int) -> tuple[int, bool]:
    """A branch out of range: get_module_plt for its target, then the new displacement and
    whether it fits (-ENOEXEC otherwise, with the PLT entry already emitted)."""
    thumb = int(b.rtype[k]) in THUMB_BRANCHES
    bias = 4 if thumb else 8
    p = int(b.p[k])
    plt = get_module_plt(ld, p, (off + p + bias) & U32)
    new_off = int(_s32(np.array([plt - p - bias]))[0])
    check = THUMB_BRANCH if thumb else ARM_BRANCH
    return new_off, check.lo <= new_off <= check.hi


def encode_branch(b: Batch, k: int, off: int) -> int:
    word, o = np.array([b.word[k]]), np.array([off])
    enc = thumb_branch_encode if int(b.rtype[k]) in THUMB_BRANCHES else branch_encode
    return int(enc(word, o)[0]) & U32


# ---- reading and writing ----------------------------------------------------------------
@dataclass
class Section:
    relsec: int
    target: int
    base: int               # target sh_addr
    size: int               # target sh_size
    nsyms: int
    sym_addr: int


def apply_relocate(ld: Any, relsec: int, target: int) -> None:
    """apply_relocate for one SHT_REL section (arch/arm/kernel/module.c, 6.1)."""
    shdr = ld.sechdrs[relsec]
    count = int(shdr["sh_size"]) // ELF32.rel.itemsize
    if count == 0:
        return
    table = ld.memory.table(int(shdr["sh_addr"]), count, ELF32.rel)
    sym_addr, nsyms = ld.symtab()
    dst = ld.sechdrs[target]
    sec = Section(relsec, target, int(dst["sh_addr"]), int(dst["sh_size"]), nsyms, sym_addr)
    info = table["r_info"].astype(np.int64)
    index = np.arange(count, dtype=np.int64)
    r_offset = table["r_offset"].astype(np.int64)
    rtype, rsym = info & 0xFF, info >> 8
    if not _bulk(ld, sec, index, r_offset, rtype, rsym):
        _one_by_one(ld, sec, index, r_offset, rtype, rsym)


def _bulk(ld: Any, sec: Section, index: np.ndarray, r_offset: np.ndarray, rtype: np.ndarray,
          rsym: np.ndarray) -> bool:
    """All entries at once; False (nothing done) when order or memory faults could matter."""
    mem = ld.memory
    p = (sec.base + r_offset) & U32
    fail = early_failures(ld, rsym, r_offset, rtype, sec.nsyms, sec.size)
    stop = _first(fail)
    live = index < stop
    if sec.nsyms == 0 or (rsym[live] >= sec.nsyms).any():     # index == count: one past the table
        return False
    reads = live & (rtype != R_ARM_NONE)
    try:
        symtab = mem.table(sec.sym_addr, sec.nsyms, ELF32.sym)
        area, _ = mem.locate(sec.base, 1)
    except MemoryFault:
        return False
    off = p - area.base
    if ((off[reads] < 0) | (off[reads] + 4 > len(area.data))).any():
        return False
    starts = np.sort(off[reads])
    if len(starts) > 1 and (np.diff(starts) < 4).any():
        return False                         # overlapping places: each entry must see the last write
    guarded = [(sec.sym_addr, sec.nsyms * ELF32.sym.itemsize), *plt_ranges(ld)]
    for lo, size in guarded:
        if ((p[reads] < lo + size) & (p[reads] + 4 > lo)).any():
            return False
    word = np.zeros(len(p), dtype=np.int64)
    if reads.any():
        idx = off[reads][:, None] + np.arange(4)
        word[reads] = area.data[idx].copy().view("<u4").reshape(-1).astype(np.int64)
    safe = np.where(live, rsym, 0)
    s = symtab["st_value"].astype(np.int64)[safe]
    st_info = symtab["st_info"].astype(np.int64)[safe]
    b = Batch(index, r_offset, rtype, rsym, p, word, s, st_info)
    out = compute(ld, b, fail)
    stop = _first(out.fail)
    for k in np.flatnonzero(out.plt[:stop]):          # PLT emission: in the kernel's order
        new_off, fits = route_through_plt(ld, b, int(k), int(out.off[k]))
        if not fits:
            out.fail[k] = RANGE
            out.writes[k] = False
            stop = int(k)
            break
        out.word[k] = encode_branch(b, int(k), new_off)
    w = np.flatnonzero(out.writes[:stop])
    if len(w):
        idx = off[w][:, None] + np.arange(4)
        area.data[idx] = out.word[w].astype("<u4").view(np.uint8).reshape(-1, 4)
    if stop < len(index):
        _fail(ld, sec, b, stop, int(out.fail[stop]))
    return True


def _first(fail: np.ndarray) -> int:
    bad = np.flatnonzero(fail != OK)
    return int(bad[0]) if len(bad) else len(fail)


def _one_by_one(ld: Any, sec: Section, index: np.ndarray, r_offset: np.ndarray, rtype: np.ndarray,
                rsym: np.ndarray) -> None:
    """Entry by entry through the memory model: every read sees every earlier write."""
    mem = ld.memory
    size = ELF32.sym.itemsize
    for k in range(len(index)):
        one = slice(k, k + 1)
        p = (sec.base + r_offset[one]) & U32
        fail = early_failures(ld, rsym[one], r_offset[one], rtype[one], sec.nsyms, sec.size)
        sym = sec.sym_addr + int(rsym[k]) * size
        b = Batch(index[one], r_offset[one], rtype[one], rsym[one], p, *(np.zeros(1, dtype=np.int64) for _ in range(3)))
        if fail[0] != BAD_SYM:
            raw = mem.read(sym, size)
            rec = np.frombuffer(raw, dtype=ELF32.sym)[0]
            b.s[0], b.st_info[0] = int(rec["st_value"]), int(rec["st_info"])
        if fail[0] == OK and int(rtype[k]) != R_ARM_NONE:
            b.word[0] = mem.read_u(int(p[0]), 4)
        out = compute(ld, b, fail)
        if out.plt[0]:
            new_off, fits = route_through_plt(ld, b, 0, int(out.off[0]))
            if not fits:
                out.fail[0], out.writes[0] = RANGE, False
            else:
                out.word[0] = encode_branch(b, 0, new_off)
        if out.fail[0] != OK:
            _fail(ld, sec, b, 0, int(out.fail[0]))
        if out.writes[0]:
            mem.write(int(p[0]), int(out.word[0]).to_bytes(4, "little"))


def _symname(ld: Any, sec: Section, rsym: int) -> str:
    """strtab + sym->st_name (the file's string table), the symbol read from module memory."""
    st_name = ld.memory.read_u(sec.sym_addr + rsym * ELF32.sym.itemsize, 4)
    return str(ld.symname(st_name).decode("latin-1"))


def _fail(ld: Any, sec: Section, b: Batch, k: int, code: int) -> None:
    """The kernel's message for entry `k` of the batch, and the load's end (-ENOEXEC)."""
    i = int(b.index[k])
    rtype, r_offset = int(b.rtype[k]), int(b.r_offset[k])
    target = ld.section_name(sec.target)
    where = f"{ld.modname}.ko({target}+{r_offset:#x})"
    name = RELOCATIONS[rtype].name if rtype in RELOCATIONS else str(rtype)
    msgs = MESSAGES
    if code == BAD_SYM:
        ld.klog(*msgs["bad_sym"], ld.modname, sec.relsec, i)
        raise RelocationError(f"{where}: {name}: symbol index {int(b.rsym[k])} is past the symbol table "
                              f"({sec.nsyms} entries)", section=target, offset=r_offset, rtype=name)
    if code == UNKNOWN:
        ld.klog(*msgs["unknown"], ld.modname, rtype)
        why = "" if rtype not in RELOCATIONS else f" (needs {RELOCATIONS[rtype].requires})"
        raise RelocationError(f"{where}: unknown relocation type {rtype}{why}", section=target,
                              offset=r_offset, rtype=name)
    symname = _symname(ld, sec, int(b.rsym[k]))
    if code == BOUNDS:
        ld.klog(*msgs["bounds"], ld.modname, sec.relsec, i, symname, r_offset, sec.size)
        raise RelocationError(f"{where}: {name}: r_offset {r_offset:#x} is past the end of {target} "
                              f"({sec.size:#x} bytes, 4 needed)", section=target, offset=r_offset, rtype=name)
    if code in (ARM_TO_THUMB, THUMB_TO_ARM):
        ld.klog(*msgs["arm_to_thumb" if code == ARM_TO_THUMB else "thumb_to_arm"], ld.modname, sec.relsec, i,
                symname)
        raise RelocationError(f"{where}: {name} to {symname} = {int(b.s[k]):#x}: unsupported interworking "
                              f"call ({'ARM -> Thumb' if code == ARM_TO_THUMB else 'Thumb -> ARM'})",
                              section=target, offset=r_offset, rtype=name, value=int(b.s[k]))
    r = RELOCATIONS[rtype]
    ld.klog(*msgs["range"], ld.modname, sec.relsec, i, symname, rtype, int(b.p[k]), int(b.s[k]))
    allowed = r.check.describe() if r.check is not None else "group 2 residual <= 0xfff"
    raise RelocationError(f"{where}: {name} to {symname} = {int(b.s[k]):#x} out of range from "
                          f"{int(b.p[k]):#x}: not in {allowed}", section=target, offset=r_offset, rtype=name,
                          value=int(b.s[k]), allowed=allowed)


ARCH = Arch(
    name="arm",
    e_machine=EM_ARM,
    elf=ELF32,
    rela=False,
    relocations=RELOCATIONS,
    messages=MESSAGES,
    # arch/arm/include/asm/memory.h: MODULES_VADDR = PAGE_OFFSET - 16 MiB (not THUMB2_KERNEL);
    # MODULES_END = PAGE_OFFSET - PMD_SIZE with HIGHMEM (PMD_SIZE 2 MiB without LPAE).
    modules_vaddr=0xBF000000,
    modules_end=0xBFE00000,
    # module_alloc with ARM_MODULE_PLTS: a module that does not fit there is allocated anywhere in
    # vmalloc, VMALLOC_START (high_memory + 8 MiB = 0xf0800000 with 768 MiB of lowmem) to
    # VMALLOC_END 0xff800000.
    module_alloc_fallback=("CONFIG_ARM_MODULE_PLTS", 0xFF800000 - 0xF0800000),
    apply=apply_relocate,
    frob_arch_sections=module_frob_arch_sections,
    written_sections=frozenset({".plt", ".init.plt"}),
    # module_init_section / module_exit_section (arch/arm/kernel/module.c): the unwind tables
    # of init and exit code go with it.
    init_prefixes=(".init", ".ARM.extab.init", ".ARM.exidx.init"),
    exit_prefixes=(".exit", ".ARM.extab.exit", ".ARM.exidx.exit"),
)
