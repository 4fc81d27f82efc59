"""Section layout as Linux 6.1 computes it (spec §3.1, §3.3), x86_64, 4 KiB pages.

One module, laid out under four configurations (STRICT_MODULE_RWX × MODULE_UNLOAD); every
offset and region size is worked out by hand below. Rules used (6.1 layout_sections):
core pass then init pass; in each, masks m = 0..4 ((X|A), (A, not W), (RO_AFTER_INIT|A),
(W|A), (A)) and sections in index order; offset = ALIGN(size, sh_addralign or 1), size =
offset + sh_size. Core: strict_align after m = 0, 1, 2, 4. Init: after m = 0, 1, 4.
layout_symtab (KALLSYMS_ALL=y): .symtab -> init; core part = ALIGN(core, 8) +
ndst*24 + Σ(strlen+1) + ndst, strict_align; .strtab -> init; init = ALIGN(init, 8) + 32 +
nsrc, strict_align. strict_align = PAGE_ALIGN with STRICT_MODULE_RWX, identity without.

Sections (index: name, flags, align, size):
   1 .text AX 16 0x10            2 .rodata A 8 0x9            3 .rodata.zero A 0x100 0
   4 .rodata.str1.1 A 1 0x5      5 .data..ro_after_init WA 4 0x4 (gets SHF_RO_AFTER_INIT)
   6 .gnu.linkonce.this_module WA 64 0x380                     7 .data WA 8 0x18
   8 .bss NOBITS WA 0x40 0x2000  9 .init.text AX 16 0x20       10 .init.rodata A 8 0x3
  11 .init.data WA 8 0x10       12 .exit.text AX 16 0x8        13 .data.big WA 0x2000 0x8
  14 .data.tail WA 1 0x3        15 .modinfo (SHF_ALLOC cleared before layout: not placed)
  16 .symtab (align 8, 15 symbols = 0x168 bytes)   17 .strtab (0x7a bytes)   18 .shstrtab

Symbols (nsrc = 15) and whether is_core_symbol keeps them (KALLSYMS_ALL: any named symbol
defined in a core SHF_ALLOC section), with strlen+1:
   0 (null)                 kept always          1
   1 "" .text (section)     no: st_name 0
   2 helper .text           core                 7
   3 ro_table .rodata       core                 9
   4 zero_mark .rodata.zero core                10
   5 init_fn .init.text     no: init
   6 cleanup_fn .exit.text  core iff MODULE_UNLOAD 11
   7 counter .data          core                 8
   8 buf .bss               core                 4
   9 __UNIQUE_ID_license .modinfo  no: not SHF_ALLOC any more
  10 init_data .init.data   no: init
  11 roai .data..ro_after_init  core             5
  12 absval SHN_ABS         no: st_shndx >= e_shnum
  13 __this_module          core                14
  14 _printk undefined      no: SHN_UNDEF
  UNLOAD=y: ndst = 9, Σ = 1+7+9+10+11+8+4+5+14 = 69 (0x45)
  UNLOAD=n: ndst = 8, Σ = 69 - 11 = 58 (0x3a)
.strtab size = 1 (leading NUL) + 7+9+10+8+11+8+4+20+10+5+7+14+8 = 122 = 0x7a
("__UNIQUE_ID_license" is 19 characters, so 20 with its NUL).
"""
from __future__ import annotations

import pytest
from elfbuild import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHN_ABS,
    SHT_NOBITS,
    STB_LOCAL,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    Module,
    Section,
    Symbol,
    build,
    this_module_section,
)
from koconform.conformance.model import (
    Environment,
    KernelSymbol,
    Placement,
    Request,
    Result,
)
from koconform.conformance.profiles import load_profile
from koconform.reference import loader

CORE, INIT, COPY = 0xFFFFFFFFC0000000, 0xFFFFFFFFC0100000, 0xFFFFC90000000000
AX, A, WA = SHF_ALLOC | SHF_EXECINSTR, SHF_ALLOC, SHF_WRITE | SHF_ALLOC
RODATA = b"rodata!!\0"                       # 9 bytes
DATA = bytes(range(1, 0x19))                 # 0x18 bytes


def _modinfo(name: str, vermagic: str) -> dict[str, str]:
    return {"name": name, "vermagic": vermagic, "license": "GPL", "intree": "Y", "retpoline": "Y"}


