"""init and exit run in the emulator: modules built in-process with tools/kbuild.py, loaded by
the reference loader's stages, then run_init_and_exit. Expected texts are written by hand."""
from __future__ import annotations

from koconform.conformance.model import LogRecord, Profile, Request, Result
from koconform.conformance.profiles import default_environment, load_profile
from koconform.reference import init, loader
from koconform.tools import kbuild

PROFILE = load_profile("linux-6.1", "x86_64")
ENV = default_environment("linux-6.1", "x86_64")
PRELUDE = """int _printk(const char *fmt, ...);
#define __init __attribute__((section(".init.text")))
#define __exit __attribute__((section(".exit.text")))
#define noinline __attribute__((noinline))
"""
STAGES = ("copy_and_check", "layout_and_allocate", "after_layout", "simplify_symbols", "apply_relocations")


def build_and_load(body: str, init_fn: str | None = "m_init", exit_fn: str | None = "m_exit",
                   profile: Profile = PROFILE) -> loader.Load:
    text = PRELUDE + body
    if init_fn:
        text += f'int init_module(void) __attribute__((alias("{init_fn}")));\n'
    if exit_fn:
        text += f'void cleanup_module(void) __attribute__((alias("{exit_fn}")));\n'
    recipe = kbuild.Recipe.from_doc({"module": "m", "sources": [{"file": "m.c", "text": text}]})
    ko = kbuild.build(recipe, profile, ENV)
    ld = loader.Load(Request(ko, "x86_64", profile, ENV, run_init=False))
    for stage in STAGES:
        getattr(ld, stage)()
    return ld


def run(body: str, budget: int = 1_000_000, profile: Profile = PROFILE,
        **entries: str | None) -> tuple[Result, loader.Load]:
    ld = build_and_load(body, profile=profile, **entries)
    result = Result("loaded", regions=dict(ld.regions), log=ld.log)
    return init.run_init_and_exit(ld, result, budget), ld


def module_log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log if r.source == "module"]


def exit_log(result: Result) -> list[tuple[int, str]] | None:
    return None if result.exit_log is None else [(r.level, r.text) for r in result.exit_log]


def section_address(ld: loader.Load, name: str) -> int:
    return int(ld.sechdrs[ld.find_sec(name)]["sh_addr"])


def test_hello() -> None:
    result, _ = run("""
static int __init m_init(void) { _printk("\\0016Hi module!\\n"); return 0; }
static void __exit m_exit(void) { _printk("\\0016Bye module!\\n"); }
""")
    assert result.status == "loaded" and result.fault is None
    assert result.init_return == 0
    assert module_log(result) == [(6, "Hi module!")]
    assert result.exit_log == [LogRecord(6, "module", "Bye module!")]


def test_levels_default_level_and_cont() -> None:
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
    assert not any("do_init_module" in r.text for r in result.log)


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


def test_init_without_exit_cannot_unload() -> None:
    result, _ = run("static int __init m_init(void) { _printk(\"\\0016only init\\n\"); return 0; }\n",
                    exit_fn=None)
    assert result.status == "loaded"
    assert module_log(result) == [(6, "only init")]
    assert result.exit_log is None
    assert "EBUSY" in result.detail


def test_no_init_returns_zero() -> None:
    result, _ = run("static void __exit m_exit(void) { _printk(\"\\0016bye\\n\"); }\n", init_fn=None)
    assert result.status == "loaded" and result.init_return == 0
    assert exit_log(result) == [(6, "bye")]


def test_rodata_data_and_bss() -> None:
    result, _ = run("""
static const char greeting[] = "from rodata";
static volatile int counter = 41;
static volatile int zeroed;
static int __init m_init(void)
{
    counter++;
    zeroed += 2;
    _printk("\\0016%s %d %d\\n", greeting, counter, zeroed);
    return 0;
}
static void __exit m_exit(void) { _printk("\\0016exit %d %d\\n", counter, zeroed); }
""")
    assert module_log(result) == [(6, "from rodata 42 2")]
    assert exit_log(result) == [(6, "exit 42 2")]


