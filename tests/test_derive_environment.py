"""Tests for tools/derive_environment.py and the linux-6.1 environment files it committed.

The unit tests use small inputs written here. The tests of the committed files use literals
read by hand from Debian's linux-image-*-dbg / linux-headers-* packages (System.map,
Module.symvers; amd64 and arm64 6.1.0-56 6.1.192-2, armhf armmp and i386 686 6.1.0-50
6.1.176-1), from /boot/config-* and from the spec's "Debian 12 kernels" table, not from the
tool. No network, no .debs needed.
"""
from __future__ import annotations

import pathlib
import re
import struct

import elfbuild
import pytest
import yaml
from koconform.tools import derive_environment as de
from koconform.tools.derive_environment import Export

ENV = pathlib.Path(__file__).resolve().parents[1] / "conformance" / "environments" / "linux-6.1"
TSV = ENV / "x86_64.tsv"
STRINGS = ENV / "x86_64.kernel-strings.txt"

SYMVERS = (
    "0x92997ed8\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n"
    "0x84b45156\tinsert_resource_expand_to_fit\tvmlinux\tEXPORT_SYMBOL_GPL\tCXL\n"
    "0x12345678\tsome_driver_fn\tdrivers/foo/foo\tEXPORT_SYMBOL\t\n"
    "0x04a093b8\tkern_path\tvmlinux\tEXPORT_SYMBOL\t\n"
)
SYSTEM_MAP = (
    "00000000000199e0 D cpu_number\n"
    "ffffffff810aad10 T insert_resource_expand_to_fit\n"
    "ffffffff8137cf20 T kern_path\n"
    "ffffffff81a07e3d T _printk\n"
    "ffffffff82462390 r __ksymtab_kern_path\n"
    "ffffffff8246239c r __ksymtab__printk\n"
    "ffffffff82470cdc r __ksymtab_insert_resource_expand_to_fit\n"
    "ffffffff82b3a3c0 d kern_path\n"
)


# --- Module.symvers / System.map parsing and merging -------------------------------------

def test_parse_module_symvers_keeps_only_vmlinux_rows() -> None:
    assert de.parse_module_symvers(SYMVERS) == {
        "_printk": Export("_printk", 0x92997ED8, False, ""),
        "insert_resource_expand_to_fit": Export("insert_resource_expand_to_fit", 0x84B45156,
                                                True, "CXL"),
        "kern_path": Export("kern_path", 0x04A093B8, False, ""),
    }


@pytest.mark.parametrize("text", [
    "0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\n",                  # 4 fields
    "0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL_FUTURE\t\n",     # unknown export type
    "0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n0x2\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n",  # duplicate
])
def test_parse_module_symvers_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        de.parse_module_symvers(text)


def test_parse_system_map_keeps_repeated_names() -> None:
    symbols = de.parse_system_map(SYSTEM_MAP)
    assert symbols["kern_path"] == [(0xFFFFFFFF8137CF20, "T"), (0xFFFFFFFF82B3A3C0, "d")]
    assert symbols["cpu_number"] == [(0x199E0, "D")]
    with pytest.raises(ValueError):
        de.parse_system_map("ffffffff81a07e3d T\n")


def test_resolve_address_prefers_the_global_namesake() -> None:
    symbols = de.parse_system_map(SYSTEM_MAP)
    assert de.resolve_address("kern_path", symbols) == 0xFFFFFFFF8137CF20
    assert de.resolve_address("_printk", symbols) == 0xFFFFFFFF81A07E3D


def test_resolve_address_fails_loudly() -> None:
    symbols = de.parse_system_map(SYSTEM_MAP)
    with pytest.raises(ValueError, match="no __ksymtab_cpu_number"):
        de.resolve_address("cpu_number", symbols)
    symbols["__ksymtab_vanished"] = [(0xFFFFFFFF82460000, "r")]
    with pytest.raises(ValueError, match="absent from System.map"):
        de.resolve_address("vanished", symbols)
    symbols["dup"] = [(0x1000, "T"), (0x2000, "T")]
    symbols["__ksymtab_dup"] = [(0xFFFFFFFF82460010, "r")]
    with pytest.raises(ValueError, match="ambiguous"):
        de.resolve_address("dup", symbols)


def test_merge_and_format_tsv() -> None:
    rows = de.merge(de.parse_module_symvers(SYMVERS), de.parse_system_map(SYSTEM_MAP))
    assert de.format_tsv(rows, ["provenance line"]) == (
        "# provenance line\n"
        "#name\taddress\tcrc\tgpl\tnamespace\n"
        "_printk\t0xffffffff81a07e3d\t0x92997ed8\t0\t\n"
        "insert_resource_expand_to_fit\t0xffffffff810aad10\t0x84b45156\t1\tCXL\n"
        "kern_path\t0xffffffff8137cf20\t0x04a093b8\t0\t\n"
    )


# --- vmlinux __ksymtab / __kcrctab cross-check --------------------------------------------

