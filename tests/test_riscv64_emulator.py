"""init and exit of riscv64 modules run in the emulator (spec §6.2, §6.3, §8.1): modules built
in-process with tools/kbuild.py for the stated riscv64 profile, loaded by the reference loader's
stages, then run_init_and_exit. Expected texts are written by hand.

What is riscv64-specific: LP64 (arguments in a0-a7, variadic ones too, the rest on the stack;
the result in a0), `jal`/`jalr` leaving the return address in ra (a kernel function returns to
it), calls as auipc+jalr pairs (R_RISCV_CALL_PLT), and, for a module placed beyond the AUIPC
reach of the kernel, calls through the module PLT (auipc t0 / ld t1 / jr t1) that must still land
on the kernel function's trap.

The environment is this file's own (kernel addresses inside the stated image,
0xffffffff80000000.._end), so the tests do not depend on the derived default environment.
"""
from __future__ import annotations

from koconform.conformance.model import (
    Environment,
    KernelSymbol,
    LogRecord,
    Request,
    Result,
)
from koconform.conformance.profiles import load_profile
from koconform.reference import init, loader
from koconform.reference.arch.riscv64 import KERNEL_END, KERNEL_LINK_ADDR, MODULES_VADDR
from koconform.reference.arch.riscv64_emu import EMU
from koconform.tools import kbuild

PROFILE = load_profile("linux-6.1", "riscv64")
KERNEL = {"_printk": 0xFFFFFFFF80CC767C, "memset": 0xFFFFFFFF80C9B200, "memcpy": 0xFFFFFFFF80C9B090,
          "strlen": 0xFFFFFFFF80C9C000, "snprintf": 0xFFFFFFFF80CC1000, "kfree": 0xFFFFFFFF80300200,
          "__kmalloc": 0xFFFFFFFF80300100, "kmalloc_caches": 0xFFFFFFFF8111D4B0}
NEAR = {"core": MODULES_VADDR, "copy": 0xFFFFFFC800000000}
# 6 GiB below the kernel: no auipc reaches it, so every call to the kernel goes through the PLT.
FAR = {"core": 0xFFFFFFFE00000000, "init": 0xFFFFFFFE00100000, "copy": 0xFFFFFFC800000000}
PRELUDE = """int _printk(const char *fmt, ...);
#define __init __attribute__((section(".init.text")))
#define __exit __attribute__((section(".exit.text")))
#define noinline __attribute__((noinline))
"""
STAGES = ("copy_and_check", "layout_and_allocate", "after_layout", "simplify_symbols", "apply_relocations")


def env(regions: dict[str, int]) -> Environment:
    return Environment(symbols={n: KernelSymbol(n, a) for n, a in KERNEL.items()}, regions=dict(regions))


def build_and_load(body: str, regions: dict[str, int] = NEAR, init_fn: str | None = "m_init",
                   exit_fn: str | None = "m_exit") -> loader.Load:
    text = PRELUDE + body
    if init_fn:
        text += f'int init_module(void) __attribute__((alias("{init_fn}")));\n'
    if exit_fn:
        text += f'void cleanup_module(void) __attribute__((alias("{exit_fn}")));\n'
    recipe = kbuild.Recipe.from_doc({"module": "m", "sources": [{"file": "m.c", "text": text}]})
    e = env(regions)
    ko = kbuild.build(recipe, PROFILE, e)
    ld = loader.Load(Request(ko, "riscv64", PROFILE, e, run_init=False))
    for stage in STAGES:
        getattr(ld, stage)()
    return ld


def run(body: str, regions: dict[str, int] = NEAR, budget: int = 1_000_000,
        **entries: str | None) -> tuple[Result, loader.Load]:
    ld = build_and_load(body, regions, **entries)
    result = Result("loaded", regions=dict(ld.regions), log=ld.log)
    return init.run_init_and_exit(ld, result, budget), ld


HELLO = """static int __init m_init(void) { _printk("\\0016Hi module!\\n"); return 0; }
static void __exit m_exit(void) { _printk("\\0016Bye module!\\n"); }
"""


def module_records(records: list[LogRecord]) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in records if r.source == "module"]


