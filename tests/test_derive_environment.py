"""Tests for tools/derive_environment.py and the linux-6.1 environment files it committed.

The unit tests use small inputs written here. The tests of the committed files use literals
read by hand from Debian's linux-image-6.1.0-56-amd64-dbg / linux-headers-6.1.0-56-amd64
6.1.192-2 (System.map, Module.symvers), not from the tool. No network, no .debs needed.
"""
from __future__ import annotations

import pathlib
import re
import struct

import pytest

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