# Two struct kernel_symbol entries at 0xffffffff82000000, each three PREL32 offsets taken
# from the address of the field itself; strings table at 0xffffffff82001000.
KSYMTAB = struct.pack("<iiiiii",
                      -0x00FFFFF0, 0xFFC, 0,          # -> 0xffffffff81000010 "_printk"
                      0x7E0199D4, 0xFF8, 0xFFF)       # -> 0x199e0 "cpu_number" ns "CXL"
KCRCTAB = struct.pack("<II", 0x92997ED8, 0x7A2AF7B4)
KSTRINGS = b"_printk\0cpu_number\0CXL\0"


def test_decode_ksymtab() -> None:
    got = de.decode_ksymtab(KSYMTAB, 0xFFFFFFFF82000000, KCRCTAB, KSTRINGS, 0xFFFFFFFF82001000,
                            gpl=True)
    assert got == {
        "_printk": Export("_printk", 0x92997ED8, True, "", 0xFFFFFFFF81000010),
        "cpu_number": Export("cpu_number", 0x7A2AF7B4, True, "CXL", 0x199E0),
    }
    with pytest.raises(ValueError):
        de.decode_ksymtab(KSYMTAB, 0xFFFFFFFF82000000, KCRCTAB[:4], KSTRINGS,
                          0xFFFFFFFF82001000, gpl=True)


def test_cross_check() -> None:
    row = Export("_printk", 0x92997ED8, False, "", 0xFFFFFFFF81A07E3D)
    de.cross_check([row], {"_printk": row})
    with pytest.raises(ValueError, match="disagree"):
        de.cross_check([row], {"_printk": Export("_printk", 0x1, False, "", 0xFFFFFFFF81A07E3D)})
    with pytest.raises(ValueError, match="differ"):
        de.cross_check([row], {})


# --- .rodata strings ------------------------------------------------------------------------

@pytest.mark.parametrize("raw, line", [
    (b"\x013module: overflow in relocation type %d val %Lx\n",
     "<3>module: overflow in relocation type %d val %Lx\\n"),
    (b"\x014a\nb\n", "<4>a\\nb\\n"),
    (b"back\\slash\ttab\x7f", "back\\\\slash\\x09tab\\x7f"),
    (b"\x01c continued", "\\x01c continued"),
    (b"\x7fELF\x02\x01\x01", "\\x7fELF\\x02\\x01\\x01"),
    (b"# filename:lineno", "\\x23 filename:lineno"),
    (b"caf\xc3\xa9 \xff", "caf\u00e9 \\xff"),
])
def test_render_string(raw: bytes, line: str) -> None:
    assert de.render_string(raw) == line


def test_select_strings() -> None:
    rodata = (b"\0\0\x013module: overflow in relocation type %d val %Lx\n\0"
              b"\x016unrelated message\n\0\x01\x02\x03\x04\0"
              b"\x014%s: Unknown symbol %s (err %d)\n\0"
              b"\x7fELF\x02\x01\x01\0module\0module\0"
              b"\x014%s: section %s (index %d) has invalid WRITE|EXEC flags\n\0")
    assert de.select_strings(rodata) == [
        "<3>module: overflow in relocation type %d val %Lx\\n",
        "<4>%s: Unknown symbol %s (err %d)\\n",
        "<4>%s: section %s (index %d) has invalid WRITE|EXEC flags\\n",
        "\\x7fELF\\x02\\x01\\x01",
        "module",
    ]


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        de.parse_args(["--help"])
    assert exc.value.code == 0
    assert "--debs" in capsys.readouterr().out


# --- the committed linux-6.1 x86_64 files ------------------------------------------------

def _tsv() -> tuple[list[str], list[str]]:
    lines = TSV.read_text(encoding="utf-8").splitlines()
    header = lines.index("#name\taddress\tcrc\tgpl\tnamespace")
    return lines[:header + 1], lines[header + 1:]


def test_tsv_header_and_provenance() -> None:
    comments, rows = _tsv()
    assert all(c.startswith("# ") for c in comments[:-1])
    provenance = "\n".join(comments)
    for needle in ("linux-image-6.1.0-56-amd64-dbg 6.1.192-2",
                   "linux-headers-6.1.0-56-amd64 6.1.192-2"):
        assert needle in provenance
    assert re.search(r"System\.map-6\.1\.0-56-amd64 sha256 [0-9a-f]{64}\b", provenance)
    assert re.search(r"Module\.symvers sha256 [0-9a-f]{64}\b", provenance)
    assert not re.search(r"\d{4}-\d{2}-\d{2}", provenance)  # no date: reproducible
    assert not any(r.startswith("#") for r in rows)


def test_tsv_rows_are_well_formed_and_sorted() -> None:
    _, rows = _tsv()
    names = [r.split("\t")[0] for r in rows]
    assert names == sorted(set(names))
    assert len(rows) == 10503  # Module.symvers rows with module "vmlinux"
    for row in rows:
        assert re.fullmatch(r"[\w.]+\t0x[0-9a-f]{16}\t0x[0-9a-f]{8}\t[01]\t\w*", row), row