def _module(vermagic: str) -> bytes:
    sections = [
        Section(".text", AX, bytes(0x10), align=16),                      # 1
        Section(".rodata", A, RODATA, align=8),                           # 2
        Section(".rodata.zero", A, b"", align=0x100),                     # 3
        Section(".rodata.str1.1", A, b"str\0\0", align=1),                # 4
        Section(".data..ro_after_init", WA, b"\x11\x22\x33\x44", align=4),  # 5
        this_module_section("koctest"),                                   # 6
        Section(".data", WA, DATA, align=8),                              # 7
        Section(".bss", WA, sh_type=SHT_NOBITS, size=0x2000, align=0x40),  # 8
        Section(".init.text", AX, bytes(0x20), align=16),                 # 9
        Section(".init.rodata", A, b"ir\0", align=8),                     # 10
        Section(".init.data", WA, bytes(0x10), align=8),                  # 11
        Section(".exit.text", AX, bytes(0x8), align=16),                  # 12
        Section(".data.big", WA, bytes(0x8), align=0x2000),               # 13
        Section(".data.tail", WA, b"end", align=1),                       # 14
    ]
    loc = {"bind": STB_LOCAL}
    symbols = [
        Symbol("", ".text", kind=STT_SECTION, **loc),                     # 1
        Symbol("helper", ".text", kind=STT_FUNC, size=0x10, **loc),       # 2
        Symbol("ro_table", ".rodata", kind=STT_OBJECT, **loc),            # 3
        Symbol("zero_mark", ".rodata.zero", **loc),                       # 4
        Symbol("init_fn", ".init.text", kind=STT_FUNC, **loc),            # 5
        Symbol("cleanup_fn", ".exit.text", kind=STT_FUNC, **loc),         # 6
        Symbol("counter", ".data", value=8, kind=STT_OBJECT, **loc),      # 7
        Symbol("buf", ".bss", kind=STT_OBJECT, **loc),                    # 8
        Symbol("__UNIQUE_ID_license", ".modinfo", kind=STT_OBJECT, **loc),  # 9
        Symbol("init_data", ".init.data", kind=STT_OBJECT, **loc),        # 10
        Symbol("roai", ".data..ro_after_init", kind=STT_OBJECT, **loc),   # 11
        Symbol("absval", SHN_ABS, value=0x1234, **loc),                   # 12
        Symbol("__this_module", ".gnu.linkonce.this_module", kind=STT_OBJECT),  # 13
        Symbol("_printk"),                                                # 14
    ]
    built = build(Module(name="koctest", sections=sections, symbols=symbols,
                         modinfo=_modinfo("koctest", vermagic)))
    # The builder's own layout is what the docstring assumes (a check of the helper).
    assert built.index[".modinfo"] == 15 and built.index[".symtab"] == 16
    assert built.shdr(".symtab", "sh_size") == 0x168 and built.shdr(".strtab", "sh_size") == 0x7A
    return built.ko()


def _load(ko: bytes, overrides: dict[str, bool], regions: dict[str, int] | None = None) -> Result:
    profile = load_profile("linux-6.1", "x86_64", overrides=overrides)
    env = Environment(symbols={"_printk": KernelSymbol("_printk", 0xFFFFFFFF81A07E3D)},
                      regions=regions or {"core": CORE, "init": INIT, "copy": COPY})
    return loader.load(Request(ko, "x86_64", profile, env, run_init=False))


