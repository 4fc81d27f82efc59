"""init and exit of i386 modules run in the emulator (spec §6.2, §6.3, §8.1): modules built in-process
with tools/kbuild.py for the 686 profile, loaded by the reference loader's stages, then
run_init_and_exit. Expected texts are written by hand.

What is i386-specific: -mregparm=3 (a kernel function's first three arguments in eax, edx, ecx),
variadic functions (_printk, snprintf) with every argument on the stack, 64-bit printk
arguments in two stack slots, 32-bit pointers, 4-byte kmalloc_caches entries, and the
__x86_indirect_thunk_<reg> names of 32-bit registers.

The environment is this file's own (the addresses below, in the kernel image range above
0xc1000000), so the tests do not depend on the derived default environment.
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
from koconform.reference.arch.i386_emu import EMU
from koconform.tools import kbuild

PROFILE = load_profile("linux-6.1", "i386")
KERNEL = {"_printk": 0xC1A07E3D, "__fentry__": 0xC1076650, "memset": 0xC1700010, "memcpy": 0xC1700040,
          "strlen": 0xC1700080, "strcmp": 0xC17000C0, "snprintf": 0xC1701000, "kmalloc_trace": 0xC1300000,
          "__kmalloc": 0xC1300100, "kfree": 0xC1300200, "kmalloc_caches": 0xC2200000, "msleep": 0xC11549D0,
          **{f"__x86_indirect_thunk_{r}": 0xC1E01D00 + 0x20 * k
             for k, r in enumerate(("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp"))}}
ENV = Environment(symbols={n: KernelSymbol(n, a) for n, a in KERNEL.items()},
                  regions={"core": 0xF77FE000, "copy": 0xFC000000})
PRELUDE = """int _printk(const char *fmt, ...);
#define __init __attribute__((section(".init.text")))
#define __exit __attribute__((section(".exit.text")))
#define noinline __attribute__((noinline))
"""
STAGES = ("copy_and_check", "layout_and_allocate", "after_layout", "simplify_symbols", "apply_relocations")


def build_and_load(body: str, init_fn: str | None = "m_init", exit_fn: str | None = "m_exit") -> loader.Load:
    text = PRELUDE + body
    if init_fn:
        text += f'int init_module(void) __attribute__((alias("{init_fn}")));\n'
    if exit_fn:
        text += f'void cleanup_module(void) __attribute__((alias("{exit_fn}")));\n'
    recipe = kbuild.Recipe.from_doc({"module": "m", "sources": [{"file": "m.c", "text": text}]})
    ko = kbuild.build(recipe, PROFILE, ENV)
    ld = loader.Load(Request(ko, "i386", PROFILE, ENV, run_init=False))
    for stage in STAGES:
        getattr(ld, stage)()
    return ld


def run(body: str, budget: int = 1_000_000, **entries: str | None) -> tuple[Result, loader.Load]:
    ld = build_and_load(body, **entries)
    result = Result("loaded", regions=dict(ld.regions), log=ld.log)
    return init.run_init_and_exit(ld, result, budget), ld


def module_log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log if r.source == "module"]


def exit_log(result: Result) -> list[tuple[int, str]] | None:
    return None if result.exit_log is None else [(r.level, r.text) for r in result.exit_log]


def section_address(ld: loader.Load, name: str) -> int:
    return int(ld.sechdrs[ld.find_sec(name)]["sh_addr"])


def test_record() -> None:
    assert EMU.word == 4 and EMU.variadic_args == ()
    assert EMU.kernel_text[0] <= EMU.return_trap <= EMU.kernel_text[1]
    assert all(EMU.kernel_text[0] <= a <= EMU.kernel_text[1] for n, a in KERNEL.items() if n != "kmalloc_caches")
    # The module area, the stack and the heap lie outside kernel text.
    for lo, hi in ((0xF77FE000, 0xFEFFE000), (EMU.stack_top - EMU.stack_size, EMU.stack_top),
                   (EMU.heap_base, EMU.heap_base + EMU.heap_size)):
        assert hi <= EMU.kernel_text[0] or lo > EMU.kernel_text[1]


def test_hello() -> None:
    result, _ = run("""
static int __init m_init(void) { _printk("\\0016Hi module!\\n"); return 0; }
static void __exit m_exit(void) { _printk("\\0016Bye module!\\n"); }
""")
    assert result.status == "loaded" and result.fault is None
    assert result.init_return == 0
    assert module_log(result) == [(6, "Hi module!")]
    assert result.exit_log == [LogRecord(6, "module", "Bye module!")]


def test_printk_arguments_all_on_the_stack() -> None:
    # Nine arguments after the format: a register convention would lose the first ones.
    result, _ = run("""