@pytest.mark.parametrize("row", [
    "_printk\t0xffffffff81a07e3d\t0x92997ed8\t0\t",
    "__fentry__\t0xffffffff81076650\t0xbdfb6dbb\t0\t",
    "module_layout\t0xffffffff8114e720\t0x9060323f\t0\t",
    "__x86_return_thunk\t0xffffffff81e01d30\t0x5b8239ca\t0\t",
    "insert_resource_expand_to_fit\t0xffffffff810aad10\t0x84b45156\t1\tCXL",
    "kern_path\t0xffffffff8137cf20\t0x04a093b8\t0\t",      # not the static 'd' kern_path
    "cpu_number\t0x00000000000199e0\t0x7a2af7b4\t0\t",     # per-cpu: offset in .data..percpu
])
def test_tsv_known_rows(row: str) -> None:
    assert row in _tsv()[1]


def test_tsv_has_no_printk() -> None:
    assert not any(r.startswith("printk\t") for r in _tsv()[1])


def test_kernel_strings() -> None:
    lines = STRINGS.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    data = [line for line in lines if not line.startswith("#")]
    assert data == sorted(set(data))
    for expected in ("<3>module: overflow in relocation type %d val %Lx\\n",
                     "<4>%s: disagrees about version of symbol %s\\n",
                     "<4>Disabling lock debugging due to kernel taint\\n"):
        assert expected in data


# --- struct kernel_symbol formats of the other arches ---------------------------------------

def test_decode_ksymtab_prel32_on_a_32_bit_kernel() -> None:
    """i386: PREL32 entries (x86 selects HAVE_ARCH_PREL32_RELOCATIONS for 32-bit too)."""
    fmt = de.KsymtabFormat(prel32=True, word=4)
    # table at 0xc1bdbbf0, strings at 0xc1c03ad0 = b"_printk\0cpu_number\0CXL\0"
    #   entry 0 (0xc1bdbbf0): 0xc18d8b9b - 0xc1bdbbf0 = -0x303055;
    #                         name: 0xc1c03ad0 - 0xc1bdbbf4 = 0x27edc; no namespace
    #   entry 1 (0xc1bdbbfc): 0xc1e598b8 - 0xc1bdbbfc = 0x27dcbc;
    #                         name: 0xc1c03ad8 - 0xc1bdbc00 = 0x27ed8; ns: 0xc1c03ae3 - 0xc1bdbc04 = 0x27edf
    tab = struct.pack("<iiiiii", -0x303055, 0x27EDC, 0, 0x27DCBC, 0x27ED8, 0x27EDF)
    crcs = struct.pack("<II", 0x070F7896, 0x7A2AF7B4)
    got = de.decode_ksymtab(tab, 0xC1BDBBF0, crcs, KSTRINGS, 0xC1C03AD0, gpl=False, fmt=fmt)
    assert got == {
        "_printk": Export("_printk", 0x070F7896, False, "", 0xC18D8B9B),
        "cpu_number": Export("cpu_number", 0x7A2AF7B4, False, "CXL", 0xC1E598B8),
    }


def test_decode_ksymtab_prel32_wraps_at_the_word_size() -> None:
    # entry at 0xfffffff0: value 0xfffffff0 + 0x20 = 0x1_00000010 -> 0x10 in 32 bits;
    # name field at 0xfffffff4, strings at 0x1000: 0x1000 - 0xfffffff4 = 0x100c (mod 2^32)
    tab = struct.pack("<iii", 0x20, 0x100C, 0)
    got = de.decode_ksymtab(tab, 0xFFFFFFF0, struct.pack("<I", 1), KSTRINGS, 0x1000, gpl=True,
                            fmt=de.KsymtabFormat(prel32=True, word=4))
    assert got == {"_printk": Export("_printk", 1, True, "", 0x10)}


# arm: no HAVE_ARCH_PREL32_RELOCATIONS, so {value, name, namespace} are absolute 32-bit pointers.
# strings at 0xc117373c: "_printk" (+0), "" (+8), "kern_path" (+9), "CXL" (+19)
ARM_STRINGS = b"_printk\0\0kern_path\0CXL\0"
ARM_KSYMTAB = struct.pack("<IIIIIIIII",
                          0xC0D227C4, 0xC117373C, 0xC1173744,   # _printk, namespace ""
                          0xC05DFAD8, 0xC1173745, 0xC117374F,   # kern_path, namespace "CXL"
                          0xC0312A2C, 0xC117373C + 1, 0)        # "printk" (tail of _printk), NULL ns
ARM_KCRCTAB = struct.pack("<III", 0x92997ED8, 0x0934CEC5, 0x11111111)


