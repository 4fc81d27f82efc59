"""x86_64 RELA relocations as Linux 6.1 applies them (spec §5.1, §5.2), through the whole loader.

Every module here is built byte by byte by elfbuild. Expected bytes are worked out by
hand from the spec's formulas; the arithmetic is in the comment next to each value.

Where things land (spec §3.3, STRICT_MODULE_RWX, 4 KiB pages), for the module `_module`
builds: sections 1 .text (AX, align 16, 0x40 bytes), 2 .data (WA, align 8, 0x20 bytes),
3 .comment (no flags), 4 .modinfo (ALLOC cleared before layout), 5 this_module (WA, 0x380).
  core pass m=0: .text @ 0 -> size 0x40 -> strict_align -> 0x1000
  m=1, m=2: nothing -> 0x1000
  m=3: .data @ ALIGN(0x1000, 8) = 0x1000; this_module @ ALIGN(0x1020, 64) = 0x1040
So .text = core + 0 = 0xffffffffc0000000 and .data = core + 0x1000 = 0xffffffffc0001000.
"""
from __future__ import annotations

import re

import pytest
from elfbuild import (
    R_X86_64_32,
    R_X86_64_32S,
    R_X86_64_64,
    R_X86_64_NONE,
    R_X86_64_PC32,
    R_X86_64_PC64,
    R_X86_64_PLT32,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    STB_LOCAL,
    STB_WEAK,
    STT_SECTION,
    Module,
    Rela,
    Section,
    Symbol,
    build,
)
from koconform.conformance.model import Environment, KernelSymbol, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader
from koconform.reference.errors import RelocationError

PROFILE = load_profile("linux-6.1", "x86_64")
CORE, INIT, COPY = 0xFFFFFFFFC0000000, 0xFFFFFFFFC0100000, 0xFFFFC90000000000
TEXT = CORE                  # .text: offset 0 of core (see module docstring)
DATA = CORE + 0x1000         # .data: offset 0x1000 of core
S_K = 0xFFFFFFFF81A07E3D     # the address we give the kernel export `ksym`
NAME = "koctest"
# §1.3 step 9 / §3.3 note: an unsigned module's load always logs this before relocation.
VERIFY = (5, (f"{NAME}: module verification failed: signature and/or required key missing - "
              "tainting kernel"))
HINT = (3, f"module: `{NAME}' likely not compiled with -mcmodel=kernel")


def _module(relocs: dict[str, list[Rela]], text: bytes = bytes(0x40)) -> bytes:
    modinfo = {"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y",
               "retpoline": "Y"}
    return build(Module(
        name=NAME,
        sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, text, align=16),
                  Section(".data", SHF_WRITE | SHF_ALLOC, bytes(0x20), align=8),
                  Section(".comment", 0, bytes(0x10))],
        symbols=[Symbol("", ".text", bind=STB_LOCAL, kind=STT_SECTION),     # 1
                 Symbol("", ".data", bind=STB_LOCAL, kind=STT_SECTION),     # 2
                 Symbol("ksym"),                                            # 3
                 Symbol("wsym", bind=STB_WEAK)],                            # 4: stays 0
        relocs=relocs, modinfo=modinfo)).ko()


def _env(ksym: int = S_K) -> Environment:
    return Environment(symbols={"ksym": KernelSymbol("ksym", ksym)},
                       regions={"core": CORE, "init": INIT, "copy": COPY})


def _load(ko: bytes, ksym: int = S_K) -> Result:
    return loader.load(Request(ko, "x86_64", PROFILE, _env(ksym), run_init=False))


def _staged_failure(ko: bytes, ksym: int = S_K) -> loader.Load:
    """Run the stages up to apply_relocations, which must fail; the Load keeps the memory."""
    ld = loader.Load(Request(ko, "x86_64", PROFILE, _env(ksym), run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    ld.after_layout()
    ld.simplify_symbols()
    with pytest.raises(RelocationError):
        ld.apply_relocations()
    return ld


def _with(size: int, *fields: tuple[int, bytes]) -> bytes:
    out = bytearray(size)
    for off, data in fields:
        out[off:off + len(data)] = data
    return bytes(out)


def _log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log]


def _assert_rejected(result: Result, tail: list[tuple[int, str]]) -> None:
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY] + tail


