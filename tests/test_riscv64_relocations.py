"""riscv64 RELA relocations as Linux 6.1 applies them (spec §5.5), through the whole loader.

Every module here is built byte by byte by elfbuild. Expected instruction words are worked
out by hand from the RISC-V ISA manual's formats (the arithmetic is in the comment next to
each value); nothing is copied from the reference's output.

Encodings used (unprivileged ISA, RV64I/C):
  U-type  imm[31:12] | rd | opcode        auipc 0x17, lui 0x37
  I-type  imm[11:0]<<20 | rs1<<15 | funct3<<12 | rd<<7 | opcode     addi 0x13/0, ld 0x03/3, jalr 0x67/0
  S-type  imm[11:5]<<25 | rs2<<20 | rs1<<15 | funct3<<12 | imm[4:0]<<7 | opcode   sw 0x23/2, sd 0x23/3
  B-type  imm[12]<<31 | imm[10:5]<<25 | rs2<<20 | rs1<<15 | funct3<<12 | imm[4:1]<<8 | imm[11]<<7 | 0x63
  J-type  imm[20]<<31 | imm[10:1]<<21 | imm[11]<<20 | imm[19:12]<<12 | rd<<7 | 0x6f
  CB      funct3<<13 | imm[8]<<12 | imm[4:3]<<10 | rs1'<<7 | imm[7:6]<<5 | imm[2:1]<<3 | imm[5]<<2 | 01
  CJ      funct3<<13 | imm[11|4|9:8|10|6|7|3:1|5] in bits 12..2 | 01
Registers: ra = x1, t0 = x5, t1 = x6, a0 = x10 (rs1' 2), a1 = x11.
Empty instructions (immediate 0):
  auipc a0, 0 = 10<<7 | 0x17 = 0x00000517      auipc ra, 0 = 1<<7 | 0x17 = 0x00000097
  addi a0, a0, 0 = 10<<15 | 10<<7 | 0x13 = 0x00050513
  ld a0, 0(a0) = 10<<15 | 3<<12 | 10<<7 | 0x03 = 0x00053503
  sw a1, 0(a0) = 11<<20 | 10<<15 | 2<<12 | 0x23 = 0x00b52023
  sd a1, 0(a0) = 11<<20 | 10<<15 | 3<<12 | 0x23 = 0x00b53023
  lui a0, 0 = 10<<7 | 0x37 = 0x00000537
  jalr ra, 0(ra) = 1<<15 | 1<<7 | 0x67 = 0x000080e7
  beq a0, a1, 0 = 11<<20 | 10<<15 | 0x63 = 0x00b50063
  jal ra, 0 = 1<<7 | 0x6f = 0x000000ef
  c.beqz a0, 0 = 6<<13 | 2<<7 | 1 = 0xc101        c.j 0 = 5<<13 | 1 = 0xa001

Where things land (spec §3.3 and §5.5; STRICT_MODULE_RWX, 4 KiB pages) for `_module`:
sections 1 .text (AX, 0x40 bytes, align 4), 2 .data (WA, 0x20, align 8), 3 .plt, 4 .got,
5 .got.plt (1 byte each, as the arch linker script leaves them), 6 .comment, .modinfo,
this_module (WA, 0x380, align 64). module_frob_arch_sections turns .plt into NOBITS AX
(plts+1)*12 bytes, .got/.got.plt into NOBITS A (gots+1)*8 / (plts+1)*8 bytes, all aligned 64.
  text group:   .text @ 0 (0x40), .plt @ ALIGN(0x40, 64) = 0x40          -> strict_align 0x1000
  rodata group: .got @ 0x1000, .got.plt @ ALIGN(0x1000 + 8*(gots+1), 64) = 0x1040 (gots < 8)
                                                                         -> strict_align 0x2000
  data group:   .data @ 0x2000, this_module @ ALIGN(0x2020, 64) = 0x2040
"""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from elfbuild import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHN_ABS,
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
from koconform.reference.arch import riscv64 as rv
from koconform.reference.arch import riscv64_sections as rvs
from koconform.reference.elf import SHT_NOBITS

PROFILE = load_profile("linux-6.1", "riscv64")
CORE, INIT, COPY = 0xFFFFFFFF02A00000, 0xFFFFFFFF02C00000, 0xFFFFFFC800000000
TEXT, PLT, GOT, GOT_PLT, DATA = CORE, CORE + 0x40, CORE + 0x1000, CORE + 0x1040, CORE + 0x2000
S_K = 0xFFFFFFFF80A12340     # the kernel export `ksym`
NAME = "koctest"
VERIFY = (5, f"{NAME}: module verification failed: signature and/or required key missing - tainting kernel")
EM_RISCV = 243

(R_32, R_64, R_BRANCH, R_JAL, R_CALL, R_CALL_PLT, R_GOT_HI20, R_PCREL_HI20, R_PCREL_LO12_I, R_PCREL_LO12_S,
 R_HI20, R_LO12_I, R_LO12_S, R_ADD32, R_ADD64, R_SUB32, R_SUB64, R_ALIGN, R_RVC_BRANCH, R_RVC_JUMP,
 R_RELAX) = (1, 2, 16, 17, 18, 19, 20, 23, 24, 25, 26, 27, 28, 35, 36, 39, 40, 43, 44, 45, 51)


