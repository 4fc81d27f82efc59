"""i386 for the emulator: the kernel's calling convention (spec §8.1), Debian's 686 memory map.

The kernel is built with -mregparm=3: a kernel function takes its first three integer
arguments in eax, edx, ecx, the rest on the stack above the return address `call` pushed;
the result is in eax. Variadic functions take every argument on the stack (regparm does not
apply to them, and `_printk` is asmlinkage too); a 64-bit argument takes two stack slots,
low word first.

Addresses (VMSPLIT_3G, HIGHMEM, no PAE; see reference/arch/i386.py for the module area):
the kernel image starts at PAGE_OFFSET + CONFIG_PHYSICAL_START = 0xc1000000 (booted with
nokaslr), so kernel text is a range above PAGE_OFFSET; PAGE_OFFSET itself is no symbol's
address and serves as the return trap. The stack and kmalloc memory are lowmem (the direct
map below high_memory 0xf6ffe000): 32-bit x86 has no vmapped stacks, THREAD_SIZE is 8 KiB.
"""
from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_32
from unicorn import x86_const as x86

from ..emulator import EmuArch
from ..kernel_functions import x86_functions

GPRS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")
REGISTERS = {name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in GPRS}
PAGE_OFFSET = 0xC0000000

EMU = EmuArch(
    name="i386",
    uc_arch=UC_ARCH_X86,
    uc_mode=UC_MODE_32,
    word=4,
    pc=x86.UC_X86_REG_EIP,
    sp=x86.UC_X86_REG_ESP,
    ret=x86.UC_X86_REG_EAX,
    args=tuple(REGISTERS[r] for r in ("eax", "edx", "ecx")),
    variadic_args=(),
    link=None,
    registers=REGISTERS,
    # PAGE_OFFSET up to 128 MiB above it: the 16 MiB below the image and the image itself
    # (the 686 kernel's exports lie in [0xc1000d00, 0xc1ee50b0]).
    kernel_text=(PAGE_OFFSET, PAGE_OFFSET + 0x7FFFFFF),
    return_trap=PAGE_OFFSET,
    stack_top=0xF1002000,
    stack_size=0x2000,
    heap_base=0xF0000000,
    heap_size=8 << 20,
    trap_fill=b"\xcc",                         # int3
    initial={x86.UC_X86_REG_EFLAGS: 0x202},    # interrupts enabled, as in a syscall's task
    exceptions={0: "divide error (#DE)", 1: "debug (#DB)", 3: "breakpoint (int3)", 4: "overflow (#OF)",
                5: "bound range exceeded (#BR)", 6: "invalid opcode (#UD)", 13: "general protection (#GP)",
                14: "page fault (#PF)", 17: "alignment check (#AC)"},
    # __x86_indirect_thunk_<reg> for the eight registers (arch/x86/lib/retpoline.S; the 686 kernel
    # exports all eight, esp included), __fentry__ (-mfentry with DYNAMIC_FTRACE), and
    # __x86_return_thunk, which the 686 kernel does not export (no RETHUNK).
    functions=x86_functions(GPRS),
)