def test_static_function_memset_strlen_strcmp_snprintf() -> None:
    result, _ = run("""
void *memset(void *s, int c, unsigned long n);
unsigned long strlen(const char *s);
int strcmp(const char *a, const char *b);
int snprintf(char *buf, unsigned long size, const char *fmt, ...);
static char buf[32];
static char small[8];
static noinline int twice(int x) { return 2 * x; }
static int __init m_init(void)
{
    int n;
    memset(buf, 'x', 5);
    buf[5] = 0;
    n = snprintf(small, sizeof(small), "%s-%d", "abcdef", 12345);
    _printk("\\0016%s %lu %d %d %d\\n", buf, strlen(buf), twice(21), strcmp(buf, "xxxxy"), strcmp(buf, buf));
    _printk("\\0016%s %d\\n", small, n);
    return 0;
}
static void __exit m_exit(void) { }
""")
    assert result.fault is None, result.fault
    assert module_log(result) == [(6, "xxxxx 5 42 -1 0"), (6, "abcdef- 12")]
    assert exit_log(result) == []


def test_kmalloc_kzalloc_kfree() -> None:
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
    _printk("\\0016%s %d %d\\n", a, z[0], z[24]);
    kfree(z);
    return a ? 0 : -12;
}
static void __exit m_exit(void) { _printk("\\0016%s\\n", kept); kfree(kept); }
""")
    assert result.fault is None, result.fault
    assert module_log(result) == [(6, "k 0 0")]
    assert exit_log(result) == [(6, "k")]


def test_indirect_call_through_thunk() -> None:
    result, _ = run("""
static noinline int add1(int x) { return x + 1; }
static int (* volatile fp)(int) = add1;
static int __init m_init(void) { _printk("\\0016%d\\n", fp(41)); return 0; }
static void __exit m_exit(void) { }
""")
    assert module_log(result) == [(6, "42")]


CTOR = """
static volatile int seen;
static __attribute__((constructor)) void ctor(void) { seen = 7; _printk("\\0016ctor\\n"); }
static int __init m_init(void) { _printk("\\0016init %d\\n", seen); return 0; }
static void __exit m_exit(void) { }
"""


def test_constructor_runs_before_init_with_constructors() -> None:
    result, _ = run(CTOR, profile=load_profile("linux-6.1", "x86_64", {"CONFIG_CONSTRUCTORS": True}))
    assert module_log(result) == [(6, "ctor"), (6, "init 7")]


def test_constructor_does_not_run_in_debians_kernel() -> None:
    """CONFIG_CONSTRUCTORS is not set in Debian 12's kernels (only GCOV/KASAN select it)."""
    result, _ = run(CTOR)
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
    result, _ = run("""
struct s { long a, b; };
static struct s * volatile p;
static int __init m_init(void) { p->b = 1; return 0; }
static void __exit m_exit(void) { }
""")
    assert result.fault is not None
    assert (result.fault.kind, result.fault.address) == ("write-fault", 8)


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
    assert (result.fault.kind, result.fault.address) == ("unimplemented-kernel-function", 0xFFFFFFFF811549D0)
    assert "msleep" in result.fault.detail


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
    assert exit_log(result) == [(6, "exit")]


def test_write_to_rodata_faults() -> None:
    result, ld = run("""
static const int limit = 3;
static int __init m_init(void) { *(volatile int *)&limit = 4; return 0; }
static void __exit m_exit(void) { }
""")
    assert result.fault is not None
    assert (result.fault.kind, result.fault.address) == ("write-fault", section_address(ld, ".rodata"))


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


def test_stack_passed_variadic_arguments() -> None:
    result, _ = run("""
static int __init m_init(void)
{
    _printk("\\0016%d %d %d %d %d %d %d %s\\n", 1, 2, 3, 4, 5, 6, 7, "eight");
    return 0;
}
static void __exit m_exit(void) { }
""")
    assert module_log(result) == [(6, "1 2 3 4 5 6 7 eight")]


def test_invalid_instruction_faults() -> None:
    result, _ = run("""
static int __init m_init(void) { __builtin_trap(); return 0; }
static void __exit m_exit(void) { }
""")
    assert result.fault is not None
    assert (result.fault.phase, result.fault.kind) == ("init", "invalid-instruction")
