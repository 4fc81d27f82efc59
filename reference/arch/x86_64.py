"""x86_64, as Linux 6.1 applies RELA relocations (arch/x86/kernel/module.c, __apply_relocate_add).

6.1 specifics (spec §5.2): every type but NONE refuses a place that is not all zero
("Skipping invalid relocation target", the load fails); 32 and 32S are checked for
overflow *after* the value is written; the PC32/PLT32 overflow check is compiled out,
so a displacement beyond ±2 GiB is written truncated and the module loads.
"""
from __future__ import annotations

from ..elf import ELF64
from . import Arch, RelocType, signed, unsigned

EM_X86_64 = 62
_CITE = "arch/x86/kernel/module.c: __apply_relocate_add (6.1)"

RELOCATIONS = {r.number: r for r in (
    RelocType(0, "R_X86_64_NONE", "none", 0, cite=_CITE),
    RelocType(1, "R_X86_64_64", "S+A", 8, zero_target=True, cite=_CITE),
    RelocType(2, "R_X86_64_PC32", "S+A-P", 4, zero_target=True,
              unchecked_range=signed(32), cite=_CITE + " (overflow check under #if 0)"),
    RelocType(4, "R_X86_64_PLT32", "S+A-P", 4, zero_target=True,
              unchecked_range=signed(32), cite=_CITE + " (overflow check under #if 0)"),
    RelocType(10, "R_X86_64_32", "S+A", 4, check=unsigned(32), check_after_write=True,
              zero_target=True, cite=_CITE),
    RelocType(11, "R_X86_64_32S", "S+A", 4, check=signed(32), check_after_write=True,
              zero_target=True, cite=_CITE),
    RelocType(24, "R_X86_64_PC64", "S+A-P", 8, zero_target=True, cite=_CITE),
)}

# pr_fmt of arch/x86/kernel/module.c is KBUILD_MODNAME ": " = "module: ".
MESSAGES = {
    "unknown": (3, "module: %s: Unknown rela relocation: %llu\n"),
    "nonzero": (3, "module: x86/modules: Skipping invalid relocation target, "
                   "existing value is nonzero for type %d, loc %p, val %Lx\n"),
    "overflow": (3, "module: overflow in relocation type %d val %Lx\n"),
    "overflow_hint": (3, "module: `%s' likely not compiled with -mcmodel=kernel\n"),
}

ARCH = Arch(
    name="x86_64",
    e_machine=EM_X86_64,
    elf=ELF64,
    rela=True,
    relocations=RELOCATIONS,
    ignore_undefined=frozenset({"_GLOBAL_OFFSET_TABLE_"}),
    messages=MESSAGES,
    # arch/x86/include/asm/pgtable_64_types.h with RANDOMIZE_BASE (1 GiB kernel image).
    modules_vaddr=0xFFFFFFFFC0000000,
    modules_end=0xFFFFFFFFFF000000,
)
