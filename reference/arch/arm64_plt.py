"""arm64 module PLTs as Linux 6.1 sizes and fills them (arch/arm64/kernel/module-plts.c, 6.1.y,
CONFIG_ARM64_MODULE_PLTS=y; spec §5.3).

module_frob_arch_sections (layout_and_allocate, after check_modinfo): `.plt` and `.init.plt`
must exist by name (else "%s: module PLT section(s) missing", -ENOEXEC). For every SHT_RELA
section whose target is SHF_EXECINSTR, with CONFIG_RANDOMIZE_BASE: the JUMP26/CALL26 entries
whose symbol is not defined in the target section are moved to the front by
partition_branch_plt_relas (a two-index swap loop, which reorders the other entries too) and
the first `nents` of them sorted by (type, symbol, addend) *in the kernel's copy of the file*:
apply_relocate_add later reads that reordered table, so the order decides which entry fails
first. partition returns the index where its indices met, so when every entry needs a PLT the
last one stays out of the sort. count_plts counts one slot per such branch unless it has addend
0 and equals its predecessor. `.plt`/`.init.plt` become NOBITS, EXECINSTR|ALLOC, aligned to
L1_CACHE_BYTES (64), (count + 1) * 12 bytes; `.text.ftrace_trampoline` NOBITS EXECINSTR|ALLOC,
aligned 4, NR_FTRACE_PLTS (2, DYNAMIC_FTRACE_WITH_REGS) * 12 bytes. 6.1 (before 6.5's
d35686444fc8) counts and sorts branches only with CONFIG_RANDOMIZE_BASE.

module_emit_plt_entry: the PLT of the place's region (init if P is in the init allocation),
entry `adrp x16, dst; add x16, x16, #:lo12:dst; br x16` built *in the next free slot* and then
compared with the previous entry: a repeat reuses the previous one and leaves its copy in the
free slot (overwritten by the next distinct entry). More entries than counted: WARN_ON and 0
(-ENOEXEC from apply_relocate_add; the WARN's report is not reproduced).

Cortex-A53 erratum 843419 (CONFIG_ARM64_ERRATUM_843419 and the CPU capability: the profile fact
`erratum_843419`): an ADRP relocation in an executable section raises its section's alignment to
2 << ffz(r_offset | 7) when that is at most 4 KiB, else reserves a veneer slot; the PLT gets slack
of ceil(count / 341); a PLT slot whose adrp would sit at page offset >= 0xff8 is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..elf import (
    ELF64,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHT_NOBITS,
    SHT_RELA,
    SHT_SYMTAB,
    cstring,
)
from ..errors import LayoutError
from ..memory import KernelBug

PLT_ENTRY = 12                        # sizeof(struct plt_entry): adrp, add, br
L1_CACHE_BYTES = 64                   # arch/arm64/include/asm/cache.h
NR_FTRACE_PLTS = 2                    # asm/ftrace.h: FTRACE_PLT_IDX, FTRACE_REGS_PLT_IDX
SZ_4K = 0x1000
R_AARCH64_JUMP26, R_AARCH64_CALL26 = 282, 283
R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC = 275, 276
AARCH64_BREAK_FAULT = 0xD4202000
X16 = 16
BR_X16 = 0xD61F0000 | (X16 << 5)      # aarch64_insn_gen_branch_reg(x16, NOLINK)
U64 = np.uint64


@dataclass
class PltSec:
    """struct mod_plt_sec."""
    shndx: int
    num_entries: int = 0
    max_entries: int = 0


@dataclass
class PltState:
    """mod->arch: the core and init PLTs."""
    core: PltSec
    init: PltSec
    warnings: list[str] = field(default_factory=list)

    def areas(self, ld: Any) -> list[tuple[int, int]]:
        """[start, end) of both PLT sections once laid out."""
        out = []
        for sec in (self.core, self.init):
            start = int(ld.sechdrs[sec.shndx]["sh_addr"])
            out.append((start, start + int(ld.sechdrs[sec.shndx]["sh_size"])))
        return out


def erratum_active(ld: Any) -> bool:
    """CONFIG_ARM64_ERRATUM_843419 and cpus_have_const_cap(ARM64_WORKAROUND_843419): the
    capability depends on the CPU the kernel boots on, a profile fact."""
    return bool(ld.profile.enabled("CONFIG_ARM64_ERRATUM_843419") and ld.profile.facts.get("erratum_843419"))


def is_forbidden_offset_for_adrp(ld: Any, place: int) -> bool:
    return erratum_active(ld) and (place & 0xFFF) >= 0xFF8


# ---- instruction words (arch/arm64/lib/insn.c) -------------------------------------------
def gen_branch_imm(pc: int, addr: int) -> int:
    """aarch64_insn_gen_branch_imm(pc, addr, AARCH64_INSN_BRANCH_NOLINK): `b addr`, or
    AARCH64_BREAK_FAULT when misaligned or beyond +-128 MiB (label_imm_common)."""
    offset = ((addr - pc + (1 << 63)) % (1 << 64)) - (1 << 63)
    if pc & 3 or addr & 3 or not -(1 << 27) <= offset < (1 << 27):
        return AARCH64_BREAK_FAULT
    return 0x14000000 | ((offset >> 2) & 0x3FFFFFF)


def _encode_adr(insn: int, imm: int) -> int:
    if insn == AARCH64_BREAK_FAULT:
        return insn
    mask = (3 << 29) | (0x7FFFF << 5)
    return (insn & ~mask & 0xFFFFFFFF) | ((imm & 3) << 29) | (((imm >> 2) & 0x7FFFF) << 5)


def gen_adrp(pc: int, addr: int, reg: int) -> int:
    """aarch64_insn_gen_adr(pc, addr, reg, ADRP): the page offset is (addr - ALIGN_DOWN(pc, 4K)) >> 12
    computed on unsigned long and truncated to s32; outside [-1M, 1M) pages: AARCH64_BREAK_FAULT."""
    offset = (((addr - (pc & ~0xFFF)) % (1 << 64)) >> 12) & 0xFFFFFFFF
    offset = offset - (1 << 32) if offset >> 31 else offset
    if not -(1 << 20) <= offset < (1 << 20):
        return AARCH64_BREAK_FAULT
    return _encode_adr(0x90000000 | reg, offset)


def gen_add_imm(reg: int, imm: int) -> int:
    """aarch64_insn_gen_add_sub_imm(reg, reg, imm, 64BIT, ADD) for imm < 4 KiB: `add reg, reg, #imm`."""
    return 0x91000000 | (imm << 10) | (reg << 5) | reg


def get_adrp_add_pair(dst: int, pc: int, reg: int) -> tuple[int, int]:
    return gen_adrp(pc, dst, reg), gen_add_imm(reg, dst % SZ_4K)


def get_plt_entry(dst: int, pc: int) -> tuple[int, int, int]:
    """get_plt_entry: adrp x16, dst; add x16, x16, #:lo12:dst; br x16."""
    adrp, add = get_adrp_add_pair(dst, pc, X16)
    return adrp, add, BR_X16


