"""32-bit arm init/exit in the emulator (reference/arch/arm_emu.py): AAPCS arguments and returns,
__gnu_mcount_nc as the 6.1 kernel's (DYNAMIC_FTRACE), Thumb-2 code, faults.

Modules are built by tools/kbuild.py for the linux-6.1 arm profile (so C functions start with
`push {lr}; bl __gnu_mcount_nc`), against a small environment given here.
"""
from __future__ import annotations

from koconform.conformance.model import Environment, KernelSymbol, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader
from koconform.tools import kbuild

# Debian 6.1.0-50-armmp (System.map): the functions these modules call.
SYMBOLS = {"_printk": 0xC0D227C4, "__gnu_mcount_nc": 0xC0312A2C, "__aeabi_unwind_cpp_pr0": 0xC031385C,
           "__aeabi_unwind_cpp_pr1": 0xC03139D0, "__aeabi_unwind_cpp_pr2": 0xC03139CC, "memset": 0xC0CF8880}
PRELUDE = "int _printk(const char *fmt, ...);\n"
SECTIONS = ('static int __attribute__((section(".init.text"))) koc_init(void)\n{{\n{init}\n}}\n'
            'static void __attribute__((section(".exit.text"))) koc_exit(void)\n{{\n{exit}\n}}\n'
            'int init_module(void) __attribute__((alias("koc_init")));\n'
            'void cleanup_module(void) __attribute__((alias("koc_exit")));\n')


def _run(sources: list[dict[str, str]], core: int = 0xBF000000, **config: bool) -> Result:
    profile = load_profile("linux-6.1", "arm", config)
    env = Environment(symbols={n: KernelSymbol(n, a) for n, a in SYMBOLS.items()},
                      regions={"core": core, "copy": 0xF0800000})
    recipe = kbuild.Recipe.from_doc({"module": "koc", "sources": sources, "versions": "none"})
    ko = kbuild.build(recipe, profile, env)
    return loader.load(Request(ko, "arm", profile, env))


def _c(init: str, exit_: str = '_printk("\\0016Bye module!\\n");', extra: str = "") -> list[dict[str, str]]:
    return [{"file": "c.c", "text": PRELUDE + extra + SECTIONS.format(init=init, exit=exit_)}]


def _module_lines(result: Result) -> list[str]:
    return [f"<{r.level}>{r.text}" for r in result.log if r.source == "module"]


def test_hello() -> None:
    result = _run(_c('_printk("\\0016Hi module!\\n"); return 0;'))
    assert result.status == "loaded", result.detail
    assert _module_lines(result) == ["<6>Hi module!"]
    assert result.init_return == 0
    assert [r.text for r in result.exit_log or []] == ["Bye module!"]


def test_hello_from_vmalloc_through_plts() -> None:
    # Out of bl range of the kernel: every call goes through a .plt or .init.plt entry (ldr pc, [pc, #56]).
    result = _run(_c('_printk("\\0016Hi module!\\n"); return 0;'), core=0xE0000000)
    assert result.status == "loaded", result.detail
    assert _module_lines(result) == ["<6>Hi module!"]
    assert [r.text for r in result.exit_log or []] == ["Bye module!"]


def test_gnu_mcount_nc_pops_the_pushed_lr() -> None:
    # entry-ftrace.S (DYNAMIC_FTRACE): back to the caller with lr = the word it pushed, that word popped.
    # init returns (sp - saved sp) | (lr - pushed value): 0 only if both hold.
    asm = ("\t.text\n\t.globl\tinit_module\n\t.type\tinit_module, %function\ninit_module:\n"
           "\tpush\t{r4, r5, lr}\n\tmov\tr4, sp\n\tmovw\tr5, #0xabcd\n\tmovt\tr5, #0x1234\n\tmov\tlr, r5\n"
           "\tpush\t{lr}\n\tbl\t__gnu_mcount_nc\n\tsub\tr0, sp, r4\n\tsub\tr1, lr, r5\n\torr\tr0, r0, r1\n"
           "\tpop\t{r4, r5, pc}\n")
    result = _run([{"file": "m.S", "text": asm}])
    assert result.status == "loaded", result.detail
    assert result.init_return == 0


def test_variadic_64_bit_arguments_take_even_slots() -> None:
    # AAPCS: "%lld" alone: fmt in r0, the long long in r2:r3 (r1 skipped); "%d %d %lld %d": r1, r2, then the
    # long long on the stack at slot 0-1 (r3 skipped), the last int at slot 2.
    result = _run(_c('_printk("\\0016%lld\\n", -5ll); _printk("\\0016%d %d %lld %d\\n", 1, 2, 0x100000003ll, 4); '
                     'return 0;'))
    assert result.status == "loaded", result.detail
    assert _module_lines(result) == ["<6>-5", "<6>1 2 4294967299 4"]


def test_thumb2_module_runs_in_thumb_state() -> None:
    # Built -mthumb for a THUMB2_KERNEL; init_module's address has bit 0 set, the calls return to Thumb code.
    result = _run(_c('_printk("\\0016thumb %d\\n", 42); return 0;'), core=0xBF800000, CONFIG_THUMB2_KERNEL=True)
    assert result.status == "loaded", result.detail
    assert _module_lines(result) == ["<6>thumb 42"]
    assert [r.text for r in result.exit_log or []] == ["Bye module!"]


def test_static_data_and_a_local_call() -> None:
    extra = ("static const int koc_ro[2] = {30, 12}; static int koc_bss[4];\n"
             "static int __attribute__((noinline)) koc_add(int a, int b) { return a + b; }\n")
    result = _run(_c('koc_bss[1] = koc_add(koc_ro[0], koc_ro[1]); _printk("\\0016%d\\n", koc_bss[1]); return 0;',
                     extra=extra))
    assert result.status == "loaded", result.detail
    assert _module_lines(result) == ["<6>42"]


def test_null_dereference_faults_at_zero() -> None:
    result = _run(_c("return *koc_null;", extra="int * volatile koc_null;\n"))
    assert (result.status, result.phase) == ("faulted", "init")
    assert result.fault is not None and (result.fault.kind, result.fault.address) == ("read-fault", 0)


def test_undefined_instruction_faults() -> None:
    asm = "\t.text\n\t.globl\tinit_module\n\t.type\tinit_module, %function\ninit_module:\n\t.word\t0xe7f000f0\n"
    result = _run([{"file": "u.S", "text": asm}])
    assert (result.status, result.phase) == ("faulted", "init")
    assert result.fault is not None and result.fault.kind == "invalid-instruction"
