"""arm64 RELA relocations as Linux 6.1 applies them (spec §5.3), through the whole loader.

Every module is built byte by byte by elfbuild (e_machine patched to EM_AARCH64). Expected
instruction words are worked out by hand from the Arm ARM encodings; the arithmetic is in
the comment next to each value. Encodings used:
  movz Xd #imm16, lsl #hw*16   = 0xd2800000 | hw << 21 | imm16 << 5 | Rd   (movn: 0x92800000, movk: 0xf2800000)
  ldr Xt, label (literal)      = 0x58000000 | imm19 << 5 | Rt       imm19 = offset / 4
  adr Xd, label                = 0x10000000 | immlo << 29 | immhi << 5 | Rd   imm21 = immhi:immlo
  adrp Xd, label               = 0x90000000 | same fields, imm21 = page offset
  add Xd, Xn, #imm12           = 0x91000000 | imm12 << 10 | Rn << 5 | Rd
  ldr Xt, [Xn, #imm]           = 0xf9400000 | (imm / 8) << 10 ...  (ldrb 0x39400000 /1, ldrh 0x79400000 /2,
                                 ldr Wt 0xb9400000 /4, ldr Qt 0x3dc00000 /16)
  tbz Wt, #b, label            = 0x36000000 | imm14 << 5 | Rt;  b.eq label = 0x54000000 | imm19 << 5
  b label / bl label           = 0x14000000 / 0x94000000 | imm26

Where things land (spec §3.3, STRICT_MODULE_RWX, 4 KiB pages) for `_module`: sections 1 .text
(AX, align 16, 0x40), 2 .data (WA, align 8, 0x20), 3 .plt, 4 .init.plt, 5 .text.ftrace_trampoline
(1-byte placeholders that module_frob_arch_sections turns into NOBITS: .plt AX align 64,
(count + 1) * 12 bytes; .init.plt goes to init; the trampoline AX align 4, 24 bytes), .modinfo,
this_module. Core text group in index order: .text @ 0 (0x40), .plt @ ALIGN(0x40, 64) = 0x40,
trampoline after it; rounded to 0x1000; .data @ 0x1000. So TEXT = CORE, DATA = CORE + 0x1000,
PLT = CORE + 0x40.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from elfbuild import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    STB_LOCAL,
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
from koconform.reference.arch import arm64
from koconform.reference.errors import RelocationError

ROOT = Path(__file__).resolve().parents[1]
PROFILE = load_profile("linux-6.1", "arm64")
CORE, INIT, COPY = 0xFFFF800000D00000, 0xFFFF800000E00000, 0xFFFF80000B000000
TEXT, DATA, PLT = CORE, CORE + 0x1000, CORE + 0x40
S_K = 0xFFFF800008CC767C          # _printk in System.map (nokaslr)
NAME = "koctest"
EM_AARCH64 = 183
VERIFY = (5, f"{NAME}: module verification failed: signature and/or required key missing - tainting kernel")
R = {r.name: r.number for r in arm64.RELOCATIONS.values()}


def _module(relocs: dict[str, list[Rela]], text: bytes = bytes(0x40), data: bytes = bytes(0x20),
            extra: list[Section] | None = None, symbols: list[Symbol] | None = None) -> bytes:
    modinfo = {"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y"}
    b = build(Module(
        name=NAME,
        sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, text, align=16),
                  Section(".data", SHF_WRITE | SHF_ALLOC, data, align=8),
                  Section(".plt", SHF_ALLOC | SHF_EXECINSTR, b"\0"),
                  Section(".init.plt", SHF_ALLOC, b"\0"),
                  Section(".text.ftrace_trampoline", SHF_ALLOC | SHF_EXECINSTR, b"\0"),
                  *(extra or [])],
        symbols=symbols or [Symbol("", ".text", bind=STB_LOCAL, kind=STT_SECTION),    # 1
                            Symbol("", ".data", bind=STB_LOCAL, kind=STT_SECTION),    # 2
                            Symbol("ksym"),                                           # 3
                            Symbol("ksym2")],                                         # 4
        relocs=relocs, modinfo=modinfo))
    b.set_ehdr("e_machine", EM_AARCH64)
    return b.ko()


def _env(ksym: int = S_K, ksym2: int = S_K + 0x1000) -> Environment:
    return Environment(symbols={"ksym": KernelSymbol("ksym", ksym), "ksym2": KernelSymbol("ksym2", ksym2)},
                       regions={"core": CORE, "init": INIT, "copy": COPY})


def _load(ko: bytes, ksym: int = S_K, profile: object = PROFILE) -> Result:
    return loader.load(Request(ko, "arm64", profile, _env(ksym), run_init=False))  # type: ignore[arg-type]


def _staged_failure(ko: bytes, ksym: int = S_K) -> loader.Load:
    """Up to apply_relocations, which must fail; the Load keeps the memory."""
    ld = loader.Load(Request(ko, "arm64", PROFILE, _env(ksym), run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    ld.after_layout()
    ld.simplify_symbols()
    with pytest.raises(RelocationError):
        ld.apply_relocations()
    return ld


def _words(*pairs: tuple[int, int]) -> bytes:
    out = bytearray(0x40)
    for off, word in pairs:
        struct.pack_into("<I", out, off, word)
    return bytes(out)


def _word(result: Result, section: str, off: int) -> int:
    return int(struct.unpack_from("<I", result.sections[section], off)[0])


def _log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log]


# ---- every type, hand-worked -----------------------------------------------------------------
# (id, type, S, r_offset, A, original word, expected word) for instructions in .text.
INSNS = [
    # movz x0, #0: S+A = 0x1234 -> 0xd2800000 | 0x1234 << 5 = 0xd2800000 | 0x24680 = 0xd2824680
    ("movw-uabs-g0", "R_AARCH64_MOVW_UABS_G0", 0x1234, 0x0, 0, 0xD2800000, 0xD2824680),
    # movk x0, #0: low 16 bits of S_K = 0x767c -> 0x767c << 5 = 0xecf80 -> 0xf28ecf80
    ("movw-uabs-g0-nc", "R_AARCH64_MOVW_UABS_G0_NC", S_K, 0x0, 0, 0xF2800000, 0xF28ECF80),
    # movz lsl 16: (0x56780000 >> 16) = 0x5678 -> 0x5678 << 5 = 0xacf00 -> 0xd2aacf00
    ("movw-uabs-g1", "R_AARCH64_MOVW_UABS_G1", 0x56780000, 0x0, 0, 0xD2A00000, 0xD2AACF00),
    # movk lsl 16: bits 31:16 of S_K = 0x08cc -> 0x08cc << 5 = 0x11980 -> 0xf2a11980
    ("movw-uabs-g1-nc", "R_AARCH64_MOVW_UABS_G1_NC", S_K, 0x0, 0, 0xF2A00000, 0xF2A11980),
    # movz lsl 32: 0x123400000000 >> 32 = 0x1234 -> 0xd2c00000 | 0x24680 = 0xd2c24680
    ("movw-uabs-g2", "R_AARCH64_MOVW_UABS_G2", 0x123400000000, 0x0, 0, 0xD2C00000, 0xD2C24680),
    # movk lsl 32: bits 47:32 of S_K = 0x8000 -> 0x8000 << 5 = 0x100000 -> 0xf2d00000
    ("movw-uabs-g2-nc", "R_AARCH64_MOVW_UABS_G2_NC", S_K, 0x0, 0, 0xF2C00000, 0xF2D00000),
    # movk lsl 48: S_K >> 48 (arithmetic) = -1 -> imm16 0xffff -> 0xffff << 5 = 0x1fffe0 -> 0xf2ffffe0
    ("movw-uabs-g3", "R_AARCH64_MOVW_UABS_G3", S_K, 0x0, 0, 0xF2E00000, 0xF2FFFFE0),
    # movz -> movn (bits 30:29 cleared): S = -0x1234, imm = ~(-0x1234) = 0x1233 -> 0x92800000 | 0x24660
    ("movw-sabs-g0-movn", "R_AARCH64_MOVW_SABS_G0", (1 << 64) - 0x1234, 0x0, 0, 0xD2800000, 0x92824660),
    # movn -> movz (bits 30:29 = 0b10): S = 0x56780000 -> 0xd2a00000 | 0xacf00 = 0xd2aacf00
    ("movw-sabs-g1-movz", "R_AARCH64_MOVW_SABS_G1", 0x56780000, 0x0, 0, 0x92A00000, 0xD2AACF00),
    # S = -0x123400000000: >> 32 = -0x1234, ~ = 0x1233 -> movn lsl 32: 0x92c00000 | 0x24660 = 0x92c24660
    ("movw-sabs-g2-movn", "R_AARCH64_MOVW_SABS_G2", (1 << 64) - 0x123400000000, 0x0, 0, 0xD2C00000, 0x92C24660),
    # S = TEXT (section symbol) + 0x30, P = TEXT + 0x10: 0x20 -> movz #0x20: 0xd2800000 | 0x400
    ("movw-prel-g0", "R_AARCH64_MOVW_PREL_G0", None, 0x10, 0x30, 0x92800000, 0xD2800400),
    # S + A - P = 0x30 - 0x10 + 0x12340000... : A = 0x12340010 from P = TEXT+0x10 -> 0x12340000 >> 16 = 0x1234
    ("movw-prel-g1", "R_AARCH64_MOVW_PREL_G1", None, 0x10, 0x12340010, 0xD2A00000, 0xD2A24680),
    # S + A - P = -0x20 (A = -0x10, P = TEXT + 0x10) -> movn #0x1f: 0x92800000 | 0x1f << 5 = 0x928003e0
    ("movw-prel-g0-negative", "R_AARCH64_MOVW_PREL_G0", None, 0x10, -0x10, 0xD2800000, 0x928003E0),
    # movk: low 16 bits of 0x20 -> 0xf2800400
    ("movw-prel-g0-nc", "R_AARCH64_MOVW_PREL_G0_NC", None, 0x10, 0x30, 0xF2800000, 0xF2800400),
    # ldr x0, literal: S+A-P = 0x20 -> imm19 = 8 -> 8 << 5 = 0x100 -> 0x58000100
    ("ld-prel-lo19", "R_AARCH64_LD_PREL_LO19", None, 0x10, 0x30, 0x58000000, 0x58000100),
    # adr x0: S+A-P = 0x23 -> immlo = 3 (<< 29 = 0x60000000), immhi = 8 (<< 5 = 0x100) -> 0x70000100
    ("adr-prel-lo21", "R_AARCH64_ADR_PREL_LO21", None, 0x10, 0x33, 0x10000000, 0x70000100),
    # adrp x0 at P = TEXT: Page(S_K) - Page(P) = 0xffff800008cc7000 - 0xffff800000d00000 = 0x7fc7000
    #   -> 0x7fc7 pages: immlo = 3 (0x60000000), immhi = 0x1ff1 (<< 5 = 0x3fe20) -> 0xf003fe20
    ("adr-prel-pg-hi21", "R_AARCH64_ADR_PREL_PG_HI21", S_K, 0x0, 0, 0x90000000, 0xF003FE20),
    ("adr-prel-pg-hi21-nc", "R_AARCH64_ADR_PREL_PG_HI21_NC", S_K, 0x0, 0, 0x90000000, 0xF003FE20),
    # add x0, x0, #0: lo12(S_K) = 0x67c -> 0x67c << 10 = 0x19f000 -> 0x9119f000
    ("add-abs-lo12-nc", "R_AARCH64_ADD_ABS_LO12_NC", S_K, 0x0, 0, 0x91000000, 0x9119F000),
    # ldrb w0, [x0]: lo12(S_K + 1) = 0x67d -> 0x67d << 10 = 0x19f400 -> 0x3959f400
    ("ldst8-abs-lo12-nc", "R_AARCH64_LDST8_ABS_LO12_NC", S_K, 0x0, 1, 0x39400000, 0x3959F400),
    # ldrh: 0x67c >> 1 = 0x33e -> << 10 = 0xcf800 -> 0x794cf800
    ("ldst16-abs-lo12-nc", "R_AARCH64_LDST16_ABS_LO12_NC", S_K, 0x0, 0, 0x79400000, 0x794CF800),
    # ldr w0: 0x67c >> 2 = 0x19f -> << 10 = 0x67c00 -> 0xb9467c00
    ("ldst32-abs-lo12-nc", "R_AARCH64_LDST32_ABS_LO12_NC", S_K, 0x0, 0, 0xB9400000, 0xB9467C00),
    # ldr x0: S = 0x...4b0: 0x4b0 >> 3 = 0x96 -> << 10 = 0x25800 -> 0xf9425800
    ("ldst64-abs-lo12-nc", "R_AARCH64_LDST64_ABS_LO12_NC", 0xFFFF80000911D4B0, 0x0, 0, 0xF9400000, 0xF9425800),
    # ldr q0: S = 0x...4c0: 0x4c0 >> 4 = 0x4c -> << 10 = 0x13000 -> 0x3dc13000
    ("ldst128-abs-lo12-nc", "R_AARCH64_LDST128_ABS_LO12_NC", 0xFFFF80000911D4C0, 0x0, 0, 0x3DC00000, 0x3DC13000),
    # tbz w0, #0: S+A-P = 0x20 -> imm14 = 8 -> 0x100 -> 0x36000100
    ("tstbr14", "R_AARCH64_TSTBR14", None, 0x10, 0x30, 0x36000000, 0x36000100),
    # b.eq: S+A-P = -0x10 -> imm19 = -4 = 0x7fffc -> << 5 = 0xffff80 -> 0x54ffff80
    ("condbr19", "R_AARCH64_CONDBR19", None, 0x10, 0x0, 0x54000000, 0x54FFFF80),
    # bl at P = TEXT + 8: S_K - P = 0xffff800008cc767c - 0xffff800000d00008 = 0x7fc7674 -> >> 2 = 0x1ff1d9d
    ("call26", "R_AARCH64_CALL26", S_K, 0x8, 0, 0x94000000, 0x95FF1D9D),
    # b at P = TEXT + 8, same distance: 0x14000000 | 0x1ff1d9d = 0x15ff1d9d
    ("jump26", "R_AARCH64_JUMP26", S_K, 0x8, 0, 0x14000000, 0x15FF1D9D),
    # NONE (256) and R_ARM_NONE (0): nothing written
    ("none-256", "R_AARCH64_NONE", S_K, 0x0, 0, 0xD503201F, 0xD503201F),
    ("none-0", "R_ARM_NONE", S_K, 0x0, 0, 0xD503201F, 0xD503201F),
]


@pytest.mark.parametrize("case,rtype,s,offset,addend,before,after", INSNS, ids=[c[0] for c in INSNS])
def test_instruction_relocation(case: str, rtype: str, s: int | None, offset: int, addend: int,
                                before: int, after: int) -> None:
    sym = 1 if s is None else "ksym"                  # None: the .text section symbol (S = TEXT)
    ko = _module({".text": [Rela(offset, sym, R[rtype], addend)]}, text=_words((offset, before)))
    result = _load(ko, ksym=s if s is not None else S_K)
    assert result.status == "loaded", result.detail
    assert _word(result, ".text", offset) == after


DATA_CASES = [
    # S+A = 0xffff800008cc767c + 0x10 = 0xffff800008cc768c
    ("abs64", "R_AARCH64_ABS64", S_K, 0x10, bytes.fromhex("8c76cc080080ffff")),
    # 0x12345678 + 8 = 0x12345680
    ("abs32", "R_AARCH64_ABS32", 0x12345678, 8, bytes.fromhex("80563412")),
    # 0x1234 + 2 = 0x1236
    ("abs16", "R_AARCH64_ABS16", 0x1234, 2, bytes.fromhex("3612")),
    # S+A-P at P = DATA + 8: 0xffff800008cc767c - 0xffff800000d01008 = 0x7fc6674
    ("prel32", "R_AARCH64_PREL32", S_K, 0, bytes.fromhex("7466fc07")),
    # 64 bits of S - P: 0x7fc6674
    ("prel64", "R_AARCH64_PREL64", S_K, 0, bytes.fromhex("7466fc0700000000")),
    # S = 0xffff800000d01000 + 0x40 (close by), P = DATA + 8: 0x38
    ("prel16", "R_AARCH64_PREL16", DATA + 0x40, 0, bytes.fromhex("3800")),
]


@pytest.mark.parametrize("case,rtype,s,addend,expected", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_relocation(case: str, rtype: str, s: int, addend: int, expected: bytes) -> None:
    ko = _module({".data": [Rela(8, "ksym", R[rtype], addend)]})
    result = _load(ko, ksym=s)
    assert result.status == "loaded", result.detail
    assert result.sections[".data"][8:8 + len(expected)] == expected


# ---- range checks at their edges -------------------------------------------------------------
# (type, original word or None for data, last value that fits, first that does not,
#  lowest that fits, first below it); values of S+A-P for PREL/PAGE, of S+A for ABS.
# The kernel's checks (module.c): reloc_data ABS: 0 <= v <= U16/U32_MAX, PREL: S16/S32;
# reloc_insn_movw: imm = v >> lsb (arithmetic) <= 0xffff, MOVNZ inverts a negative imm first;
# reloc_insn_imm: v >> lsb fits len signed bits.
EDGES = [
    ("R_AARCH64_ABS32", None, 0xFFFFFFFF, 0x100000000, 0, -1),
    ("R_AARCH64_ABS16", None, 0xFFFF, 0x10000, 0, -1),
    ("R_AARCH64_PREL32", None, 0x7FFFFFFF, 0x80000000, -0x80000000, -0x80000001),
    ("R_AARCH64_PREL16", None, 0x7FFF, 0x8000, -0x8000, -0x8001),
    ("R_AARCH64_MOVW_UABS_G0", 0xD2800000, 0xFFFF, 0x10000, 0, -1),
    ("R_AARCH64_MOVW_UABS_G1", 0xD2A00000, 0xFFFFFFFF, 0x100000000, 0, -1),
    ("R_AARCH64_MOVW_UABS_G2", 0xD2C00000, (1 << 48) - 1, 1 << 48, 0, -1),
    ("R_AARCH64_MOVW_SABS_G0", 0xD2800000, 0xFFFF, 0x10000, -0x10000, -0x10001),
    ("R_AARCH64_MOVW_SABS_G1", 0xD2A00000, (1 << 32) - 1, 1 << 32, -(1 << 32), -(1 << 32) - 1),
    ("R_AARCH64_MOVW_SABS_G2", 0xD2C00000, (1 << 48) - 1, 1 << 48, -(1 << 48), -(1 << 48) - 1),
    ("R_AARCH64_MOVW_PREL_G0", 0xD2800000, 0xFFFF, 0x10000, -0x10000, -0x10001),
    ("R_AARCH64_MOVW_PREL_G1", 0xD2A00000, (1 << 32) - 1, 1 << 32, -(1 << 32), -(1 << 32) - 1),
    ("R_AARCH64_MOVW_PREL_G2", 0xD2C00000, (1 << 48) - 1, 1 << 48, -(1 << 48), -(1 << 48) - 1),
    # (S+A-P) >> 2 in 19 signed bits: [-2^20, 2^20 - 1] (the low two bits are dropped unchecked)
    ("R_AARCH64_LD_PREL_LO19", 0x58000000, (1 << 20) - 1, 1 << 20, -(1 << 20), -(1 << 20) - 1),
    ("R_AARCH64_ADR_PREL_LO21", 0x10000000, (1 << 20) - 1, 1 << 20, -(1 << 20), -(1 << 20) - 1),
    # Page(S+A) - Page(P) in 21 signed bits of pages: [-2^32, 2^32 - 4096]
    ("R_AARCH64_ADR_PREL_PG_HI21", 0x90000000, (1 << 32) - 0x1000, 1 << 32, -(1 << 32), -(1 << 32) - 0x1000),
    ("R_AARCH64_TSTBR14", 0x36000000, (1 << 15) - 1, 1 << 15, -(1 << 15), -(1 << 15) - 1),
    ("R_AARCH64_CONDBR19", 0x54000000, (1 << 20) - 1, 1 << 20, -(1 << 20), -(1 << 20) - 1),
]


def _edge_module(rtype: str, word: int | None, value: int) -> tuple[bytes, int]:
    """A module whose one relocation computes `value`; returns (ko, kernel symbol to give)."""
    number = R[rtype]
    enc = arm64.ENCODINGS[number]
    if word is None:                                # data in .data at offset 8
        if enc.op == "ABS":
            return _module({".data": [Rela(8, "ksym", number, 0)]}), value % (1 << 64)
        return _module({".data": [Rela(8, 2, number, 8 + value)]}), S_K      # S = DATA, P = DATA + 8
    if enc.op == "ABS":
        return _module({".text": [Rela(0, "ksym", number, 0)]}, text=_words((0, word))), value % (1 << 64)
    # PREL / PAGE: S = TEXT (section symbol), P = TEXT, so S + A - P = A (and Page(A) = A here).
    return _module({".text": [Rela(0, 1, number, value)]}, text=_words((0, word))), S_K


@pytest.mark.parametrize("rtype,word,last,first,lowest,below", EDGES, ids=[e[0] for e in EDGES])
def test_range_edges(rtype: str, word: int | None, last: int, first: int, lowest: int, below: int) -> None:
    for fits in (last, lowest):
        ko, s = _edge_module(rtype, word, fits)
        assert _load(ko, ksym=s).status == "loaded", (rtype, hex(fits))
    for over in (first, below):
        ko, s = _edge_module(rtype, word, over)
        result = _load(ko, ksym=s)
        assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate"), (rtype, hex(over))
        level, text = _log(result)[-1]
        assert level == 3 and text.startswith(f"module {NAME}: overflow in relocation type {R[rtype]} val ")


def test_table_ranges_match_the_edges() -> None:
    """The table's RangeCheck is the same range the loader enforces (the coverage report reads it)."""
    for rtype, _, last, first, lowest, below in EDGES:
        check = arm64.RELOCATIONS[R[rtype]].check
        assert check is not None
        if R[rtype] == R["R_AARCH64_ADR_PREL_PG_HI21"]:
            continue                                # its value is a page difference: checked on the page
        for v, ok in ((last, True), (first, False), (lowest, True), (below, False)):
            assert bool(check.fits(np.array([v % (1 << 64)], dtype=np.uint64))[0]) is ok, (rtype, hex(v))


