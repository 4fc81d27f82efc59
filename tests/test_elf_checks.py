"""The ELF checks of Linux 6.1 (spec §2.2: elf_validity_check, then setup_load_info).

Each test takes a valid module, breaks one field (or two, to pin the order of the checks),
and expects errno ENOEXEC in phase "check" with exactly one log line, or a load where
6.1 checks nothing. The base module (elfbuild order):
  0 null, 1 .text (AX), 2 .comment (no flags), 3 .modinfo (name=koc_info),
  4 .gnu.linkonce.this_module (name koc_struct), 5 .symtab (link 6), 6 .strtab, 7 .shstrtab
so e_shnum = 8 and e_shstrndx = 7.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
from elfbuild import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    SHT_SYMTAB,
    STT_FUNC,
    THIS_MODULE,
    Built,
    Module,
    Section,
    Symbol,
    build,
)
from koconform.conformance.model import Environment, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader

PROFILE = load_profile("linux-6.1", "x86_64")
SHNUM = 8
MISSING = "(missing .modinfo section or name field)"


def _built(modinfo: bool = True, symtab: bool = True, this_module: bool = True,
           extra: list[Section] | None = None) -> Built:
    info = {"name": "koc_info", "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y",
            "retpoline": "Y"} if modinfo else None
    return build(Module(
        name="koc_info", struct_name="koc_struct",
        sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, bytes(0x10), align=16),
                  Section(".comment", 0, b"GCC: (Debian 12.2.0-14) 12.2.0\0")] + (extra or []),
        symbols=[Symbol("init_module", ".text", kind=STT_FUNC)],
        modinfo=info, with_symtab=symtab, with_this_module=this_module))


def _load(ko: bytes) -> Result:
    env = Environment(symbols={}, regions={"core": 0xFFFFFFFFC0000000, "init": 0xFFFFFFFFC0100000,
                                           "copy": 0xFFFFC90000000000})
    return loader.load(Request(ko, "x86_64", PROFILE, env, run_init=False))


def _rejected(result: Result, level: int, text: str) -> None:
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "check")
    assert [(r.level, r.text) for r in result.log] == [(level, text)]


def _shstrtab(b: Built) -> tuple[int, int]:
    return b.shdr(".shstrtab", "sh_offset"), b.shdr(".shstrtab", "sh_size")


def test_base_module_loads() -> None:
    b = _built()
    assert b.shnum == SHNUM and b.index[".symtab"] == 5 and b.index[".shstrtab"] == 7
    result = _load(b.ko())
    assert result.status == "loaded", result.detail


# ---- header ------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [10, 63])
def test_short_file(length: int) -> None:
    # len < sizeof(Elf64_Ehdr) = 64
    _rejected(_load(_built().ko()[:length]), 3, f"Invalid ELF header len {length}")


def test_bad_magic() -> None:
    b = _built()
    b.data[3] = ord("G")
    # "... != %s" with ELFMAG: the raw 0x7f byte is printed
    _rejected(_load(b.ko()), 3, "Invalid ELF header magic: != \x7fELF")


def test_e_type_exec() -> None:
    b = _built()
    b.set_ehdr("e_type", 2)
    _rejected(_load(b.ko()), 3, "Invalid ELF header type: 2 != 1")


def test_e_machine_i386() -> None:
    b = _built()
    b.set_ehdr("e_machine", 3)
    _rejected(_load(b.ko()), 3, "Invalid architecture in ELF header: 3")


def test_e_shentsize_40() -> None:
    b = _built()
    b.set_ehdr("e_shentsize", 40)
    _rejected(_load(b.ko()), 3, "Invalid ELF section header size")


@pytest.mark.parametrize("patch", [
    lambda b: b.set_ehdr("e_shnum", SHNUM + 1),     # 9*64 > len - e_shoff (= 8*64)
    lambda b: b.set_ehdr("e_shoff", len(b.data)),   # e_shoff >= len
    lambda b: b.set_ehdr("e_shoff", b.shoff + 1),   # 8*64 > 8*64 - 1
], ids=["shnum-plus-one", "shoff-at-end", "shoff-one-late"])
def test_section_headers_past_the_end(patch: Callable[[Built], None]) -> None:
    b = _built()
    patch(b)
    _rejected(_load(b.ko()), 3, "Invalid ELF section header overflow")


def test_e_shnum_0() -> None:
    # 0 * 64 > len - e_shoff is false, so the overflow check passes; then e_shstrndx 7 >= 0.
    b = _built()
    b.set_ehdr("e_shnum", 0)
    _rejected(_load(b.ko()), 3, "Invalid ELF section name index: 7 || e_shstrndx (7) >= e_shnum (0)")


@pytest.mark.parametrize("shstrndx", [0, SHNUM, 0xFFFF])
def test_e_shstrndx_out_of_range(shstrndx: int) -> None:
    b = _built()
    b.set_ehdr("e_shstrndx", shstrndx)
    _rejected(_load(b.ko()), 3, f"Invalid ELF section name index: {shstrndx} || e_shstrndx "
                                f"({shstrndx}) >= e_shnum ({SHNUM})")


# ---- the section name table --------------------------------------------------------------
@pytest.mark.parametrize("field,value,sh_type", [
    ("sh_size", 0x100000, 3),                       # offset + 1 MiB > len
    ("sh_offset", 0xFFFFFFFFFFFFFF00, 3),           # offset + size wraps past 2^64
    ("sh_type", 1, None),                           # (type changed, bounds broken below)
], ids=["size", "wrap", "type-printed"])
def test_shstrtab_past_the_end(field: str, value: int, sh_type: int | None) -> None:
    b = _built()
    b.set_shdr(".shstrtab", field, value)
    if sh_type is None:            # PROGBITS name table that runs past the end: "type 1"
        b.set_shdr(".shstrtab", "sh_size", len(b.data))
        sh_type = 1
    _rejected(_load(b.ko()), 3, f"Invalid ELF section hdr(type {sh_type})")


@pytest.mark.parametrize("past", [0, 1])
def test_shstrtab_boundary_at_the_file_end(past: int) -> None:
    # Grow the name table to reach the end of the file (+past). It is followed only by the
    # section headers, whose last byte (section 7's sh_entsize, high byte) is 0, so with
    # past = 0 it stays NUL-terminated: offset + size == len is in bounds and the module loads.
    b = _built()
    off, _ = _shstrtab(b)
    b.set_shdr(".shstrtab", "sh_size", len(b.data) - off + past)
    result = _load(b.ko())
    if past:
        _rejected(result, 3, "Invalid ELF section hdr(type 3)")
    else:
        assert result.status == "loaded", result.detail


def test_empty_shstrtab() -> None:
    b = _built()
    b.set_shdr(".shstrtab", "sh_size", 0)
    _rejected(_load(b.ko()), 3, "empty section name table")


def test_shstrtab_not_nul_terminated() -> None:
    b = _built()
    off, size = _shstrtab(b)
    b.data[off + size - 1] = ord("x")
    _rejected(_load(b.ko()), 3, "ELF Spec violation: section name table isn't null terminated")


# ---- section 0, then each section ---------------------------------------------------------
@pytest.mark.parametrize("field,value,shown", [
    ("sh_type", 1, 1), ("sh_size", 1, 0), ("sh_addr", 0x1000, 0)])
def test_section_0_not_null(field: str, value: int, shown: int) -> None:
    b = _built()
    b.set_shdr(0, field, value)
    _rejected(_load(b.ko()), 3, f"ELF Spec violation: section 0 type({shown})!=SH_NULL or "
                                "non-zero len or addr")


@pytest.mark.parametrize("link", [0, SHNUM, 0xFFFFFFFF])
def test_symtab_sh_link_out_of_range(link: int) -> None:
    b = _built()
    b.set_shdr(".symtab", "sh_link", link)
    shown = -1 if link == 0xFFFFFFFF else link        # printed with %d
    _rejected(_load(b.ko()), 3, f"Invalid ELF sh_link!=SHN_UNDEF({shown}) or (sh_link({shown}) "
                                f">= hdr->e_shnum({SHNUM})")


@pytest.mark.parametrize("section,index,sh_type,field,value", [
    (".text", 1, 1, "sh_size", 0x100000),
    (".text", 1, 1, "sh_offset", 0xFFFFFFFFFFFFFFF8),     # offset + 0x10 wraps
    (".comment", 2, 1, "sh_size", 0x100000),              # not SHF_ALLOC: still bounds-checked
    (".symtab", 5, 2, "sh_size", 0x100000),
], ids=["text-size", "text-wrap", "comment", "symtab"])
def test_section_past_the_end(section: str, index: int, sh_type: int, field: str,
                              value: int) -> None:
    b = _built()
    b.set_shdr(section, field, value)
    _rejected(_load(b.ko()), 3, f"Invalid ELF section in module (section {index} type {sh_type})")


def test_alloc_section_name_past_the_name_table() -> None:
    b = _built()
    b.set_shdr(".text", "sh_name", _shstrtab(b)[1])      # sh_name == sh_size: out
    _rejected(_load(b.ko()), 3, "Invalid ELF section name in module (section 1 type 1)")


def test_alloc_section_name_on_the_last_byte_is_in_range() -> None:
    b = _built()
    b.set_shdr(".text", "sh_name", _shstrtab(b)[1] - 1)  # the final NUL: an empty name
    assert _load(b.ko()).status == "loaded"


def test_unallocated_section_name_is_not_checked() -> None:
    b = _built()
    b.set_shdr(".comment", "sh_name", 0x10000)           # 6.1 checks sh_name of ALLOC only
    assert _load(b.ko()).status == "loaded"


@pytest.mark.parametrize("sh_type,flags", [(SHT_NOBITS, SHF_WRITE | SHF_ALLOC), (0, 0)],
                         ids=["nobits", "null"])
def test_nobits_and_null_sections_are_not_bounds_checked(sh_type: int, flags: int) -> None:
    b = _built(extra=[Section(".bss", SHF_WRITE | SHF_ALLOC, sh_type=SHT_NOBITS, size=0x10, align=8)])
    b.set_shdr(".bss", "sh_type", sh_type)
    b.set_shdr(".bss", "sh_flags", flags)
    b.set_shdr(".bss", "sh_offset", 0xFFFFFFFFFFFFFFF0)  # offset + size wraps: not looked at
    assert _load(b.ko()).status == "loaded"


def test_allocated_null_section_passes_the_checks_but_its_copy_faults() -> None:
    # SHT_NULL is skipped by the bounds loop, but move_module copies every SHF_ALLOC
    # section that is not SHT_NOBITS from hdr + sh_offset: that read leaves the file copy.
    b = _built(extra=[Section(".odd", SHF_WRITE | SHF_ALLOC, bytes(0x10), align=8)])
    b.set_shdr(".odd", "sh_type", 0)
    b.set_shdr(".odd", "sh_offset", 0xFFFFFFFFFFFFFFF0)
    result = _load(b.ko())
    assert (result.status, result.phase) == ("faulted", "layout")
    assert result.fault is not None and result.fault.phase == "layout"


def test_second_symtab_is_ignored() -> None:
    b = _built()
    # .comment becomes a second SHT_SYMTAB (link -> .strtab): 6.1 uses the first one.
    b.set_shdr(".comment", "sh_type", SHT_SYMTAB)
    b.set_shdr(".comment", "sh_link", 6)
    assert _load(b.ko()).status == "loaded"


# ---- setup_load_info ------------------------------------------------------------------
@pytest.mark.parametrize("modinfo,name", [(True, "koc_info"), (False, MISSING)])
def test_no_symtab(modinfo: bool, name: str) -> None:
    # info->name: modinfo's name= (not the struct module's), else the fallback text
    _rejected(_load(_built(modinfo=modinfo, symtab=False).ko()), 4,
              f"{name}: module has no symbols (stripped?)")


def test_unallocated_modinfo_gives_no_name() -> None:
    # find_sec(".modinfo") wants SHF_ALLOC: without it info->name stays NULL.
    b = _built(symtab=False)
    b.set_shdr(".modinfo", "sh_flags", 0)
    _rejected(_load(b.ko()), 4, f"{MISSING}: module has no symbols (stripped?)")


@pytest.mark.parametrize("modinfo,name", [(True, "koc_info"), (False, MISSING)])
def test_no_this_module(modinfo: bool, name: str) -> None:
    _rejected(_load(_built(modinfo=modinfo, this_module=False).ko()), 4,
              f"{name}: No module found in object")


def test_this_module_without_alloc_is_not_found() -> None:
    b = _built()
    b.set_shdr(THIS_MODULE, "sh_flags", SHF_WRITE)       # find_sec wants SHF_ALLOC
    _rejected(_load(b.ko()), 4, "koc_info: No module found in object")


# ---- what 6.1 does not check -------------------------------------------------------------
def test_ident_and_header_garbage_loads() -> None:
    b = _built()
    b.data[4], b.data[5], b.data[6] = 7, 9, 0         # EI_CLASS, EI_DATA, EI_VERSION
    b.data[7:16] = b"\xff" * 9                        # EI_OSABI, EI_ABIVERSION, padding
    b.set_ehdr("e_version", 0)
    b.set_ehdr("e_ehsize", 0)
    assert _load(b.ko()).status == "loaded"


# ---- order of the checks (6.1) --------------------------------------------------------
def test_order_type_before_machine() -> None:
    b = _built()
    b.set_ehdr("e_type", 2)
    b.set_ehdr("e_machine", 3)
    b.set_ehdr("e_shentsize", 40)
    _rejected(_load(b.ko()), 3, "Invalid ELF header type: 2 != 1")


def test_order_shstrtab_before_section_0() -> None:
    # 6.1 checks the name table before section 0 (mainline: the other way round).
    b = _built()
    b.set_shdr(0, "sh_type", 1)
    b.set_shdr(".shstrtab", "sh_size", 0)
    _rejected(_load(b.ko()), 3, "empty section name table")


def test_order_section_0_before_the_section_loop() -> None:
    b = _built()
    b.set_shdr(0, "sh_size", 1)
    b.set_shdr(".symtab", "sh_link", 0)
    _rejected(_load(b.ko()), 3, "ELF Spec violation: section 0 type(0)!=SH_NULL or non-zero "
                                "len or addr")


def test_order_symtab_link_before_its_bounds() -> None:
    b = _built()
    b.set_shdr(".symtab", "sh_link", SHNUM)
    b.set_shdr(".symtab", "sh_size", 0x100000)
    _rejected(_load(b.ko()), 3, f"Invalid ELF sh_link!=SHN_UNDEF({SHNUM}) or (sh_link({SHNUM}) "
                                f">= hdr->e_shnum({SHNUM})")


def test_order_lowest_index_first() -> None:
    b = _built()
    b.set_shdr(".symtab", "sh_link", 0)                 # section 5
    b.set_shdr(".comment", "sh_size", 0x100000)         # section 2
    _rejected(_load(b.ko()), 3, "Invalid ELF section in module (section 2 type 1)")


def test_order_bounds_before_name() -> None:
    b = _built()
    b.set_shdr(".text", "sh_size", 0x100000)
    b.set_shdr(".text", "sh_name", 0x10000)
    _rejected(_load(b.ko()), 3, "Invalid ELF section in module (section 1 type 1)")


def test_order_elf_checks_before_setup_load_info() -> None:
    b = _built(symtab=False)
    b.set_shdr(".text", "sh_size", 0x100000)
    _rejected(_load(b.ko()), 3, "Invalid ELF section in module (section 1 type 1)")


def test_order_symtab_before_this_module() -> None:
    _rejected(_load(_built(symtab=False, this_module=False).ko()), 4,
              "koc_info: module has no symbols (stripped?)")