# ---- STRICT_MODULE_RWX=y, MODULE_UNLOAD=y (the Debian profile) ----------------------------
# core m=0: .text @0 (->0x10); .exit.text @ALIGN(0x10,16)=0x10 (->0x18); strict -> 0x1000
#      m=1: .rodata @ALIGN(0x1000,8)=0x1000 (->0x1009); .rodata.zero @ALIGN(0x1009,0x100)=0x1100
#           (->0x1100, size 0); .rodata.str1.1 @0x1100 (->0x1105); strict -> 0x2000
#      m=2: .data..ro_after_init @0x2000 (->0x2004); strict -> 0x3000
#      m=3: this_module @ALIGN(0x3000,64)=0x3000 (->0x3380); .data @ALIGN(0x3380,8)=0x3380
#           (->0x3398); .bss @ALIGN(0x3398,0x40)=0x33c0 (->0x53c0); .data.big
#           @ALIGN(0x53c0,0x2000)=0x6000 (->0x6008); .data.tail @0x6008 (->0x600b)
#      m=4: nothing; strict -> 0x7000
#      kallsyms: symoffs ALIGN(0x7000,8)=0x7000; + 9*24 (0xd8) = 0x70d8; + 0x45 = 0x711d;
#           + 9 = 0x7126; strict -> core size 0x8000
# init m=0: .init.text @0 (->0x20); strict -> 0x1000
#      m=1: .init.rodata @0x1000 (->0x1003); strict -> 0x2000;  m=2: no rounding
#      m=3: .init.data @0x2000 (->0x2010);  m=4: strict -> 0x3000
#      .symtab @ALIGN(0x3000,8)=0x3000 (->0x3168); .strtab @0x3168 (->0x31e2);
#      ALIGN(0x31e2,8)=0x31e8; +32 = 0x3208; +15 = 0x3217; strict -> init size 0x4000
STRICT_UNLOAD = ({
    ".text": ("core", 0x0), ".exit.text": ("core", 0x10),
    ".rodata": ("core", 0x1000), ".rodata.zero": ("core", 0x1100), ".rodata.str1.1": ("core", 0x1100),
    ".data..ro_after_init": ("core", 0x2000),
    ".gnu.linkonce.this_module": ("core", 0x3000), ".data": ("core", 0x3380), ".bss": ("core", 0x33C0),
    ".data.big": ("core", 0x6000), ".data.tail": ("core", 0x6008),
    ".init.text": ("init", 0x0), ".init.rodata": ("init", 0x1000), ".init.data": ("init", 0x2000),
    ".symtab": ("init", 0x3000), ".strtab": ("init", 0x3168),
}, 0x8000, 0x4000)

# ---- STRICT_MODULE_RWX=y, MODULE_UNLOAD=n: .exit* are init sections ----------------------
# core m=0: .text @0 (->0x10); strict -> 0x1000. m=1..4 exactly as above -> 0x7000.
#      kallsyms: 0x7000 + 8*24 (0xc0) = 0x70c0; + 0x3a = 0x70fa; + 8 = 0x7102; strict -> 0x8000
# init m=0: .init.text @0 (->0x20); .exit.text @ALIGN(0x20,16)=0x20 (->0x28); strict -> 0x1000
#      then as above: .init.rodata @0x1000, .init.data @0x2000, .symtab @0x3000,
#      .strtab @0x3168, init size 0x4000
STRICT_NO_UNLOAD = ({
    **STRICT_UNLOAD[0], ".exit.text": ("init", 0x20),
}, 0x8000, 0x4000)

# ---- STRICT_MODULE_RWX=n, MODULE_UNLOAD=y: no page rounding anywhere -------------------
# core m=0: .text @0 (->0x10); .exit.text @0x10 (->0x18)
#      m=1: .rodata @ALIGN(0x18,8)=0x18 (->0x21); .rodata.zero @ALIGN(0x21,0x100)=0x100
#           (->0x100); .rodata.str1.1 @0x100 (->0x105)
#      m=2: .data..ro_after_init @ALIGN(0x105,4)=0x108 (->0x10c)
#      m=3: this_module @ALIGN(0x10c,64)=0x140 (->0x4c0); .data @ALIGN(0x4c0,8)=0x4c0 (->0x4d8);
#           .bss @ALIGN(0x4d8,0x40)=0x500 (->0x2500); .data.big @ALIGN(0x2500,0x2000)=0x4000
#           (->0x4008); .data.tail @0x4008 (->0x400b)
#      kallsyms: symoffs ALIGN(0x400b,8)=0x4010; + 0xd8 = 0x40e8; + 0x45 = 0x412d; + 9 = 0x4136
# init m=0: .init.text @0 (->0x20); m=1: .init.rodata @ALIGN(0x20,8)=0x20 (->0x23);
#      m=3: .init.data @ALIGN(0x23,8)=0x28 (->0x38)
#      .symtab @ALIGN(0x38,8)=0x38 (->0x1a0); .strtab @0x1a0 (->0x21a);
#      ALIGN(0x21a,8)=0x220; +32 = 0x240; +15 = 0x24f
LOOSE_UNLOAD = ({
    ".text": ("core", 0x0), ".exit.text": ("core", 0x10),
    ".rodata": ("core", 0x18), ".rodata.zero": ("core", 0x100), ".rodata.str1.1": ("core", 0x100),
    ".data..ro_after_init": ("core", 0x108),
    ".gnu.linkonce.this_module": ("core", 0x140), ".data": ("core", 0x4C0), ".bss": ("core", 0x500),
    ".data.big": ("core", 0x4000), ".data.tail": ("core", 0x4008),
    ".init.text": ("init", 0x0), ".init.rodata": ("init", 0x20), ".init.data": ("init", 0x28),
    ".symtab": ("init", 0x38), ".strtab": ("init", 0x1A0),
}, 0x4136, 0x24F)