def _assert_nonzero_line(result: Result, rtype: int, val: str) -> None:
    """The 'Skipping invalid relocation target' line: its `loc %p` is a hashed pointer."""
    _assert_rejected(result, [(3, result.log[-1].text)])
    rec = result.log[-1]
    head = ("module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
            f"for type {rtype}, loc ")
    # %p on 64-bit: a 32-bit hash printed as 16 zero-padded lowercase hex digits (§7.3).
    assert re.fullmatch(re.escape(head) + "[0-9a-f]{16}" + re.escape(f", val {val}"), rec.text)
    assert rec.pattern is not None
    assert re.fullmatch(rec.pattern, f"{head}00000000a1b2c3d4, val {val}")
    assert not re.fullmatch(rec.pattern, f"{head}00000000a1b2c3d4, val {val}0")


# ---- the formulas, one entry per module -------------------------------------------------
FORMULAS = [
    # (id, type, S, r_offset, A, expected bytes at r_offset)
    # S+A = 0xffffffff81a07e3d + 0x10 = 0xffffffff81a07e4d
    ("64", R_X86_64_64, S_K, 0x08, 0x10, bytes.fromhex("4d7ea081ffffffff")),
    # S+A = 0xffffffff81a07e3d - 0x3d = 0xffffffff81a07e00
    ("64-negative-addend", R_X86_64_64, S_K, 0x08, -0x3D, bytes.fromhex("007ea081ffffffff")),
    # S+A-P = 0xffffffff81a07e39 - 0xffffffffc0000013 = -(0xc0000013 - 0x81a07e39) = -0x3e5f81da
    #       -> low 32: 0x100000000 - 0x3e5f81da = 0xc1a07e26
    ("pc32", R_X86_64_PC32, S_K, 0x13, -4, bytes.fromhex("267ea0c1")),
    # S+A-P = 0xffffffffc0002000 - 4 - 0xffffffffc0000004 = 0x1ff8
    ("pc32-forward", R_X86_64_PC32, 0xFFFFFFFFC0002000, 0x04, -4, bytes.fromhex("f81f0000")),
    # S+A-P = 0xffffffff81a07e39 - 0xffffffffc0000021 = -(0xc0000021 - 0x81a07e39) = -0x3e5f81e8
    #       -> 0x100000000 - 0x3e5f81e8 = 0xc1a07e18
    ("plt32", R_X86_64_PLT32, S_K, 0x21, -4, bytes.fromhex("187ea0c1")),
    # S+A = 0x12345678 + 0x10 = 0x12345688 (fits in u32)
    ("32", R_X86_64_32, 0x12345678, 0x28, 0x10, bytes.fromhex("88563412")),
    # S+A = 0xffffffff81a07e3d + 8 = 0xffffffff81a07e45 = sign-extension of 0x81a07e45
    ("32s", R_X86_64_32S, S_K, 0x2C, 8, bytes.fromhex("457ea081")),
    # S+A-P = 0xffffffff81a07e3d - 0xffffffffc0000030 = -(0xc0000030 - 0x81a07e3d) = -0x3e5f81f3
    #       -> 2^64 - 0x3e5f81f3 = 0xffffffffc1a07e0d
    ("pc64", R_X86_64_PC64, S_K, 0x30, 0, bytes.fromhex("0d7ea0c1ffffffff")),
    # NONE writes nothing
    ("none", R_X86_64_NONE, S_K, 0x38, 0x1234, b""),
]


@pytest.mark.parametrize("rtype,s,offset,addend,expected", [f[1:] for f in FORMULAS],
                         ids=[f[0] for f in FORMULAS])
def test_formula(rtype: int, s: int, offset: int, addend: int, expected: bytes) -> None:
    result = _load(_module({".text": [Rela(offset, "ksym", rtype, addend)]}), ksym=s)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(0x40, (offset, expected))
    assert _log(result) == [VERIFY]


