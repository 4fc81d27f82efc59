"""riscv64, as Linux 6.1 applies RELA relocations (arch/riscv/kernel/module.c apply_relocate_add,
the pre-6.8 handler table; spec §5.5).

Per entry, in table order, stopping at the first error (every earlier entry written):
* the symbol's st_value is an error value (IS_ERR_VALUE: >= -4095): a weak symbol's entry is
  skipped, any other is "%s: Unknown symbol %s" (pr_warn) and -ENOENT;
* a type without a handler is "%s: Unknown relocation type %u", -EINVAL. 6.1's table has
  32, 64, BRANCH, JAL, CALL, CALL_PLT, GOT_HI20, PCREL_HI20, PCREL_LO12_I/S, HI20, LO12_I/S,
  ADD32/64, SUB32/64, ALIGN, RVC_BRANCH, RVC_JUMP and RELAX. Not R_RISCV_NONE, not ADD16/SUB16
  (added in 6.3, "riscv: module: Add ADD16 and SUB16 rela types", Jan 2023), nor anything 6.8
  added (ADD8, SUB8, SUB6, SET6/8/16/32, 32_PCREL, PLT32, SET/SUB_ULEB128);
* v = S + A; the handler writes the field (read-modify-write of the instruction word, or of
  the data for ADD/SUB) or refuses: every refusal is -EINVAL.

PCREL_LO12_I/S: the entry's symbol is the label of its AUIPC. The partner is the *first* entry
of the same relocation section (from index 0) whose place equals the label's value and whose
type is PCREL_HI20 or GOT_HI20; the LO12 field gets the low 12 bits of the partner's
displacement (to its S + A, or to the GOT entry for S + A, which the LO12 entry may be the one
to create). No partner: "%s: Can not find HI20 relocation information". The LO12 entry's own
addend is ignored, and it is not range checked (its partner is, when the partner is applied).

Bulk where the semantics allow: the table, the symbols and the partner lookup (first
occurrence per place through np.unique/searchsorted) are numpy over the whole section, every
field value is computed per type with numpy, and the writes are one gather and one scatter.
What is inherently ordered runs as a Python loop over only those entries: PLT/GOT entries are
handed out in relocation order. A section whose places overlap (other than ADD/SUB pairs at
one place, whose sums commute), or that writes into the symbol table or the PLT/GOT areas, is
applied entry by entry through the memory model, exactly as the kernel's loop does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..elf import ELF64, STB_WEAK
from ..errors import RelocationError
from ..memory import MemoryFault
from . import Arch, RangeCheck, RelocType, signed, unsigned
from . import riscv64_sections as sections

EM_RISCV = 243
_CITE = "arch/riscv/kernel/module.c: apply_relocate_add (6.1)"
M64 = (1 << 64) - 1
M32 = 0xFFFFFFFF
ERR_MIN = (1 << 64) - 4095            # IS_ERR_VALUE: x >= (unsigned long)-MAX_ERRNO

# The stated kernel image (conformance/profiles/linux-6.1/riscv64.yaml): linked at
# KERNEL_LINK_ADDR (arch/riscv/include/asm/page.h, 64-bit: the top 2 GiB); its _end is the one
# of the image the environment's addresses come from (Debian's 6.1.0-56-arm64 System.map: _text
# 0xffff800008000000, _end 0xffff80000a010000), moved as those addresses are: 0xffffffff82010000,
# page-aligned already. arch/riscv/include/asm/pgtable.h: MODULES_VADDR = PFN_ALIGN(_end) - SZ_2G,
# MODULES_END = PFN_ALIGN(_start) (_start = KERNEL_LINK_ADDR).
KERNEL_LINK_ADDR = 0xFFFFFFFF80000000
KERNEL_END = 0xFFFFFFFF82010000
MODULES_VADDR = KERNEL_END - (1 << 31)
MODULES_END = KERNEL_LINK_ADDR

# psABI numbers (arch/riscv/include/uapi/asm/elf.h).
R_RISCV_NONE, R_RISCV_32, R_RISCV_64 = 0, 1, 2
R_RISCV_BRANCH, R_RISCV_JAL, R_RISCV_CALL, R_RISCV_CALL_PLT, R_RISCV_GOT_HI20 = 16, 17, 18, 19, 20
R_RISCV_PCREL_HI20, R_RISCV_PCREL_LO12_I, R_RISCV_PCREL_LO12_S = 23, 24, 25
R_RISCV_HI20, R_RISCV_LO12_I, R_RISCV_LO12_S = 26, 27, 28
R_RISCV_ADD8, R_RISCV_ADD16, R_RISCV_ADD32, R_RISCV_ADD64 = 33, 34, 35, 36
R_RISCV_SUB8, R_RISCV_SUB16, R_RISCV_SUB32, R_RISCV_SUB64 = 37, 38, 39, 40
R_RISCV_ALIGN, R_RISCV_RVC_BRANCH, R_RISCV_RVC_JUMP, R_RISCV_RELAX = 43, 44, 45, 51
R_RISCV_SUB6, R_RISCV_SET6, R_RISCV_SET8, R_RISCV_SET16, R_RISCV_SET32 = 52, 53, 54, 55, 56
R_RISCV_32_PCREL, R_RISCV_PLT32, R_RISCV_SET_ULEB128, R_RISCV_SUB_ULEB128 = 57, 59, 60, 61

# Types 6.8 gave handlers ("riscv: Add remaining module relocations"; for dynamic and TLS types
# a refusal of their own) that 6.1 rejects as unknown, with R_RISCV_NONE and the 6.3 additions:
# the `unknown-type` vectors name these.
LATER_TYPES = {R_RISCV_NONE: "R_RISCV_NONE", 3: "R_RISCV_RELATIVE", 29: "R_RISCV_TPREL_HI20", R_RISCV_ADD8: "R_RISCV_ADD8", R_RISCV_ADD16: "R_RISCV_ADD16",
               R_RISCV_SUB8: "R_RISCV_SUB8", R_RISCV_SUB16: "R_RISCV_SUB16", R_RISCV_SUB6: "R_RISCV_SUB6",
               R_RISCV_SET6: "R_RISCV_SET6", R_RISCV_SET8: "R_RISCV_SET8", R_RISCV_SET16: "R_RISCV_SET16",
               R_RISCV_SET32: "R_RISCV_SET32", R_RISCV_32_PCREL: "R_RISCV_32_PCREL",
               R_RISCV_PLT32: "R_RISCV_PLT32", R_RISCV_SET_ULEB128: "R_RISCV_SET_ULEB128",
               R_RISCV_SUB_ULEB128: "R_RISCV_SUB_ULEB128"}

# riscv_insn_valid_32bit_offset: what AUIPC + a 12-bit signed immediate reaches,
# [-2^31 - 2^11, 2^31 - 2^11).
PCREL_RANGE = RangeCheck(-(1 << 31) - (1 << 11), (1 << 31) - (1 << 11) - 1, signed=True)

RELOCATIONS = {r.number: r for r in (
    RelocType(R_RISCV_32, "R_RISCV_32", "S+A", 4, check=unsigned(32), cite=_CITE + " (v != (u32)v refused)"),
    RelocType(R_RISCV_64, "R_RISCV_64", "S+A", 8, cite=_CITE),
    RelocType(R_RISCV_BRANCH, "R_RISCV_BRANCH", "S+A-P", 4, unchecked_range=signed(13),
              cite=_CITE + " (B-type immediate, no range check)"),
    RelocType(R_RISCV_JAL, "R_RISCV_JAL", "S+A-P", 4, unchecked_range=signed(21),
              cite=_CITE + " (J-type immediate, no range check)"),
    RelocType(R_RISCV_CALL, "R_RISCV_CALL", "S+A-P", 8, check=PCREL_RANGE,
              cite=_CITE + " (auipc + jalr pair)"),
    RelocType(R_RISCV_CALL_PLT, "R_RISCV_CALL_PLT", "S+A-P", 8, check=None, requires="CONFIG_MODULE_SECTIONS",
              cite=_CITE + " (auipc + jalr; beyond the auipc range through a module PLT entry)"),
    RelocType(R_RISCV_GOT_HI20, "R_RISCV_GOT_HI20", "S+A-P", 4, requires="CONFIG_MODULE_SECTIONS",
              cite=_CITE + " (displacement to the module GOT entry for S+A)"),
    RelocType(R_RISCV_PCREL_HI20, "R_RISCV_PCREL_HI20", "S+A-P", 4, check=PCREL_RANGE,
              cite=_CITE + " (U-type, (off + 0x800) & 0xfffff000)"),
    RelocType(R_RISCV_PCREL_LO12_I, "R_RISCV_PCREL_LO12_I", "S+A-P", 4,
              cite=_CITE + " (I-type, low 12 bits of the paired HI20's displacement)"),
    RelocType(R_RISCV_PCREL_LO12_S, "R_RISCV_PCREL_LO12_S", "S+A-P", 4,
              cite=_CITE + " (S-type, low 12 bits of the paired HI20's displacement)"),
    RelocType(R_RISCV_HI20, "R_RISCV_HI20", "S+A", 4,
              cite=_CITE + " (U-type of (s32)v; refused under CONFIG_CMODEL_MEDLOW)"),
    RelocType(R_RISCV_LO12_I, "R_RISCV_LO12_I", "S+A", 4, cite=_CITE + " (I-type, no check)"),
    RelocType(R_RISCV_LO12_S, "R_RISCV_LO12_S", "S+A", 4, cite=_CITE + " (S-type, no check)"),
    RelocType(R_RISCV_ADD32, "R_RISCV_ADD32", "S+A", 4, cite=_CITE + " (*(u32 *)P += v)"),
    RelocType(R_RISCV_ADD64, "R_RISCV_ADD64", "S+A", 8, cite=_CITE + " (*(u64 *)P += v)"),
    RelocType(R_RISCV_SUB32, "R_RISCV_SUB32", "S+A", 4, cite=_CITE + " (*(u32 *)P -= v)"),
    RelocType(R_RISCV_SUB64, "R_RISCV_SUB64", "S+A", 8, cite=_CITE + " (*(u64 *)P -= v)"),
    RelocType(R_RISCV_ALIGN, "R_RISCV_ALIGN", "none", 0, cite=_CITE + " (always refused)"),
    RelocType(R_RISCV_RVC_BRANCH, "R_RISCV_RVC_BRANCH", "S+A-P", 2, unchecked_range=signed(9),
              cite=_CITE + " (CB format, no range check)"),
    RelocType(R_RISCV_RVC_JUMP, "R_RISCV_RVC_JUMP", "S+A-P", 2, unchecked_range=signed(12),
              cite=_CITE + " (CJ format, no range check)"),
    RelocType(R_RISCV_RELAX, "R_RISCV_RELAX", "none", 0, cite=_CITE + " (nothing to do)"),
)}
HANDLED = np.array(sorted(RELOCATIONS), dtype=np.int64)

# No pr_fmt in arch/riscv/kernel/module.c or module-sections.c.
MESSAGES = {
    "unknown_symbol": (4, "%s: Unknown symbol %s\n"),
    "unknown": (3, "%s: Unknown relocation type %u\n"),
    "hi20_missing": (3, "%s: Can not find HI20 relocation information\n"),
    "range32": (3, "%s: value %016llx out of range for 32-bit field\n"),
    "pcrel": (3, "%s: target %016llx can not be addressed by the 32-bit offset from PC = %p\n"),
    "got_unavailable": (3, "%s: can not generate the GOT entry for symbol = %016llx from PC = %p\n"),
    "align": (3, "%s: The unexpected relocation type 'R_RISCV_ALIGN' from PC = %p\n"),
    **sections.MESSAGES,
}

# Failure codes, by the check that refuses the entry.
OK, F_SYMBOL, F_UNKNOWN, F_NO_HI20, F_RANGE32, F_PCREL, F_GOT, F_ALIGN = range(8)


# ---- instruction fields (ints or uint64 arrays; the offset is two's complement) --------------
def b_imm(off: Any) -> Any:
    """B-type: imm[12] -> 31, imm[10:5] -> 30:25, imm[4:1] -> 11:8, imm[11] -> 7."""
    return ((off & 0x1000) << 19) | ((off & 0x800) >> 4) | ((off & 0x7E0) << 20) | ((off & 0x1E) << 7)


def j_imm(off: Any) -> Any:
    """J-type: imm[20] -> 31, imm[10:1] -> 30:21, imm[11] -> 20, imm[19:12] -> 19:12."""
    return ((off & 0x100000) << 11) | (off & 0xFF000) | ((off & 0x800) << 9) | ((off & 0x7FE) << 20)


def cb_imm(off: Any) -> Any:
    """CB (c.beqz/c.bnez): imm[8] -> 12, imm[4:3] -> 11:10, imm[7:6] -> 6:5, imm[2:1] -> 4:3, imm[5] -> 2."""
    return (((off & 0x100) << 4) | ((off & 0xC0) >> 1) | ((off & 0x20) >> 3) | ((off & 0x18) << 7)
            | ((off & 0x6) << 2))


def cj_imm(off: Any) -> Any:
    """CJ (c.j): imm[11] -> 12, imm[4] -> 11, imm[9:8] -> 10:9, imm[10] -> 8, imm[6] -> 7,
    imm[7] -> 6, imm[3:1] -> 5:3, imm[5] -> 2."""
    return (((off & 0x800) << 1) | ((off & 0x400) >> 2) | ((off & 0x300) << 1) | ((off & 0x80) >> 1)
            | ((off & 0x40) << 1) | ((off & 0x20) >> 3) | ((off & 0x10) << 7) | ((off & 0xE) << 2))


def hi20(off: Any) -> Any:
    """U-type upper 20 bits, rounded for the sign-extended low 12: (off + 0x800) & 0xfffff000."""
    return (off + 0x800) & 0xFFFFF000


def i_imm(lo: Any) -> Any:
    return (lo & 0xFFF) << 20


def s_imm(lo: Any) -> Any:
    return ((lo & 0xFE0) << 20) | ((lo & 0x1F) << 7)


def valid_32bit_offset(off: int) -> bool:
    """riscv_insn_valid_32bit_offset (CONFIG_64BIT) for a 64-bit two's complement offset."""
    s = off - (1 << 64) if off >> 63 else off
    return PCREL_RANGE.lo <= s <= PCREL_RANGE.hi


