"""arm64 for the emulator: AAPCS64 as the kernel is built (spec §8.1).

Arguments in x0-x7 (variadic ones too: Linux's AAPCS64 passes them like named ones), then on
the stack at sp; the result in x0 (init's int in w0); `bl` leaves the return address in x30
(lr), so init and exit return by `ret` to a trap address put in lr. A module that calls the
kernel through a module PLT (`adrp x16; add x16; br x16`, arch/arm64/kernel/module-plts.c)
arrives at the function's address in kernel text like a direct `bl`, with lr still the caller's.

Addresses are Debian's 6.1.0-56-arm64 booted with nokaslr (System.map of the -dbg package):
the image at KIMAGE_VADDR = MODULES_END = 0xffff800008000000 (_text), kernel text up to _etext
0xffff800008d00000; the return trap is _text itself (the image header: no function starts
there). The task stack is a 16 KiB vmalloc'ed stack (THREAD_SIZE, 4 KiB pages, no KASAN) in the
vmalloc area above the image; kmalloc memory is in the linear map (PAGE_OFFSET 0xffff000000000000
for 48-bit VAs).
"""
from __future__ import annotations

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a64

from ..emulator import EmuArch

GPRS = tuple(f"x{n}" for n in range(29)) + ("x29", "x30")
REGISTERS = {name: getattr(a64, f"UC_ARM64_REG_{name.upper()}") for name in GPRS}
REGISTERS["sp"] = a64.UC_ARM64_REG_SP

KERNEL_TEXT = (0xFFFF800008000000, 0xFFFF800008CFFFFF)     # [_text, _etext)

EMU = EmuArch(
    name="arm64",
    uc_arch=UC_ARCH_ARM64,
    uc_mode=UC_MODE_ARM,
    word=8,
    pc=a64.UC_ARM64_REG_PC,
    sp=a64.UC_ARM64_REG_SP,
    ret=a64.UC_ARM64_REG_X0,
    args=tuple(REGISTERS[f"x{n}"] for n in range(8)),
    link=a64.UC_ARM64_REG_X30,
    registers={k: v for k, v in REGISTERS.items() if k != "sp"},
    kernel_text=KERNEL_TEXT,
    return_trap=KERNEL_TEXT[0],
    stack_top=0xFFFF80000C004000,
    stack_size=0x4000,
    heap_base=0xFFFF000100000000,
    heap_size=8 << 20,
    trap_fill=(0xD4202000).to_bytes(4, "little"),          # brk #0x100 (AARCH64_BREAK_FAULT)
    # unicorn's AArch64 exception numbers (QEMU's EXCP_*) as the hook sees them.
    exceptions={1: "undefined instruction (EXCP_UDEF)", 2: "svc (EXCP_SWI)", 3: "prefetch abort",
                4: "data abort", 7: "breakpoint (brk)", 11: "hvc (EXCP_HVC)", 13: "smc (EXCP_SMC)"},
)
