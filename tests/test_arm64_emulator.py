"""arm64 init and exit in the emulator: modules built in-process with tools/kbuild.py for the
arm64 profile, loaded by the reference loader, run by run_init_and_exit. Expected texts by hand."""
from __future__ import annotations

import dataclasses
import struct

from elfbuild import SHF_ALLOC, SHF_EXECINSTR, STB_LOCAL, STT_SECTION, Section, Symbol
from koconform.conformance.model import Environment, Request, Result
from koconform.conformance.profiles import default_environment
from koconform.reference import init, loader
from koconform.reference.arch import arm64_emu
from koconform.tools import kbuild
from test_arm64_relocations import CORE, PROFILE, _env, _module

ENV = default_environment("linux-6.1", "arm64")
PRINTK = ENV.symbols["_printk"].address
HELLO = r"""int _printk(const char *fmt, ...);
static int __attribute__((section(".init.text"))) m_init(void) { _printk("\0016Hi module!\n"); return 0; }
static void __attribute__((section(".exit.text"))) m_exit(void) { _printk("\0016Bye module!\n"); }
int init_module(void) __attribute__((alias("m_init")));
void cleanup_module(void) __attribute__((alias("m_exit")));
"""


def load_and_run(source: str, env: Environment = ENV) -> tuple[Result, loader.Load]:
    recipe = kbuild.Recipe.from_doc({"module": "m", "sources": [{"file": "m.c", "text": source}]})
    ko = kbuild.build(recipe, PROFILE, env)
    ld = loader.Load(Request(ko, "arm64", PROFILE, env, run_init=False))
    for stage in ("copy_and_check", "layout_and_allocate", "after_layout", "simplify_symbols", "apply_relocations"):
        getattr(ld, stage)()
    result = Result("loaded", regions=dict(ld.regions), log=ld.log)
    return init.run_init_and_exit(ld, result), ld


def module_log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log if r.source == "module"]


def test_record() -> None:
    """x0-x7 arguments, x0 result, lr link; the return trap is _text, inside kernel text."""
    emu = arm64_emu.EMU
    assert emu.link is not None and len(emu.args) == 8
    lo, hi = emu.kernel_text
    assert lo <= emu.return_trap <= hi and lo <= PRINTK <= hi
    assert emu.return_trap not in {s.address for s in ENV.symbols.values()}


def test_hello() -> None:
    result, _ = load_and_run(HELLO)
    assert result.status == "loaded" and result.init_return == 0
    assert module_log(result) == [(6, "Hi module!")]
    assert result.exit_log is not None and [(r.level, r.text) for r in result.exit_log] == [(6, "Bye module!")]


def test_hello_through_plt() -> None:
    """Module window at MODULES_VADDR, 140 MiB below _printk: both calls go through PLT entries
    (adrp x16 / add x16 / br x16), which the emulated code follows into the kernel-function trap."""
    env = dataclasses.replace(ENV, regions={**ENV.regions, "core": 0xFFFF800000000000})
    result, ld = load_and_run(HELLO, env)
    assert module_log(result) == [(6, "Hi module!")]
    assert result.exit_log is not None and [(r.level, r.text) for r in result.exit_log] == [(6, "Bye module!")]
    init_plt = int(ld.sechdrs[ld.find_sec(".init.plt")]["sh_addr"])
    words = struct.unpack("<3I", ld.memory.read(init_plt, 12))
    assert words[1:] == (0x91000210 | (PRINTK & 0xFFF) << 10, 0xD61F0200)


def test_variadic_arguments_past_x7_come_from_the_stack() -> None:
    """Ten integer arguments after the format: x1-x7 carry seven, the stack the other three."""
    source = r"""int _printk(const char *fmt, ...);
static int __attribute__((section(".init.text"))) m_init(void)
{ _printk("\0016%d %d %d %d %d %d %d %d %d %d\n", 1, 2, 3, 4, 5, 6, 7, 8, 9, -10); return 3; }
int init_module(void) __attribute__((alias("m_init")));
"""
    result, _ = load_and_run(source)
    assert module_log(result) == [(6, "1 2 3 4 5 6 7 8 9 -10")]
    assert result.init_return == 3


def test_brk_is_a_cpu_exception() -> None:
    """init = brk #0x100 (0xd4202000): a breakpoint exception, the load faults in init."""
    text = struct.pack("<I", 0xD4202000) + bytes(12)
    syms = [Symbol("", ".text", bind=STB_LOCAL, kind=STT_SECTION), Symbol("", ".data", bind=STB_LOCAL,
            kind=STT_SECTION), Symbol("ksym"), Symbol("ksym2"), Symbol("init_module", ".init.text")]
    init_text = Section(".init.text", SHF_ALLOC | SHF_EXECINSTR, text, align=4)
    ko = bytearray(_module({}, extra=[init_text], symbols=syms))
    ld = loader.Load(Request(bytes(ko), "arm64", PROFILE, _env(), run_init=False))
    for stage in ("copy_and_check", "layout_and_allocate", "after_layout", "simplify_symbols", "apply_relocations"):
        getattr(ld, stage)()
    base = int(ld.sechdrs[ld.find_sec(".init.text")]["sh_addr"])
    emu = init.Emulator(arm64_emu.EMU, 0x1000, init.module_areas(ld), {}, 1000)
    outcome = emu.call(base)
    assert outcome.fault is not None and outcome.fault.kind == "cpu-exception"
    assert outcome.fault.detail == "breakpoint (brk)" and outcome.fault.address == base
    assert CORE <= base