def test_the_record() -> None:
    """LP64: a0-a7, result a0, return address in ra; the trap is ebreak; the kernel range is the
    stated image (KERNEL_LINK_ADDR up to _end), which no module address reaches."""
    regs = EMU.registers
    assert EMU.args == tuple(regs[f"a{k}"] for k in range(8)) and EMU.ret == regs["a0"]
    assert EMU.link == regs["ra"] and EMU.sp == regs["sp"] and EMU.word == 8
    assert EMU.kernel_text == (KERNEL_LINK_ADDR, KERNEL_END - 1) and EMU.return_trap == KERNEL_LINK_ADDR
    assert EMU.trap_fill == bytes.fromhex("73001000")         # ebreak = 0x00100073
    assert MODULES_VADDR + (1 << 31) == KERNEL_END


def test_hello() -> None:
    result, _ = run(HELLO)
    assert result.init_return == 0
    assert module_records(result.log) == [(6, "Hi module!")]
    assert result.exit_log is not None and module_records(result.exit_log) == [(6, "Bye module!")]


def test_hello_through_the_plt() -> None:
    """The module 6 GiB below the kernel: both calls to _printk get a PLT entry, whose auipc/ld/jr
    reach the trap at _printk's address."""
    result, ld = run(HELLO, FAR)
    assert result.init_return == 0, result.fault
    assert module_records(result.log) == [(6, "Hi module!")]
    assert result.exit_log is not None and module_records(result.exit_log) == [(6, "Bye module!")]
    # one PLT entry per relocation section that calls it (.init.text and .exit.text: counted twice,
    # the second call finds the first entry): entry 0 in use, its .got.plt slot holds _printk.
    assert ld.mod_arch.plt.num_entries == 1 and ld.mod_arch.plt.max_entries == 2
    slot = ld.memory.read(ld.section_addr(ld.find_sec(".got.plt")), 8)
    assert int.from_bytes(slot, "little") == KERNEL["_printk"]


def test_arguments_in_registers_and_on_the_stack() -> None:
    """Ten printk arguments after the format: a1-a7 take the first seven, the stack the rest."""
    body = """static int __init m_init(void) {
    _printk("\\0016%d %d %d %d %d %d %d %d %d %ld\\n", 1, 2, 3, 4, 5, 6, 7, 8, -9, -10000000000L);
    return 0; }
static void __exit m_exit(void) { }
"""
    result, _ = run(body)
    assert module_records(result.log) == [(6, "1 2 3 4 5 6 7 8 -9 -10000000000")]


def test_init_return_value() -> None:
    body = """static noinline int helper(int x) { return x * 3; }
static int __init m_init(void) { return helper(-4) + 11; }
static void __exit m_exit(void) { }
"""
    result, _ = run(body)
    assert (result.status, result.errno, result.phase, result.init_return) == ("rejected", "EPERM", "init", -1)     # -4 * 3 + 11


def test_data_and_rodata() -> None:
    body = """static int counter = 5;
static const char msg[] = "count";
static int __init m_init(void) { counter += 2; _printk("\\0016%s=%d\\n", msg, counter); return 0; }
static void __exit m_exit(void) { _printk("\\0016%s=%d\\n", msg, counter * 10); }
"""
    result, _ = run(body)
    assert module_records(result.log) == [(6, "count=7")]
    assert result.exit_log is not None and module_records(result.exit_log) == [(6, "count=70")]


def test_null_dereference_faults() -> None:
    body = """static int __init m_init(void) { return *(volatile int *)0; }
static void __exit m_exit(void) { }
"""
    result, _ = run(body)
    assert result.status == "faulted" and result.fault is not None
    assert (result.fault.phase, result.fault.kind, result.fault.address) == ("init", "read-fault", 0)


def test_ebreak_and_illegal_instruction_fault() -> None:
    """ebreak (the kernel's BUG() instruction: an oops without a bug table entry) stops init; so
    does an all-zero word, the RISC-V illegal instruction (mcause 2). unicorn reports ebreak as an
    invalid instruction and the zero word as exception 2."""
    body = """static int __init m_init(void) { __asm__ volatile("ebreak"); return 0; }
static void __exit m_exit(void) { }
"""
    result, _ = run(body)
    assert result.status == "faulted" and result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("init", "invalid-instruction")
    body = """static int __init m_init(void) { __asm__ volatile(".word 0"); return 0; }
static void __exit m_exit(void) { }
"""
    result, ld = run(body)
    assert result.status == "faulted" and result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("init", "cpu-exception")
    assert result.fault.address is not None and ld.regions["init"][0] <= result.fault.address