def w32(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


def w16(*halves: int) -> bytes:
    return b"".join(h.to_bytes(2, "little") for h in halves)


def _text(*fields: tuple[int, bytes]) -> bytes:
    out = bytearray(0x40)
    for off, data in fields:
        out[off:off + len(data)] = data
    return bytes(out)


# Symbols every module has: 1 .text, 2 .data (section symbols), 3 ksym (undefined, from the
# environment), 4 wsym (weak undefined: 0); a test's own follow from index 5.
BASE_SYMBOLS = [Symbol("", ".text", bind=STB_LOCAL, kind=STT_SECTION), Symbol("", ".data", bind=STB_LOCAL,
                kind=STT_SECTION), Symbol("ksym"), Symbol("wsym", bind=STB_WEAK)]
SEC_TEXT, SEC_DATA, KSYM = 1, 2, 3


def _module(relocs: dict[str, list[Rela]], text: bytes = bytes(0x40), data: bytes = bytes(0x20),
            symbols: list[Symbol] | None = None, arch_sections: tuple[str, ...] = (".plt", ".got", ".got.plt"),
            extra: list[Section] | None = None) -> bytes:
    modinfo = {"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y"}
    sections = [Section(".text", SHF_ALLOC | SHF_EXECINSTR, text, align=4),
                Section(".data", SHF_WRITE | SHF_ALLOC, data, align=8)]
    sections += [Section(name, SHF_ALLOC, b"\0") for name in arch_sections]
    sections += [Section(".comment", 0, bytes(0x10))] + (extra or [])
    b = build(Module(name=NAME, sections=sections, symbols=BASE_SYMBOLS + (symbols or []), relocs=relocs,
                     modinfo=modinfo))
    b.set_ehdr("e_machine", EM_RISCV)
    return b.ko()


def _env(ksym: int = S_K) -> Environment:
    return Environment(symbols={"ksym": KernelSymbol("ksym", ksym)}, regions={"core": CORE, "init": INIT, "copy": COPY})


def _load(ko: bytes, ksym: int = S_K, config: dict[str, object] | None = None) -> Result:
    profile = load_profile("linux-6.1", "riscv64", config) if config else PROFILE
    return loader.load(Request(ko, "riscv64", profile, _env(ksym), run_init=False))


def _sec(result: Result, name: str) -> bytes:
    assert result.status == "loaded", (result.status, result.errno, result.detail, result.log)
    assert result.sections is not None
    return result.sections[name]


def _log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log]


def _rejected(result: Result, errno: str = "EINVAL") -> list[tuple[int, str]]:
    assert (result.status, result.errno, result.phase) == ("rejected", errno, "relocate"), \
        (result.status, result.errno, result.phase, result.detail)
    assert _log(result)[0] == VERIFY
    return _log(result)[1:]


def _abs(name: str, value: int) -> Symbol:
    return Symbol(name, SHN_ABS, value=value & (2**64 - 1))


def _label(name: str, offset: int) -> Symbol:
    return Symbol(name, ".text", value=offset, bind=STB_LOCAL)


PCREL_MSG = re.compile(re.escape(f"{NAME}: target ") + "([0-9a-f]{16})"
                       + re.escape(" can not be addressed by the 32-bit offset from PC = ") + "[0-9a-f]{16}")


# ---- the ISA formats, field by field --------------------------------------------------------
@pytest.mark.parametrize("off,bits", [
    # +0x20: imm[10:5] = 1 -> 1<<25
    (0x20, 0x02000000),
    # -16 = ...1111_0000: imm[12] -> 1<<31, imm[11] -> 1<<7, imm[10:5] = 0x3f -> 0x7e000000, imm[4:1] = 0b1000 -> 8<<8
    (-16, 0x80000000 | 0x80 | 0x7E000000 | 0x800),
    # +0xffe (the largest): imm[11] -> 1<<7, imm[10:5] = 0x3f -> 0x7e000000, imm[4:1] = 0xf -> 0xf00
    (0xFFE, 0x80 | 0x7E000000 | 0xF00),
])
def test_b_type(off: int, bits: int) -> None:
    assert rv.b_imm(off & (2**64 - 1)) & 0xFFFFFFFF == bits


@pytest.mark.parametrize("off,bits", [
    # +0x800: imm[11] -> 1<<20
    (0x800, 0x00100000),
    # -2: imm[20] -> 1<<31, imm[10:1] = 0x3ff -> 0x7fe00000, imm[11] -> 1<<20, imm[19:12] = 0xff -> 0xff000
    (-2, 0xFFFFF000),
    # +0x12346: imm[19:12] = 0x12 -> 0x12000, imm[11] = 0, imm[10:1] = 0x346>>1 = 0x1a3 -> 0x1a3<<21 = 0x34600000
    (0x12346, 0x34612000),
])
def test_j_type(off: int, bits: int) -> None:
    assert rv.j_imm(off & (2**64 - 1)) & 0xFFFFFFFF == bits


@pytest.mark.parametrize("off,bits", [
    (0x20, 0x0004),                                          # imm[5] -> bit 2
    # -2: imm[8] -> 0x1000, imm[7:6] -> 0x60, imm[5] -> 0x4, imm[4:3] -> 0xc00, imm[2:1] -> 0x18
    (-2, 0x1C7C),
    (0x0E, 0x0418),                                          # imm[2:1] = 3 -> 0x18, imm[3] -> bit 10
])
def test_cb_format(off: int, bits: int) -> None:
    assert rv.cb_imm(off & (2**64 - 1)) & 0xFFFF == bits


@pytest.mark.parametrize("off,bits", [
    (0x20, 0x0004),                                          # imm[5] -> bit 2
    # -2: every imm bit set: bits 12..2 all ones = 0x1ffc
    (-2, 0x1FFC),
    # 0x400: imm[10] -> bit 8
    (0x400, 0x0100),
    # 0x80: imm[7] -> bit 6; 0x40: imm[6] -> bit 7
    (0xC0, 0x00C0),
])
def test_cj_format(off: int, bits: int) -> None:
    assert rv.cj_imm(off & (2**64 - 1)) & 0xFFFF == bits


@pytest.mark.parametrize("off,upper", [
    (0x12345800, 0x12346000),          # low 12 = 0x800 is -2048: the upper part rounds up
    (0x123457FF, 0x12345000),          # low 12 = 0x7ff: no rounding
    (-0x80000800, 0x80000000),         # the lowest reachable: hi = -2^31, lo = -2048
    (0x7FFFF7FF, 0x7FFFF000),          # the highest reachable: hi = 0x7ffff000, lo = 0x7ff
])
def test_hi20_rounding(off: int, upper: int) -> None:
    assert rv.hi20(off & (2**64 - 1)) & 0xFFFFFFFF == upper
    # hi + sign-extended lo gives the offset back
    lo = off & 0xFFF
    lo = lo - 0x1000 if lo & 0x800 else lo
    hi = upper - (1 << 32) if upper >> 31 else upper
    assert hi + lo == off


