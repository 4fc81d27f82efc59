"""riscv64 for the emulator: the kernel's calling convention (LP64, spec §8.1) and the stated
Sv39 memory map of conformance/profiles/linux-6.1/riscv64.yaml.

A kernel function takes its integer arguments in a0-a7 (variadic ones too: LP64 passes them
in the integer registers), then on the stack at sp; the result is in a0; `jal`/`jalr` leave
the return address in ra, where the kernel function returns to. init and exit are entered
with ra = the return trap.

Addresses (Documentation/riscv/vm-layout.rst of 6.1, Sv39): the kernel is linked at
KERNEL_LINK_ADDR = 0xffffffff80000000 (its first page, head.S's _start, is no exported
function and serves as the return trap) and ends at _end (reference/arch/riscv64.py);
modules live in the 2 GiB below _end. The stack is a vmapped THREAD_SIZE (16 KiB on 64-bit
without KASAN) in the vmalloc area (0xffffffc800000000..), kmalloc memory is in the direct map
(PAGE_OFFSET = 0xffffffd800000000).
"""
from __future__ import annotations

from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV64
from unicorn import riscv_const as rv

from ..emulator import EmuArch
from .riscv64 import KERNEL_END, KERNEL_LINK_ADDR

ABI_NAMES = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
             "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6")
REGISTERS = {name: getattr(rv, f"UC_RISCV_REG_X{k}") for k, name in enumerate(ABI_NAMES)}

EMU = EmuArch(
    name="riscv64",
    uc_arch=UC_ARCH_RISCV,
    uc_mode=UC_MODE_RISCV64,
    word=8,
    pc=rv.UC_RISCV_REG_PC,
    sp=REGISTERS["sp"],
    ret=REGISTERS["a0"],
    args=tuple(REGISTERS[f"a{k}"] for k in range(8)),
    link=REGISTERS["ra"],
    registers=REGISTERS,
    kernel_text=(KERNEL_LINK_ADDR, KERNEL_END - 1),
    return_trap=KERNEL_LINK_ADDR,
    stack_top=0xFFFFFFC800C04000,
    stack_size=0x4000,
    heap_base=0xFFFFFFD801000000,
    heap_size=8 << 20,
    trap_fill=(0x00100073).to_bytes(4, "little"),          # ebreak
    # The privileged spec's exception causes (mcause), as unicorn reports them.
    exceptions={0: "instruction address misaligned", 1: "instruction access fault", 2: "illegal instruction",
                3: "breakpoint (ebreak)", 4: "load address misaligned", 5: "load access fault",
                6: "store/AMO address misaligned", 7: "store/AMO access fault", 8: "environment call from U-mode",
                9: "environment call from S-mode", 11: "environment call from M-mode",
                12: "instruction page fault", 13: "load page fault", 15: "store/AMO page fault"},
)