# ---- STRICT_MODULE_RWX=n, MODULE_UNLOAD=n ---------------------------------------------
# core m=0: .text @0 (->0x10)
#      m=1: .rodata @ALIGN(0x10,8)=0x10 (->0x19); .rodata.zero @ALIGN(0x19,0x100)=0x100;
#           .rodata.str1.1 @0x100 (->0x105); m=2, m=3 as in LOOSE_UNLOAD (-> 0x400b)
#      kallsyms: 0x4010 + 8*24 (0xc0) = 0x40d0; + 0x3a = 0x410a; + 8 = 0x4112
# init m=0: .init.text @0 (->0x20); .exit.text @ALIGN(0x20,16)=0x20 (->0x28)
#      m=1: .init.rodata @ALIGN(0x28,8)=0x28 (->0x2b); m=3: .init.data @ALIGN(0x2b,8)=0x30 (->0x40)
#      .symtab @0x40 (->0x1a8); .strtab @0x1a8 (->0x222); ALIGN(0x222,8)=0x228; +32 = 0x248;
#      +15 = 0x257
LOOSE_NO_UNLOAD = ({
    **LOOSE_UNLOAD[0], ".exit.text": ("init", 0x20), ".rodata": ("core", 0x10),
    ".init.rodata": ("init", 0x28), ".init.data": ("init", 0x30),
    ".symtab": ("init", 0x40), ".strtab": ("init", 0x1A8),
}, 0x4112, 0x257)

CONFIGS = {
    "strict-unload": ({}, STRICT_UNLOAD),
    "strict-no-unload": ({"CONFIG_MODULE_UNLOAD": False}, STRICT_NO_UNLOAD),
    "loose-unload": ({"CONFIG_STRICT_MODULE_RWX": False}, LOOSE_UNLOAD),
    "loose-no-unload": ({"CONFIG_STRICT_MODULE_RWX": False, "CONFIG_MODULE_UNLOAD": False},
                        LOOSE_NO_UNLOAD),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_layout(config: str) -> None:
    overrides, (placements, core_size, init_size) = CONFIGS[config]
    profile = load_profile("linux-6.1", "x86_64")
    result = _load(_module(profile.vermagic), overrides)
    assert result.status == "loaded", result.detail
    base = {"core": CORE, "init": INIT}
    assert result.layout == {name: Placement(region, off, base[region] + off)
                             for name, (region, off) in placements.items()}
    assert result.regions == {"core": (CORE, core_size), "init": (INIT, init_size)}
    assert result.sections is not None
    assert result.sections[".rodata"] == RODATA and result.sections[".data"] == DATA
    assert result.sections[".data.tail"] == b"end"
    assert ".bss" not in result.sections and ".modinfo" not in result.layout


def test_init_region_follows_core_after_a_guard_page() -> None:
    # Spec §3.3 (observed on 6.1.0-56): the init allocation begins one page after the end of
    # the core. Core size 0x8000: init = 0xffffffffc0000000 + 0x8000 + 0x1000.
    profile = load_profile("linux-6.1", "x86_64")
    result = _load(_module(profile.vermagic), {}, regions={"core": CORE, "copy": COPY})
    assert result.status == "loaded", result.detail
    assert result.regions == {"core": (CORE, 0x8000), "init": (0xFFFFFFFFC0009000, 0x4000)}
    assert result.layout is not None
    assert result.layout[".init.text"] == Placement("init", 0, 0xFFFFFFFFC0009000)


# ---- W+X sections (module_enforce_rwx_sections) -----------------------------------------
def _wx_module(vermagic: str, x_flags: tuple[int, ...]) -> bytes:
    """.text, then one section per entry of x_flags (.x, .y, ...) at indices 2, 3, ..."""
    extra = [Section(name, flags, bytes(8), align=8) for name, flags in zip((".x", ".y"), x_flags)]
    return build(Module(name="koc_info", struct_name="koc_struct",
                        sections=[Section(".text", AX, bytes(0x10), align=16)] + extra,
                        symbols=[Symbol("f", ".text", kind=STT_FUNC)],
                        modinfo=_modinfo("koc_info", vermagic))).ko()


@pytest.mark.parametrize("x_flags,index,name", [
    ((WA | SHF_EXECINSTR,), 2, ".x"),
    # not even SHF_ALLOC: the check looks at every section's flags
    ((SHF_WRITE | SHF_EXECINSTR,), 2, ".x"),
    # two offenders: the first by index is reported
    ((WA, WA | SHF_EXECINSTR), 3, ".y"),
], ids=["alloc", "not-alloc", "second-section"])
def test_write_exec_section_is_rejected(x_flags: tuple[int, ...], index: int, name: str) -> None:
    vermagic = load_profile("linux-6.1", "x86_64").vermagic
    result = _load(_wx_module(vermagic, x_flags), {})
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "layout")
    # The name is the struct module's (mod->name), not modinfo's.
    assert [(r.level, r.text) for r in result.log] == [
        (3, f"koc_struct: section {name} (index {index}) has invalid WRITE|EXEC flags")]