def test_pcrel_window_edges() -> None:
    """riscv_insn_valid_32bit_offset: [-2^31 - 2^11, 2^31 - 2^11)."""
    m = 2**64 - 1
    assert rv.valid_32bit_offset((2**31 - 2**11 - 1) & m)
    assert not rv.valid_32bit_offset((2**31 - 2**11) & m)
    assert rv.valid_32bit_offset((-(2**31) - 2**11) & m)
    assert not rv.valid_32bit_offset((-(2**31) - 2**11 - 1) & m)


def test_plt_entry_words() -> None:
    """asm/module.h emit_plt_entry for a .got.plt slot 0x1000 past the entry:
    hi20 = (0x1000 + 0x800) & 0xfffff000 = 0x1000, lo12 = 0:
      auipc t0, 0x1   = 0x1000 | 5<<7 | 0x17 = 0x00001297
      ld t1, 0(t0)    = 0<<20 | 5<<15 | 3<<12 | 6<<7 | 0x03 = 0x0002b303
      jr t1           = 6<<15 | 0x67 = 0x00030067"""
    assert rvs.emit_plt_entry(0x40, 0x1040) == (0x00001297, 0x0002B303, 0x00030067)
    # slot 0x8ff8 past: hi20 = (0x8ff8 + 0x800) & ~0xfff = 0x9000, lo12 = 0x8ff8 - 0x9000 = -8 -> 0xff8
    #   auipc t0, 0x9 = 0x00009297; ld t1, -8(t0) = 0xff8<<20 | 0x2b303 = 0xff82b303
    assert rvs.emit_plt_entry(0x1000, 0x9FF8) == (0x00009297, 0xFF82B303, 0x00030067)
    assert rvs.plt_entry_bytes(0x40, 0x1040) == bytes.fromhex("97120000" "03b30200" "67000300")


# ---- data relocations -------------------------------------------------------------------------
def test_r_riscv_64() -> None:
    # S + A = 0xffffffff80a12340 + 0x10 = 0xffffffff80a12350
    r = _load(_module({".data": [Rela(8, KSYM, R_64, 0x10)]}))
    assert _sec(r, ".data")[8:16] == bytes.fromhex("5023a180ffffffff")


@pytest.mark.parametrize("addend,expect", [
    (0xF, "ffffffff"),              # 0xfffffff0 + 0xf = 0xffffffff, the largest that fits
    (-0x12345670, "80a9cbed"),      # 0xfffffff0 - 0x12345670 = 0xedcba980
])
def test_r_riscv_32_fits(addend: int, expect: str) -> None:
    r = _load(_module({".data": [Rela(0, "lim", R_32, addend)]}, symbols=[_abs("lim", 0xFFFFFFF0)]))
    assert _sec(r, ".data")[0:4] == bytes.fromhex(expect)


def test_r_riscv_32_first_overflow() -> None:
    """v != (u32)v: 0xfffffff0 + 0x10 = 0x100000000 -> refused, nothing written."""
    r = _load(_module({".data": [Rela(0, "lim", R_32, 0x10)]}, symbols=[_abs("lim", 0xFFFFFFF0)]))
    assert _rejected(r) == [(3, f"{NAME}: value 0000000100000000 out of range for 32-bit field")]


def test_r_riscv_32_negative_value_refused() -> None:
    """A kernel address (top 2 GiB) is not a u32: 0xffffffff80a12340."""
    r = _load(_module({".data": [Rela(0, KSYM, R_32, 0)]}))
    assert _rejected(r) == [(3, f"{NAME}: value ffffffff80a12340 out of range for 32-bit field")]


def test_add_sub_pairs_at_one_place() -> None:
    """ADD32 S1 + SUB32 S2 at .data+0 (a label difference), ADD64 + SUB64 at .data+8:
    .text+0x30 - .text+0x10 = 0x20, added to the bytes already there (0x5 and 0x100)."""
    data = (5).to_bytes(4, "little") + bytes(4) + (0x100).to_bytes(8, "little") + bytes(8)
    syms = [_label("l1", 0x30), _label("l2", 0x10)]
    r = _load(_module({".data": [Rela(0, "l1", R_ADD32), Rela(0, "l2", R_SUB32),
                                 Rela(8, "l1", R_ADD64), Rela(8, "l2", R_SUB64)]}, data=data, symbols=syms))
    assert _sec(r, ".data")[0:16] == (0x25).to_bytes(4, "little") + bytes(4) + (0x120).to_bytes(8, "little")


def test_sub_wraps() -> None:
    """SUB32 of 1 from 0: 0xffffffff (u32 arithmetic)."""
    r = _load(_module({".data": [Rela(4, "one", R_SUB32)]}, symbols=[_abs("one", 1)]))
    assert _sec(r, ".data")[4:8] == bytes.fromhex("ffffffff")


def test_overlapping_entries_apply_in_order() -> None:
    """R_RISCV_32 writes 0x10, then ADD32 adds 0x5, then R_RISCV_32 writes 0x7 again at the same
    place: 0x7 (order matters, so the whole section goes entry by entry)."""
    syms = [_abs("s10", 0x10), _abs("s5", 5), _abs("s7", 7)]
    r = _load(_module({".data": [Rela(0, "s10", R_32), Rela(0, "s5", R_ADD32), Rela(0, "s7", R_32),
                                 Rela(8, "s5", R_ADD32)]}, symbols=syms))
    assert _sec(r, ".data")[0:12] == w32(7, 0, 5)


# ---- instruction relocations -------------------------------------------------------------------
def test_branch_forward_and_back() -> None:
    """beq a0, a1 at .text+0x20: to .text+0x30 (+0x10) and to .text+0x10 (-0x10).
    +0x10: imm[4:1] = 8 -> 8<<8 = 0x800: 0x00b50063 | 0x800 = 0x00b50863
    -0x10: 0xfe000880 | 0x00b50063 = 0xfeb508e3"""
    text = _text((0x20, w32(0x00B50063, 0x00B50063)))
    r = _load(_module({".text": [Rela(0x20, "t30", R_BRANCH), Rela(0x24, "t10", R_BRANCH, -4 + 4)]},
                      text=text, symbols=[_label("t30", 0x30), _label("t10", 0x14)]))
    # second: S = .text+0x14, P = .text+0x24: -0x10
    assert _sec(r, ".text")[0x20:0x28] == w32(0x00B50863, 0xFEB508E3)


