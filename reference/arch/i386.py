"""i386, as Linux 6.1 applies REL relocations (arch/x86/kernel/module.c, apply_relocate under
CONFIG_X86_32; spec §5.2).

Three types and nothing else: R_386_32 adds S to the 32-bit word at P, R_386_PC32 and
R_386_PLT32 add S - P to it. The addend is that word (REL), so the place need not be zero;
there is no overflow check (32-bit arithmetic wraps, and every value fits the field).
R_386_NONE is not among them: like any other type it stops the section with
"%s: Unknown relocation: %u" and -ENOEXEC. A RELA section reaches the RELA stub of
include/linux/moduleloader.h (no CONFIG_MODULES_USE_ELF_RELA on X86_32), whose message
says "REL relocation unsupported" (reference/loader.py apply_relocations).

Table-driven: the generic bulk path of reference/relocate.py reads REL addends from the
place and writes the 32-bit sum, which is all this apply_relocate does.
"""
from __future__ import annotations

from ..elf import ELF32
from . import Arch, RelocType, signed, unsigned

EM_386 = 3
EM_486 = 6      # asm/elf.h elf_check_arch_ia32: a 32-bit x86 kernel accepts EM_386 and EM_486
_CITE = "arch/x86/kernel/module.c: apply_relocate (CONFIG_X86_32, 6.1)"
# No check: S + A (- P) is computed modulo 2^32 and written as it is. `unchecked_range` is
# the range a static linker allows the true value (an address; a displacement), beyond
# which the kernel writes the wrapped value where ld.lld reports an overflow.

RELOCATIONS = {r.number: r for r in (
    RelocType(1, "R_386_32", "S+A", 4, unchecked_range=unsigned(32), cite=_CITE + " (*location += S)"),
    RelocType(2, "R_386_PC32", "S+A-P", 4, unchecked_range=signed(32), cite=_CITE + " (*location += S - P)"),
    RelocType(4, "R_386_PLT32", "S+A-P", 4, unchecked_range=signed(32),
              cite=_CITE + " (same case as R_386_PC32: no PLT in a module)"),
)}

# pr_fmt of arch/x86/kernel/module.c is KBUILD_MODNAME ": " = "module: ", on 32-bit too.
MESSAGES = {
    "unknown": (3, "module: %s: Unknown relocation: %u\n"),
}

# Where module memory lives (arch/x86/include/asm/pgtable_32_areas.h): MODULES_VADDR is
# VMALLOC_START = high_memory + 8 MiB and MODULES_END is VMALLOC_END = PKMAP_BASE - 2 pages
# (HIGHMEM). Debian's 686 kernel: VMSPLIT_3G (PAGE_OFFSET 0xc0000000), no PAE (4 MiB PMDs);
# the fixmap, cpu_entry_area and LDT ranges below 4 GiB round PKMAP_BASE down to 0xff000000,
# so VMALLOC_END = 0xfeffe000. With more RAM than lowmem holds (over ~880 MiB), lowmem ends at
# MAXMEM = VMALLOC_END - PAGE_OFFSET - __VMALLOC_RESERVE (128 MiB): high_memory = 0xf6ffe000,
# and VMALLOC_START = 0xf77fe000. (The kernel's MODULES_LEN is MODULES_VADDR - MODULES_END,
# which wraps; module_alloc's size check is thus no limit, the vmalloc range is.)
MODULES_VADDR = 0xF77FE000
MODULES_END = 0xFEFFE000

ARCH = Arch(
    name="i386",
    e_machine=EM_386,
    elf=ELF32,
    rela=False,
    relocations=RELOCATIONS,
    also_machines=frozenset({EM_486}),
    messages=MESSAGES,
    modules_vaddr=MODULES_VADDR,
    modules_end=MODULES_END,
)
