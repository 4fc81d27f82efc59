"""Module PLTs of 32-bit arm (arch/arm/kernel/module-plts.c, CONFIG_ARM_MODULE_PLTS, Linux 6.1.y).

module_frob_arch_sections (layout_and_allocate, right after check_modinfo):
* finds `.plt` and `.init.plt` (arch/arm/include/asm/module.lds.h puts a 1-byte PROGBITS
  of each in every module) and the SHT_SYMTAB; either PLT missing: "%s: module PLT
  section(s) missing", -ENOEXEC; no symbol table: "%s: module symtab section missing";
* sorts every SHT_REL section whose target is SHF_EXECINSTR *in the file copy*, by (type,
  symbol index), with lib/sort.c's heapsort: the kernel applies those sections in this order
  afterwards, so entry numbers in messages and the order of PLT emission are the sorted ones.
  The heapsort is not stable; reproduced exactly here (`kernel_sort`);
* counts PC24/CALL/JUMP24/THM_CALL/THM_JUMP24 entries against symbols outside the target
  section, skipping one whose encoded addend is the zero-addend pattern (-8 for ARM, -4 for
  Thumb) when the entry before it in sorted order has the same type and symbol and is a
  zero-addend one too. Targets that module_init_layout_section() puts in the init region
  (6.1.50+, backported from a6846234f458) count towards `.init.plt`, the others `.plt`;
* with CONFIG_DYNAMIC_FTRACE two slots of each are reserved for FTRACE_ADDR (ftrace_caller)
  and MCOUNT_ADDR (__gnu_mcount_nc);
* makes both SHT_NOBITS, SHF_EXECINSTR|SHF_ALLOC, aligned to L1_CACHE_BYTES (64 on armmp),
  sized round_up(count * 8, 128).

get_module_plt(loc, val) (apply_relocate, a branch out of range): the init PLT when loc is in
the init allocation, else the core one. On first use, block 0 gets its 16 `ldr pc, [pc, #56]`
words and the two fixed literals. A fixed slot holding `val` is reused; otherwise only the
last entry emitted is compared (the relocations are sorted) and reused if it holds `val`;
otherwise the next slot gets `val` (a new block of 16 is written whole: 16 ldr words, the
literal, 15 zero words). Entry k of a block is the ldr at block + 4k, its literal at
block + 64 + 4k: `ldr pc, [pc, #56]` reads (block + 4k + 8) + 56. Running past the counted
size is BUG_ON() in the kernel (an oops): here a write fault at the slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..elf import ELF32, SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_REL, SHT_SYMTAB
from ..errors import LayoutError
from ..memory import KernelBug, MemoryFault

L1_CACHE_BYTES = 64                           # CONFIG_ARM_L1_CACHE_SHIFT=6 (armmp)
PLT_ENT_STRIDE = L1_CACHE_BYTES
PLT_ENT_COUNT = PLT_ENT_STRIDE // 4           # 16 ldr words, then 16 literals
PLT_ENTRIES_SIZE = 2 * PLT_ENT_STRIDE         # sizeof(struct plt_entries) = 128
PLT_ENT_SIZE = PLT_ENTRIES_SIZE // PLT_ENT_COUNT   # 8
# ldr pc, [pc, #PLT_ENT_STRIDE - 8] (A1 LDR literal, U=1, Rt=pc); Thumb-2 kernel:
# ldr.w pc, [pc, #PLT_ENT_STRIDE - 4] (T2), stored as two halfwords, first one first.
PLT_ENT_LDR_ARM = 0xE59FF000 | (PLT_ENT_STRIDE - 8)
PLT_ENT_LDR_THUMB = 0xF8DFF000 | (PLT_ENT_STRIDE - 4)

R_ARM_PC24, R_ARM_CALL, R_ARM_JUMP24 = 1, 28, 29
R_ARM_THM_CALL, R_ARM_THM_JUMP24 = 10, 30
PLT_TYPES = (R_ARM_CALL, R_ARM_PC24, R_ARM_JUMP24, R_ARM_THM_CALL, R_ARM_THM_JUMP24)


def plt_ent_ldr(ld: Any) -> int:
    """PLT_ENT_LDR as the word in memory (__opcode_to_mem_thumb32 swaps halfwords on LE)."""
    if ld.profile.enabled("CONFIG_THUMB2_KERNEL"):
        return ((PLT_ENT_LDR_THUMB & 0xFFFF) << 16) | (PLT_ENT_LDR_THUMB >> 16)
    return PLT_ENT_LDR_ARM


def fixed_plts(ld: Any) -> tuple[int, ...]:
    """FTRACE_ADDR and MCOUNT_ADDR under CONFIG_DYNAMIC_FTRACE (profile facts: kernel constants)."""
    if not ld.profile.enabled("CONFIG_DYNAMIC_FTRACE"):
        return ()
    facts = ld.profile.facts
    return (int(facts["ftrace_addr"]), int(facts["mcount_addr"]))


@dataclass
class PltSec:
    """struct mod_plt_sec: the section, the cached address of its entries, the count used."""
    index: int
    plt_ent: int | None = None
    plt_count: int = 0


# ---- lib/sort.c -------------------------------------------------------------------------
def kernel_sort(keys: list[int]) -> list[int]:
    """lib/sort.c sort_r (6.1): bottom-up heapsort, in place, not stable. Returns the order in
    which the original elements end up (position -> original index)."""
    k = list(keys)
    perm = list(range(len(k)))
    n, a = len(k), len(k) // 2
    if a == 0:
        return perm
    while True:
        if a:                       # building the heap: sift a down
            a -= 1
        else:                       # sorting: extract the root to the end
            n -= 1
            if n == 0:
                break
            k[0], k[n] = k[n], k[0]
            perm[0], perm[n] = perm[n], perm[0]
        b = a                       # the path of larger children down to a leaf
        c = 2 * b + 1
        d = c + 1
        while d < n:
            b = c if k[c] >= k[d] else d
            c = 2 * b + 1
            d = c + 1
        if d == n:                  # last leaf without a sibling
            b = c
        ka = k[a]
        while b != a and ka >= k[b]:        # back up to where a belongs
            b = (b - 1) // 2
        c = b
        while b != a:               # rotate a into place
            b = (b - 1) // 2
            k[b], k[c] = k[c], k[b]
            perm[b], perm[c] = perm[c], perm[b]
    return perm


# ---- module_frob_arch_sections ----------------------------------------------------------
def module_frob_arch_sections(ld: Any) -> None:
    """arch/arm/kernel/module-plts.c module_frob_arch_sections (6.1.y)."""
    if not ld.profile.enabled("CONFIG_ARM_MODULE_PLTS"):
        return                      # the weak no-op: no PLT sections needed
    core = init = syms = None
    for i in range(ld.shnum):       # the last of each name wins, as in the kernel's loop
        name = ld.secname(i)
        if name == ".plt":
            core = i
        elif name == ".init.plt":
            init = i
        elif int(ld.sechdrs[i]["sh_type"]) == SHT_SYMTAB:
            syms = i
    if core is None or init is None:
        ld.klog(3, "%s: module PLT section(s) missing\n", ld.modname)
        raise LayoutError(f"no {'.plt' if core is None else '.init.plt'} section: a module for this kernel is "
                          "linked with arch/arm/include/asm/module.lds.h (CONFIG_ARM_MODULE_PLTS)")
    if syms is None:
        ld.klog(3, "%s: module symtab section missing\n", ld.modname)
        raise LayoutError("no SHT_SYMTAB section")
    fixed = len(fixed_plts(ld))
    counts = {"core": fixed, "init": fixed}
    for i in range(1, ld.shnum):
        s = ld.sechdrs[i]
        if int(s["sh_type"]) != SHT_REL:
            continue
        dstidx = int(s["sh_info"])
        if dstidx >= ld.shnum:      # the kernel reads past its header table: not modelled
            continue
        dst = ld.sechdrs[dstidx]
        if not int(dst["sh_flags"]) & SHF_EXECINSTR:
            continue
        rels_addr = ld.copy_base + int(s["sh_offset"])
        numrels = int(s["sh_size"]) // ELF32.rel.itemsize
        rels = sort_rels(ld, rels_addr, numrels)
        n = count_plts(ld, syms, int(dst["sh_addr"]), rels, dstidx)
        counts["init" if ld.is_init_section(ld.secname(dstidx)) else "core"] += n
    flags = ld.sechdrs["sh_flags"]
    for region, index in (("core", core), ("init", init)):
        ld.sechdrs["sh_type"][index] = SHT_NOBITS
        flags[index] = np.array(SHF_EXECINSTR | SHF_ALLOC).astype(flags.dtype)
        ld.sechdrs["sh_addralign"][index] = L1_CACHE_BYTES
        size = -(-counts[region] * PLT_ENT_SIZE // PLT_ENTRIES_SIZE) * PLT_ENTRIES_SIZE
        ld.sechdrs["sh_size"][index] = size & 0xFFFFFFFF
    ld.arm_plts = {"core": PltSec(core), "init": PltSec(init)}


def sort_rels(ld: Any, addr: int, numrels: int) -> np.ndarray:
    """sort(rels, numrels, sizeof(Elf32_Rel), cmp_rel, NULL): by type, then symbol index, in the
    file copy (apply_relocate reads the sorted section later). Returns the sorted entries."""
    table = ld.memory.table(addr, numrels, ELF32.rel)
    info = table["r_info"].astype(np.int64)
    keys = ((info & 0xFF) << 24) | (info >> 8)
    if numrels > 1:
        order = np.asarray(kernel_sort(keys.tolist()), dtype=np.int64)
        table = table[order]
        ld.memory.write(addr, table.tobytes())
    return table


def is_zero_addend_relocation(ld: Any, base: int, rtype: np.ndarray, r_offset: np.ndarray) -> np.ndarray:
    """The raw field is the zero-addend pattern: imm24 = 0xfffffe (ARM, -8); Thumb-2 BL/B.W with
    S:imm10 all ones and J1:J2:imm11 = 1:1:0x7fe (-4). Reads the place in the file copy."""
    words = read_words(ld, (base + r_offset) & 0xFFFFFFFF)
    upper, lower = words & 0xFFFF, words >> 16
    thumb = np.isin(rtype, (R_ARM_THM_CALL, R_ARM_THM_JUMP24))
    return np.where(thumb, ((upper & 0x7FF) == 0x7FF) & ((lower & 0x2FFF) == 0x2FFE),
                    (words & 0xFFFFFF) == 0xFFFFFE)


def read_words(ld: Any, places: np.ndarray) -> np.ndarray:
    """The u32 at each address, in bulk when all lie in one area (else one by one, faulting)."""
    if len(places) == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        area, _ = ld.memory.locate(int(places[0]), 1)
        off = places - area.base
        if (off >= 0).all() and (off + 4 <= len(area.data)).all():
            idx = off[:, None] + np.arange(4)
            return area.data[idx].copy().view("<u4").reshape(-1).astype(np.int64)
    except MemoryFault:
        pass
    return np.array([ld.memory.read_u(int(a), 4) for a in places], dtype=np.int64)


def count_plts(ld: Any, symsec: int, base: int, rels: np.ndarray, dstidx: int) -> int:
    """count_plts over the sorted entries of one section."""
    if len(rels) == 0:
        return 0
    info = rels["r_info"].astype(np.int64)
    rtype, rsym = info & 0xFF, info >> 8
    branch = np.flatnonzero(np.isin(rtype, PLT_TYPES))
    if len(branch) == 0:
        return 0
    shndx = symbol_shndx(ld, symsec, rsym[branch])
    cand = branch[shndx != dstidx]
    if len(cand) == 0:
        return 0
    zero = np.zeros(len(rels), dtype=bool)
    zero[cand] = is_zero_addend_relocation(ld, base, rtype[cand], rels["r_offset"].astype(np.int64)[cand])
    key = (rtype << 24) | rsym
    prev_same = np.zeros(len(rels), dtype=bool)
    prev_same[1:] = key[1:] == key[:-1]
    prev_zero = np.zeros(len(rels), dtype=bool)
    prev_zero[1:] = zero[:-1]
    duplicate = zero & prev_same & prev_zero
    return int((~duplicate[cand]).sum())


def symbol_shndx(ld: Any, symsec: int, rsym: np.ndarray) -> np.ndarray:
    """st_shndx of syms[rsym] read from the copy's symbol table (no bound: past it, memory decides)."""
    addr = int(ld.sechdrs[symsec]["sh_addr"])
    nsyms = int(ld.sechdrs[symsec]["sh_size"]) // ELF32.sym.itemsize
    size = ELF32.sym.itemsize
    field = int(ELF32.sym.fields["st_shndx"][1])  # type: ignore[index]
    table = ld.memory.table(addr, nsyms, ELF32.sym)
    inside = rsym < nsyms
    out = np.zeros(len(rsym), dtype=np.int64)
    out[inside] = table["st_shndx"].astype(np.int64)[rsym[inside]]
    for k in np.flatnonzero(~inside):
        out[k] = ld.memory.read_u(addr + int(rsym[k]) * size + field, 2)
    return out