def test_branch_past_unchecked() -> None:
    """B-type reaches [-0x1000, 0xffe]; +0x1000 is written as its low 13 bits: imm[12] = 1, the
    rest 0 -> 0x80000000 | 0x00b50063 = 0x80b50063 (a branch to -0x1000). No message."""
    text = _text((0, w32(0x00B50063)))
    r = _load(_module({".text": [Rela(0, "far", R_BRANCH)]}, text=text, symbols=[_abs("far", TEXT + 0x1000)]))
    assert _sec(r, ".text")[0:4] == w32(0x80B50063)
    assert _log(r)[-1] == VERIFY


def test_jal() -> None:
    """jal ra at .text+4 to .text+4+0x12346: 0x34612000 | 0xef = 0x346120ef;
    at .text+8 to .text+6 (-2): 0xfffff000 | 0xef = 0xfffff0ef;
    at .text+12 to +0x100000 (one past the J range, unchecked): imm[20] -> 0x80000000 | 0xef."""
    text = _text((4, w32(0xEF, 0xEF, 0xEF)))
    syms = [_abs("j1", TEXT + 4 + 0x12346), _abs("j2", TEXT + 6), _abs("j3", TEXT + 12 + 0x100000)]
    r = _load(_module({".text": [Rela(4, "j1", R_JAL), Rela(8, "j2", R_JAL), Rela(12, "j3", R_JAL)]},
                      text=text, symbols=syms))
    assert _sec(r, ".text")[4:16] == w32(0x346120EF, 0xFFFFF0EF, 0x800000EF)


def test_rvc_branch_and_jump() -> None:
    """c.beqz a0 (0xc101) at .text+0: +0x20 -> 0xc105; at +2: -2 -> 0xc101 | 0x1c7c = 0xdd7d;
    c.j (0xa001) at +4: +0x20 -> 0xa005; at +6: -2 -> 0xa001 | 0x1ffc = 0xbffd;
    past the fields (unchecked): c.beqz +0x100 -> imm[8] only = 0x1000 | 0xc101 = 0xd101,
    c.j +0x800 -> imm[11] only = 0x1000 | 0xa001 = 0xb001."""
    text = _text((0, w16(0xC101, 0xC101, 0xA001, 0xA001, 0xC101, 0xA001)))
    syms = [_abs("b1", TEXT + 0x20), _abs("b2", TEXT), _abs("j1", TEXT + 4 + 0x20), _abs("j2", TEXT + 4),
            _abs("b3", TEXT + 8 + 0x100), _abs("j3", TEXT + 10 + 0x800)]
    r = _load(_module({".text": [Rela(0, "b1", R_RVC_BRANCH), Rela(2, "b2", R_RVC_BRANCH),
                                 Rela(4, "j1", R_RVC_JUMP), Rela(6, "j2", R_RVC_JUMP),
                                 Rela(8, "b3", R_RVC_BRANCH), Rela(10, "j3", R_RVC_JUMP)]},
                      text=text, symbols=syms))
    assert _sec(r, ".text")[0:12] == w16(0xC105, 0xDD7D, 0xA005, 0xBFFD, 0xD101, 0xB001)


PAIR = _text((0x10, w32(0x00000517, 0x00050513)))       # auipc a0, 0; addi a0, a0, 0


@pytest.mark.parametrize("disp,auipc,addi", [
    # 0x12345800: hi = 0x12346000, lo = 0x800 (-2048) -> addi imm 0x800<<20 = 0x80000000
    (0x12345800, 0x12346517, 0x80050513),
    # last fit 0x7ffff7ff: hi = 0x7ffff000, lo = 0x7ff -> 0x7ff00000 | 0x50513
    (0x7FFFF7FF, 0x7FFFF517, 0x7FF50513),
    # lowest fit -0x80000800: hi = 0x80000000, lo = 0x800
    (-0x80000800, 0x80000517, 0x80050513),
    # a kernel symbol: S - P = 0xffffffff80a12340 - 0xffffffff02a00010 = 0x7e012330
    #   hi = 0x7e012000, lo = 0x330 -> 0x33000000 | 0x50513 = 0x33050513
    (S_K - (TEXT + 0x10), 0x7E012517, 0x33050513),
])
def test_pcrel_hi20_lo12_i(disp: int, auipc: int, addi: int) -> None:
    syms = [_label(".Lpcrel_hi0", 0x10), _abs("tgt", TEXT + 0x10 + disp)]
    r = _load(_module({".text": [Rela(0x10, "tgt", R_PCREL_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I)]},
                      text=PAIR, symbols=syms))
    assert _sec(r, ".text")[0x10:0x18] == w32(auipc, addi)


@pytest.mark.parametrize("disp", [0x7FFFF800, -0x80000801])
def test_pcrel_hi20_out_of_window(disp: int) -> None:
    """One past either end of [-2^31 - 2^11, 2^31 - 2^11): refused with the target printed."""
    tgt = (TEXT + 0x10 + disp) & (2**64 - 1)
    syms = [_label(".Lpcrel_hi0", 0x10), _abs("tgt", tgt)]
    r = _load(_module({".text": [Rela(0x10, "tgt", R_PCREL_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I)]},
                      text=PAIR, symbols=syms))
    (level, text), = _rejected(r)
    m = PCREL_MSG.fullmatch(text)
    assert level == 3 and m is not None and int(m.group(1), 16) == tgt
    assert r.log[-1].pattern is not None