# ---- the section's entries ---------------------------------------------------------------------
@dataclass
class Section:
    """One relocation section as apply_relocate_add sees it, read in bulk."""
    relsec: int
    target: int
    base: int
    offset: np.ndarray        # r_offset, uint64
    rtype: np.ndarray         # int64
    rsym: np.ndarray          # int64
    addend: np.ndarray        # uint64 (two's complement r_addend)
    place: np.ndarray         # base + r_offset, uint64
    hi20_loc: np.ndarray      # sorted places of PCREL_HI20/GOT_HI20 entries ...
    hi20_idx: np.ndarray      # ... and the first entry at each

    @classmethod
    def read(cls, ld: Any, relsec: int, target: int) -> Section:
        shdr = ld.sechdrs[relsec]
        table = ld.memory.table(int(shdr["sh_addr"]), int(shdr["sh_size"]) // ELF64.rela.itemsize, ELF64.rela)
        info = table["r_info"].astype(np.uint64)
        base = ld.section_addr(target)
        offset = table["r_offset"].astype(np.uint64)
        rtype = (info & np.uint64(M32)).astype(np.int64)
        place = offset + np.uint64(base)
        his = np.flatnonzero((rtype == R_RISCV_PCREL_HI20) | (rtype == R_RISCV_GOT_HI20))
        loc, first = np.unique(place[his], return_index=True)     # np.unique keeps the first index
        return cls(relsec, target, base, offset, rtype, (info >> np.uint64(32)).astype(np.int64),
                   table["r_addend"].astype(np.int64).view(np.uint64), place, loc, his[first])

    def __len__(self) -> int:
        return len(self.offset)

    def partner(self, labels: np.ndarray) -> np.ndarray:
        """The first HI20 entry at each label's address (-1: none), as 6.1's linear search."""
        out = np.full(len(labels), -1, dtype=np.int64)
        if not len(self.hi20_loc):
            return out
        pos = np.searchsorted(self.hi20_loc, labels)
        ok = pos < len(self.hi20_loc)
        ok[ok] = self.hi20_loc[pos[ok]] == labels[ok]
        out[ok] = self.hi20_idx[pos[ok]]
        return out


# ---- apply_relocate_add --------------------------------------------------------------------
def apply_relocate_add(ld: Any, relsec: int, target: int) -> None:
    """arch/riscv/kernel/module.c apply_relocate_add for one SHT_RELA section (6.1)."""
    sec = Section.read(ld, relsec, target)
    if len(sec) == 0:
        return
    if not _bulk(ld, sec):
        _one_by_one(ld, sec)


def _sections_on(ld: Any) -> bool:
    return bool(ld.profile.enabled("CONFIG_MODULE_SECTIONS"))


def module_frob_arch_sections(ld: Any) -> None:
    """module-sections.o is built with CONFIG_MODULE_SECTIONS only; otherwise the weak no-op."""
    if _sections_on(ld):
        sections.module_frob_arch_sections(ld)


# ---- entry by entry (exact; the fallback) -----------------------------------------------------
def _one_by_one(ld: Any, sec: Section) -> None:
    mem = ld.memory
    sym_addr, _ = ld.symtab()
    for i in range(len(sec)):
        p, t = int(sec.place[i]), int(sec.rtype[i])
        sym = sym_addr + int(sec.rsym[i]) * ELF64.sym.itemsize
        s = mem.read_u(sym + 8, 8)
        if s >= ERR_MIN:
            if mem.read_u(sym + 4, 1) >> 4 == STB_WEAK:
                continue
            _fail(ld, sec, i, F_SYMBOL, p, 0, name_at=mem.read_u(sym, 4))
        if t not in RELOCATIONS:
            _fail(ld, sec, i, F_UNKNOWN, p, 0)
        v = (s + int(sec.addend[i])) & M64
        if t in (R_RISCV_PCREL_LO12_I, R_RISCV_PCREL_LO12_S):
            j = int(sec.partner(np.array([s], dtype=np.uint64))[0])
            if j < 0:
                _fail(ld, sec, i, F_NO_HI20, p, v)
            hv = (mem.read_u(sym_addr + int(sec.rsym[j]) * ELF64.sym.itemsize + 8, 8) + int(sec.addend[j])) & M64
            hl = int(sec.place[j])
            target = hv
            if int(sec.rtype[j]) == R_RISCV_GOT_HI20 and _sections_on(ld):
                target = sections.module_emit_got_entry(ld, hv)
            v = (target - hl) & 0xFFF
        _handle(ld, sec, i, t, p, v)


def _handle(ld: Any, sec: Section, i: int, t: int, p: int, v: int) -> None:
    """One handler of reloc_handlers_rela: check, then read-modify-write the place."""
    mem = ld.memory
    off = (v - p) & M64

    def rmw32(at: int, keep: int, bits: int) -> None:
        mem.write(at, ((mem.read_u(at, 4) & keep) | (bits & M32)).to_bytes(4, "little"))

    def rmw16(keep: int, bits: int) -> None:
        mem.write(p, ((mem.read_u(p, 2) & keep) | (bits & 0xFFFF)).to_bytes(2, "little"))

    if t == R_RISCV_32:
        if v >> 32:
            _fail(ld, sec, i, F_RANGE32, p, v)
        mem.write(p, v.to_bytes(4, "little"))
    elif t == R_RISCV_64:
        mem.write(p, v.to_bytes(8, "little"))
    elif t == R_RISCV_BRANCH:
        rmw32(p, 0x1FFF07F, b_imm(off))
    elif t == R_RISCV_JAL:
        rmw32(p, 0xFFF, j_imm(off))
    elif t == R_RISCV_RVC_BRANCH:
        rmw16(0xE383, cb_imm(off))
    elif t == R_RISCV_RVC_JUMP:
        rmw16(0xE003, cj_imm(off))
    elif t == R_RISCV_PCREL_HI20:
        if not valid_32bit_offset(off):
            _fail(ld, sec, i, F_PCREL, p, v)
        rmw32(p, 0xFFF, hi20(off))
    elif t == R_RISCV_PCREL_LO12_I or t == R_RISCV_LO12_I:
        rmw32(p, 0xFFFFF, i_imm(v))
    elif t == R_RISCV_PCREL_LO12_S or t == R_RISCV_LO12_S:
        rmw32(p, 0x1FFF07F, s_imm(v))
    elif t == R_RISCV_HI20:
        if ld.profile.enabled("CONFIG_CMODEL_MEDLOW"):
            _fail(ld, sec, i, F_PCREL, p, v)
        rmw32(p, 0xFFF, hi20(v & M32))
    elif t == R_RISCV_GOT_HI20:
        if not _sections_on(ld):
            _fail(ld, sec, i, F_GOT, p, v)
        rmw32(p, 0xFFF, hi20((sections.module_emit_got_entry(ld, v) - p) & M64))
    elif t in (R_RISCV_CALL_PLT, R_RISCV_CALL):
        if not valid_32bit_offset(off):
            if t == R_RISCV_CALL or not _sections_on(ld):
                _fail(ld, sec, i, F_PCREL, p, v)
            off = (sections.module_emit_plt_entry(ld, v) - p) & M64
        rmw32(p, 0xFFF, hi20(off))
        rmw32(p + 4, 0xFFFFF, (off & 0xFFF) << 20)
    elif t == R_RISCV_ALIGN:
        _fail(ld, sec, i, F_ALIGN, p, v)
    elif t in (R_RISCV_ADD32, R_RISCV_SUB32, R_RISCV_ADD64, R_RISCV_SUB64):
        size = 4 if t in (R_RISCV_ADD32, R_RISCV_SUB32) else 8
        mask = (1 << (8 * size)) - 1
        delta = v if t in (R_RISCV_ADD32, R_RISCV_ADD64) else -v
        mem.write(p, ((mem.read_u(p, size) + delta) & mask).to_bytes(size, "little"))
    # R_RISCV_RELAX: nothing.


# ---- bulk ---------------------------------------------------------------------------------------
_ADD_SUB = (R_RISCV_ADD32, R_RISCV_ADD64, R_RISCV_SUB32, R_RISCV_SUB64)
_WORD_TYPES = (R_RISCV_BRANCH, R_RISCV_JAL, R_RISCV_PCREL_HI20, R_RISCV_PCREL_LO12_I, R_RISCV_PCREL_LO12_S,
               R_RISCV_HI20, R_RISCV_LO12_I, R_RISCV_LO12_S, R_RISCV_GOT_HI20, R_RISCV_32, R_RISCV_ADD32,
               R_RISCV_SUB32)
_SIZES = {**{t: 4 for t in _WORD_TYPES}, R_RISCV_64: 8, R_RISCV_ADD64: 8, R_RISCV_SUB64: 8,
          R_RISCV_RVC_BRANCH: 2, R_RISCV_RVC_JUMP: 2, R_RISCV_CALL: 8, R_RISCV_CALL_PLT: 8}


def _bulk(ld: Any, sec: Section) -> bool:
    """The whole section at once; False when it must go entry by entry (nothing written then)."""
    mem = ld.memory
    n = len(sec)
    sym_addr, nsym = ld.symtab()
    if int(sec.rsym.max()) >= nsym or int(sec.rsym.min()) < 0:
        return False
    try:
        symtab = mem.table(sym_addr, nsym, ELF64.sym)
    except MemoryFault:
        return False
    t, p = sec.rtype, sec.place
    s = symtab["st_value"].astype(np.uint64)[sec.rsym]
    weak = (symtab["st_info"].astype(np.int64) >> 4)[sec.rsym] == STB_WEAK
    v = s + sec.addend
    off = v - p
    code = np.zeros(n, dtype=np.int64)
    err = s >= np.uint64(ERR_MIN)
    skip = err & weak
    code[err & ~weak] = F_SYMBOL
    todo = code == OK
    code[todo & ~skip & ~np.isin(t, HANDLED)] = F_UNKNOWN
    live = (code == OK) & ~skip                   # entries whose handler runs (if reached)

    # PCREL_LO12: the partner and its displacement.
    lo = live & ((t == R_RISCV_PCREL_LO12_I) | (t == R_RISCV_PCREL_LO12_S))
    lo_idx = np.flatnonzero(lo)
    partner = np.full(n, -1, dtype=np.int64)
    partner[lo_idx] = sec.partner(s[lo_idx])
    code[lo & (partner < 0)] = F_NO_HI20
    j = np.maximum(partner, 0)
    partner_value = s[j] + sec.addend[j]
    lo_disp = partner_value - p[j]                  # replaced below where the partner is a GOT_HI20
    sections_on = _sections_on(ld)
    got_lo = lo & (partner >= 0) & (t[j] == R_RISCV_GOT_HI20) & sections_on

    # The handlers' own checks.
    in_range = _fits(off)
    code[live & (t == R_RISCV_32) & ((v >> np.uint64(32)) != 0)] = F_RANGE32
    code[live & (t == R_RISCV_PCREL_HI20) & ~in_range] = F_PCREL
    code[live & (t == R_RISCV_CALL) & ~in_range] = F_PCREL
    if ld.profile.enabled("CONFIG_CMODEL_MEDLOW"):
        code[live & (t == R_RISCV_HI20)] = F_PCREL
    code[live & (t == R_RISCV_ALIGN)] = F_ALIGN
    needs_plt = live & (t == R_RISCV_CALL_PLT) & ~in_range
    if not sections_on:
        code[needs_plt] = F_PCREL
        code[live & (t == R_RISCV_GOT_HI20)] = F_GOT
    live &= code == OK
    bad = np.flatnonzero(code)
    first = int(bad[0]) if len(bad) else n

    # Where the entries before the first failure write: one area, no overlap (but ADD/SUB
    # pairs), away from the symbol table and the PLT/GOT areas. Otherwise: entry by entry.
    applied = live & (np.arange(n) < first)
    sizes = np.zeros(n, dtype=np.int64)
    for typ, size in _SIZES.items():
        sizes[t == typ] = size
    w = applied & (sizes > 0)
    if w.any():
        try:
            area, _ = mem.locate(sec.base, 1)
        except MemoryFault:
            return False
        rel = p - np.uint64(area.base)
        if ((p < np.uint64(area.base)) | (rel + sizes.astype(np.uint64) > np.uint64(len(area.data))))[w].any():
            return False
        start = rel.astype(np.int64)
        if not _disjoint(start[w], sizes[w], t[w]):
            return False
        avoid = [(sym_addr, sym_addr + nsym * ELF64.sym.itemsize), *sections.emitted_ranges(ld)]
        for lo_a, hi_a in avoid:
            if ((p[w] < np.uint64(hi_a)) & (p[w] + sizes[w].astype(np.uint64) > np.uint64(lo_a))).any():
                return False
    else:
        area, start = None, np.zeros(n, dtype=np.int64)

    # PLT/GOT entries, in relocation order: the only sequential part.
    target_of = np.zeros(n, dtype=np.uint64)      # the PLT/GOT entry each event's place refers to
    events = np.flatnonzero(applied & ((t == R_RISCV_GOT_HI20) | needs_plt | got_lo))
    for event in events:
        k = int(event)
        try:
            if t[k] == R_RISCV_CALL_PLT:
                target_of[k] = sections.module_emit_plt_entry(ld, int(v[k]))
            elif t[k] == R_RISCV_GOT_HI20:
                target_of[k] = sections.module_emit_got_entry(ld, int(v[k]))
            else:
                target_of[k] = sections.module_emit_got_entry(ld, int(partner_value[k]))
        except sections.KernelBug:
            if area is not None:
                _scatter_entries(ld, sec, area, start, sizes, applied & (np.arange(n) < k), t, v, off,
                                 lo_disp, target_of, got_lo, needs_plt, j)
            raise
    if area is not None:
        _scatter_entries(ld, sec, area, start, sizes, applied, t, v, off, lo_disp, target_of, got_lo,
                         needs_plt, j)
    if first < n:
        _fail(ld, sec, first, int(code[first]), int(p[first]), int(v[first]),
              name_at=int(symtab["st_name"][sec.rsym[first]]))
    return True


def _fits(off: np.ndarray) -> np.ndarray:
    signed_off = off.view(np.int64)
    return (signed_off >= PCREL_RANGE.lo) & (signed_off <= PCREL_RANGE.hi)


def _disjoint(start: np.ndarray, size: np.ndarray, t: np.ndarray) -> bool:
    """No two written fields overlap, except ADD/SUB entries of one size at one place."""
    if len(start) < 2:
        return True
    order = np.lexsort((size, start))
    st, sz, ty = start[order], size[order], t[order]
    overlap = st[1:] < st[:-1] + sz[:-1]
    if not overlap.any():
        return True
    same = (st[1:] == st[:-1]) & (sz[1:] == sz[:-1]) & np.isin(ty[1:], _ADD_SUB) & np.isin(ty[:-1], _ADD_SUB)
    return bool((~overlap | same).all())


def _scatter_entries(ld: Any, sec: Section, area: Any, start: np.ndarray, sizes: np.ndarray,
                     applied: np.ndarray, t: np.ndarray, v: np.ndarray, off: np.ndarray, lo_disp: np.ndarray,
                     target_of: np.ndarray, got_lo: np.ndarray, needs_plt: np.ndarray, j: np.ndarray) -> None:
    """Compute every applied entry's field from the old bytes and write them all."""
    data = area.data
    p = sec.place
    # Displacements the PLT/GOT entries change.
    off = off.copy()
    off[needs_plt] = target_of[needs_plt] - p[needs_plt]
    got = applied & (t == R_RISCV_GOT_HI20)
    off[got] = target_of[got] - p[got]
    lo_disp = lo_disp.copy()
    lo_disp[got_lo] = target_of[got_lo] - p[j[got_lo]]

    writes: list[tuple[np.ndarray, int, np.ndarray]] = []     # (area offsets, size, values)

    def sel(*types: int) -> np.ndarray:
        return np.flatnonzero(applied & np.isin(t, types))

    def word(idx: np.ndarray, keep: int, bits: np.ndarray, delta: int = 0) -> None:
        at = start[idx] + delta
        old = _gather(data, at, 4)
        writes.append((at, 4, (old & np.uint64(keep)) | (bits & np.uint64(M32))))

    def half(idx: np.ndarray, keep: int, bits: np.ndarray) -> None:
        old = _gather(data, start[idx], 2)
        writes.append((start[idx], 2, (old & np.uint64(keep)) | (bits & np.uint64(0xFFFF))))

    k = sel(R_RISCV_32)
    writes.append((start[k], 4, v[k] & np.uint64(M32)))
    k = sel(R_RISCV_64)
    writes.append((start[k], 8, v[k]))
    k = sel(R_RISCV_BRANCH)
    word(k, 0x1FFF07F, b_imm(off[k]))
    k = sel(R_RISCV_JAL)
    word(k, 0xFFF, j_imm(off[k]))
    k = sel(R_RISCV_RVC_BRANCH)
    half(k, 0xE383, cb_imm(off[k]))
    k = sel(R_RISCV_RVC_JUMP)
    half(k, 0xE003, cj_imm(off[k]))
    k = sel(R_RISCV_PCREL_HI20, R_RISCV_GOT_HI20)
    word(k, 0xFFF, hi20(off[k]))
    k = sel(R_RISCV_HI20)
    word(k, 0xFFF, hi20(v[k] & np.uint64(M32)))
    k = sel(R_RISCV_LO12_I)
    word(k, 0xFFFFF, i_imm(v[k]))
    k = sel(R_RISCV_LO12_S)
    word(k, 0x1FFF07F, s_imm(v[k]))
    k = sel(R_RISCV_PCREL_LO12_I)
    word(k, 0xFFFFF, i_imm(lo_disp[k]))
    k = sel(R_RISCV_PCREL_LO12_S)
    word(k, 0x1FFF07F, s_imm(lo_disp[k]))
    k = sel(R_RISCV_CALL, R_RISCV_CALL_PLT)
    word(k, 0xFFF, hi20(off[k]))
    word(k, 0xFFFFF, (off[k] & np.uint64(0xFFF)) << np.uint64(20), delta=4)
    for size, add, sub in ((4, R_RISCV_ADD32, R_RISCV_SUB32), (8, R_RISCV_ADD64, R_RISCV_SUB64)):
        k = sel(add, sub)
        if not len(k):
            continue
        delta = np.where(t[k] == add, v[k], np.uint64(0) - v[k])
        places, group = np.unique(start[k], return_inverse=True)
        total = np.zeros(len(places), dtype=np.uint64)
        np.add.at(total, group, delta)
        writes.append((places, size, _gather(data, places, size) + total))
    for at, size, values in writes:
        _scatter(data, at, size, values)


def _gather(data: np.ndarray, at: np.ndarray, size: int) -> np.ndarray:
    if not len(at):
        return np.zeros(0, dtype=np.uint64)
    idx = at[:, None] + np.arange(size)
    return data[idx].copy().view(f"<u{size}").reshape(-1).astype(np.uint64)


def _scatter(data: np.ndarray, at: np.ndarray, size: int, values: np.ndarray) -> None:
    if not len(at):
        return
    idx = at[:, None] + np.arange(size)
    mask = np.uint64((1 << (8 * size)) - 1)
    data[idx] = (values & mask).astype(f"<u{size}").view(np.uint8).reshape(-1, size)


# ---- failures -----------------------------------------------------------------------------
def _fail(ld: Any, sec: Section, i: int, code: int, p: int, v: int, name_at: int = 0) -> None:
    """Log the kernel's message for the first refused entry and stop the section."""
    t = int(sec.rtype[i])
    rec = RELOCATIONS.get(t)
    rname = rec.name if rec else LATER_TYPES.get(t, f"type {t}")
    target = ld.section_name(sec.target)
    where = f"{target}+{int(sec.offset[i]):#x}"
    errno, value, allowed = "EINVAL", None, ""

    def msg(key: str, *args: object) -> None:
        level, fmt = MESSAGES[key]
        ld.klog(level, fmt, ld.modname, *args)

    if code == F_SYMBOL:
        name = ld.symname(name_at).decode("latin-1")
        msg("unknown_symbol", name)
        errno = "ENOENT"
        detail = f"{where}: {rname} against {name}, whose value is an error value (IS_ERR_VALUE) and not weak"
    elif code == F_UNKNOWN:
        msg("unknown", t)
        detail = f"{where}: 6.1 has no handler for relocation type {t} ({rname})"
    elif code == F_NO_HI20:
        msg("hi20_missing")
        detail = (f"{where}: {rname}: no PCREL_HI20/GOT_HI20 entry of {ld.section_name(sec.relsec)} "
                  f"is at the address its symbol names")
    elif code == F_RANGE32:
        msg("range32", v)
        detail = f"{where}: R_RISCV_32: {v:#x} does not fit 32 bits"
        value, allowed = v, unsigned(32).describe()
    elif code == F_PCREL:
        msg("pcrel", v, p)
        if t == R_RISCV_HI20:
            detail = f"{where}: R_RISCV_HI20 is refused under CONFIG_CMODEL_MEDLOW"
        else:
            disp = (v - p) & M64
            signed_disp = disp - (1 << 64) if disp >> 63 else disp
            detail = f"{where}: {rname}: displacement {signed_disp:#x} is outside {PCREL_RANGE.describe()}"
            value, allowed = v, PCREL_RANGE.describe()
    elif code == F_GOT:
        msg("got_unavailable", v, p)
        detail = f"{where}: R_RISCV_GOT_HI20 needs CONFIG_MODULE_SECTIONS"
    else:
        msg("align", p)
        detail = f"{where}: R_RISCV_ALIGN is always refused (modules are built with -mno-relax)"
    raise RelocationError(detail, section=target, offset=int(sec.offset[i]), rtype=rname, value=value,
                          allowed=allowed, errno=errno)


ARCH = Arch(
    name="riscv64",
    e_machine=EM_RISCV,
    # arch/riscv/include/asm/elf.h elf_check_arch: EM_RISCV and e_ident[EI_CLASS] == ELF_CLASS.
    ei_class=2,
    elf=ELF64,
    rela=True,
    relocations=RELOCATIONS,
    messages=MESSAGES,
    modules_vaddr=MODULES_VADDR,
    modules_end=MODULES_END,
    apply=apply_relocate_add,
    frob_arch_sections=module_frob_arch_sections,
    written_sections=frozenset({".plt", ".got", ".got.plt"}),
)