static int __init m_init(void)
{
    _printk("\\0016%d %d %d %d %d %d %d %s %c\\n", 1, 2, 3, 4, 5, 6, 7, "eight", '9');
    return 0;
}
static void __exit m_exit(void) { }
""")
    assert module_log(result) == [(6, "1 2 3 4 5 6 7 eight 9")]


def test_printk_64_bit_arguments_take_two_slots() -> None:
    # -7000000000 = -0x1a13b8600; 0x123456789abcdef; 2^64 - 1 = 18446744073709551615;
    # %ld/%lx are 32-bit on i386: -1L is ffffffff; the arguments after each 64-bit one stay in step.
    result, _ = run("""
static int __init m_init(void)
{
    _printk("\\0016%lld|%d|%llx|%llu|%lx|%ld|%u|%x\\n", -7000000000ll, 5, 0x123456789abcdefull,
            18446744073709551615ull, -1l, -2l, 3000000000u, 0xbeefu);
    return 0;
}
static void __exit m_exit(void) { }
""")
    assert module_log(result) == [(6, "-7000000000|5|123456789abcdef|18446744073709551615|ffffffff|-2|3000000000|beef")]


def test_printk_return_value_and_levels() -> None:
    result, _ = run("""
static int __init m_init(void)
{
    int n = _printk("\\0013four\\n");
    _printk("no level here\\n");
    _printk("\\0016part one");
    _printk("\\001c, part two\\n");
    _printk("\\0017returned %d\\n", n);
    return 0;
}
static void __exit m_exit(void) { _printk("\\0011open"); }
""")
    assert module_log(result) == [(3, "four"), (4, "no level here"), (6, "part one, part two"),
                                  (7, "returned 4")]
    assert exit_log(result) == [(1, "open")]


def test_negative_return_rejects_without_exit() -> None:
    result, _ = run("""
static int __init m_init(void) { _printk("\\0016trying\\n"); return -19; }
static void __exit m_exit(void) { _printk("\\0016Bye\\n"); }
""")
    assert (result.status, result.errno, result.phase) == ("rejected", "ENODEV", "init")
    assert result.init_return == -19
    assert result.exit_log is None
    assert module_log(result) == [(6, "trying")]


def test_positive_return_warns_and_loads() -> None:
    result, _ = run("""
static int __init m_init(void) { return 5; }
static void __exit m_exit(void) { _printk("\\0016Bye\\n"); }
""")
    assert result.status == "loaded" and result.init_return == 5
    assert result.log[-1] == LogRecord(
        4, "kernel", "do_init_module: 'm'->init suspiciously returned 5, it should follow 0/-E convention\n"
                     "do_init_module: loading module anyway...")
    assert exit_log(result) == [(6, "Bye")]


def test_regparm_kernel_functions_and_variadic_snprintf() -> None:
    # memset/strlen/strcmp take eax, edx, ecx (-mregparm=3); snprintf is variadic: all on the stack.
    # A static function with five arguments: three in registers, two on the stack (the module's own
    # code on both sides). snprintf into 8 bytes of "abcdef-12345": "abcdef-" and 12.
    result, _ = run("""
void *memset(void *s, int c, unsigned long n);
unsigned long strlen(const char *s);
int strcmp(const char *a, const char *b);
int snprintf(char *buf, unsigned long size, const char *fmt, ...);
static char buf[32];
static char small[8];
static noinline int five(int a, int b, int c, int d, int e) { return a + 2 * b + 3 * c + 4 * d + 5 * e; }
static int __init m_init(void)
{
    int n;
    memset(buf, 'x', 5);
    buf[5] = 0;
    n = snprintf(small, sizeof(small), "%s-%d", "abcdef", 12345);
    _printk("\\0016%s %lu %d %d %d\\n", buf, strlen(buf), five(1, 2, 3, 4, 5), strcmp(buf, "xxxxy"), strcmp(buf, buf));
    _printk("\\0016%s %d\\n", small, n);
    return 0;
}
static void __exit m_exit(void) { }
""")
    assert result.fault is None, result.fault
    # five(1, 2, 3, 4, 5) = 1 + 4 + 9 + 16 + 25 = 55
    assert module_log(result) == [(6, "xxxxx 5 55 -1 0"), (6, "abcdef- 12")]
    assert exit_log(result) == []


def test_kmalloc_trace_reads_a_4_byte_cache_pointer() -> None:
    result, _ = run("""