def plt_bytes(entry: tuple[int, int, int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in entry)


def adrp_get_offset(insn: int) -> int:
    """aarch64_insn_adrp_get_offset: the ADR immediate decoded *unsigned* (21 bits), << 12."""
    return ((((insn >> 5) & 0x7FFFF) << 2) | ((insn >> 29) & 3)) << 12


def is_adrp(insn: int) -> bool:
    return insn & 0x9F000000 == 0x90000000



def plt_entries_equal(a: tuple[int, int, int], pa: int, b: tuple[int, int, int], pb: int) -> bool:
    """plt_entries_equal: same add and br, and adrp reaching the same page from each slot's page."""
    if a[1] != b[1] or a[2] != b[2]:
        return False
    p, q = pa & ~0xFFF, pb & ~0xFFF
    if a[0] == b[0] and p == q:
        return True
    for insn, where in ((a[0], pa), (b[0], pb)):
        if not is_adrp(insn):
            raise KernelBug(where, "BUG_ON in aarch64_insn_adrp_get_offset: not an adrp")
    return (p + adrp_get_offset(a[0])) % (1 << 64) == (q + adrp_get_offset(b[0])) % (1 << 64)


# ---- emitting entries ---------------------------------------------------------------------
def _pltsec(ld: Any, state: PltState, loc: int) -> PltSec:
    """in_init: P within mod->init_layout [base, base + size)."""
    base, size = ld.regions.get("init", (0, 0))
    return state.init if (loc - base) % (1 << 64) < size else state.core


def _read_entry(ld: Any, address: int) -> tuple[int, int, int]:
    raw = ld.memory.read(address, PLT_ENTRY)
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"))


def module_emit_plt_entry(ld: Any, state: PltState, loc: int, val: int) -> int:
    """The address of the PLT entry a branch at `loc` to `val` (S + A) goes through, 0 on overflow."""
    sec = _pltsec(ld, state, loc)
    plt = int(ld.sechdrs[sec.shndx]["sh_addr"])
    i = sec.num_entries
    j = i - 1
    if is_forbidden_offset_for_adrp(ld, plt + i * PLT_ENTRY):
        i += 1
    entry = get_plt_entry(val, plt + i * PLT_ENTRY)
    ld.memory.write(plt + i * PLT_ENTRY, plt_bytes(entry))
    if j >= 0 and plt_entries_equal(entry, plt + i * PLT_ENTRY, _read_entry(ld, plt + j * PLT_ENTRY),
                                    plt + j * PLT_ENTRY):
        return plt + j * PLT_ENTRY
    sec.num_entries += i - j
    if sec.num_entries > sec.max_entries:
        state.warnings.append("module_emit_plt_entry: plt_num_entries > plt_max_entries")
        return 0
    return plt + i * PLT_ENTRY


def module_emit_veneer_for_adrp(ld: Any, state: PltState, loc: int, val: int, insn: int) -> int:
    """A veneer `adrp rd, val; add rd, rd, #0; b loc + 4` for an ADRP at a forbidden offset
    (`insn` is the word at loc, whose Rd it keeps); 0 when the PLT is full."""
    sec = _pltsec(ld, state, loc)
    plt = int(ld.sechdrs[sec.shndx]["sh_addr"])
    i = sec.num_entries
    sec.num_entries += 1
    if sec.num_entries > sec.max_entries:
        state.warnings.append("module_emit_veneer_for_adrp: plt_num_entries > plt_max_entries")
        return 0
    if is_forbidden_offset_for_adrp(ld, plt + i * PLT_ENTRY):
        i = sec.num_entries
        sec.num_entries += 1
    rd = insn & 0x1F
    at = plt + i * PLT_ENTRY
    adrp, add = get_adrp_add_pair(val, at, rd)
    ld.memory.write(at, plt_bytes((adrp, add, gen_branch_imm(at + 8, loc + 4))))
    return at


# ---- module_frob_arch_sections ------------------------------------------------------------
@dataclass
class Target:
    """The header a RELA section's sh_info points at (read past the table when out of range)."""
    index: int
    flags: int
    name: str
    addralign: int


def _target(ld: Any, i: int) -> Target:
    info = int(ld.sechdrs[i]["sh_info"])
    if info < ld.shnum:
        return Target(info, int(ld.sechdrs[info]["sh_flags"]), ld.secname(info),
                      int(ld.sechdrs[info]["sh_addralign"]))
    # sechdrs[sh_info] past e_shnum: the kernel reads whatever follows the table in its copy.
    shoff = int(ld.copy_base) + int(np.frombuffer(ld.buf[0x28:0x30], dtype="<u8")[0])
    raw = np.frombuffer(ld.memory.read(shoff + info * ELF64.shdr.itemsize, ELF64.shdr.itemsize),
                        dtype=ELF64.shdr)[0]
    shstr = ld.sechdrs[ld.ehdr_shstrndx]
    name = cstring(ld.buf, int(shstr["sh_offset"]) + int(raw["sh_name"])).decode("latin-1") \
        if int(shstr["sh_offset"]) + int(raw["sh_name"]) < len(ld.buf) else ""
    return Target(info, int(raw["sh_flags"]), name, int(raw["sh_addralign"]))


def _shndx_of(ld: Any, syms: tuple[int, int], rsym: np.ndarray) -> np.ndarray:
    """st_shndx of each entry's symbol, read from the symbol table in the copy (no bounds check,
    as in the kernel: an index past the table reads what follows it)."""
    addr, count = syms
    if len(rsym) == 0:
        return np.zeros(0, dtype=np.int64)
    if int(rsym.max()) < count:
        table = ld.memory.table(addr, count, ELF64.sym)
        return table["st_shndx"].astype(np.int64)[rsym.astype(np.int64)]
    return np.array([ld.memory.read_u(addr + int(k) * ELF64.sym.itemsize + 6, 2) for k in rsym], dtype=np.int64)


def partition_branch_plt_relas(needs: np.ndarray) -> tuple[np.ndarray, int]:
    """partition_branch_plt_relas: i from the front over entries that need a PLT, j from the back
    over entries that do not; a misplaced pair is swapped. So the k-th entry from the front that
    does not need one trades places with the k-th from the back that does, while the first is
    before the second. Returns (the new order, the index where i and j met): that is the number N
    of entries needing a PLT, except when all n do: the loop stops at i = n - 1 and the last one
    is left out of the sort (min(N, n - 1); checked against the loop itself in the unit tests)."""
    n = len(needs)
    order = np.arange(n)
    if n == 0:
        return order, 0
    front = np.flatnonzero(~needs)               # ascending
    back = np.flatnonzero(needs)[::-1]           # descending
    m = min(len(front), len(back))
    k = int(np.count_nonzero(front[:m] < back[:m]))   # true for a prefix of the pairs only
    order[front[:k]], order[back[:k]] = back[:k], front[:k]
    return order, min(int(needs.sum()), n - 1)


def count_plts(ld: Any, rela: np.ndarray, shndx: np.ndarray, target: Target) -> int:
    """count_plts over one (already reordered) table; may raise the target's sh_addralign."""
    rtype = ELF64.r_type(rela["r_info"].astype(np.uint64))
    rsym = ELF64.r_sym(rela["r_info"].astype(np.uint64))
    addend = rela["r_addend"].astype(np.int64)
    ret = 0
    if ld.profile.enabled("CONFIG_RANDOMIZE_BASE"):
        branch = np.isin(rtype, np.array((R_AARCH64_JUMP26, R_AARCH64_CALL26), dtype=np.uint64))
        elsewhere = branch & (shndx != target.index)
        dup = np.zeros(len(rela), dtype=bool)
        if len(rela) > 1:
            dup[1:] = (rtype[1:] == rtype[:-1]) & (rsym[1:] == rsym[:-1]) & (addend[1:] == addend[:-1])
        ret += int((elsewhere & ((addend != 0) | ~dup)).sum())
    if erratum_active(ld):
        adrp = np.isin(rtype, np.array((R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC), dtype=np.uint64))
        offsets = rela["r_offset"].astype(np.uint64)[adrp] | U64(7)
        # ffz: the lowest clear bit; min_align = 2 << ffz.
        ffz = np.array([(~int(o) & -~int(o)).bit_length() - 1 for o in offsets], dtype=np.int64)
        min_align = [2 << int(z) for z in ffz]
        veneers = sum(1 for a in min_align if a > SZ_4K)
        ret += veneers
        raise_to = max([a for a in min_align if a <= SZ_4K], default=0)
        if raise_to > target.addralign:
            target.addralign = raise_to
            if target.index < ld.shnum:
                ld.sechdrs["sh_addralign"][target.index] = raise_to
        ret += -(-ret // (SZ_4K // PLT_ENTRY))
    return ret & 0xFFFFFFFF


def module_frob_arch_sections(ld: Any) -> None:
    """module_frob_arch_sections (CONFIG_ARM64_MODULE_PLTS; without it the weak no-op)."""
    if not ld.profile.enabled("CONFIG_ARM64_MODULE_PLTS"):
        return
    core = init = 0
    tramp = None
    symsec = None
    for i in range(ld.shnum):
        name = ld.secname(i)
        if name == ".plt":
            core = i
        elif name == ".init.plt":
            init = i
        elif name == ".text.ftrace_trampoline":
            tramp = i
        elif int(ld.sechdrs[i]["sh_type"]) == SHT_SYMTAB:
            symsec = i
    if not core or not init:
        ld.klog(3, "%s: module PLT section(s) missing\n", ld.modname)
        raise LayoutError("no .plt or .init.plt section (the arch module linker script adds them)")
    if symsec is None:
        ld.klog(3, "%s: module symtab section missing\n", ld.modname)
        raise LayoutError("no SHT_SYMTAB section")
    syms = (int(ld.sechdrs[symsec]["sh_addr"]), int(ld.sechdrs[symsec]["sh_size"]) // ELF64.sym.itemsize)
    core_plts = init_plts = 0
    for i in range(ld.shnum):
        if int(ld.sechdrs[i]["sh_type"]) != SHT_RELA:
            continue
        target = _target(ld, i)
        if not target.flags & SHF_EXECINSTR:
            continue
        rels_addr = int(ld.copy_base) + int(ld.sechdrs[i]["sh_offset"])
        numrels = int(ld.sechdrs[i]["sh_size"]) // ELF64.rela.itemsize
        rela = ld.memory.table(rels_addr, numrels, ELF64.rela)
        if ld.profile.enabled("CONFIG_RANDOMIZE_BASE") and numrels:
            rela = _sort_branches(ld, rela, syms, target)
            ld.memory.write(rels_addr, rela.tobytes())
        shndx = _shndx_of(ld, syms, ELF64.r_sym(rela["r_info"].astype(np.uint64)))
        n = count_plts(ld, rela, shndx, target)
        if ld.is_init_section(target.name):
            init_plts += n
        else:
            core_plts += n
    for plt, count in ((core, core_plts), (init, init_plts)):
        _make_nobits(ld, plt, L1_CACHE_BYTES, (count + 1) * PLT_ENTRY)
    if tramp is not None:
        _make_nobits(ld, tramp, 4, NR_FTRACE_PLTS * PLT_ENTRY)
    ld.arm64_plt = PltState(PltSec(core, 0, core_plts), PltSec(init, 0, init_plts))


def _sort_branches(ld: Any, rela: np.ndarray, syms: tuple[int, int], target: Target) -> np.ndarray:
    """partition_branch_plt_relas, then sort(rels, nents, cmp_rela): the kernel's heapsort is not
    stable, but entries it could order either way are equal in type, symbol and addend, so they
    write the same bytes through the same PLT entry: a stable sort gives the same result."""
    info = rela["r_info"].astype(np.uint64)
    rtype, rsym = ELF64.r_type(info), ELF64.r_sym(info)
    shndx = _shndx_of(ld, syms, rsym)
    needs = np.isin(rtype, np.array((R_AARCH64_JUMP26, R_AARCH64_CALL26), dtype=np.uint64)) & (shndx != target.index)
    order, nents = partition_branch_plt_relas(needs)
    rela = rela[order]
    if nents > 1:
        head = rela[:nents]
        hinfo = head["r_info"].astype(np.uint64)
        keys = np.lexsort((head["r_addend"].astype(np.int64), ELF64.r_sym(hinfo), ELF64.r_type(hinfo)))
        rela = np.concatenate([head[keys], rela[nents:]])
    return rela


def _make_nobits(ld: Any, i: int, align: int, size: int) -> None:
    s = ld.sechdrs
    s["sh_type"][i] = SHT_NOBITS
    s["sh_flags"][i] = SHF_EXECINSTR | SHF_ALLOC
    s["sh_addralign"][i] = align
    s["sh_size"][i] = size