def test_overflow_is_written_then_checked() -> None:
    """movz x0 with UABS_G0 value 0x12345: the kernel stores imm16 = 0x2345 (0x2345 << 5 = 0x468a0 ->
    0xd28468a0), then returns -ERANGE; an earlier entry is written, a later one is not."""
    text = _words((0, 0xD2800000), (4, 0xD2800000), (8, 0xD2800000))
    ko = _module({".text": [Rela(0, "ksym", R["R_AARCH64_MOVW_UABS_G0"], 0x1111 - 0x12345),
                            Rela(4, "ksym", R["R_AARCH64_MOVW_UABS_G0"], 0),
                            Rela(8, "ksym", R["R_AARCH64_MOVW_UABS_G0"], 0x1111 - 0x12345)]}, text=text)
    # S = 0x12345: entry 0 is 0x1111 (0xd2800000 | 0x1111 << 5 = 0xd2822220), entry 1 overflows.
    ld = _staged_failure(ko, ksym=0x12345)
    words = struct.unpack("<3I", ld.memory.read(TEXT, 12))
    assert words == (0xD2822220, 0xD28468A0, 0xD2800000)
    assert ld.log[-1].text == f"module {NAME}: overflow in relocation type 263 val 12345"


def test_unknown_type() -> None:
    ko = _module({".text": [Rela(0, "ksym", 281, 0)]})
    result = _load(ko)
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY, (3, f"module {NAME}: unsupported RELA relocation: 281")]