def test_all_types_in_one_section() -> None:
    entries = [Rela(0x08, "ksym", R_X86_64_64, 0x10), Rela(0x13, "ksym", R_X86_64_PC32, -4),
               Rela(0x21, "ksym", R_X86_64_PLT32, -4), Rela(0x2C, "ksym", R_X86_64_32S, 8),
               Rela(0x30, "ksym", R_X86_64_PC64, 0), Rela(0x38, "ksym", R_X86_64_NONE, 0x1234)]
    result = _load(_module({".text": entries}))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    # Same values as the single-entry cases above (same S, P and A).
    assert result.sections[".text"] == _with(
        0x40, (0x08, bytes.fromhex("4d7ea081ffffffff")), (0x13, bytes.fromhex("267ea0c1")),
        (0x21, bytes.fromhex("187ea0c1")), (0x2C, bytes.fromhex("457ea081")),
        (0x30, bytes.fromhex("0d7ea0c1ffffffff")))
    assert result.symbols == {"ksym": S_K, "wsym": 0}


def test_local_section_symbols_and_a_data_target() -> None:
    result = _load(_module({
        ".text": [Rela(0x00, 2, R_X86_64_64, 0x18),           # .data section symbol
                  Rela(0x08, 2, R_X86_64_PC32, 0x10 - 4)],
        ".data": [Rela(0x08, "ksym", R_X86_64_64, 0),
                  Rela(0x10, 1, R_X86_64_PC32, 0x20)],        # .text section symbol
    }))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(
        0x40,
        # S+A = .data + 0x18 = 0xffffffffc0001000 + 0x18 = 0xffffffffc0001018
        (0x00, bytes.fromhex("181000c0ffffffff")),
        # S+A-P = 0xffffffffc0001000 + 0xc - 0xffffffffc0000008 = 0x1004
        (0x08, bytes.fromhex("04100000")))
    assert result.sections[".data"] == _with(
        0x20,
        # S+A = 0xffffffff81a07e3d
        (0x08, bytes.fromhex("3d7ea081ffffffff")),
        # S+A-P = 0xffffffffc0000000 + 0x20 - 0xffffffffc0001010 = -0xff0 -> 0xfffff010
        (0x10, bytes.fromhex("10f0ffff")))


def test_none_ignores_a_nonzero_place() -> None:
    text = _with(0x40, (0x10, b"\xcc" * 8))
    result = _load(_module({".text": [Rela(0x10, "ksym", R_X86_64_NONE, 0)]}, text=text))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == text          # NONE: no zero check, no write


def test_relocations_of_unallocated_targets_are_skipped() -> None:
    # §5.1 step 2: .comment has no SHF_ALLOC, .modinfo lost it in rewrite_section_headers;
    # so not even an unknown type (42) in them is looked at.
    result = _load(_module({".comment": [Rela(0, "ksym", 42, 0)],
                            ".modinfo": [Rela(0, "ksym", R_X86_64_64, 0)]}))
    assert result.status == "loaded", result.detail
    assert _log(result) == [VERIFY]


def test_r_offset_outside_its_target_section_is_not_checked() -> None:
    # §2.1: x86 does not check that r_offset lies inside the target section. .text is 0x40
    # bytes at core + 0; r_offset 0x1008 / 0x1010 land in .data (core + 0x1000) at 8 / 0x10.
    result = _load(_module({".text": [Rela(0x1008, "ksym", R_X86_64_64, 0),
                                      Rela(0x1010, "ksym", R_X86_64_PC32, -4)]}))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == bytes(0x40)
    assert result.sections[".data"] == _with(
        0x20,
        # S+A = 0xffffffff81a07e3d
        (0x08, bytes.fromhex("3d7ea081ffffffff")),
        # P = 0xffffffffc0001010; S+A-P = 0xffffffff81a07e39 - 0xffffffffc0001010
        #   = -(0xc0001010 - 0x81a07e39) = -0x3e5f91d7 -> 0x100000000 - 0x3e5f91d7 = 0xc1a06e29
        (0x10, bytes.fromhex("296ea0c1")))


