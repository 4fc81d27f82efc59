"""riscv64 module PLT and GOT, as Linux 6.1 builds them (CONFIG_MODULE_SECTIONS, which 64BIT
selects): arch/riscv/kernel/module-sections.c and arch/riscv/include/asm/module.h.

module_frob_arch_sections runs in layout_and_allocate, right after check_modinfo. It needs the
three empty sections the arch module linker script adds (asm/module.lds.h: `.plt`, `.got`,
`.got.plt`, each `{ BYTE(0) }`); the last section of each name wins, and a missing one is
"%s: module PLT section(s) missing" (GOT, GOT.PLT), -ENOEXEC. It then counts, over every
SHT_RELA section whose target has SHF_EXECINSTR, the R_RISCV_CALL_PLT and R_RISCV_GOT_HI20
entries, an entry counting unless an *earlier entry of the same relocation section* has the
same r_info and r_addend (duplicate_rela: a linear scan; 6.1 never deduplicates across
sections, nor by symbol value). The sections become SHT_NOBITS of (plts+1)*12, (gots+1)*8 and
(plts+1)*8 bytes aligned to L1_CACHE_BYTES (64); `.plt` is ALLOC|EXECINSTR (text group),
`.got` and `.got.plt` only ALLOC, so they are laid out with the read-only data (and written
during relocation, before complete_formation protects them).

While relocating, module_emit_got_entry / module_emit_plt_entry hand out entries in the order
the relocations ask for them, reusing an entry whose stored value is the same (linear search
over the entries emitted so far, here a dict). An entry beyond the counted maximum is written
and then hits BUG_ON: the kernel oopses (KernelBug, a fault result, never an errno).

What 6.1 also does and the reference does not reproduce: frob stores the section header
pointers and counts in the file copy's struct module (mod->arch), and move_module copies that
struct into the module; like every other field load_module fills in (list, state, kobject...),
it is not part of the relocated `.gnu.linkonce.this_module` bytes the suite compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..elf import SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_RELA
from ..errors import LayoutError
from ..memory import KernelBug, MemoryFault

L1_CACHE_BYTES = 64                 # arch/riscv/include/asm/cache.h: L1_CACHE_SHIFT 6
PLT_ENTRY_SIZE = 12                 # struct plt_entry: auipc, ld, jr
GOT_ENTRY_SIZE = 8                  # struct got_entry: unsigned long symbol_addr
# asm/module.h emit_plt_entry's opcodes and registers.
OPC_AUIPC, OPC_LD, OPC_JALR = 0x0017, 0x3003, 0x0067
REG_T0, REG_T1 = 5, 6
R_RISCV_CALL_PLT, R_RISCV_GOT_HI20 = 19, 20
ELF64_RELA = np.dtype([("r_offset", "<u8"), ("r_info", "<u8"), ("r_addend", "<i8")])

MESSAGES = {
    "plt_missing": (3, "%s: module PLT section(s) missing\n"),
    "got_missing": (3, "%s: module GOT section(s) missing\n"),
    "got_plt_missing": (3, "%s: module GOT.PLT section(s) missing\n"),
}



@dataclass
class ModSection:
    """struct mod_section: the section (header index), entries emitted and the counted maximum."""
    index: int
    num_entries: int = 0
    max_entries: int = 0
    by_value: dict[int, int] = field(default_factory=dict)   # stored value -> entry index


@dataclass
class ModArch:
    """struct mod_arch_specific of riscv (field order: got, plt, got_plt)."""
    got: ModSection
    plt: ModSection
    got_plt: ModSection


def emit_plt_entry(plt: int, got_plt: int) -> tuple[int, int, int]:
    """asm/module.h emit_plt_entry: `auipc t0, hi20; ld t1, lo12(t0); jr t1`, where hi20/lo12
    split the distance from the entry to its .got.plt slot (unsigned long arithmetic, the
    instruction words u32)."""
    offset = (got_plt - plt) & (2**64 - 1)
    hi20 = (offset + 0x800) & 0xFFFFF000
    lo12 = (offset - hi20) & 0xFFFFFFFF
    return (OPC_AUIPC | (REG_T0 << 7) | hi20,
            (OPC_LD | (lo12 << 20) | (REG_T0 << 15) | (REG_T1 << 7)) & 0xFFFFFFFF,
            OPC_JALR | (REG_T1 << 15))


def plt_entry_bytes(plt: int, got_plt: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in emit_plt_entry(plt, got_plt))


# ---- module_frob_arch_sections ------------------------------------------------------------
def module_frob_arch_sections(ld: Any) -> None:
    """arch/riscv/kernel/module-sections.c module_frob_arch_sections (6.1)."""
    found: dict[str, int | None] = {".plt": None, ".got": None, ".got.plt": None}
    for i in range(ld.shnum):
        name = ld.secname(i)
        if name in found:
            found[name] = i                      # the last section of that name wins
    for name, key, slot in ((".plt", "plt_missing", 1), (".got", "got_missing", 0),
                            (".got.plt", "got_plt_missing", 2)):
        if found[name] is None:
            _missing(ld, key, slot)
    plts, gots = count_max_entries(ld)
    index = {name: int(i or 0) for name, i in found.items()}
    mod = ModArch(got=ModSection(index[".got"], max_entries=gots),
                  plt=ModSection(index[".plt"], max_entries=plts),
                  got_plt=ModSection(index[".got.plt"], max_entries=plts))
    sh = ld.sechdrs
    for sec, flags, size in ((mod.plt, SHF_EXECINSTR | SHF_ALLOC, (plts + 1) * PLT_ENTRY_SIZE),
                             (mod.got, SHF_ALLOC, (gots + 1) * GOT_ENTRY_SIZE),
                             (mod.got_plt, SHF_ALLOC, (plts + 1) * GOT_ENTRY_SIZE)):
        sh["sh_type"][sec.index] = SHT_NOBITS
        sh["sh_flags"][sec.index] = flags
        sh["sh_addralign"][sec.index] = L1_CACHE_BYTES
        sh["sh_size"][sec.index] = size
    ld.mod_arch = mod


def _missing(ld: Any, key: str, slot: int) -> None:
    """No section of that name: mod->arch.<x>.shdr keeps what the file's struct module holds
    there (zero when built by modpost). Zero: the kernel's message and -ENOEXEC. Anything else
    is a pointer the kernel goes on writing through: a fault here."""
    offset = ld.profile.module_struct.get("arch")
    mod = ld.sechdrs[ld.index["mod"]]
    pointer = 0
    if offset is not None and offset + 16 * slot + 8 <= int(mod["sh_size"]):
        at = int(mod["sh_offset"]) + offset + 16 * slot
        pointer = int.from_bytes(ld.buf[at:at + 8], "little")
    if pointer:
        raise MemoryFault(pointer + 4, 4, "write")
    level, fmt = MESSAGES[key]
    ld.klog(level, fmt, ld.modname)
    section = {"plt_missing": ".plt", "got_missing": ".got", "got_plt_missing": ".got.plt"}[key]
    raise LayoutError(f"no {section} section: the arch module linker script (asm/module.lds.h) adds "
                      f".plt, .got and .got.plt; CONFIG_MODULE_SECTIONS needs all three")


def count_max_entries(ld: Any) -> tuple[int, int]:
    """(plts, gots) over the RELA sections whose target is executable, deduplicated by
    (r_info, r_addend) within each section only."""
    plts = gots = 0
    sh = ld.sechdrs
    for i in range(ld.shnum):
        if int(sh["sh_type"][i]) != SHT_RELA:
            continue
        if not _target_flags(ld, int(sh["sh_info"][i])) & SHF_EXECINSTR:
            continue
        num = int(sh["sh_size"][i]) // ELF64_RELA.itemsize
        start = int(sh["sh_offset"][i])
        relas = np.frombuffer(ld.buf, dtype=ELF64_RELA, count=num, offset=start)
        rtype = relas["r_info"] & np.uint64(0xFFFFFFFF)
        for wanted in (R_RISCV_CALL_PLT, R_RISCV_GOT_HI20):
            sel = relas[rtype == np.uint64(wanted)]
            if not len(sel):
                continue
            pairs = np.stack([sel["r_info"], sel["r_addend"].view(np.uint64)], axis=1)
            unique = len(np.unique(pairs, axis=0))
            if wanted == R_RISCV_CALL_PLT:
                plts += unique
            else:
                gots += unique
    return plts & 0xFFFFFFFF, gots & 0xFFFFFFFF


def _target_flags(ld: Any, info: int) -> int:
    """sechdrs[sh_info].sh_flags, read where the kernel reads it: past the section header
    table when sh_info is out of range (the file copy, or a fault beyond it)."""
    if info < ld.shnum:
        return int(ld.sechdrs["sh_flags"][info])
    shoff = int.from_bytes(ld.buf[0x28:0x30], "little")
    return ld.memory.read_u(ld.copy_base + shoff + info * 64 + 8, 8)


# ---- module_emit_got_entry / module_emit_plt_entry ---------------------------------------
def module_emit_got_entry(ld: Any, val: int) -> int:
    """The address of the GOT entry holding `val`: an existing one, or the next one."""
    got = ld.mod_arch.got
    base = ld.section_addr(got.index)
    found = got.by_value.get(val)
    if found is not None:
        return int(base + found * GOT_ENTRY_SIZE)
    i = got.num_entries
    ld.memory.write(base + i * GOT_ENTRY_SIZE, val.to_bytes(8, "little"))
    got.by_value[val] = i
    got.num_entries += 1
    if got.num_entries > got.max_entries:
        raise KernelBug(base + i * GOT_ENTRY_SIZE,
                        f"module_emit_got_entry: entry {got.num_entries} of {got.max_entries} counted "
                        f"(BUG_ON in arch/riscv/kernel/module-sections.c)")
    return int(base + i * GOT_ENTRY_SIZE)


def module_emit_plt_entry(ld: Any, val: int) -> int:
    """The address of the PLT entry jumping to `val`: an existing one (found through the
    .got.plt slot holding `val`), or the next entry with its own .got.plt slot."""
    plt, got_plt = ld.mod_arch.plt, ld.mod_arch.got_plt
    plt_base, got_plt_base = ld.section_addr(plt.index), ld.section_addr(got_plt.index)
    found = got_plt.by_value.get(val)
    if found is not None:
        return int(plt_base + found * PLT_ENTRY_SIZE)
    i = plt.num_entries
    slot, entry = got_plt_base + i * GOT_ENTRY_SIZE, plt_base + i * PLT_ENTRY_SIZE
    ld.memory.write(slot, val.to_bytes(8, "little"))
    ld.memory.write(entry, plt_entry_bytes(entry, slot))
    got_plt.by_value[val] = i
    plt.num_entries += 1
    got_plt.num_entries += 1
    if plt.num_entries > plt.max_entries:
        raise KernelBug(entry, f"module_emit_plt_entry: entry {plt.num_entries} of {plt.max_entries} counted "
                               f"(BUG_ON in arch/riscv/kernel/module-sections.c)")
    return int(entry)


def emitted_ranges(ld: Any) -> list[tuple[int, int]]:
    """[start, end) of the PLT/GOT sections, which relocations must not overlap for the bulk path."""
    mod: ModArch | None = getattr(ld, "mod_arch", None)
    if mod is None:
        return []
    out = []
    for sec in (mod.got, mod.plt, mod.got_plt):
        start = ld.section_addr(sec.index)
        out.append((start, start + int(ld.sechdrs["sh_size"][sec.index])))
    return out