def test_break_fault_word_is_left_alone() -> None:
    """aarch64_insn_encode_immediate returns AARCH64_BREAK_FAULT (0xd4202000) unchanged."""
    ko = _module({".text": [Rela(8, "ksym", R["R_AARCH64_CALL26"], 0)]}, text=_words((8, 0xD4202000)))
    result = _load(ko)
    assert result.status == "loaded"
    assert _word(result, ".text", 8) == 0xD4202000


def test_misaligned_branch_bits_are_dropped() -> None:
    """bl with S+A-P = 0x22: imm26 = 0x22 >> 2 = 8, the low bits vanish unchecked: 0x94000008."""
    ko = _module({".text": [Rela(0, 1, R["R_AARCH64_CALL26"], 0x22)]}, text=_words((0, 0x94000000)))
    result = _load(ko)
    assert _word(result, ".text", 0) == 0x94000008


def test_bulk_matches_one_by_one() -> None:
    """Overlapping places send the section through the exact path: same bytes as the bulk path."""
    relocs = [Rela(0, "ksym", R["R_AARCH64_ADD_ABS_LO12_NC"], 0), Rela(4, 1, R["R_AARCH64_CALL26"], 0x20),
              Rela(0x10, "ksym", R["R_AARCH64_MOVW_UABS_G0_NC"], 0)]
    text = _words((0, 0x91000000), (4, 0x94000000), (0x10, 0xF2800000))
    bulk = _load(_module({".text": relocs}, text=text))
    # The same entries plus a NONE at the same place as entry 0 (a written duplicate is what forces
    # the fallback; NONE writes nothing, so use a second ADD to the same word: it re-encodes it).
    one = _load(_module({".text": [*relocs, Rela(0, "ksym", R["R_AARCH64_ADD_ABS_LO12_NC"], 0)]}, text=text))
    assert bulk.sections[".text"] == one.sections[".text"]