# ---- R_X86_64_32 / 32S range: 6.1 writes, then checks -----------------------------------
@pytest.mark.parametrize("rtype,s,addend,expected", [
    # S+A = 0xfffffff0 + 0xf = 0xffffffff = (u32) 0xffffffff: fits
    (R_X86_64_32, 0xFFFFFFF0, 0xF, bytes.fromhex("ffffffff")),
    # S+A = 0x7fffffff: (s32) 0x7fffffff = 0x7fffffff: fits
    (R_X86_64_32S, 0x7FFFFFFF, 0, bytes.fromhex("ffffff7f")),
    # S+A = 0xffffffff80000000 = -0x80000000; (s32) 0x80000000 = -0x80000000: fits
    (R_X86_64_32S, 0xFFFFFFFF80000000, 0, bytes.fromhex("00000080")),
], ids=["32-0xffffffff", "32s-0x7fffffff", "32s-minus-0x80000000"])
def test_absolute_32_in_range_loads(rtype: int, s: int, addend: int, expected: bytes) -> None:
    result = _load(_module({".text": [Rela(0x28, "ksym", rtype, addend)]}), ksym=s)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(0x40, (0x28, expected))


OVERFLOWS = [
    # (id, type, S, A, val as %Lx prints it, low 32 bits written before the check)
    # S+A = 0xfffffff0 + 0x10 = 0x100000000 != (u32) 0 -> overflow; written 00 00 00 00
    ("32-0x100000000", R_X86_64_32, 0xFFFFFFF0, 0x10, "100000000", bytes.fromhex("00000000")),
    # S+A = 0x123456789 != (u32) 0x23456789 -> overflow; written 89 67 45 23
    ("32-0x123456789", R_X86_64_32, 0x123456789, 0, "123456789", bytes.fromhex("89674523")),
    # S+A = 0xffffffff81a07e3d (a kernel address) != (u32) 0x81a07e3d
    ("32-kernel-address", R_X86_64_32, S_K, 0, "ffffffff81a07e3d", bytes.fromhex("3d7ea081")),
    # S+A = 0x7fffffff + 1 = 0x80000000; (s32) 0x80000000 = -0x80000000 != 0x80000000
    ("32s-0x80000000", R_X86_64_32S, 0x7FFFFFFF, 1, "80000000", bytes.fromhex("00000080")),
    # S+A = 0xffffffff80000000 - 1 = 0xffffffff7fffffff = -0x80000001;
    # (s32) 0x7fffffff = 0x7fffffff != -0x80000001
    ("32s-0xffffffff7fffffff", R_X86_64_32S, 0xFFFFFFFF80000000, -1, "ffffffff7fffffff",
     bytes.fromhex("ffffff7f")),
]


@pytest.mark.parametrize("rtype,s,addend,val,written", [o[1:] for o in OVERFLOWS],
                         ids=[o[0] for o in OVERFLOWS])
def test_absolute_32_overflow(rtype: int, s: int, addend: int, val: str, written: bytes) -> None:
    ko = _module({".text": [Rela(0x28, "ksym", rtype, addend)]})
    result = _load(ko, ksym=s)
    _assert_rejected(result, [(3, f"module: overflow in relocation type {rtype} val {val}"), HINT])
    assert result.sections is None
    # 6.1 writes the low 32 bits first and checks afterwards: they are in module memory.
    ld = _staged_failure(ko, ksym=s)
    assert ld.memory.read(TEXT, 0x40) == _with(0x40, (0x28, written))


# ---- PC32/PLT32: no overflow check in 6.1 ------------------------------------------------
@pytest.mark.parametrize("rtype,s,expected", [
    # S+A-P = 0x80001000 - 4 - 0xffffffffc0000010 = 0x80000ffc + 0x3ffffff0 = 0xc0000fec
    # (+3 GiB: beyond +2 GiB); low 32 bits written: 0xc0000fec
    (R_X86_64_PC32, 0x80001000, bytes.fromhex("ec0f00c0")),
    (R_X86_64_PLT32, 0x80001000, bytes.fromhex("ec0f00c0")),
    # S+A-P = 0xfffffffefffffffc - 0xffffffffc0000010 = -0xc0000014 (beyond -2 GiB)
    #       -> low 32: 0x100000000 - 0xc0000014 = 0x3fffffec
    (R_X86_64_PC32, 0xFFFFFFFF00000000, bytes.fromhex("ecffff3f")),
], ids=["pc32-plus-3GiB", "plt32-plus-3GiB", "pc32-minus-3GiB"])
def test_pc32_out_of_range_is_truncated_and_loads(rtype: int, s: int, expected: bytes) -> None:
    result = _load(_module({".text": [Rela(0x10, "ksym", rtype, -4)]}), ksym=s)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(0x40, (0x10, expected))
    assert _log(result) == [VERIFY]