def test_pcrel_lo12_partner_after_and_own_addend_ignored() -> None:
    """The LO12 entry comes first in the table (its partner follows) and carries an addend of
    0x100 that 6.1 ignores: same words as with the pair in order, lo = 0x123:
    auipc: hi = (0x123 + 0x800) & ~0xfff = 0 -> 0x517; addi: 0x123<<20 = 0x12300000 | 0x50513."""
    syms = [_label(".Lpcrel_hi0", 0x10), _abs("tgt", TEXT + 0x10 + 0x123)]
    r = _load(_module({".text": [Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I, 0x100), Rela(0x10, "tgt", R_PCREL_HI20)]},
                      text=PAIR, symbols=syms))
    assert _sec(r, ".text")[0x10:0x18] == w32(0x00000517, 0x12350513)


def test_pcrel_lo12_s() -> None:
    """sw a1, lo(a0) with lo = 0x123: imm[11:5] = 9 -> 9<<25 = 0x12000000, imm[4:0] = 3 -> 3<<7 = 0x180:
    0x12000000 | 0x180 | 0x00b52023 = 0x12b521a3."""
    text = _text((0x10, w32(0x00000517, 0x00B52023)))
    syms = [_label(".Lpcrel_hi0", 0x10), _abs("tgt", TEXT + 0x10 + 0x123)]
    r = _load(_module({".text": [Rela(0x10, "tgt", R_PCREL_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_S)]},
                      text=text, symbols=syms))
    assert _sec(r, ".text")[0x10:0x18] == w32(0x00000517, 0x12B521A3)


def test_pcrel_lo12_partner_missing() -> None:
    """The label names .text+0x18, where no HI20 entry is: refused (the HI20 before it is written)."""
    syms = [_label(".Lpcrel_hi0", 0x18), _abs("tgt", TEXT + 0x10 + 0x123)]
    r = _load(_module({".text": [Rela(0x10, "tgt", R_PCREL_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I)]},
                      text=PAIR, symbols=syms))
    assert _rejected(r) == [(3, f"{NAME}: Can not find HI20 relocation information")]


def test_pcrel_lo12_takes_the_first_partner() -> None:
    """Two HI20 entries at one place (targets +0x111 and +0x222): the auipc ends with the second
    one's upper part (both 0), the LO12 gets the first one's lower part 0x111: 0x11150513."""
    syms = [_label(".Lpcrel_hi0", 0x10), _abs("t1", TEXT + 0x10 + 0x111), _abs("t2", TEXT + 0x10 + 0x222)]
    r = _load(_module({".text": [Rela(0x10, "t1", R_PCREL_HI20), Rela(0x10, "t2", R_PCREL_HI20),
                                 Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I)]}, text=PAIR, symbols=syms))
    assert _sec(r, ".text")[0x10:0x18] == w32(0x00000517, 0x11150513)


def test_hi20_lo12_absolute() -> None:
    """lui a0 / addi a0 / sd a1 against 0x12345fff: hi = 0x12346000 -> lui 0x12346537;
    lo = 0xfff (-1): addi 0xfff00000 | 0x50513 = 0xfff50513; sd: imm[11:5] = 0x7f -> 0xfe000000,
    imm[4:0] = 0x1f -> 0xf80: 0xfe000f80 | 0x00b53023 = 0xfeb53fa3.
    Against the kernel symbol 0xffffffff80a12340: (s32) 0x80a12340 + 0x800 -> 0x80a12000 -> 0x80a12537,
    lo 0x340 -> 0x34050513."""
    text = _text((0, w32(0x537, 0x50513, 0xB53023, 0x537, 0x50513)))
    r = _load(_module({".text": [Rela(0, "a", R_HI20), Rela(4, "a", R_LO12_I), Rela(8, "a", R_LO12_S),
                                 Rela(12, KSYM, R_HI20), Rela(16, KSYM, R_LO12_I)]},
                      text=text, symbols=[_abs("a", 0x12345FFF)]))
    assert _sec(r, ".text")[0:20] == w32(0x12346537, 0xFFF50513, 0xFEB53FA3, 0x80A12537, 0x34050513)


def test_hi20_refused_under_medlow() -> None:
    text = _text((0, w32(0x537)))
    ko = _module({".text": [Rela(0, "a", R_HI20)]}, text=text, symbols=[_abs("a", 0x12345FFF)])
    r = _load(ko, config={"CONFIG_CMODEL_MEDLOW": True, "CONFIG_CMODEL_MEDANY": False})
    (level, line), = _rejected(r)
    m = PCREL_MSG.fullmatch(line)
    assert level == 3 and m is not None and int(m.group(1), 16) == 0x12345FFF


@pytest.mark.parametrize("disp,auipc,jalr", [
    # 0x12345678: hi = 0x12345000, lo = 0x678 -> jalr 0x678<<20 | 0x80e7
    (0x12345678, 0x12345097, 0x678080E7),
    # last fit 0x7ffff7ff: hi = 0x7ffff000, lo = 0x7ff
    (0x7FFFF7FF, 0x7FFFF097, 0x7FF080E7),
    # -0x10: hi = (-0x10 + 0x800) & ~0xfff = 0, lo = 0xff0
    (-0x10, 0x00000097, 0xFF0080E7),
])
@pytest.mark.parametrize("rtype", [R_CALL, R_CALL_PLT])
def test_call_pair(rtype: int, disp: int, auipc: int, jalr: int) -> None:
    text = _text((0x20, w32(0x97, 0x80E7)))
    r = _load(_module({".text": [Rela(0x20, "f", rtype)]}, text=text, symbols=[_abs("f", TEXT + 0x20 + disp)]))
    assert _sec(r, ".text")[0x20:0x28] == w32(auipc, jalr)
    assert _sec(r, ".plt") == bytes(24 if rtype == R_CALL_PLT else 12)     # counted, not needed


def test_call_first_overflow_refused() -> None:
    tgt = TEXT + 0x20 + 0x7FFFF800
    text = _text((0x20, w32(0x97, 0x80E7)))
    r = _load(_module({".text": [Rela(0x20, "f", R_CALL)]}, text=text, symbols=[_abs("f", tgt)]))
    (level, line), = _rejected(r)
    m = PCREL_MSG.fullmatch(line)
    assert level == 3 and m is not None and int(m.group(1), 16) == tgt


