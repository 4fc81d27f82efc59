"""32-bit arm for the emulator: AAPCS as the kernel is built (spec §8.1), Debian's armmp memory map.

Arguments in r0-r3, then on the stack (sp at the call), variadic ones too; a 64-bit argument
takes an even/odd register pair or an 8-byte aligned stack slot. The result is in r0; `bl`
leaves the return address in lr, and a return to an address with bit 0 set is to Thumb code.
The CPU runs in SVC mode, ARM state (the Debian kernel is not THUMB2_KERNEL), IRQs enabled.

Addresses (VMSPLIT_3G, PAGE_OFFSET 0xc0000000, HIGHMEM, System.map of
linux-image-6.1.0-50-armmp-dbg): kernel text is [_text 0xc0208000, _etext 0xc0e00000); _text
itself is no exported function's address and serves as the return trap. Modules live at
MODULES_VADDR 0xbf000000, within 30 MiB of all kernel text. The task's stack is vmapped
(VMAP_STACK, THREAD_SIZE 8 KiB) in the vmalloc area above high_memory; kmalloc memory is
lowmem (the direct map), above the kernel image's end (_end 0xc1607588).

`__gnu_mcount_nc` (CONFIG_FUNCTION_TRACER, -pg): every function starts `push {lr}; bl
__gnu_mcount_nc`. With DYNAMIC_FTRACE, ftrace_module_init() would turn each `bl` listed in the
module's __mcount_loc into `add sp, sp, #4` after relocation, before init runs; kbuild's
recordmcount writes that section, tools/kbuild.py does not, so the calls stay and reach the
kernel's __gnu_mcount_nc (arch/arm/kernel/entry-ftrace.S, DYNAMIC_FTRACE with nothing traced):
it returns to its caller with lr restored from the word the caller pushed, and pops it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

from unicorn import UC_ARCH_ARM, UC_MODE_ARM
from unicorn import arm_const as arm

from ..emulator import EmuArch
from ..kernel_functions import Jump, KernelFunction, Machine, Outcome

if TYPE_CHECKING:
    from ..emulator import Emulator

GPRS = {f"r{n}": getattr(arm, f"UC_ARM_REG_R{n}") for n in range(13)}
REGISTERS = {**GPRS, "sp": arm.UC_ARM_REG_SP, "lr": arm.UC_ARM_REG_LR}
CPSR_SVC = 0x13                 # SVC mode, ARM state, IRQs and FIQs enabled, flags clear
UDF = (0xE7F000F0).to_bytes(4, "little")     # udf #0: the trap page's filler, never executed


def gnu_mcount_nc(m: Machine, a: list[int]) -> Outcome:
    """__gnu_mcount_nc with DYNAMIC_FTRACE: back to lr, lr = the word at sp, sp += 4."""
    emu = cast("Emulator", m)
    ret, sp = emu.register("lr"), emu.register("sp")
    saved = int.from_bytes(emu.memory.read(sp, 4), "little")
    emu.uc.reg_write(arm.UC_ARM_REG_LR, saved)
    emu.uc.reg_write(arm.UC_ARM_REG_SP, (sp + 4) & 0xFFFFFFFF)
    return Jump(ret)


EMU = EmuArch(
    name="arm",
    uc_arch=UC_ARCH_ARM,
    uc_mode=UC_MODE_ARM,
    word=4,
    pc=arm.UC_ARM_REG_PC,
    sp=arm.UC_ARM_REG_SP,
    ret=arm.UC_ARM_REG_R0,
    args=tuple(GPRS[r] for r in ("r0", "r1", "r2", "r3")),
    link=arm.UC_ARM_REG_LR,
    registers=REGISTERS,
    kernel_text=(0xC0208000, 0xC0DFFFFF),
    return_trap=0xC0208000,
    stack_top=0xF1002000,
    stack_size=0x2000,
    heap_base=0xC2000000,
    heap_size=8 << 20,
    trap_fill=UDF,
    initial={arm.UC_ARM_REG_CPSR: CPSR_SVC},
    # QEMU's EXCP_* numbers, as unicorn reports them.
    exceptions={1: "undefined instruction", 2: "supervisor call (svc)", 3: "prefetch abort",
                4: "data abort", 7: "breakpoint (bkpt)", 13: "secure monitor call (smc)"},
    functions={"__gnu_mcount_nc": KernelFunction("__gnu_mcount_nc", (), gnu_mcount_nc)},
    pair_align=True,
)