# ---- the "must be zero" check ----------------------------------------------------------
NONZERO = [
    # (id, type, field width, S, A, val printed = S+A before P is subtracted,
    #  field written when only the byte just past it is non-zero)
    # 64: S+A = 0xffffffff81a07e3d
    ("64", R_X86_64_64, 8, S_K, 0, "ffffffff81a07e3d", bytes.fromhex("3d7ea081ffffffff")),
    # PC32: S+A = 0xffffffff81a07e39; S+A-P = -(0xc0000010 - 0x81a07e39) = -0x3e5f81d7
    #       -> 0x100000000 - 0x3e5f81d7 = 0xc1a07e29
    ("pc32", R_X86_64_PC32, 4, S_K, -4, "ffffffff81a07e39", bytes.fromhex("297ea0c1")),
    ("plt32", R_X86_64_PLT32, 4, S_K, -4, "ffffffff81a07e39", bytes.fromhex("297ea0c1")),
    # 32: S+A = 0x12345678
    ("32", R_X86_64_32, 4, 0x12345678, 0, "12345678", bytes.fromhex("78563412")),
    # 32S: S+A = 0xffffffff81a07e3d
    ("32s", R_X86_64_32S, 4, S_K, 0, "ffffffff81a07e3d", bytes.fromhex("3d7ea081")),
    # PC64: S+A = 0xffffffff81a07e39; S+A-P = -0x3e5f81d7 -> 0xffffffffc1a07e29
    ("pc64", R_X86_64_PC64, 8, S_K, -4, "ffffffff81a07e39", bytes.fromhex("297ea0c1ffffffff")),
]


@pytest.mark.parametrize("rtype,width,s,addend,val,written", [n[1:] for n in NONZERO],
                         ids=[n[0] for n in NONZERO])
def test_nonzero_place_is_rejected(rtype: int, width: int, s: int, addend: int, val: str,
                                   written: bytes) -> None:
    # Only the last byte of the field is non-zero.
    text = _with(0x40, (0x10 + width - 1, b"\xcc"))
    result = _load(_module({".text": [Rela(0x10, "ksym", rtype, addend)]}, text=text), ksym=s)
    _assert_nonzero_line(result, rtype, val)


@pytest.mark.parametrize("rtype,width,s,addend,val,written", [n[1:] for n in NONZERO],
                         ids=[n[0] for n in NONZERO])
def test_zero_check_covers_only_the_field(rtype: int, width: int, s: int, addend: int, val: str,
                                          written: bytes) -> None:
    # The byte just past the field is non-zero: not looked at, the entry applies.
    text = _with(0x40, (0x10 + width, b"\xcc"))
    result = _load(_module({".text": [Rela(0x10, "ksym", rtype, addend)]}, text=text), ksym=s)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(0x40, (0x10, written), (0x10 + width, b"\xcc"))


def test_unknown_type() -> None:
    result = _load(_module({".text": [Rela(0x00, "ksym", 42, 0)]}))
    _assert_rejected(result, [(3, f"module: {NAME}: Unknown rela relocation: 42")])


# ---- order: entries are applied one by one, earlier ones stay written -------------------
@pytest.mark.parametrize("second", [
    Rela(0x08, "ksym", R_X86_64_64, 0x10),     # same 8 bytes
    Rela(0x04, "ksym", R_X86_64_64, 0x10),     # covers 0x04..0x0b, overlapping 0x08..0x0b
], ids=["same-place", "overlapping"])
def test_second_entry_sees_the_first(second: Rela) -> None:
    ko = _module({".text": [Rela(0x08, "ksym", R_X86_64_64, 0), second]})
    result = _load(ko)
    # The second entry's S+A = 0xffffffff81a07e3d + 0x10 = 0xffffffff81a07e4d
    _assert_nonzero_line(result, R_X86_64_64, "ffffffff81a07e4d")
    ld = _staged_failure(ko)
    # The first entry's S+A = 0xffffffff81a07e3d stays at 0x08.
    assert ld.memory.read(TEXT, 0x40) == _with(0x40, (0x08, bytes.fromhex("3d7ea081ffffffff")))