def test_decode_ksymtab_absolute_32_bit() -> None:
    fmt = de.KsymtabFormat(prel32=False, word=4)
    assert fmt.entry == 12
    got = de.decode_ksymtab(ARM_KSYMTAB, 0xC114BB6C, ARM_KCRCTAB, ARM_STRINGS, 0xC117373C,
                            gpl=False, fmt=fmt)
    assert got == {
        "_printk": Export("_printk", 0x92997ED8, False, "", 0xC0D227C4),
        "kern_path": Export("kern_path", 0x0934CEC5, False, "CXL", 0xC05DFAD8),
        "printk": Export("printk", 0x11111111, False, "", 0xC0312A2C),
    }


def test_decode_ksymtab_absolute_table_read_as_prel32_fails() -> None:
    """Both formats have 12-byte entries on 32-bit: the wrong one must not decode quietly."""
    with pytest.raises(ValueError, match="outside __ksymtab_strings"):
        de.decode_ksymtab(ARM_KSYMTAB, 0xC114BB6C, ARM_KCRCTAB, ARM_STRINGS, 0xC117373C,
                          gpl=False, fmt=de.KsymtabFormat(prel32=True, word=4))


def test_decode_ksymtab_absolute_64_bit_and_big_endian() -> None:
    tab = struct.pack("<QQQ", 0xFFFF800008CC767C, 0xFFFF800009000000, 0)
    got = de.decode_ksymtab(tab, 0xFFFF800008FF0000, struct.pack("<I", 7), b"_printk\0",
                            0xFFFF800009000000, gpl=False, fmt=de.KsymtabFormat(prel32=False, word=8))
    assert de.KsymtabFormat(prel32=False, word=8).entry == 24
    assert got == {"_printk": Export("_printk", 7, False, "", 0xFFFF800008CC767C)}
    big = struct.pack(">III", 0xC0D227C4, 0x1000, 0)
    got = de.decode_ksymtab(big, 0xC0000000, struct.pack(">I", 0x92997ED8), b"_printk\0", 0x1000,
                            gpl=True, fmt=de.KsymtabFormat(prel32=False, word=4, little_endian=False))
    assert got == {"_printk": Export("_printk", 0x92997ED8, True, "", 0xC0D227C4)}
    with pytest.raises(ValueError, match="24-byte entries"):
        de.decode_ksymtab(tab[:12], 0, b"", b"", 0, gpl=False, fmt=de.KsymtabFormat(prel32=False))


def test_format_tsv_32_bit_addresses_and_no_crc() -> None:
    rows = [Export("_printk", 0x92997ED8, False, "", 0xC0D227C4),
            Export("kern_path", None, False, "", 0xFFFFFFFF803C3274)]
    assert de.format_tsv(rows[:1], [], width=8).splitlines()[1] == "_printk\t0xc0d227c4\t0x92997ed8\t0\t"
    assert de.format_tsv(rows[1:], []).splitlines()[1] == "kern_path\t0xffffffff803c3274\t\t0\t"


# --- the stated riscv64 environment -----------------------------------------------------------

def test_image_base_and_rebase() -> None:
    symbols = de.parse_system_map("ffff800008000000 T _text\nffff800008cc767c T _printk\n"
                                  "ffff800009804008 D cpu_number\n")
    assert de.image_base(symbols) == 0xFFFF800008000000
    rows = [Export("_printk", 0x92997ED8, False, "", 0xFFFF800008CC767C),
            Export("cpu_number", 0x7A2AF7B4, True, "NS", 0xFFFF800009804008)]
    # 0xffff800008cc767c - 0xffff800008000000 = 0xcc767c; + 0xffffffff80000000
    assert de.rebase(rows, 0xFFFF800008000000, 0xFFFFFFFF80000000) == [
        Export("_printk", None, False, "", 0xFFFFFFFF80CC767C),
        Export("cpu_number", None, True, "NS", 0xFFFFFFFF81804008),
    ]
    with pytest.raises(ValueError, match="below the image base"):
        de.rebase(rows, 0xFFFF800009000000, 0xFFFFFFFF80000000)
    with pytest.raises(ValueError, match="_text"):
        de.image_base(de.parse_system_map("ffff800008cc767c T _printk\n"))


def test_stated_strings_are_the_common_ones(tmp_path: pathlib.Path) -> None:
    for arch, extra in (("x86_64", "retpoline"), ("i386", "retpoline"), ("arm64", "aarch64"),
                        ("arm", "interworking")):
        (tmp_path / f"{arch}.kernel-strings.txt").write_text(
            f"# header of {arch}\n<4>%s: Unknown symbol %s (err %d)\\n\n{extra}\nmodule\n")
    common, read = de.stated_strings(tmp_path)
    assert common == ["<4>%s: Unknown symbol %s (err %d)\\n", "module"]
    assert [r.split()[0] for r in read] == ["arm.kernel-strings.txt", "arm64.kernel-strings.txt",
                                            "i386.kernel-strings.txt", "x86_64.kernel-strings.txt"]