# ---- the profile agrees with the environment's facts --------------------------------------------
def test_profile_matches_environment_facts() -> None:
    facts = yaml.safe_load((ROOT / "conformance/environments/linux-6.1/arm64.facts.yaml").read_text())
    doc = yaml.safe_load((ROOT / "conformance/profiles/linux-6.1/arm64.yaml").read_text())
    assert doc["vermagic"] == facts["vermagic"]
    assert doc["package"] == facts["package"] and doc["kernel_release"] == facts["kernel_release"]
    assert {k: int(str(v), 0) for k, v in doc["module_struct"].items()} == \
        {k: int(str(v), 0) for k, v in facts["module_struct"].items()}
    names = {s["name"] for s in facts["arch_sections"]}
    assert names == {".plt", ".init.plt", ".text.ftrace_trampoline"}
    for name in names:
        assert f"\t{name} 0 : {{ BYTE(0) }}" in doc["build"]["module_lds"]


def test_profile_config_matches_debian_config() -> None:
    lines = (ROOT / "conformance/environments/linux-6.1/arm64.config").read_text().splitlines()
    set_y = {line.split("=")[0] for line in lines if line.endswith("=y")}
    unset = {line.split()[1] for line in lines if line.startswith("# CONFIG_") and line.endswith(" is not set")}
    for option, value in PROFILE.config.items():
        if not isinstance(value, bool):
            continue
        if value:
            assert option in set_y, option
        else:
            assert option not in set_y, option
    assert "CONFIG_ARM64_BTI_KERNEL" not in set_y | unset or "CONFIG_ARM64_BTI_KERNEL" in unset