def test_call_plt_beyond_reach_goes_through_the_plt() -> None:
    """CALL_PLT at .text+0 to P + 0x80000000: the PLT entry at .plt+0 (= TEXT + 0x40):
    call: off = 0x40 -> auipc ra, 0 (0x97), jalr ra, 0x40(ra) = 0x040080e7;
    entry: .got.plt slot 0 at TEXT + 0x1040, 0x1000 past the entry -> 97120000 03b30200 67000300;
    the slot holds the target. A second call (same symbol and addend, .text+8) shares them."""
    tgt = TEXT + 0x80000000
    text = _text((0, w32(0x97, 0x80E7, 0x97, 0x80E7)))
    r = _load(_module({".text": [Rela(0, "f", R_CALL_PLT), Rela(8, "f", R_CALL_PLT)]}, text=text,
                      symbols=[_abs("f", tgt)]))
    # second call at +8: off = 0x40 - 8 = 0x38 -> jalr 0x038080e7
    assert _sec(r, ".text")[0:16] == w32(0x97, 0x040080E7, 0x97, 0x038080E7)
    # one counted (the two entries have equal r_info and r_addend): (1 + 1) * 12 bytes
    assert _sec(r, ".plt") == bytes.fromhex("97120000" "03b30200" "67000300") + bytes(12)
    assert _sec(r, ".got.plt") == tgt.to_bytes(8, "little") + bytes(8)


def test_got_hi20_with_lo12_partner() -> None:
    """auipc a0 / ld a0 through the GOT: the entry is .got+0 = TEXT + 0x1000; from P = TEXT + 0x10:
    0xff0 -> hi = 0x1000 (auipc 0x00001517), lo = 0xff0 (-16) -> ld 0xff000000 | 0x53503 = 0xff053503.
    .got: the value, then the spare entry ((1 + 1) * 8 bytes)."""
    text = _text((0x10, w32(0x517, 0x53503)))
    r = _load(_module({".text": [Rela(0x10, KSYM, R_GOT_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I)]},
                      text=text, symbols=[_label(".Lpcrel_hi0", 0x10)]))
    assert _sec(r, ".text")[0x10:0x18] == w32(0x00001517, 0xFF053503)
    assert _sec(r, ".got") == S_K.to_bytes(8, "little") + bytes(8)


def test_got_entries_deduplicated_by_value() -> None:
    """Two GOT_HI20 with different addends that name the same value (ksym+0 and a symbol equal to it)
    count twice but share one entry."""
    text = _text((0, w32(0x517, 0x517)))
    r = _load(_module({".text": [Rela(0, KSYM, R_GOT_HI20), Rela(4, "same", R_GOT_HI20)]}, text=text,
                      symbols=[_abs("same", S_K)]))
    # .got: gots = 2 -> 24 bytes, one used; hi for P = TEXT: 0x1000 -> 0x1517; P = TEXT+4: 0xffc -> 0x1517
    assert _sec(r, ".got") == S_K.to_bytes(8, "little") + bytes(16)
    assert _sec(r, ".text")[0:8] == w32(0x1517, 0x1517)


def test_align_refused_relax_ignored() -> None:
    r = _load(_module({".text": [Rela(0, SEC_TEXT, R_RELAX), Rela(4, SEC_TEXT, R_ALIGN, 4)]}))
    (level, line), = _rejected(r)
    assert level == 3
    assert re.fullmatch(re.escape(f"{NAME}: The unexpected relocation type 'R_RISCV_ALIGN' from PC = ")
                        + "[0-9a-f]{16}", line)


@pytest.mark.parametrize("rtype", sorted(rv.LATER_TYPES))
def test_types_6_1_does_not_know(rtype: int) -> None:
    """R_RISCV_NONE, ADD16/SUB16 (6.3) and everything 6.8 added: 'Unknown relocation type', EINVAL."""
    r = _load(_module({".data": [Rela(0, KSYM, rtype)]}))
    assert _rejected(r) == [(3, f"{NAME}: Unknown relocation type {rtype}")]


def test_error_value_symbol() -> None:
    """st_value -1 (an SHN_ABS symbol): IS_ERR_VALUE. Not weak: Unknown symbol, ENOENT; weak:
    the entry is skipped before its type is even looked at (type 34 would be unknown)."""
    r = _load(_module({".data": [Rela(0, "bad", R_64)]}, symbols=[_abs("bad", -1)]))
    assert _rejected(r, "ENOENT") == [(4, f"{NAME}: Unknown symbol bad")]
    weak = Symbol("wbad", SHN_ABS, value=2**64 - 1, bind=STB_WEAK)
    r = _load(_module({".data": [Rela(0, "wbad", 34), Rela(8, KSYM, R_64)]}, symbols=[weak]))
    assert _sec(r, ".data")[0:16] == bytes(8) + S_K.to_bytes(8, "little")