def test_write_exec_section_loads_without_strict_module_rwx() -> None:
    vermagic = load_profile("linux-6.1", "x86_64").vermagic
    result = _load(_wx_module(vermagic, (WA | SHF_EXECINSTR,)), {"CONFIG_STRICT_MODULE_RWX": False})
    assert result.status == "loaded", result.detail
    assert result.layout is not None
    # m=0 takes X|A sections in index order: .text @0 (->0x10), .x @ALIGN(0x10,8)=0x10
    assert result.layout[".x"] == Placement("core", 0x10, CORE + 0x10)


def test_alignment_that_is_not_a_power_of_two() -> None:
    # §3.1: ALIGN(x, a) = (x + a - 1) & ~(a - 1), power of two assumed, not checked.
    # core m=0: .text @0 (->0x10); strict -> 0x1000
    #      m=1: .rodata @0x1000 (->0x1001); .rodata.odd (align 0x18):
    #           (0x1001 + 0x17) & ~0x17 = 0x1018 & ~0x17 = 0x1008 (bit 0x10 cleared)
    vermagic = load_profile("linux-6.1", "x86_64").vermagic
    ko = build(Module(name="koctest",
                      sections=[Section(".text", AX, bytes(0x10), align=16),
                                Section(".rodata", A, b"a", align=1),
                                Section(".rodata.odd", A, b"b", align=0x18)],
                      symbols=[Symbol("f", ".text", kind=STT_FUNC)],
                      modinfo=_modinfo("koctest", vermagic))).ko()
    result = _load(ko, {})
    assert result.status == "loaded", result.detail
    assert result.layout is not None
    assert result.layout[".rodata"] == Placement("core", 0x1000, CORE + 0x1000)
    assert result.layout[".rodata.odd"] == Placement("core", 0x1008, CORE + 0x1008)


def test_align_u32_hand_worked() -> None:
    """ALIGN on an unsigned int size: the mask is (unsigned int)(a) - 1."""
    from koconform.reference.loader import align_u32
    assert align_u32(0x1001, 0x1000) == 0x2000          # (0x1001 + 0xfff) & ~0xfff
    assert align_u32(0x1000, 0x1000) == 0x1000
    assert align_u32(5, 1) == 5                          # mask 0
    assert align_u32(0x10, 1 << 32) == 0                 # (u32)2**32 - 1 = 0xffffffff: (0x10 + 0xffffffff) & 0 = 0
    assert align_u32(0x10, (1 << 32) + 0x40) == 0x40     # low 32 bits: 0x40
    assert align_u32(0xfffffff1, 0x10) == 0              # 0xfffffff1 + 0xf = 0x1_00000000 -> 32 bits: 0