@pytest.mark.parametrize("argv, ok", [
    (["--arch", "riscv64", "--kernel", "6.1.0-56-arm64", "--version", "6.1.192-2"], False),
    (["--arch", "arm64", "--kernel", "6.1.0-56-arm64", "--version", "6.1.192-2",
      "--rebase-from", "arm64"], False),
    (["--arch", "riscv64", "--kernel", "6.1.0-56-arm64", "--version", "6.1.192-2",
      "--rebase-from", "arm64"], True),
    (["--arch", "arm", "--kernel", "6.1.0-50-armmp", "--version", "6.1.176-1"], True),
])
def test_parse_args_rebase_only_for_stated_arches(argv: list[str], ok: bool) -> None:
    if ok:
        assert de.parse_args(argv).arch == argv[1]
    else:
        with pytest.raises(SystemExit):
            de.parse_args(argv)


# --- /boot/config -----------------------------------------------------------------------------

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_MODULES=y
CONFIG_MODVERSIONS=y
# CONFIG_MODULE_SIG_FORCE is not set
CONFIG_PAGE_OFFSET=0xC0000000
CONFIG_MESSAGE_LOGLEVEL_DEFAULT=4
CONFIG_USB_STORAGE=m
CONFIG_HIGHMEM=y
CONFIG_ARM_MODULE_PLTS=y
"""


def test_parse_config() -> None:
    assert de.parse_config(CONFIG) == {
        "CONFIG_CC_VERSION_TEXT": "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
        "CONFIG_MODULES": True, "CONFIG_MODVERSIONS": True, "CONFIG_MODULE_SIG_FORCE": False,
        "CONFIG_PAGE_OFFSET": 0xC0000000, "CONFIG_MESSAGE_LOGLEVEL_DEFAULT": 4,
        "CONFIG_USB_STORAGE": "m", "CONFIG_HIGHMEM": True, "CONFIG_ARM_MODULE_PLTS": True,
    }


def test_select_config_keeps_loader_options_verbatim() -> None:
    assert de.select_config(CONFIG) == [
        'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"',
        "CONFIG_MODULES=y", "CONFIG_MODVERSIONS=y", "# CONFIG_MODULE_SIG_FORCE is not set",
        "CONFIG_PAGE_OFFSET=0xC0000000", "CONFIG_MESSAGE_LOGLEVEL_DEFAULT=4", "CONFIG_HIGHMEM=y",
        "CONFIG_ARM_MODULE_PLTS=y",
    ]


def test_absent_options() -> None:
    assert de.absent_options(CONFIG, "arm") == [
        "CONFIG_CONSTRUCTORS", "CONFIG_LIVEPATCH", "CONFIG_KALLSYMS_ALL", "CONFIG_RANDOMIZE_BASE",
        "CONFIG_THUMB2_KERNEL", "CONFIG_ARM_HAS_GROUP_RELOCS", "CONFIG_ARM_UNWIND"]
    assert "CONFIG_X86_PAE" in de.absent_options(CONFIG, "i386")
    assert "CONFIG_X86_PAE" not in de.absent_options(CONFIG, "arm")


# --- struct module and the arch sections, from shipped modules -----------------------------

def _elf64_module(init: int | None, exit_: int | None, name: str = "koctest") -> bytes:
    """An x86_64/arm64-style module: ELF64, .rela.gnu.linkonce.this_module."""
    relocs = [elfbuild.Rela(off, sym, elfbuild.R_X86_64_64)
              for off, sym in ((init, "init_module"), (exit_, "cleanup_module")) if off is not None]
    return elfbuild.build(elfbuild.Module(
        name=name,
        sections=[elfbuild.Section(".text", elfbuild.SHF_ALLOC | elfbuild.SHF_EXECINSTR, bytes(16)),
                  elfbuild.Section(".plt", elfbuild.SHF_ALLOC | elfbuild.SHF_EXECINSTR, b"\0"),
                  elfbuild.Section(".init.plt", elfbuild.SHF_ALLOC, b"\0")],
        symbols=[elfbuild.Symbol("init_module", ".text", 0, kind=elfbuild.STT_FUNC),
                 elfbuild.Symbol("cleanup_module", ".text", 8, kind=elfbuild.STT_FUNC)],
        relocs={elfbuild.THIS_MODULE: relocs},
        modinfo={"license": "GPL", "name": name, "vermagic": "6.1.0-56-amd64 SMP preempt mod_unload "
                 "modversions "})).ko()


def _elf32_rel_module() -> bytes:
    """An i386/arm-style module: ELF32 with .rel.gnu.linkonce.this_module (Elf32_Rel, no addend).

    struct module is 0x240 bytes, 64-aligned, "koc32" at 0xc; init at 0xcc, exit at 0x230.
    Layout: Ehdr (52) | this_module @0x40 | .rel @0x280 | .modinfo | .symtab | .strtab |
    .shstrtab | section headers.
    """
    this = bytearray(0x240)
    this[0xC:0xC + 6] = b"koc32\0"
    strtab = b"\0init_module\0cleanup_module\0"
    sym = struct.Struct("<IIIBBH")   # Elf32_Sym: name, value, size, info, other, shndx
    symtab = sym.pack(0, 0, 0, 0, 0, 0) + sym.pack(1, 0, 0, 0x12, 0, 1) + sym.pack(13, 4, 0, 0x12, 0, 1)
    # Elf32_Rel r_info = sym << 8 | type (R_ARM_ABS32 = 2)
    rel = struct.pack("<IIII", 0xCC, 1 << 8 | 2, 0x230, 2 << 8 | 2)
    modinfo = b"name=koc32\0vermagic=6.1.0-50-armmp SMP mod_unload modversions ARMv7 p2v8 \0"
    names = [b"", b".gnu.linkonce.this_module", b".rel.gnu.linkonce.this_module", b".modinfo",
             b".symtab", b".strtab", b".shstrtab", b".plt"]
    shstrtab, name_off = b"\0", [0]
    for n in names[1:]:
        name_off.append(len(shstrtab))
        shstrtab += n + b"\0"
    blobs = [bytes(this), rel, modinfo, symtab, strtab, shstrtab, b"\0"]
    offsets, out = [], bytearray(0x40)
    for blob in blobs:
        offsets.append(len(out))
        out += blob + bytes(-len(blob) % 4)
    shoff = len(out)
    shdr = struct.Struct("<IIIIIIIIII")  # name type flags addr offset size link info align entsize
    out += bytes(shdr.size)
    specs = [(1, 0x3, 0x40), (9, 0x40, 4), (1, 0x2, 1), (2, 0, 4), (3, 0, 1), (3, 0, 1), (1, 0x6, 1)]
    for k, ((kind, flags, align), blob) in enumerate(zip(specs, blobs, strict=True)):
        link, info = {1: (4, 1), 3: (5, 1)}.get(k, (0, 0))
        entsize = {1: 8, 3: 16}.get(k, 0)
        out += shdr.pack(name_off[k + 1], kind, flags, 0, offsets[k], len(blob), link, info, align, entsize)
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)   # ELFCLASS32, little endian
    struct.pack_into("<16sHHIIIIIHHHHHH", out, 0, ident, 1, 40, 1, 0, 0, shoff, 0x05000000, 52, 0, 0,
                     shdr.size, len(names), 6)
    return bytes(out)


def test_module_facts_elf64_rela() -> None:
    facts = de.module_facts(_elf64_module(0x138, 0x350))
    assert (facts.size, facts.align, facts.name, facts.init, facts.exit) == (0x380, 64, 0x18, 0x138, 0x350)
    assert facts.vermagic == "6.1.0-56-amd64 SMP preempt mod_unload modversions "
    assert facts.sections == ((".plt", "SHT_PROGBITS", "AX", 1, 1), (".init.plt", "SHT_PROGBITS", "A", 1, 1))
    without = de.module_facts(_elf64_module(None, None))
    assert (without.init, without.exit) == (None, None)


def test_module_facts_elf32_rel() -> None:
    facts = de.module_facts(_elf32_rel_module())
    assert (facts.size, facts.align, facts.name, facts.init, facts.exit) == (0x240, 64, 0xC, 0xCC, 0x230)
    assert facts.vermagic == "6.1.0-50-armmp SMP mod_unload modversions ARMv7 p2v8 "
    assert facts.sections == ((".plt", "SHT_PROGBITS", "AX", 1, 1),)


def test_module_facts_needs_the_name_in_struct_module() -> None:
    ko = elfbuild.build(elfbuild.Module(name="koctest", struct_name="other",
                                        modinfo={"name": "koctest", "vermagic": "x"})).ko()
    with pytest.raises(ValueError, match="not in .gnu.linkonce.this_module"):
        de.module_facts(ko)


def test_summarise_and_format_facts() -> None:
    modules = [de.module_facts(_elf64_module(0x138, 0x350)), de.module_facts(_elf64_module(None, 0x350)),
               de.module_facts(_elf64_module(None, None, name="other"))]
    facts = de.summarise(modules)
    assert (facts.modules, facts.with_init, facts.with_exit) == (3, 1, 2)
    assert facts.module_struct == {"size": 0x380, "align": 64, "name": 0x18, "init": 0x138, "exit": 0x350}
    text = de.format_facts(facts, ["provenance"], "linux-image-6.1.0-56-amd64 6.1.192-2", "6.1.0-56-amd64")
    assert text.startswith("# provenance\n")
    assert yaml.safe_load(text) == {
        "package": "linux-image-6.1.0-56-amd64 6.1.192-2", "kernel_release": "6.1.0-56-amd64", "modules": 3,
        "vermagic": "6.1.0-56-amd64 SMP preempt mod_unload modversions ",
        "module_struct": {"size": 0x380, "align": 64, "name": 0x18, "init": 0x138, "exit": 0x350},
        "arch_sections": [
            {"name": ".init.plt", "type": "SHT_PROGBITS", "flags": "A", "size": 1, "align": 1, "modules": 3},
            {"name": ".plt", "type": "SHT_PROGBITS", "flags": "AX", "size": 1, "align": 1, "modules": 3}],
    }
    with pytest.raises(ValueError, match="disagree about exit"):
        de.summarise(modules + [de.module_facts(_elf64_module(0x138, 0x340))])
    with pytest.raises(ValueError, match="no modules"):
        de.summarise([])


# --- the committed linux-6.1 files of the other arches --------------------------------------

# arch -> (kernel, version, Module.symvers rows of module vmlinux, hex digits of an address)
COMMITTED = {
    "arm64": ("6.1.0-56-arm64", "6.1.192-2", 10973, 16),
    "arm": ("6.1.0-50-armmp", "6.1.176-1", 10173, 8),
    "i386": ("6.1.0-50-686", "6.1.176-1", 10222, 8),
}


def _rows(arch: str) -> tuple[str, list[str]]:
    lines = (ENV / f"{arch}.tsv").read_text(encoding="utf-8").splitlines()
    header = lines.index("#name\taddress\tcrc\tgpl\tnamespace")
    return "\n".join(lines[:header]), lines[header + 1:]


@pytest.mark.parametrize("arch", sorted(COMMITTED))
def test_committed_tsv(arch: str) -> None:
    kernel, version, count, width = COMMITTED[arch]
    provenance, rows = _rows(arch)
    for needle in (f"linux-image-{kernel}-dbg {version}", f"linux-headers-{kernel} {version}",
                   "(cross-check: __ksymtab*, __kcrctab*)", "per-cpu variables: their link address"):
        assert needle in provenance
    assert not re.search(r"\d{4}-\d{2}-\d{2}", provenance)
    names = [r.split("\t")[0] for r in rows]
    assert names == sorted(set(names)) and len(rows) == count
    pattern = re.compile(rf"[\w.]+\t0x[0-9a-f]{{{width}}}\t0x[0-9a-f]{{8}}\t[01]\t\w*")
    assert all(pattern.fullmatch(r) for r in rows)


@pytest.mark.parametrize("arch, row", [
    ("arm64", "_printk\t0xffff800008cc767c\t0x92997ed8\t0\t"),
    ("arm64", "memcpy\t0xffff800008c9b090\t0x4829a47e\t0\t"),                  # 'W' in System.map
    ("arm64", "kern_path\t0xffff8000083c3274\t0xc3b528e5\t0\t"),               # not the 'd' one
    ("arm64", "cpu_number\t0xffff800009804008\t0x7a2af7b4\t0\t"),              # per-cpu, not 0-based
    ("arm64", "insert_resource_expand_to_fit\t0xffff8000080a0680\t0x84b45156\t1\tCXL"),
    ("arm", "_printk\t0xc0d227c4\t0x92997ed8\t0\t"),
    ("arm", "__gnu_mcount_nc\t0xc0312a2c\t0xb1ad28e0\t0\t"),
    ("arm", "module_layout\t0xc03f1e28\t0x8c1823f3\t0\t"),
    ("arm", "insert_resource_expand_to_fit\t0xc03541b0\t0xdb5792c7\t1\tCXL"),
    ("i386", "_printk\t0xc18d8b9b\t0x070f7896\t0\t"),
    ("i386", "__fentry__\t0xc10596e0\t0xbdfb6dbb\t0\t"),
    ("i386", "__stack_chk_guard\t0xc1e5e6e0\t0x7240a66f\t0\t"),
    ("i386", "__x86_indirect_thunk_eax\t0xc191bb80\t0xa8861fb1\t0\t"),
    ("i386", "cpu_number\t0xc1e598b8\t0x7a2af7b4\t0\t"),
])
def test_committed_known_rows(arch: str, row: str) -> None:
    assert row in _rows(arch)[1]


def test_committed_riscv64_is_stated() -> None:
    provenance, rows = _rows("riscv64")
    assert "STATED configuration (Debian 12 has no riscv64 kernel)" in provenance
    assert "crc: empty" in provenance and "KERNEL_LINK_ADDR 0xffffffff80000000" in provenance
    assert len(rows) == COMMITTED["arm64"][2]
    # arm64 _text 0xffff800008000000 -> 0xffffffff80000000:
    #   _printk 0xffff800008cc767c -> 0xffffffff80cc767c; cpu_number 0xffff800009804008 -> 0xffffffff81804008
    for row in ("_printk\t0xffffffff80cc767c\t\t0\t", "cpu_number\t0xffffffff81804008\t\t0\t",
                "insert_resource_expand_to_fit\t0xffffffff800a0680\t\t1\tCXL"):
        assert row in rows
    assert all(re.fullmatch(r"[\w.]+\t0xffffffff8[0-9a-f]{7}\t\t[01]\t\w*", r) for r in rows)


def test_committed_riscv64_kernel_strings() -> None:
    text = (ENV / "riscv64.kernel-strings.txt").read_text(encoding="utf-8")
    assert "STATED kernel strings" in text.splitlines()[0]
    data = [line for line in text.splitlines() if not line.startswith("#")]
    assert data == sorted(set(data))
    for expected in ("<4>%s: Unknown symbol %s (err %d)\\n",         # kernel/module/main.c
                     "<3>%s: Can not find HI20 relocation information\\n",
                     "<3>%s: module GOT.PLT section(s) missing\\n"):
        assert expected in data
    for foreign in ("<3>module %s: unsupported RELA relocation: %llu\\n",    # arm64's
                    "<3>%s: unknown relocation: %u\\n"):                       # arm's
        assert foreign not in data


@pytest.mark.parametrize("arch, expected", [
    ("arm64", "<3>module %s: overflow in relocation type %d val %Lx\\n"),
    ("arm64", "<3>%s: module PLT section(s) missing\\n"),
    ("arm", "<3>%s: section %u reloc %u sym '%s': unsupported interworking call (ARM -> Thumb)\\n"),
    ("arm", "<3>%s: unknown relocation: %u\\n"),
    ("i386", "<3>module: %s: Unknown relocation: %u\\n"),
])
def test_committed_arch_kernel_strings(arch: str, expected: str) -> None:
    lines = (ENV / f"{arch}.kernel-strings.txt").read_text(encoding="utf-8").splitlines()
    assert expected in lines


# The spec's "Debian 12 kernels" table (sizeof/alignment, name/init/exit offsets).
@pytest.mark.parametrize("arch, struct_module, vermagic", [
    ("x86_64", (0x380, 64, 0x18, 0x138, 0x350), "6.1.0-56-amd64 SMP preempt mod_unload modversions "),
    ("arm64", (0x380, 64, 0x18, 0x138, 0x340), "6.1.0-56-arm64 SMP mod_unload modversions aarch64"),
    ("arm", (0x240, 64, 0xC, 0xCC, 0x230), "6.1.0-50-armmp SMP mod_unload modversions ARMv7 p2v8 "),
    ("i386", (0x240, 64, 0xC, 0xCC, 0x20C), "6.1.0-50-686 SMP preempt mod_unload modversions GEODE "),
])
def test_committed_facts(arch: str, struct_module: tuple[int, ...], vermagic: str) -> None:
    facts = yaml.safe_load((ENV / f"{arch}.facts.yaml").read_text(encoding="utf-8"))
    assert tuple(facts["module_struct"][k] for k in ("size", "align", "name", "init", "exit")) == struct_module
    assert facts["vermagic"] == vermagic
    sections = {s["name"]: s for s in facts["arch_sections"] or []}
    expected = {"x86_64": set(), "i386": set(), "arm": {".plt", ".init.plt"},
                "arm64": {".plt", ".init.plt", ".text.ftrace_trampoline"}}[arch]
    assert sections.keys() == expected
    assert all(s["size"] == 1 and s["modules"] == facts["modules"] for s in sections.values())


@pytest.mark.parametrize("arch, lines", [
    ("x86_64", ["CONFIG_RETPOLINE=y", "CONFIG_RETHUNK=y", "CONFIG_KALLSYMS_ALL=y", "CONFIG_LIVEPATCH=y"]),
    ("arm64", ["CONFIG_ARM64_MODULE_PLTS=y", "CONFIG_ARM64_ERRATUM_843419=y", "CONFIG_ARM64_VA_BITS=48",
               "CONFIG_ARM64_4K_PAGES=y", "CONFIG_ARM64_PTR_AUTH_KERNEL=y", "# CONFIG_KALLSYMS_ALL is not set"]),
    ("arm", ["CONFIG_ARM_MODULE_PLTS=y", "# CONFIG_THUMB2_KERNEL is not set", "CONFIG_ARM_HAS_GROUP_RELOCS=y",
             "CONFIG_ARM_UNWIND=y", "CONFIG_HIGHMEM=y", "CONFIG_PAGE_OFFSET=0xC0000000", "CONFIG_VMSPLIT_3G=y"]),
    ("i386", ["CONFIG_RETPOLINE=y", "# CONFIG_RETHUNK is not set", "CONFIG_HIGHMEM=y", "CONFIG_HIGHMEM4G=y",
              "CONFIG_PAGE_OFFSET=0xC0000000", "CONFIG_MGEODE_LX=y", "CONFIG_MODULES_USE_ELF_REL=y"]),
])
def test_committed_config(arch: str, lines: list[str]) -> None:
    text = (ENV / f"{arch}.config").read_text(encoding="utf-8")
    assert text.startswith(f"# koconform derive_environment: profile linux-6.1, arch {arch}")
    for line in lines + ["CONFIG_MODVERSIONS=y", "CONFIG_MODULE_SIG=y", "# CONFIG_MODULE_SIG_FORCE is not set",
                         "CONFIG_MODULE_UNLOAD=y", "CONFIG_STRICT_MODULE_RWX=y", "CONFIG_MESSAGE_LOGLEVEL_DEFAULT=4"]:
        assert line in text.splitlines()
    assert "absent from the configuration (no line: not set): CONFIG_CONSTRUCTORS" in text