extern void *kmalloc_caches[4][14];
void *kmalloc_trace(void *s, unsigned int flags, unsigned long size);
void *__kmalloc(unsigned long size, unsigned int flags);
void kfree(const void *p);
static char *kept;
static int __init m_init(void)
{
    char *a = kmalloc_trace(kmalloc_caches[0][5], 0xcc0, 32);
    int *z = __kmalloc(100, 0xcc0 | 0x100);
    a[0] = 'k'; a[1] = 0;
    kept = a;
    _printk("\\0016%s %d %d %d\\n", a, z[0], z[24], kmalloc_caches[0][5] != 0);
    kfree(z);
    return a ? 0 : -12;
}
static void __exit m_exit(void) { _printk("\\0016%s\\n", kept); kfree(kept); }
""")
    assert result.fault is None, result.fault
    assert module_log(result) == [(6, "k 0 0 1")]
    assert exit_log(result) == [(6, "k")]


def test_indirect_call_through_a_32_bit_thunk() -> None:
    ld = build_and_load("""
static noinline int add1(int x) { return x + 1; }
static int (* volatile fp)(int) = add1;
static int __init m_init(void) { _printk("\\0016%d\\n", fp(41)); return 0; }
static void __exit m_exit(void) { }
""")
    assert any(name.startswith("__x86_indirect_thunk_e") for name in ld.undefined)
    result = init.run_init_and_exit(ld, Result("loaded", regions=dict(ld.regions), log=ld.log))
    assert module_log(result) == [(6, "42")]


def test_constructors_do_not_run() -> None:
    # Debian's 686 configuration has no CONFIG_CONSTRUCTORS: do_mod_ctors does nothing.
    result, _ = run("""
static volatile int seen;
static __attribute__((constructor)) void ctor(void) { seen = 7; _printk("\\0016ctor\\n"); }
static int __init m_init(void) { _printk("\\0016init %d\\n", seen); return 0; }
static void __exit m_exit(void) { }
""")
    assert not PROFILE.enabled("CONFIG_CONSTRUCTORS")
    assert module_log(result) == [(6, "init 0")]


def test_null_dereference_faults() -> None:
    result, _ = run("""
static int * volatile p;
static int __init m_init(void) { _printk("\\0016before\\n"); return *p; }
static void __exit m_exit(void) { _printk("\\0016Bye\\n"); }
""")
    assert (result.status, result.phase) == ("faulted", "init")
    assert result.fault is not None
    assert (result.fault.phase, result.fault.kind, result.fault.address) == ("init", "read-fault", 0)
    assert module_log(result) == [(6, "before")]
    assert result.exit_log is None


def test_field_of_null_pointer_faults_at_its_offset() -> None:
    # long is 4 bytes on i386: b is at offset 4.
    result, _ = run("""
struct s { long a, b; };
static struct s * volatile p;
static int __init m_init(void) { p->b = 1; return 0; }
static void __exit m_exit(void) { }
""")
    assert result.fault is not None
    assert (result.fault.kind, result.fault.address) == ("write-fault", 4)


def test_endless_loop_exhausts_budget() -> None:
    result, _ = run("""
static int __init m_init(void) { for (;;) __asm__ volatile(""); return 0; }
static void __exit m_exit(void) { }
""", budget=20_000)
    assert result.status == "faulted" and result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("init", "budget-exhausted")


def test_unimplemented_kernel_function() -> None:
    result, _ = run("""
void msleep(unsigned int msecs);
static int __init m_init(void) { msleep(10); return 0; }
static void __exit m_exit(void) { }
""")
    assert result.status == "faulted" and result.fault is not None
    assert (result.fault.kind, result.fault.address) == ("unimplemented-kernel-function", 0xC11549D0)


def test_ro_after_init_writable_in_init_not_in_exit() -> None:
    result, ld = run("""
static volatile int value __attribute__((section(".data..ro_after_init"))) = 1;
static int __init m_init(void) { value = 2; _printk("\\0016value %d\\n", value); return 0; }
static void __exit m_exit(void) { _printk("\\0016exit\\n"); value = 3; }
""")
    assert module_log(result) == [(6, "value 2")]
    assert (result.status, result.phase) == ("faulted", "exit")
    assert result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("exit", "write-fault")
    assert result.fault.address == section_address(ld, ".data..ro_after_init")


def test_init_memory_is_gone_in_exit() -> None:
    result, ld = run("""
static const char __attribute__((section(".init.rodata"))) early[] = "init only";
static const char * volatile where;
static int __init m_init(void) { where = early; return 0; }
static void __exit m_exit(void) { _printk("\\0016%c\\n", where[0]); }
""")
    assert result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("exit", "read-fault")
    assert result.fault.address == section_address(ld, ".init.rodata")


def test_pointer_printing_is_32_bit() -> None:
    # %px prints the raw pointer: 8 hex digits on a 32-bit kernel. The string is in core rodata.
    result, ld = run("""
static const char here[] = "x";
static int __init m_init(void) { _printk("\\0016%px\\n", here); return 0; }
static void __exit m_exit(void) { }
""")
    (level, text), = module_log(result)
    address = int(text, 16)
    assert level == 6 and len(text) == 8
    assert section_address(ld, ".rodata") <= address < section_address(ld, ".rodata") + 0x10