def test_entry_writing_zeros_leaves_the_place_usable() -> None:
    # wsym is weak and not exported: st_value stays 0 (§4.1). Entry 0 writes 00 00 00 00 at
    # 0x00, so entry 1 finds 8 zero bytes there and applies: S+A = 0xffffffff81a07e3d.
    result = _load(_module({".text": [Rela(0x00, "wsym", R_X86_64_32, 0),
                                      Rela(0x00, "ksym", R_X86_64_64, 0)]}))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == _with(0x40, (0x00, bytes.fromhex("3d7ea081ffffffff")))


# Entries 0..2 of the five, as each writes them (place in .text, S = 0xffffffff81a07e3d):
#   0: 64   @0x00 A=0:  S+A = 0xffffffff81a07e3d
#   1: PC32 @0x08 A=-4: S+A-P = 0xffffffff81a07e39 - 0xffffffffc0000008 = -0x3e5f81cf
#                       -> 0x100000000 - 0x3e5f81cf = 0xc1a07e31
#   2: 32S  @0x0c A=0:  S+A = 0xffffffff81a07e3d, low 32 = 0x81a07e3d
#   4: 64   @0x18: never reached, stays zero.
WRITTEN_0_TO_2 = [(0x00, bytes.fromhex("3d7ea081ffffffff")), (0x08, bytes.fromhex("317ea0c1")),
                  (0x0C, bytes.fromhex("3d7ea081"))]
FAILING_ENTRY_3 = [
    # (id, entry 3, .text before, bytes at 0x10 afterwards, log lines)
    ("unknown", Rela(0x10, "ksym", 42, 0), b"", b"",
     [(3, f"module: {NAME}: Unknown rela relocation: 42")]),
    # 64 @0x10 onto a 0xcc byte: refused before writing, 0xcc stays
    ("nonzero", Rela(0x10, "ksym", R_X86_64_64, 0), b"\xcc", b"\xcc", None),
    # 32 @0x10: S+A = 0xffffffff81a07e3d written as 3d 7e a0 81, then the overflow check fails
    ("overflow", Rela(0x10, "ksym", R_X86_64_32, 0), b"", bytes.fromhex("3d7ea081"),
     [(3, "module: overflow in relocation type 10 val ffffffff81a07e3d"), HINT]),
]


@pytest.mark.parametrize("prefix", ["separate-places", "zero-write-overlap"])
@pytest.mark.parametrize("entry3,before,after,tail", [f[1:] for f in FAILING_ENTRY_3],
                         ids=[f[0] for f in FAILING_ENTRY_3])
def test_failure_in_entry_3_of_5_keeps_entries_0_to_2(
        prefix: str, entry3: Rela, before: bytes, after: bytes,
        tail: list[tuple[int, str]] | None) -> None:
    entries = [Rela(0x00, "ksym", R_X86_64_64, 0), Rela(0x08, "ksym", R_X86_64_PC32, -4),
               Rela(0x0C, "ksym", R_X86_64_32S, 0), entry3, Rela(0x18, "ksym", R_X86_64_64, 0)]
    if prefix == "zero-write-overlap":
        # Entry 0 becomes "32 @0x00 against wsym (0)": it writes 4 zero bytes, and entry 0'
        # (the old entry 0) overlaps it. Six entries; the failing one is still preceded by
        # three that write what WRITTEN_0_TO_2 lists.
        entries.insert(0, Rela(0x00, "wsym", R_X86_64_32, 0))
    ko = _module({".text": entries}, text=_with(0x40, (0x10, before)))
    result = _load(ko)
    if tail is None:
        _assert_nonzero_line(result, R_X86_64_64, "ffffffff81a07e3d")
    else:
        _assert_rejected(result, tail)
    ld = _staged_failure(ko)
    assert ld.memory.read(TEXT, 0x40) == _with(0x40, *WRITTEN_0_TO_2, (0x10, after))