# ---- get_module_plt ---------------------------------------------------------------------
def plt_ranges(ld: Any) -> list[tuple[int, int]]:
    """(address, size) of the PLT areas, once laid out."""
    plts = getattr(ld, "arm_plts", None) or {}
    return [(int(ld.sechdrs[p.index]["sh_addr"]), int(ld.sechdrs[p.index]["sh_size"])) for p in plts.values()]


def in_init(ld: Any, loc: int) -> bool:
    """loc - init_layout.base < init_layout.size (u32): loc is in the init allocation."""
    base, size = ld.regions.get("init", (0, 0))
    return ((loc - base) & 0xFFFFFFFF) < size


def prealloc_fixed(ld: Any, sec: PltSec, plt: int) -> None:
    fixed = fixed_plts(ld)
    if not fixed or sec.plt_count:
        return
    sec.plt_count = len(fixed)
    ldr = plt_ent_ldr(ld).to_bytes(4, "little")
    ld.memory.write(plt, ldr * PLT_ENT_COUNT)
    ld.memory.write(plt + PLT_ENT_STRIDE, b"".join(v.to_bytes(4, "little") for v in fixed))


def get_module_plt(ld: Any, loc: int, val: int) -> int:
    """get_module_plt: the address of a PLT entry that jumps to `val` (u32)."""
    sec: PltSec = ld.arm_plts["init" if in_init(ld, loc) else "core"]
    if sec.plt_ent is None:
        sec.plt_ent = int(ld.sechdrs[sec.index]["sh_addr"])
    plt = sec.plt_ent
    prealloc_fixed(ld, sec, plt)

    def lit(block: int, idx: int) -> int:
        return int(ld.memory.read_u(block + PLT_ENT_STRIDE + 4 * idx, 4))

    for idx in range(len(fixed_plts(ld))):
        if lit(plt, idx) == val:
            return plt + 4 * idx
    idx = 0
    if sec.plt_count > 0:           # only the last entry emitted can be reused
        plt += (sec.plt_count - 1) // PLT_ENT_COUNT * PLT_ENTRIES_SIZE
        idx = (sec.plt_count - 1) % PLT_ENT_COUNT
        if lit(plt, idx) == val:
            return plt + 4 * idx
        idx = (idx + 1) % PLT_ENT_COUNT
        if not idx:
            plt += PLT_ENTRIES_SIZE
    sec.plt_count += 1
    if sec.plt_count * PLT_ENT_SIZE > int(ld.sechdrs[sec.index]["sh_size"]):
        # BUG_ON(): the kernel oopses here; the slot it would fill is past the counted area.
        raise KernelBug(plt + 4 * idx, f"BUG_ON in get_module_plt: slot {sec.plt_count} is past the counted "
                        f"{int(ld.sechdrs[sec.index]['sh_size']) // PLT_ENT_SIZE}")
    if not idx:                     # a new block of 16: every ldr word, the literal, zeros
        block = plt_ent_ldr(ld).to_bytes(4, "little") * PLT_ENT_COUNT
        block += val.to_bytes(4, "little") + bytes(4 * (PLT_ENT_COUNT - 1))
        ld.memory.write(plt, block)
    else:
        ld.memory.write(plt + PLT_ENT_STRIDE + 4 * idx, val.to_bytes(4, "little"))
    return plt + 4 * idx