def test_stops_at_first_failure_after_writing_earlier_entries() -> None:
    r_ok = Rela(0, KSYM, R_64)
    r_bad = Rela(8, "lim", R_32, 0x10)
    r_late = Rela(16, KSYM, R_64)
    ld = loader.Load(Request(_module({".data": [r_ok, r_bad, r_late]}, symbols=[_abs("lim", 0xFFFFFFF0)]),
                             "riscv64", PROFILE, _env(), run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    ld.after_layout()
    ld.simplify_symbols()
    with pytest.raises(loader.RelocationError):
        ld.apply_relocations()
    data = ld.memory.read(DATA, 24)
    assert data == S_K.to_bytes(8, "little") + bytes(16)


# ---- module_frob_arch_sections ------------------------------------------------------------------
def _staged(ko: bytes) -> loader.Load:
    ld = loader.Load(Request(ko, "riscv64", PROFILE, _env(), run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    return ld


def test_frob_sizes_flags_and_places() -> None:
    """Counting per section: .rela.text has CALL_PLT f+0 twice (one), f+4 (two), GOT_HI20 ksym (one);
    .rela.init.text has CALL_PLT f+0 again (three: no dedup across sections);
    .rela.data's GOT_HI20 is not counted (its target is not executable)."""
    init = Section(".init.text", SHF_ALLOC | SHF_EXECINSTR, bytes(16), align=4)
    ko = _module({".text": [Rela(0, "f", R_CALL_PLT), Rela(8, "f", R_CALL_PLT), Rela(16, "f", R_CALL_PLT, 4),
                            Rela(24, KSYM, R_GOT_HI20)],
                  ".init.text": [Rela(0, "f", R_CALL_PLT)],
                  ".data": [Rela(0, KSYM, R_GOT_HI20)]}, symbols=[_abs("f", 0x1000)], extra=[init])
    ld = _staged(ko)
    sh = ld.sechdrs
    for name, flags, size in ((".plt", SHF_ALLOC | SHF_EXECINSTR, 4 * 12), (".got", SHF_ALLOC, 2 * 8),
                              (".got.plt", SHF_ALLOC, 4 * 8)):
        i = ld.find_sec(name)
        assert (int(sh["sh_type"][i]), int(sh["sh_flags"][i]), int(sh["sh_size"][i]),
                int(sh["sh_addralign"][i])) == (SHT_NOBITS, flags, size, 64), name
    assert ld.section_addr(ld.find_sec(".plt")) == PLT
    assert ld.section_addr(ld.find_sec(".got")) == GOT
    assert ld.section_addr(ld.find_sec(".got.plt")) == GOT_PLT
    assert ld.mod_arch.plt.max_entries == 3 and ld.mod_arch.got.max_entries == 1


@pytest.mark.parametrize("missing,message", [(".plt", "module PLT section(s) missing"),
                                             (".got", "module GOT section(s) missing"),
                                             (".got.plt", "module GOT.PLT section(s) missing")])
def test_frob_missing_section(missing: str, message: str) -> None:
    present = tuple(n for n in (".plt", ".got", ".got.plt") if n != missing)
    r = _load(_module({".data": [Rela(0, KSYM, R_64)]}, arch_sections=present))
    assert (r.status, r.errno, r.phase) == ("rejected", "ENOEXEC", "layout")
    assert _log(r)[-1] == (3, f"{NAME}: {message}")


def test_frob_not_run_without_module_sections() -> None:
    """Without CONFIG_MODULE_SECTIONS the sections stay as they are and GOT_HI20 is refused."""
    text = _text((0, w32(0x517)))
    r = _load(_module({".text": [Rela(0, KSYM, R_GOT_HI20)]}, text=text, arch_sections=()),
              config={"CONFIG_MODULE_SECTIONS": False})
    (level, line), = _rejected(r)
    assert level == 3 and line.startswith(f"{NAME}: can not generate the GOT entry for symbol = ffffffff80a12340 "
                                          "from PC = ")


def test_more_got_entries_than_counted_is_a_kernel_bug() -> None:
    """GOT_HI20 in a non-executable section is not counted: its entry is written, then BUG_ON."""
    r = _load(_module({".data": [Rela(0, KSYM, R_GOT_HI20)]}))
    assert r.status == "faulted" and r.fault is not None
    assert (r.fault.phase, r.fault.kind, r.fault.address) == ("relocate", "kernel-bug", GOT)


def test_wrong_elf_class_is_the_wrong_architecture() -> None:
    ko = bytearray(_module({}))
    ko[4] = 1                                          # ELFCLASS32
    r = _load(bytes(ko))
    assert (r.status, r.errno, r.phase) == ("rejected", "ENOEXEC", "check")
    assert _log(r) == [(3, "Invalid architecture in ELF header: 243")]


# ---- the bulk path is the kernel's loop -----------------------------------------------------------
def _run_both(ko: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Result, Result]:
    bulk = _load(ko)
    with monkeypatch.context() as m:
        m.setattr(rv, "_bulk", lambda ld, sec: False)
        slow = _load(ko)
    return bulk, slow


@pytest.mark.parametrize("seed", range(16))
def test_bulk_equals_entry_by_entry(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random sections of every handled type, one 8-byte slot per entry, LO12 entries pointing at
    HI20/GOT_HI20 entries before or after them, far calls through the PLT, GOT entries shared by
    value: the bulk path and the kernel's one-by-one loop give the same result. Seeds 0-7 load;
    8-15 also hold one refused entry (an out-of-window PCREL_HI20, a 32-bit overflow, a missing
    partner, an error-valued symbol, ALIGN, an unknown type) somewhere: the same entries are
    written before it either way."""
    rng = np.random.default_rng(seed)
    n = 48
    text = bytes(rng.integers(0, 256, 8 * n, dtype=np.uint8))
    kinds = [R_64, R_BRANCH, R_JAL, R_RVC_BRANCH, R_RVC_JUMP, R_PCREL_HI20, R_PCREL_LO12_I, R_PCREL_LO12_S,
             R_HI20, R_LO12_I, R_LO12_S, R_GOT_HI20, R_CALL, R_CALL_PLT, R_ADD32, R_ADD64, R_SUB32, R_SUB64,
             R_RELAX]
    values = [0x10, 0x7FFF0000, S_K, TEXT + 0x123, TEXT + 0x90000000, TEXT - 0x7FFFF000]
    syms = [_abs(f"s{k}", v) for k, v in enumerate(values)]
    syms += [_label(f"l{k}", 8 * k) for k in range(n)]
    syms += [_abs("err", -2)]
    types = [int(rng.choice(kinds)) for _ in range(n)]
    his = [k for k, t in enumerate(types) if t in (R_PCREL_HI20, R_GOT_HI20)]
    relas = []
    for k, t in enumerate(types):
        if t in (R_PCREL_LO12_I, R_PCREL_LO12_S):
            partner = int(rng.choice(his)) if his else k
            relas.append(Rela(8 * k + 4, f"l{partner}", t, int(rng.integers(-8, 8))))
        else:
            far_ok = t in (R_64, R_BRANCH, R_JAL, R_RVC_BRANCH, R_RVC_JUMP, R_CALL_PLT, R_GOT_HI20, R_HI20,
                           R_LO12_I, R_LO12_S, R_ADD32, R_ADD64, R_SUB32, R_SUB64, R_RELAX)
            choices = range(len(values)) if far_ok else (2, 3, 5)
            relas.append(Rela(8 * k, f"s{int(rng.choice(choices))}", t, int(rng.integers(-0x100, 0x100))))
    if seed >= 8:
        k = int(rng.integers(0, n))
        bad = [Rela(8 * k, "s4", R_PCREL_HI20), Rela(8 * k, "s4", R_32), Rela(8 * k + 4, "l0", R_PCREL_LO12_I),
               Rela(8 * k, "err", R_64), Rela(8 * k, "s0", R_ALIGN), Rela(8 * k, "s0", 34)][seed % 6]
        if bad.rtype == R_PCREL_LO12_I and types[0] in (R_PCREL_HI20, R_GOT_HI20):
            bad = Rela(8 * k, "s4", R_CALL)
        relas[k] = bad
    ko = _module({".text": relas}, text=text, symbols=syms)
    bulk, slow = _run_both(ko, monkeypatch)
    assert bulk.status == ("loaded" if seed < 8 else "rejected"), (bulk.status, bulk.log)
    assert (bulk.status, bulk.errno, bulk.phase) == (slow.status, slow.errno, slow.phase)
    assert _log(bulk) == _log(slow)
    assert bulk.sections == slow.sections
    assert bulk.fault == slow.fault


def test_bulk_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case does not fall back to the entry-by-entry loop."""
    def slow(*args: object) -> None:
        raise AssertionError("fell back to entry by entry")
    monkeypatch.setattr(rv, "_one_by_one", slow)
    text = _text((0x10, w32(0x517, 0x50513)), (0x20, w32(0x97, 0x80E7)))
    r = _load(_module({".text": [Rela(0x10, "tgt", R_PCREL_HI20), Rela(0x14, ".Lpcrel_hi0", R_PCREL_LO12_I),
                                 Rela(0x20, "far", R_CALL_PLT)],
                       ".data": [Rela(0, KSYM, R_64), Rela(8, "l1", R_ADD32), Rela(8, "l2", R_SUB32)]},
                      text=text, symbols=[_label(".Lpcrel_hi0", 0x10), _abs("tgt", TEXT + 0x10 + 0x123),
                                          _abs("far", TEXT + 0x90000000), _label("l1", 8), _label("l2", 4)]))
    assert _sec(r, ".text")[0x10:0x18] == w32(0x517, 0x12350513)
    assert _sec(r, ".data")[0:12] == S_K.to_bytes(8, "little") + w32(4)


def test_large_section_is_fast() -> None:
    """200,000 PCREL_HI20/LO12_I pairs and calls in one section, as a large module has."""
    n = 50_000
    text_size = n * 16
    relas = []
    syms = [_abs("tgt", S_K)] + [_label(f"L{k}", 16 * k) for k in range(n)]
    for k in range(n):
        base = 16 * k
        relas += [Rela(base, "tgt", R_PCREL_HI20), Rela(base + 4, f"L{k}", R_PCREL_LO12_I),
                  Rela(base + 8, KSYM, R_CALL_PLT)]
    ko = build(Module(name=NAME, sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, bytes(text_size), align=4),
                                           Section(".data", SHF_WRITE | SHF_ALLOC, bytes(8), align=8),
                                           Section(".plt", SHF_ALLOC, b"\0"), Section(".got", SHF_ALLOC, b"\0"),
                                           Section(".got.plt", SHF_ALLOC, b"\0")],
                      symbols=BASE_SYMBOLS + syms, relocs={".text": relas},
                      modinfo={"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y"}))
    ko.set_ehdr("e_machine", EM_RISCV)
    start = time.perf_counter()
    r = _load(ko.ko())
    elapsed = time.perf_counter() - start
    assert r.status == "loaded"
    text = _sec(r, ".text")
    # the last pair: P = TEXT + 16*(n-1); S_K - P's low 12 bits land in the addi
    p = TEXT + 16 * (n - 1)
    disp = (S_K - p) & (2**64 - 1)
    assert text[-16:-8] == w32(rv.hi20(disp) & 0xFFFFF000, ((disp & 0xFFF) << 20))
    assert elapsed < 60, elapsed


def test_frob_last_section_of_a_name_wins() -> None:
    """Two sections named .plt: the loop keeps the last one, which becomes the PLT; the first stays
    a 1-byte ALLOC section laid out with the read-only data."""
    ko = _module({".data": [Rela(0, KSYM, R_64)]}, extra=[Section(".plt", SHF_ALLOC, b"\0")])
    ld = _staged(ko)
    firsts = [i for i in range(ld.shnum) if ld.secname(i) == ".plt"]
    assert len(firsts) == 2
    assert ld.mod_arch.plt.index == firsts[1]
    assert int(ld.sechdrs["sh_type"][firsts[1]]) == SHT_NOBITS
    assert int(ld.sechdrs["sh_type"][firsts[0]]) != SHT_NOBITS and int(ld.sechdrs["sh_size"][firsts[0]]) == 1


def test_frob_missing_section_with_a_pointer_in_struct_module() -> None:
    """No .got, but the file's struct module holds a nonzero mod->arch.got.shdr (offset 0x1e0): 6.1
    sees no missing section and writes through that pointer (here: an unmapped address, a fault)."""
    b = build(Module(name=NAME, sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, bytes(0x40), align=4),
                                          Section(".data", SHF_WRITE | SHF_ALLOC, bytes(0x20), align=8),
                                          Section(".plt", SHF_ALLOC, b"\0"), Section(".got.plt", SHF_ALLOC, b"\0")],
                     symbols=BASE_SYMBOLS, relocs={},
                     modinfo={"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y"}))
    b.set_ehdr("e_machine", EM_RISCV)
    at = b.offset[".gnu.linkonce.this_module"] + 0x1E0
    b.data[at:at + 8] = (0x1000).to_bytes(8, "little")
    r = _load(b.ko())
    assert r.status == "faulted" and r.fault is not None
    assert (r.fault.phase, r.fault.kind, r.fault.address) == ("layout", "write-outside-memory", 0x1004)
