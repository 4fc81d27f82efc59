"""x86_64 for the emulator: SysV calling convention, as the kernel is built (spec §8.1).

Arguments in rdi, rsi, rdx, rcx, r8, r9, then on the stack above the return address that
`call` pushes; the result in rax (init's int in eax). Module memory is near the top of
the address space (MODULES_VADDR 0xffffffffc0000000 with RANDOMIZE_BASE), kernel text
below it in the 1 GiB image range that starts at __START_KERNEL_map; the stack is a
16 KiB vmalloc'ed one (THREAD_SIZE without KASAN) and kmalloc memory is in the direct map.
"""
from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_64
from unicorn import x86_const as x86

from ..emulator import EmuArch
from ..kernel_functions import x86_functions

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
REGISTERS = {name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in GPRS}

EMU = EmuArch(
    name="x86_64",
    uc_arch=UC_ARCH_X86,
    uc_mode=UC_MODE_64,
    word=8,
    pc=x86.UC_X86_REG_RIP,
    sp=x86.UC_X86_REG_RSP,
    ret=x86.UC_X86_REG_RAX,
    args=tuple(REGISTERS[r] for r in ("rdi", "rsi", "rdx", "rcx", "r8", "r9")),
    link=None,
    registers=REGISTERS,
    kernel_text=(0xFFFFFFFF80000000, 0xFFFFFFFFBFFFFFFF),
    return_trap=0xFFFFFFFF80000000,          # __START_KERNEL_map: the image starts 16 MiB above
    stack_top=0xFFFFC90000C04000,
    stack_size=0x4000,
    heap_base=0xFFFF888100000000,
    heap_size=8 << 20,
    trap_fill=b"\xcc",                         # int3
    initial={x86.UC_X86_REG_EFLAGS: 0x202},    # interrupts enabled, as in a syscall's task
    exceptions={0: "divide error (#DE)", 1: "debug (#DB)", 3: "breakpoint (int3)", 4: "overflow (#OF)",
                5: "bound range exceeded (#BR)", 6: "invalid opcode (#UD)", 13: "general protection (#GP)",
                14: "page fault (#PF)", 17: "alignment check (#AC)"},
    functions=x86_functions(r for r in GPRS),
)
