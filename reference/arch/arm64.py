"""arm64, as Linux 6.1 applies RELA relocations (arch/arm64/kernel/module.c, apply_relocate_add;
spec §5.3) and sizes and fills module PLTs (arch/arm64/kernel/module-plts.c, reference/arch/arm64_plt.py).

val = S + A; do_reloc's three operations: ABS = val, PREL = val - P, PAGE = Page(val) - Page(P).
Every type writes its field first and checks afterwards (reloc_data, reloc_insn_movw,
reloc_insn_imm all store, then return -ERANGE), so a rejected entry's bytes are in memory.
Instruction fields are inserted by aarch64_insn_encode_immediate, which leaves the word
0xd4202000 (AARCH64_BREAK_FAULT, `brk #0x100`) untouched whatever the immediate.
The range checks, on the value before any shift (derivations in the table comments):
  reloc_data ABS16/ABS32: 0 <= v <= U16/U32_MAX; PREL16/PREL32: signed 16/32 bits;
  reloc_insn_movw: imm = v >> lsb (arithmetic), MOVNZ inverts a negative one, imm <= 0xffff:
      MOVKZ [0, 2^(lsb+16)), MOVNZ [-2^(lsb+16), 2^(lsb+16));
  reloc_insn_imm: v >> lsb must fit `len` signed bits: [-2^(lsb+len-1), 2^(lsb+len-1)).
The *_NC types and ABS64/PREL64/MOVW_UABS_G3/MOVW_PREL_G3 compute the same field with the
check switched off (overflow_check = false). JUMP26/CALL26 that do not reach go through a
module PLT (CONFIG_ARM64_MODULE_PLTS); ADR_PREL_PG_HI21(_NC) at a page offset >= 0xff8 becomes
an ADR or a veneer when the Cortex-A53 erratum 843419 workaround is active (profile fact).

Messages (6.1 has no pr_fmt in arch/arm64/kernel/module.c; mainline's "Modules: " prefix
came with the 6.5 module-region rework): "module %s: unsupported RELA relocation: %llu" and
"module %s: overflow in relocation type %d val %Lx", both -ENOEXEC. After a PLT detour the
overflow line prints the PLT entry's address (apply_relocate_add reassigns `val`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..elf import ELF64
from ..errors import RelocationError
from ..memory import MemoryFault
from ..relocate import read_entries
from . import Arch, RangeCheck, RelocType, signed, unsigned
from .arm64_plt import (
    PltState,
    erratum_active,
    gen_branch_imm,
    is_forbidden_offset_for_adrp,
    module_emit_plt_entry,
    module_emit_veneer_for_adrp,
    module_frob_arch_sections,
)

EM_AARCH64 = 183
AARCH64_BREAK_FAULT = 0xD4202000          # AARCH64_BREAK_MON | FAULT_BRK_IMM << 5: `brk #0x100`
_CITE = "arch/arm64/kernel/module.c: apply_relocate_add (6.1)"
U64 = np.uint64
WORD = U64(0xFFFFFFFF)

# aarch64_get_imm_shift_mask: immediate field -> (shift, mask); ADR is split (immlo, immhi).
FIELDS = {"IMM_26": (0, 0x3FFFFFF), "IMM_19": (5, 0x7FFFF), "IMM_16": (5, 0xFFFF),
          "IMM_14": (5, 0x3FFF), "IMM_12": (10, 0xFFF)}


@dataclass(frozen=True)
class Encoding:
    """How apply_relocate_add's case for one type calls the helpers."""
    form: str                 # none | data | movw | imm | adrp
    op: str = "ABS"           # do_reloc: ABS, PREL, PAGE
    bits: int = 0             # reloc_data length
    lsb: int = 0
    len: int = 0
    field: str = ""           # aarch64_insn_imm_type
    movnz: bool = False       # AARCH64_INSN_IMM_MOVNZ (signed MOVW: MOVZ or MOVN by sign)
    checked: bool = True      # overflow_check

    @property
    def size(self) -> int:
        return {"none": 0, "data": self.bits // 8}.get(self.form, 4)


def _data(op: str, bits: int, checked: bool = True) -> Encoding:
    return Encoding("data", op, bits=bits, checked=checked)


def _movw(op: str, lsb: int, movnz: bool, checked: bool = True) -> Encoding:
    return Encoding("movw", op, lsb=lsb, len=16, field="IMM_16", movnz=movnz, checked=checked)


def _imm(op: str, lsb: int, length: int, field: str, checked: bool = True) -> Encoding:
    return Encoding("imm", op, lsb=lsb, len=length, field=field, checked=checked)


def _movw_range(lsb: int, movnz: bool) -> RangeCheck:
    """imm = v >> lsb <= 0xffff: MOVKZ needs 0 <= v < 2^(lsb+16); MOVNZ takes ~imm for a negative v,
    so v >= -2^(lsb+16) too: signed(lsb + 17)."""
    return signed(lsb + 17) if movnz else RangeCheck(0, (1 << (lsb + 16)) - 1, signed=True)


# (number, name, encoding, range: the check when checked, else the field's unchecked range)
_TYPES: list[tuple[int, str, Encoding, RangeCheck | None]] = [
    (256, "R_AARCH64_NONE", Encoding("none"), None),
    (0, "R_ARM_NONE", Encoding("none"), None),            # case R_ARM_NONE: treated as NONE
    (257, "R_AARCH64_ABS64", _data("ABS", 64, checked=False), None),
    (258, "R_AARCH64_ABS32", _data("ABS", 32), RangeCheck(0, 0xFFFFFFFF, signed=True)),
    (259, "R_AARCH64_ABS16", _data("ABS", 16), RangeCheck(0, 0xFFFF, signed=True)),
    (260, "R_AARCH64_PREL64", _data("PREL", 64, checked=False), None),
    (261, "R_AARCH64_PREL32", _data("PREL", 32), signed(32)),
    (262, "R_AARCH64_PREL16", _data("PREL", 16), signed(16)),
    (263, "R_AARCH64_MOVW_UABS_G0", _movw("ABS", 0, False), _movw_range(0, False)),
    (264, "R_AARCH64_MOVW_UABS_G0_NC", _movw("ABS", 0, False, checked=False), unsigned(16)),
    (265, "R_AARCH64_MOVW_UABS_G1", _movw("ABS", 16, False), _movw_range(16, False)),
    (266, "R_AARCH64_MOVW_UABS_G1_NC", _movw("ABS", 16, False, checked=False), unsigned(32)),
    (267, "R_AARCH64_MOVW_UABS_G2", _movw("ABS", 32, False), _movw_range(32, False)),
    (268, "R_AARCH64_MOVW_UABS_G2_NC", _movw("ABS", 32, False, checked=False), unsigned(48)),
    (269, "R_AARCH64_MOVW_UABS_G3", _movw("ABS", 48, False, checked=False), None),
    (270, "R_AARCH64_MOVW_SABS_G0", _movw("ABS", 0, True), _movw_range(0, True)),
    (271, "R_AARCH64_MOVW_SABS_G1", _movw("ABS", 16, True), _movw_range(16, True)),
    (272, "R_AARCH64_MOVW_SABS_G2", _movw("ABS", 32, True), _movw_range(32, True)),
    (273, "R_AARCH64_LD_PREL_LO19", _imm("PREL", 2, 19, "IMM_19"), signed(21)),
    (274, "R_AARCH64_ADR_PREL_LO21", _imm("PREL", 0, 21, "ADR"), signed(21)),
    (275, "R_AARCH64_ADR_PREL_PG_HI21", Encoding("adrp", "PAGE", lsb=12, len=21, field="ADR"), signed(33)),
    (276, "R_AARCH64_ADR_PREL_PG_HI21_NC", Encoding("adrp", "PAGE", lsb=12, len=21, field="ADR",
                                                    checked=False), signed(33)),
    (277, "R_AARCH64_ADD_ABS_LO12_NC", _imm("ABS", 0, 12, "IMM_12", checked=False), unsigned(12)),
    (278, "R_AARCH64_LDST8_ABS_LO12_NC", _imm("ABS", 0, 12, "IMM_12", checked=False), unsigned(12)),
    (279, "R_AARCH64_TSTBR14", _imm("PREL", 2, 14, "IMM_14"), signed(16)),
    (280, "R_AARCH64_CONDBR19", _imm("PREL", 2, 19, "IMM_19"), signed(21)),
    (282, "R_AARCH64_JUMP26", _imm("PREL", 2, 26, "IMM_26"), signed(28)),
    (283, "R_AARCH64_CALL26", _imm("PREL", 2, 26, "IMM_26"), signed(28)),
    (284, "R_AARCH64_LDST16_ABS_LO12_NC", _imm("ABS", 1, 11, "IMM_12", checked=False), unsigned(12)),
    (285, "R_AARCH64_LDST32_ABS_LO12_NC", _imm("ABS", 2, 10, "IMM_12", checked=False), unsigned(12)),
    (286, "R_AARCH64_LDST64_ABS_LO12_NC", _imm("ABS", 3, 9, "IMM_12", checked=False), unsigned(12)),
    (287, "R_AARCH64_MOVW_PREL_G0", _movw("PREL", 0, True), _movw_range(0, True)),
    (288, "R_AARCH64_MOVW_PREL_G0_NC", _movw("PREL", 0, False, checked=False), signed(17)),
    (289, "R_AARCH64_MOVW_PREL_G1", _movw("PREL", 16, True), _movw_range(16, True)),
    (290, "R_AARCH64_MOVW_PREL_G1_NC", _movw("PREL", 16, False, checked=False), signed(33)),
    (291, "R_AARCH64_MOVW_PREL_G2", _movw("PREL", 32, True), _movw_range(32, True)),
    (292, "R_AARCH64_MOVW_PREL_G2_NC", _movw("PREL", 32, False, checked=False), signed(49)),
    (293, "R_AARCH64_MOVW_PREL_G3", _movw("PREL", 48, True, checked=False), None),
    (299, "R_AARCH64_LDST128_ABS_LO12_NC", _imm("ABS", 4, 8, "IMM_12", checked=False), unsigned(12)),
]
ENCODINGS: dict[int, Encoding] = {number: enc for number, _, enc, _ in _TYPES}
R_AARCH64_JUMP26, R_AARCH64_CALL26 = 282, 283
R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC = 275, 276
BRANCHES = (R_AARCH64_JUMP26, R_AARCH64_CALL26)

_VALUE = {"ABS": "S+A", "PREL": "S+A-P", "PAGE": "Page(S+A)-Page(P)"}
RELOCATIONS = {number: RelocType(
    number, name, "none" if enc.form == "none" else _VALUE[enc.op], enc.size,
    check=rng if enc.checked and enc.form != "none" else None,
    check_after_write=enc.form != "none",
    unchecked_range=None if enc.checked else rng,
    cite=_CITE + (" (out of range: module PLT, module-plts.c)" if number in BRANCHES else ""))
    for number, name, enc, rng in _TYPES}

MESSAGES = {
    "unknown": (3, "module %s: unsupported RELA relocation: %llu\n"),
    "overflow": (3, "module %s: overflow in relocation type %d val %Lx\n"),
    "plt_missing": (3, "%s: module PLT section(s) missing\n"),
    "symtab_missing": (3, "%s: module symtab section missing\n"),
}


# ---- the helpers of module.c, over arrays -------------------------------------------------
def do_reloc(op: str, p: np.ndarray, val: np.ndarray) -> np.ndarray:
    """do_reloc: the 64-bit value of an operation (uint64, wrapping)."""
    if op == "ABS":
        return val
    if op == "PREL":
        return val - p
    page = ~U64(0xFFF)
    return (val & page) - (p & page)


def encode_immediate(field: str, insn: np.ndarray, imm: np.ndarray) -> np.ndarray:
    """aarch64_insn_encode_immediate: insert imm into the field; AARCH64_BREAK_FAULT stays as it is."""
    if field == "ADR":
        immlo = (imm & U64(3)) << U64(29)
        immhi = ((imm >> U64(2)) & U64(0x7FFFF)) << U64(5)
        mask = U64((3 << 29) | (0x7FFFF << 5))
        new = (insn & ~mask) | immlo | immhi
    else:
        shift, m = FIELDS[field]
        new = (insn & ~U64(m << shift)) | ((imm & U64(m)) << U64(shift))
    return np.where(insn == U64(AARCH64_BREAK_FAULT), insn, new & WORD)


def reloc_data(enc: Encoding, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """reloc_data: the low `bits` of v are stored; -ERANGE as the comment in module.c says."""
    sval = v.view(np.int64)
    bits = enc.bits
    if bits == 64:
        return v, np.zeros(len(v), dtype=bool)
    stored = v & U64((1 << bits) - 1)
    if enc.op == "ABS":
        ovf = (sval < 0) | (sval > (1 << bits) - 1)
    else:
        ovf = (sval < -(1 << (bits - 1))) | (sval > (1 << (bits - 1)) - 1)
    return stored, ovf


def reloc_insn_movw(enc: Encoding, insn: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """reloc_insn_movw: imm = v >> lsb (arithmetic); MOVNZ picks MOVZ (opc 10) or MOVN (opc 00, ~imm)."""
    sval = v.view(np.int64)
    imm = (sval >> enc.lsb).view(np.uint64)
    if enc.movnz:
        insn = insn & ~U64(3 << 29)
        ge = sval >= 0
        insn = np.where(ge, insn | U64(2 << 29), insn)
        imm = np.where(ge, imm, ~imm)
    return encode_immediate("IMM_16", insn, imm), imm > U64(0xFFFF)


def reloc_insn_imm(enc: Encoding, insn: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """reloc_insn_imm: the bits [lsb, lsb+len) of v into the field; overflow unless the bits of
    v >> lsb from len-1 upwards are all equal (v >> lsb fits `len` signed bits)."""
    sval = v.view(np.int64) >> enc.lsb
    imm_mask = U64(((1 << (enc.lsb + enc.len)) - 1) >> enc.lsb)
    imm = sval.view(np.uint64) & imm_mask
    new = encode_immediate(enc.field, insn, imm)
    upper = (sval.view(np.uint64) & ~(imm_mask >> U64(1))).view(np.int64) >> (enc.len - 1)
    return new, (upper + 1).view(np.uint64) >= U64(2)


def relocate(enc: Encoding, old: np.ndarray, p: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One type's case for many entries: (value stored at P, -ERANGE)."""
    v = do_reloc(enc.op, p, val)
    if enc.form == "data":
        return reloc_data(enc, v)
    if enc.form == "movw":
        return reloc_insn_movw(enc, old, v)
    if enc.form in ("imm", "adrp"):
        return reloc_insn_imm(enc, old, v)
    return old, np.zeros(len(old), dtype=bool)


def relocate_one(enc: Encoding, old: int, p: int, val: int) -> tuple[int, bool]:
    new, ovf = relocate(enc, np.array([old], dtype=np.uint64), np.array([p], dtype=np.uint64),
                        np.array([val], dtype=np.uint64))
    return int(new[0]), bool(ovf[0])


# ---- apply_relocate_add -----------------------------------------------------------------
OK, UNKNOWN, OVERFLOW, ENOEXEC = 0, 1, 2, 3


@dataclass
class Entry:
    """One relocation as the kernel handles it: where, what is stored, how it ends."""
    i: int
    p: int
    val: int              # S + A, or the PLT entry after a detour (what the overflow line prints)
    stored: int | None    # the bytes left at P (None: nothing written)
    code: int


def apply_relocate_add(ld: Any, relsec: int, target: int) -> None:
    """apply_relocate_add for one SHT_RELA section: in bulk where order cannot matter, else
    entry by entry through the memory model. Stops at the first failure as the kernel does."""
    shdr = ld.sechdrs[relsec]
    e = read_entries(ld, int(shdr["sh_addr"]), int(shdr["sh_size"]))
    if len(e.offset) == 0:
        return
    p = (U64(ld.section_addr(target)) + e.offset)
    done, failed = _bulk(ld, e, p)
    if not done:
        failed = _one_by_one(ld, e, p)
    if failed is not None:
        _fail(ld, e, failed, target)


def _plt_state(ld: Any) -> PltState | None:
    state: PltState | None = getattr(ld, "arm64_plt", None)
    return state if ld.profile.enabled("CONFIG_ARM64_MODULE_PLTS") else None


def _bulk(ld: Any, e: Any, p: np.ndarray) -> tuple[bool, Entry | None]:
    """Every entry at once: (done, the failing entry). Not done when the entries overlap each
    other, the symbol table or the PLT areas, or leave the tables: then order matters and
    _one_by_one decides."""
    mem = ld.memory
    n = len(p)
    sym_addr, nsym = ld.symtab()
    if int(e.rsym.max()) >= nsym:
        return False, None
    try:
        symtab = mem.table(sym_addr, nsym, ELF64.sym)
    except MemoryFault:
        return False, None
    kinds = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    numbers = list(ENCODINGS)
    for k, number in enumerate(numbers):
        sel = e.rtype == U64(number)
        kinds[sel] = k
        sizes[sel] = ENCODINGS[number].size
    written = sizes > 0
    data = np.zeros(0, dtype=np.uint8)
    off = np.zeros(n, dtype=np.int64)
    if written.any():
        try:
            area, _ = mem.locate(int(p[written][0]), 1)
        except MemoryFault:
            return False, None
        data = area.data
        rel = p - U64(area.base)
        inside = (p >= U64(area.base)) & (rel <= U64(len(data)))
        if not inside[written].all():
            return False, None
        off = np.where(inside, rel, 0).astype(np.int64)
        starts, ends = off[written], off[written] + sizes[written]
        if (ends > len(data)).any():
            return False, None
        order = np.argsort(starts, kind="stable")
        s_sorted, e_sorted = starts[order], ends[order]
        if len(s_sorted) > 1 and (s_sorted[1:] < e_sorted[:-1]).any():
            return False, None
        avoid = [(sym_addr, sym_addr + nsym * ELF64.sym.itemsize)]
        state = _plt_state(ld)
        if state is not None:
            avoid += state.areas(ld)
        for lo, hi in avoid:
            if ((starts < hi - area.base) & (ends > lo - area.base)).any():
                return False, None
    val = symtab["st_value"].astype(np.uint64)[e.rsym.astype(np.int64)] + e.addend
    old = _gather(data, off, sizes)
    stored = old.copy()
    ovf = np.zeros(n, dtype=bool)
    checked = np.zeros(n, dtype=bool)
    for k, number in enumerate(numbers):
        sel = kinds == k
        if sel.any():
            enc = ENCODINGS[number]
            stored[sel], ovf[sel] = relocate(enc, old[sel], p[sel], val[sel])
            checked[sel] = enc.checked and enc.form != "none"
    state = _plt_state(ld)
    detour = np.zeros(n, dtype=bool)
    if state is not None:
        detour |= np.isin(e.rtype, np.array(BRANCHES, dtype=np.uint64)) & ovf
        if erratum_active(ld):
            adrp = np.isin(e.rtype, np.array((R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC),
                                             dtype=np.uint64))
            detour |= adrp & ((p & U64(0xFFF)) >= U64(0xFF8))
    hard = (kinds < 0) | (ovf & checked & ~detour)
    bad = np.flatnonzero(hard)
    first = int(bad[0]) if len(bad) else n
    failed: Entry | None = None
    if first < n:
        code = UNKNOWN if kinds[first] < 0 else OVERFLOW
        failed = Entry(first, int(p[first]), int(val[first]), None if code == UNKNOWN else int(stored[first]), code)
    for index in np.flatnonzero(detour[:first]):
        k = int(index)
        assert state is not None
        entry = _detour(ld, state, int(e.rtype[k]), k, int(p[k]), int(val[k]), int(old[k]), int(stored[k]),
                        int(e.rsym[k]), int(e.addend[k]))
        stored[k] = U64(entry.stored if entry.stored is not None else 0)
        if entry.code != OK:
            failed, first = entry, k
            break
    upto = first + 1 if failed is not None and failed.stored is not None else first
    _scatter(data, off[:upto], sizes[:upto], stored[:upto])
    return True, failed


def _one_by_one(ld: Any, e: Any, p: np.ndarray) -> Entry | None:
    """The kernel's loop, each access through the memory model (faults end the load)."""
    mem = ld.memory
    sym_addr, _ = ld.symtab()
    value_off = 8                                   # Elf64_Sym.st_value
    state = _plt_state(ld)
    for i in range(len(p)):
        place = int(p[i])
        s = mem.read_u(sym_addr + int(e.rsym[i]) * ELF64.sym.itemsize + value_off, 8)
        val = (s + int(e.addend[i])) & ELF64.addr_mask
        rtype = int(e.rtype[i])
        enc = ENCODINGS.get(rtype)
        if enc is None:
            return Entry(i, place, val, None, UNKNOWN)
        if enc.form == "none":
            continue
        old = 0 if enc.form == "data" else mem.read_u(place, 4)
        if (state is not None and enc.form == "adrp" and erratum_active(ld)
                and is_forbidden_offset_for_adrp(ld, place)):
            entry = _detour(ld, state, rtype, i, place, val, old, 0, int(e.rsym[i]), int(e.addend[i]))
        else:
            stored, ovf = relocate_one(enc, old, place, val)
            mem.write(place, stored.to_bytes(enc.size, "little"))
            entry = Entry(i, place, val, stored, OVERFLOW if ovf and enc.checked else OK)
            if ovf and state is not None and rtype in BRANCHES:
                entry = _detour(ld, state, rtype, i, place, val, old, stored, int(e.rsym[i]), int(e.addend[i]))
        if entry.stored is not None:
            mem.write(place, entry.stored.to_bytes(4 if enc.form != "data" else enc.size, "little"))
        if entry.code != OK:
            return entry
    return None


def _detour(ld: Any, state: PltState, rtype: int, i: int, p: int, val: int, old: int, stored: int,
            rsym: int, addend: int) -> Entry:
    """The sequential cases: a branch that does not reach goes through a PLT entry (its first,
    out-of-range encoding is already stored); an ADRP at a forbidden page offset (erratum 843419)
    becomes an ADR or a branch to a veneer (reloc_insn_adrp)."""
    if rtype in BRANCHES:
        plt = module_emit_plt_entry(ld, state, p, val)
        if not plt:
            return Entry(i, p, val, stored, ENOEXEC)          # WARN_ON in module_emit_plt_entry
        new, ovf = relocate_one(ENCODINGS[rtype], stored, p, plt)
        return Entry(i, p, plt, new, OVERFLOW if ovf else OK)
    # reloc_insn_adrp: try `adr` to the page (the attempt stores its field first).
    adr = Encoding("imm", "PREL", lsb=0, len=21, field="ADR")
    attempt, ovf = relocate_one(adr, old, p, val & ~0xFFF)
    if not ovf:
        return Entry(i, p, val, attempt & ~(1 << 31), OK)
    veneer = module_emit_veneer_for_adrp(ld, state, p, val & ~0xFFF, attempt)
    if not veneer:
        return Entry(i, p, val, attempt, ENOEXEC)
    return Entry(i, p, val, gen_branch_imm(p, veneer), OK)


def _gather(data: np.ndarray, off: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Little-endian values of sizes[i] bytes at off[i]: instruction words gathered as uint32."""
    out = np.zeros(len(off), dtype=np.uint64)
    for size in (2, 4, 8):
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            idx = off[sel][:, None] + np.arange(size)
            out[sel] = data[idx].copy().view(f"<u{size}").reshape(-1).astype(np.uint64)
    return out


def _scatter(data: np.ndarray, off: np.ndarray, sizes: np.ndarray, val: np.ndarray) -> None:
    for size in (2, 4, 8):
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            idx = off[sel][:, None] + np.arange(size)
            data[idx] = val[sel].astype(f"<u{size}").view(np.uint8).reshape(-1, size)


def _fail(ld: Any, e: Any, entry: Entry, target: int) -> None:
    rtype = int(e.rtype[entry.i])
    where = f"{ld.section_name(target)}+{int(e.offset[entry.i]):#x}"
    r = RELOCATIONS.get(rtype)
    name = r.name if r is not None else str(rtype)
    if entry.code == UNKNOWN:
        ld.klog(*MESSAGES["unknown"], ld.modname, rtype)
        raise RelocationError(f"{where}: unsupported relocation type {rtype}", section=ld.section_name(target),
                              offset=int(e.offset[entry.i]), rtype=name)
    if entry.code == ENOEXEC:
        raise RelocationError(f"{where}: {name}: no room for another PLT entry or veneer (WARN_ON in "
                              "module-plts.c; its stack dump is not reproduced)", section=ld.section_name(target),
                              offset=int(e.offset[entry.i]), rtype=name)
    ld.klog(*MESSAGES["overflow"], ld.modname, rtype, entry.val)
    allowed = r.check.describe() if r is not None and r.check is not None else ""
    raise RelocationError(f"{where}: {name} out of range: {entry.val:#x} is not in {allowed}",
                          section=ld.section_name(target), offset=int(e.offset[entry.i]), rtype=name,
                          value=entry.val, allowed=allowed)


# Debian's arm64 6.1 with CONFIG_ARM64_MODULE_PLTS: module_alloc takes MODULES_VSIZE (128 MiB)
# from module_alloc_base and falls back to a 2 GiB window from the same base; MODULES_VADDR is
# _PAGE_END(VA_BITS_MIN) for 48-bit VAs (arch/arm64/include/asm/memory.h, 6.1). The size limit
# module_alloc imposes is thus 2 GiB (the room reference/loader.py move_module checks).
MODULES_VADDR = 0xFFFF800000000000
MODULES_END = MODULES_VADDR + (2 << 30)

ARCH = Arch(
    name="arm64",
    e_machine=EM_AARCH64,
    elf=ELF64,
    rela=True,
    relocations=RELOCATIONS,
    messages=MESSAGES,
    modules_vaddr=MODULES_VADDR,
    modules_end=MODULES_END,
    apply=apply_relocate_add,
    frob_arch_sections=module_frob_arch_sections,
    written_sections=frozenset({".plt", ".init.plt"}),
)
