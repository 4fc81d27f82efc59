"""32-bit arm REL relocations as Linux 6.1 applies them (spec §5.4), through the whole loader.

Every module here is built byte by byte by `build_arm` (ELF32, EM_ARM, SHT_REL). Expected
instruction words are worked out by hand from the Arm ARM encodings (A1 B/BL imm24, MOVW/MOVT
imm4:imm12, ADD/SUB modified immediates, LDR imm12 with U, Thumb-2 T1 BL / T4 B.W with
J1/J2, T3 MOVW/MOVT imm4:i:imm3:imm8) and the kernel's formulas; the arithmetic is in the
comment beside each value.

Where things land (STRICT_MODULE_RWX, 4 KiB pages) for the module `_module` builds:
sections 1 .text (AX, align 4, 0x100 bytes), 2 .data (WA, align 4, 0x40), 3 .plt and
4 .init.plt (1-byte PROGBITS, as asm/module.lds.h makes them), 5 .modinfo, 6 this_module.
With ARM_MODULE_PLTS, module_frob_arch_sections makes .plt and .init.plt NOBITS AX, align 64,
round_up((2 + count) * 8, 128) = 128 bytes here (no branch against another section):
  core text group: .text @ 0 (0x100), .plt @ ALIGN(0x100, 64) = 0x100 -> 0x180 -> 0x1000
  core data group: .data @ 0x1000, this_module @ ALIGN(0x1040, 64) = 0x1040
  init: .init.plt @ 0
So .text = core = 0xbf000000, .plt = 0xbf000100, .data = 0xbf001000, .init.plt = init + 0.
Without ARM_MODULE_PLTS the 1-byte .plt/.init.plt are read-only data and .text stays at 0.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import pytest
from koconform.conformance.model import Environment, KernelSymbol, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader
from koconform.reference.arch import arm
from koconform.reference.errors import RelocationError

EHDR = struct.Struct("<16sHHIIIIIHHHHHH")     # Elf32_Ehdr, 52 bytes
SHDR = struct.Struct("<IIIIIIIIII")           # Elf32_Shdr, 40 bytes
SYM = struct.Struct("<IIIBBH")                # Elf32_Sym, 16 bytes
REL = struct.Struct("<II")                    # Elf32_Rel, 8 bytes
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHT_REL = 1, 2, 3, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK = 0x1, 0x2, 0x4, 0x40
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_FUNC, STT_SECTION = 0, 2, 3
EM_ARM, ET_REL = 40, 1
THIS_MODULE, MODULE_SIZE, MODULE_NAME_OFF = ".gnu.linkonce.this_module", 0x240, 0xC   # armmp struct module

NAME = "koctest"
CORE, INIT, COPY = 0xBF000000, 0xBF100000, 0xF0800000
TEXT, PLT, DATA = CORE, CORE + 0x100, CORE + 0x1000
S_K = 0xC0D227C4                # _printk on Debian's 6.1.0-50-armmp (System.map)
VERIFY = (5, f"{NAME}: module verification failed: signature and/or required key missing - tainting kernel")


# ---- a minimal ELF32 REL object --------------------------------------------------------
@dataclass
class Sec:
    name: str
    flags: int = 0
    data: bytes = b""
    sh_type: int = SHT_PROGBITS
    align: int = 4


@dataclass
class Sym:
    name: str
    section: str | None = None          # None: SHN_UNDEF
    value: int = 0
    bind: int = STB_GLOBAL
    kind: int = STT_NOTYPE


@dataclass
class Rel:
    offset: int
    sym: str | int                      # symbol name (first match) or raw index
    rtype: int


@dataclass
class Module:
    sections: list[Sec]
    symbols: list[Sym] = field(default_factory=list)
    relocs: dict[str, list[Rel]] = field(default_factory=dict)
    modinfo: dict[str, str] = field(default_factory=dict)


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def build_arm(m: Module) -> bytes:
    """The module as an ELF32 little-endian EM_ARM relocatable: the caller's sections, .modinfo,
    this_module, one .rel<target> per target with entries, .symtab, .strtab, .shstrtab."""
    body = bytearray(MODULE_SIZE)
    body[MODULE_NAME_OFF:MODULE_NAME_OFF + len(NAME)] = NAME.encode()
    secs = [*m.sections, Sec(".modinfo", SHF_ALLOC, b"".join(f"{k}={v}\0".encode() for k, v in m.modinfo.items()), 1),
            Sec(THIS_MODULE, SHF_WRITE | SHF_ALLOC, bytes(body), align=64)]
    index = {s.name: k + 1 for k, s in enumerate(secs)}
    targets = [t for t, entries in m.relocs.items() if entries]
    symtab_i = len(secs) + len(targets) + 1
    strtab = bytearray(b"\0")
    symtab = bytearray(SYM.pack(0, 0, 0, 0, 0, 0))
    sym_index: dict[str, int] = {}
    for k, s in enumerate(m.symbols):
        name_off = len(strtab) if s.name else 0
        if s.name:
            strtab += s.name.encode() + b"\0"
        shndx = 0 if s.section is None else index[s.section]
        symtab += SYM.pack(name_off, s.value, 0, (s.bind << 4) | s.kind, 0, shndx)
        sym_index.setdefault(s.name, k + 1)
    first_global = 1 + next((k for k, s in enumerate(m.symbols) if s.bind != STB_LOCAL), len(m.symbols))
    table = [(s.name, s.sh_type, s.flags, s.data, s.align, 0, 0, 0) for s in secs]
    for t in targets:
        rel = b"".join(REL.pack(r.offset, ((r.sym if isinstance(r.sym, int) else sym_index[r.sym]) << 8) | r.rtype)
                       for r in m.relocs[t])
        table.append((".rel" + t, SHT_REL, SHF_INFO_LINK, rel, 4, symtab_i, index[t], REL.size))
    table.append((".symtab", SHT_SYMTAB, 0, bytes(symtab), 4, symtab_i + 1, first_global, SYM.size))
    table.append((".strtab", SHT_STRTAB, 0, bytes(strtab), 1, 0, 0, 0))
    shstr, names = bytearray(b"\0"), []
    for name in [str(entry[0]) for entry in table] + [".shstrtab"]:
        names.append(len(shstr))
        shstr += name.encode() + b"\0"
    table.append((".shstrtab", SHT_STRTAB, 0, bytes(shstr), 1, 0, 0, 0))
    out = bytearray(EHDR.size)
    headers = [bytes(SHDR.size)]
    for k, (_, sh_type, flags, data, align, link, info, entsize) in enumerate(table):
        out += bytes(_align(len(out), max(align, 4)) - len(out))
        headers.append(SHDR.pack(names[k], sh_type, flags, 0, len(out), len(data), link, info, align, entsize))
        out += data
    out += bytes(_align(len(out), 4) - len(out))
    shoff = len(out)
    for h in headers:
        out += h
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)           # ELFCLASS32, ELFDATA2LSB
    out[:EHDR.size] = EHDR.pack(ident, ET_REL, EM_ARM, 1, 0, 0, shoff, 0x05000000, EHDR.size, 0, 0,
                                SHDR.size, len(headers), len(headers) - 1)
    return bytes(out)


# ---- the module most tests use -----------------------------------------------------------
def words(size: int, **at: int) -> bytes:
    """`size` zero bytes with 32-bit little-endian words at the given offsets (w<hex offset>=value)."""
    out = bytearray(size)
    for key, value in at.items():
        off = int(key[1:], 16)
        out[off:off + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)


def _module(relocs: dict[str, list[Rel]], text: bytes = bytes(0x100), data: bytes = bytes(0x40),
            extra: list[Sec] | None = None, symbols: list[Sym] | None = None, plts: bool = True) -> bytes:
    plt = [Sec(".plt", SHF_ALLOC, b"\0", align=1), Sec(".init.plt", SHF_ALLOC, b"\0", align=1)] if plts else []
    return build_arm(Module(
        sections=[Sec(".text", SHF_ALLOC | SHF_EXECINSTR, text), Sec(".data", SHF_WRITE | SHF_ALLOC, data),
                  *plt, *(extra or [])],
        symbols=[Sym("", ".text", bind=STB_LOCAL, kind=STT_SECTION),          # 1
                 Sym("", ".data", bind=STB_LOCAL, kind=STT_SECTION),          # 2
                 *(symbols or []),
                 Sym("ksym")],                                                # last: a kernel export
        relocs=relocs,
        modinfo={"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y"}))


PROFILE = load_profile("linux-6.1", "arm")


def _load(ko: bytes, ksym: int = S_K, **config: bool) -> Result:
    profile = load_profile("linux-6.1", "arm", config)
    env = Environment(symbols={"ksym": KernelSymbol("ksym", ksym)},
                      regions={"core": CORE, "init": INIT, "copy": COPY})
    return loader.load(Request(ko, "arm", profile, env, run_init=False))


def _staged_failure(ko: bytes, ksym: int = S_K, **config: bool) -> loader.Load:
    """The stages up to apply_relocations, which must fail; the Load keeps the module memory."""
    profile = load_profile("linux-6.1", "arm", config)
    env = Environment(symbols={"ksym": KernelSymbol("ksym", ksym)},
                      regions={"core": CORE, "init": INIT, "copy": COPY})
    ld = loader.Load(Request(ko, "arm", profile, env, run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    ld.after_layout()
    ld.simplify_symbols()
    with pytest.raises(RelocationError):
        ld.apply_relocations()
    return ld


def _log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log]


def _word(result: Result, section: str, offset: int) -> int:
    assert result.sections is not None
    return int.from_bytes(result.sections[section][offset:offset + 4], "little")


def _rejected(result: Result, line: str) -> None:
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate"), result.detail
    assert _log(result) == [VERIFY, (3, line)]


# ---- the formulas, one entry per module ---------------------------------------------------
THUMB2 = {"CONFIG_THUMB2_KERNEL": True}
FORMULAS = [
    # (id, type, S, r_offset, word at P, expected word, config); P = 0xbf000000 + r_offset
    # *P += S: 0x10 + 0xc0d227c4 = 0xc0d227d4
    ("abs32", arm.R_ARM_ABS32, S_K, 0x10, 0x10, 0xC0D227D4, {}),
    # addend -4: 0xc0d227c4 - 4 = 0xc0d227c0
    ("abs32-negative-addend", arm.R_ARM_ABS32, S_K, 0x10, 0xFFFFFFFC, 0xC0D227C0, {}),
    ("target1", arm.R_ARM_TARGET1, S_K, 0x14, 0, 0xC0D227C4, {}),
    # *P += S - P: -4 + 0xc0d227c4 - 0xbf000020 = 0x01d227a0
    ("rel32", arm.R_ARM_REL32, S_K, 0x20, 0xFFFFFFFC, 0x01D227A0, {}),
    # bl: imm24 0xfffffe -> A = sext26(0x3fffff8) = -8; off = -8 + 0xc0d227c4 - 0xbf000030 = 0x1d2278c;
    # imm24 = off >> 2 = 0x7489e3, cond/opcode byte 0xeb kept
    ("call", arm.R_ARM_CALL, S_K, 0x30, 0xEBFFFFFE, 0xEB7489E3, {}),
    # A = -4 (imm24 0xffffff): off = 0x1d2278c + 4 = 0x1d22790 -> 0x7489e4
    ("call-addend-minus-4", arm.R_ARM_CALL, S_K, 0x30, 0xEBFFFFFF, 0xEB7489E4, {}),
    # backward: off = -8 + 0xbe000000 - 0xbf000040 = -0x1000048; (off >> 2) & 0xffffff
    # = (-0x400012) & 0xffffff = 0xbfffee
    ("call-backward", arm.R_ARM_CALL, 0xBE000000, 0x40, 0xEBFFFFFE, 0xEBBFFFEE, {}),
    # b: off = -8 + 0xc0d227c4 - 0xbf000034 = 0x1d22788 -> 0x7489e2
    ("jump24", arm.R_ARM_JUMP24, S_K, 0x34, 0xEAFFFFFE, 0xEA7489E2, {}),
    # bleq (cond 0000 kept): off = 0x1d22784 -> 0x7489e1
    ("pc24", arm.R_ARM_PC24, S_K, 0x38, 0x0BFFFFFE, 0x0B7489E1, {}),
    # bx lr (cond 1110, Rm 1110) -> (0xe000000e) | 0x01a0f000 = mov pc, lr
    ("v4bx", arm.R_ARM_V4BX, S_K, 0x44, 0xE12FFF1E, 0xE1A0F00E, {}),
    # bxne r3 -> movne pc, r3
    ("v4bx-bxne-r3", arm.R_ARM_V4BX, S_K, 0x44, 0x112FFF13, 0x11A0F003, {}),
    # off = sext31(0) + 0xc0d227c4 - 0xbf000048 = 0x1d2277c
    ("prel31", arm.R_ARM_PREL31, S_K, 0x48, 0, 0x01D2277C, {}),
    # bit 31 kept: 0x80000000 | 0x1d2277c
    ("prel31-bit31-kept", arm.R_ARM_PREL31, S_K, 0x48, 0x80000000, 0x81D2277C, {}),
    # A = sext31(0x7ffffffc) = -4: 0x1d2277c - 4 = 0x1d22778
    ("prel31-negative-addend", arm.R_ARM_PREL31, S_K, 0x48, 0x7FFFFFFC, 0x01D22778, {}),
    # movw r0, #0: S = 0xc0d227c4, low half 0x27c4 -> imm4 2 (bits 19:16), imm12 0x7c4
    ("movw-abs-nc", arm.R_ARM_MOVW_ABS_NC, S_K, 0x50, 0xE3000000, 0xE30207C4, {}),
    # movw r0, #16: 0x27c4 + 0x10 = 0x27d4
    ("movw-abs-nc-addend", arm.R_ARM_MOVW_ABS_NC, S_K, 0x50, 0xE3000010, 0xE30207D4, {}),
    # imm16 0xfff0 is A = -16 (sign-extended): 0xc0d227b4 -> 0x27b4
    ("movw-abs-nc-negative-addend", arm.R_ARM_MOVW_ABS_NC, S_K, 0x50, 0xE30F0FF0, 0xE30207B4, {}),
    # movt r0, #0: 0xc0d227c4 >> 16 = 0xc0d2 -> imm4 0xc, imm12 0x0d2
    ("movt-abs", arm.R_ARM_MOVT_ABS, S_K, 0x54, 0xE3400000, 0xE34C00D2, {}),
    # A = 0x10 carries: (0xc0d2fff0 + 0x10) >> 16 = 0xc0d3
    ("movt-abs-carry", arm.R_ARM_MOVT_ABS, 0xC0D2FFF0, 0x54, 0xE3400010, 0xE34C00D3, {}),
    # A = -16 borrows: (0xc0d30008 - 0x10) >> 16 = 0xc0d2
    ("movt-abs-borrow", arm.R_ARM_MOVT_ABS, 0xC0D30008, 0x54, 0xE34F0FF0, 0xE34C00D2, {}),
    # S - P = 0xc0d227c4 - 0xbf000058 = 0x1d2276c -> 0x276c: imm4 2, imm12 0x76c
    ("movw-prel-nc", arm.R_ARM_MOVW_PREL_NC, S_K, 0x58, 0xE3000000, 0xE302076C, {}),
    # (0xc0d227c4 - 0xbf00005c) >> 16 = 0x1d22768 >> 16 = 0x01d2
    ("movt-prel", arm.R_ARM_MOVT_PREL, S_K, 0x5C, 0xE3400000, 0xE34001D2, {}),
    # S < P: 0xbe000000 - 0xbf00005c = -0x100005c; arithmetic >> 16 = -0x101 -> 0xfeff
    ("movt-prel-negative", arm.R_ARM_MOVT_PREL, 0xBE000000, 0x5C, 0xE3400000, 0xE34F0EFF, {}),
    # sub r0, pc, #8: A = -8; off = -8 + 0xc0d227c4 - 0xbf000060 = 0x1d2275c > 0: the opcode becomes
    # ADD (bit 23 set, bit 22 clear). Leading zeros 7 -> shift 6: imm8 = 0x1d2275c >> 18 = 0x74,
    # rotation field (6 + 8) << 7 = 0x700 (ror 14 of 0x74 = 0x01d00000): add r0, pc, #0x01d00000
    ("alu-pc-g0-nc", arm.R_ARM_ALU_PC_G0_NC, S_K, 0x60, 0xE24F0008, 0xE28F0774, {}),
    # add r0, r0, #0: off = 0xc0d227c4 - 0xbf000064 = 0x1d22760; group 0 takes 0x01d00000 (mask
    # 0xffffff >> 6 leaves 0x22760); its leading zeros 14 -> shift 14: imm8 = 0x22760 >> 10 = 0x89,
    # rotation (14 + 8) << 7 = 0xb00 (ror 22 of 0x89 = 0x22400)
    ("alu-pc-g1-nc", arm.R_ARM_ALU_PC_G1_NC, S_K, 0x64, 0xE2800000, 0xE2800B89, {}),
    # ldr r0, [r0, #0] (U set): off = 0xc0d227c4 - 0xbf000068 = 0x1d2275c; group 0 leaves 0x2275c,
    # group 1 (shift 14, mask 0x3ff) leaves 0x35c <= 0xfff: imm12 = 0x35c, U set
    ("ldr-pc-g2", arm.R_ARM_LDR_PC_G2, S_K, 0x68, 0xE5900000, 0xE590035C, {}),
    # ldr r0, [r0, #-4] (U clear: A = -4): off = -4 + 0xbdff7800 - 0xbf000068 = -0x100886c < 0: U stays
    # clear, 0x100886c; group 0 (shift 6) leaves 0x886c, group 1 (shift 16, mask 0xff) leaves 0x6c
    ("ldr-pc-g2-negative", arm.R_ARM_LDR_PC_G2, 0xBDFF7800, 0x68, 0xE5100004, 0xE510006C, {}),
    # NONE: nothing written, whatever the place holds
    ("none", arm.R_ARM_NONE, S_K, 0x6C, 0x12345678, 0x12345678, {}),
    # Thumb-2 bl (upper 0xf7ff at P, lower 0xfffe at P+2: S=1, imm10 0x3ff, J1=J2=1, imm11 0x7fe = -4).
    # S = 0xbf800001 (a Thumb function), P = 0xbf000070: off = -4 + 0xbf800001 - 0xbf000070 = 0x7fff8d.
    # sign 0; J1 = 0 ^ ~bit23(0) = 1; J2 = 0 ^ ~bit22(1) = 0; imm10 = (off >> 12) & 0x3ff = 0x3ff;
    # imm11 = (off >> 1) & 0x7ff = 0x7c6: upper 0xf000 | 0x3ff = 0xf3ff, lower 0xd000 | 0x2000 | 0x7c6 = 0xf7c6
    ("thm-call", arm.R_ARM_THM_CALL, 0xBF800001, 0x70, 0xFFFEF7FF, 0xF7C6F3FF, THUMB2),
    # b.w (lower 0xbffe: bit 12 set, bit 14 clear), P = 0xbf000074: off = 0x7fff89; lower
    # (0xbffe & 0xd000) | 0x2000 | ((off >> 1) & 0x7ff = 0x7c4) = 0xb7c4
    ("thm-jump24", arm.R_ARM_THM_JUMP24, 0xBF800001, 0x74, 0xBFFEF7FF, 0xB7C4F3FF, THUMB2),
    # backward: off = -4 + 0xbe800001 - 0xbf000078 = -0x80007b = 0xff7fff85: sign 1; bit23 0 -> J1 = 1 ^ 1 = 0;
    # bit22 1 -> J2 = 1 ^ 0 = 1; imm10 0x3ff, imm11 = (0x7fbfffc2 & 0x7ff) = 0x7c2:
    # upper 0xf000 | 0x400 | 0x3ff = 0xf7ff, lower 0xd000 | 0x800 | 0x7c2 = 0xdfc2
    ("thm-call-backward", arm.R_ARM_THM_CALL, 0xBE800001, 0x78, 0xFFFEF7FF, 0xDFC2F7FF, THUMB2),
    # movw r0, #0 (T3: upper 0xf240, lower 0x0000); S = 0x12345e78, low half 0x5e78:
    # imm4 5, i = bit 11 = 1, imm3 = bits 10:8 = 6, imm8 0x78: upper 0xf240 | 0x400 | 5 = 0xf645, lower 0x6078
    ("thm-movw-abs-nc", arm.R_ARM_THM_MOVW_ABS_NC, 0x12345E78, 0x7C, 0x0000F240, 0x6078F645, THUMB2),
    # movt r0, #0 (upper 0xf2c0): 0xc0d227c4 >> 16 = 0xc0d2: imm4 0xc, i 0, imm3 0, imm8 0xd2
    ("thm-movt-abs", arm.R_ARM_THM_MOVT_ABS, S_K, 0x80, 0x0000F2C0, 0x00D2F2CC, THUMB2),
    # S - P = 0xc0d227c4 - 0xbf000084 = 0x1d22740 -> 0x2740: imm4 2, i 0, imm3 7, imm8 0x40
    ("thm-movw-prel-nc", arm.R_ARM_THM_MOVW_PREL_NC, S_K, 0x84, 0x0000F240, 0x7040F242, THUMB2),
    # (0xc0d227c4 - 0xbf000088) >> 16 = 0x01d2: imm4 0, i 0, imm3 1, imm8 0xd2
    ("thm-movt-prel", arm.R_ARM_THM_MOVT_PREL, S_K, 0x88, 0x0000F2C0, 0x10D2F2C0, THUMB2),
]


@pytest.mark.parametrize("rtype,s,offset,word,expected,config", [f[1:] for f in FORMULAS], ids=[f[0] for f in FORMULAS])
def test_formula(rtype: int, s: int, offset: int, word: int, expected: int, config: dict[str, bool]) -> None:
    text = words(0x100, **{f"w{offset:x}": word})
    result = _load(_module({".text": [Rel(offset, "ksym", rtype)]}, text=text), ksym=s, **config)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    assert result.sections[".text"] == words(0x100, **{f"w{offset:x}": expected})
    assert _log(result) == [VERIFY]


def test_every_type_in_one_section_bulk_equals_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """All formulas of the default configuration in one section: the bulk path and the entry-by-entry
    path write the same words (each formula's own word, as in test_formula)."""
    cases = list({f[3]: f for f in reversed(FORMULAS) if not f[6] and f[2] == S_K}.values())   # first per offset
    text = words(0x100, **{f"w{f[3]:x}": f[4] for f in cases})
    ko = _module({".text": [Rel(f[3], "ksym", f[1]) for f in cases]}, text=text)
    bulk = _load(ko)
    monkeypatch.setattr(arm, "_bulk", lambda *a: False)
    slow = _load(ko)
    assert bulk.status == slow.status == "loaded", (bulk.detail, slow.detail)
    assert bulk.sections == slow.sections
    for f in cases:
        assert _word(bulk, ".text", f[3]) == f[5], f[0]


def test_bulk_equals_one_by_one_on_many_random_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """2000 entries of every enabled type at random places, words and (local or kernel) symbols: both
    paths agree byte for byte, wherever the first failure (if any) stops them."""
    rng = np.random.default_rng(61)
    types = [t for t in arm.RELOCATIONS if arm.RELOCATIONS[t].requires is None]
    size = 0x4000
    text = rng.integers(0, 1 << 32, size // 4, dtype=np.uint64).astype("<u4").tobytes()
    entries = [Rel(int(off) * 4, int(sym), int(t)) for off, sym, t in
               zip(rng.permutation(size // 4)[:2000], rng.integers(1, 4, 2000), rng.choice(types, 2000))]
    ko = _module({".text": entries}, text=text)
    bulk = _staged_or_loaded(ko)
    monkeypatch.setattr(arm, "_bulk", lambda *a: False)
    slow = _staged_or_loaded(ko)
    assert bulk == slow


def _staged_or_loaded(ko: bytes) -> tuple[str, bytes, list[tuple[int, str]]]:
    profile = load_profile("linux-6.1", "arm", {"CONFIG_ARM_MODULE_PLTS": False})
    env = Environment(symbols={"ksym": KernelSymbol("ksym", 0xBF400000)},
                      regions={"core": CORE, "init": INIT, "copy": COPY})
    ld = loader.Load(Request(ko, "arm", profile, env, run_init=False))
    ld.copy_and_check()
    ld.layout_and_allocate()
    ld.after_layout()
    ld.simplify_symbols()
    try:
        ld.apply_relocations()
        status = "loaded"
    except RelocationError as e:
        status = e.detail
    return status, ld.memory.read(TEXT, 0x4000), [(r.level, r.text) for r in ld.log]


def test_local_symbols_and_a_data_target() -> None:
    result = _load(_module({
        ".text": [Rel(0x00, 2, arm.R_ARM_ABS32),            # .data section symbol, A = 0x18
                  Rel(0x04, 2, arm.R_ARM_CALL)],            # bl .data+0 (nonsense but legal)
        ".data": [Rel(0x08, 1, arm.R_ARM_ABS32),            # .text section symbol, A = 4
                  Rel(0x0C, 1, arm.R_ARM_PREL31)],
    }, text=words(0x100, w0=0x18, w4=0xEBFFFFFE), data=words(0x40, w8=4, wc=0)))
    assert result.status == "loaded", result.detail
    # .data + 0x18 = 0xbf001018
    assert _word(result, ".text", 0x00) == 0xBF001018
    # bl: off = -8 + 0xbf001000 - 0xbf000004 = 0xff4 -> imm24 0x3fd
    assert _word(result, ".text", 0x04) == 0xEB0003FD
    # .text + 4 = 0xbf000004
    assert _word(result, ".data", 0x08) == 0xBF000004
    # .text - (.data + 0xc) = 0xbf000000 - 0xbf00100c = -0x100c -> low 31 bits 0x7fffeff4
    assert _word(result, ".data", 0x0C) == 0x7FFFEFF4


def test_same_place_twice_accumulates() -> None:
    # REL: the second entry's addend is what the first wrote: 0x10 + S + S = 0x10 + 2 * 0xc0d227c4
    # = 0x181a44f98 -> 0x81a44f98
    result = _load(_module({".data": [Rel(0x00, "ksym", arm.R_ARM_ABS32), Rel(0x00, "ksym", arm.R_ARM_ABS32)]},
                           data=words(0x40, w0=0x10)))
    assert result.status == "loaded", result.detail
    assert _word(result, ".data", 0) == 0x81A44F98


# ---- range checks at their edges (ARM_MODULE_PLTS off: no PLT to fall back on) ------------
NO_PLTS = {"CONFIG_ARM_MODULE_PLTS": False}


@pytest.mark.parametrize("rtype,word,s,expected", [
    # off = S - 8 - P with P = 0xbf000000: S = 0xc1000004 -> off = 0x1fffffc, imm24 0x7fffff
    (arm.R_ARM_CALL, 0xEBFFFFFE, 0xC1000004, 0xEB7FFFFF),
    # S = 0xbd00000c -> off = -0x1fffffc, imm24 = (-0x7fffff) & 0xffffff = 0x800001
    (arm.R_ARM_CALL, 0xEBFFFFFE, 0xBD00000C, 0xEB800001),
    (arm.R_ARM_JUMP24, 0xEAFFFFFE, 0xC1000004, 0xEA7FFFFF),
    (arm.R_ARM_PC24, 0x1BFFFFFE, 0xBD00000C, 0x1B800001),
], ids=["call-last-fit", "call-lowest-fit", "jump24-last-fit", "pc24-lowest-fit"])
def test_branch_range_fits(rtype: int, word: int, s: int, expected: int) -> None:
    result = _load(_module({".text": [Rel(0, "ksym", rtype)]}, text=words(0x100, w0=word), plts=False), ksym=s,
                   **NO_PLTS)
    assert result.status == "loaded", result.detail
    assert _word(result, ".text", 0) == expected


@pytest.mark.parametrize("rtype,word,s", [
    (arm.R_ARM_CALL, 0xEBFFFFFE, 0xC1000008),       # off = 0x2000000
    (arm.R_ARM_CALL, 0xEBFFFFFE, 0xBD000008),       # off = -0x2000000: encodable, refused by the kernel
    (arm.R_ARM_JUMP24, 0xEAFFFFFE, 0xC1000008),
    (arm.R_ARM_PC24, 0x0BFFFFFE, 0xBD000008),
], ids=["call-first-overflow", "call-below-lowest", "jump24-first-overflow", "pc24-below-lowest"])
def test_branch_out_of_range(rtype: int, word: int, s: int) -> None:
    ko = _module({".text": [Rel(0, "ksym", rtype)]}, text=words(0x100, w0=word), plts=False)
    result = _load(ko, ksym=s, **NO_PLTS)
    # relsec index: 1 .text, 2 .data, 3 .modinfo, 4 this_module, 5 .rel.text (no .plt/.init.plt here);
    # with them (the other tests) .rel.text is section 7
    _rejected(result, f"{NAME}: section 5 reloc 0 sym 'ksym': relocation {rtype} out of range "
                      f"(0xbf000000 -> {s:#x})")
    assert _staged_failure(ko, ksym=s, **NO_PLTS).memory.read(TEXT, 4) == word.to_bytes(4, "little")


@pytest.mark.parametrize("s,expected", [
    # off = S - 4 - P (P = 0xbf000000, S odd: a Thumb target): S = 0xc0000003 -> off = 0xffffff, the
    # largest: sign 0, J1 = J2 = 0 ^ ~1 = 0, imm10 0x3ff, imm11 0x7ff -> upper 0xf3ff, lower 0xd7ff
    (0xC0000003, 0xD7FFF3FF),
    # S = 0xbe000005 -> off = -0xffffff = 0xff000001: sign 1, bits 23/22 zero -> J1 = J2 = 1 ^ 1 = 0,
    # imm10 0, imm11 0 -> upper 0xf400, lower 0xd000
    (0xBE000005, 0xD000F400),
], ids=["thm-call-last-fit", "thm-call-lowest-fit"])
def test_thumb_branch_range_fits(s: int, expected: int) -> None:
    result = _load(_module({".text": [Rel(0, "ksym", arm.R_ARM_THM_CALL)]}, text=words(0x100, w0=0xFFFEF7FF),
                           plts=False), ksym=s, **NO_PLTS, **THUMB2)
    assert result.status == "loaded", result.detail
    assert _word(result, ".text", 0) == expected


@pytest.mark.parametrize("s", [0xC0000005, 0xBE000003], ids=["thm-call-first-overflow", "thm-call-below-lowest"])
def test_thumb_branch_out_of_range(s: int) -> None:
    # off = 0x1000001 and -0x1000001
    result = _load(_module({".text": [Rel(0, "ksym", arm.R_ARM_THM_CALL)]}, text=words(0x100, w0=0xFFFEF7FF),
                           plts=False), ksym=s, **NO_PLTS, **THUMB2)
    _rejected(result, f"{NAME}: section 5 reloc 0 sym 'ksym': relocation 10 out of range (0xbf000000 -> {s:#x})")


@pytest.mark.parametrize("s,ok", [
    (0xBF000000 + 0x3FFFFFFF, True),       # off = 0x3fffffff
    (0xBF000000 + 0x40000000, False),      # off = 0x40000000
    (0xBF000000 - 0x40000000, True),       # off = -0x40000000
    (0xBF000000 - 0x40000001, False),      # off = -0x40000001
], ids=["last-fit", "first-overflow", "lowest-fit", "below-lowest"])
def test_prel31_range(s: int, ok: bool) -> None:
    result = _load(_module({".text": [Rel(0, "ksym", arm.R_ARM_PREL31)]}), ksym=s)
    if ok:
        assert result.status == "loaded", result.detail
        assert _word(result, ".text", 0) == (s - TEXT) & 0x7FFFFFFF
    else:
        _rejected(result, f"{NAME}: section 7 reloc 0 sym 'ksym': relocation 42 out of range "
                          f"(0xbf000000 -> {s:#x})")


@pytest.mark.parametrize("off,expected", [
    # 0x20200fff: group 0 (shift 2) takes 0x20000000, group 1 (0x200fff: shift 10, mask 0x3fff)
    # leaves 0xfff
    (0x20200FFF, 0xE5900FFF),
    # 0x20201000: the same chunks leave 0x1000 > 0xfff
    (0x20201000, None),
], ids=["last-fit", "first-overflow"])
def test_ldr_pc_g2_residual(off: int, expected: int | None) -> None:
    s = TEXT + off
    result = _load(_module({".text": [Rel(0, "ksym", arm.R_ARM_LDR_PC_G2)]}, text=words(0x100, w0=0xE5900000)),
                   ksym=s)
    if expected is not None:
        assert result.status == "loaded", result.detail
        assert _word(result, ".text", 0) == expected
    else:
        _rejected(result, f"{NAME}: section 7 reloc 0 sym 'ksym': relocation 63 out of range "
                          f"(0xbf000000 -> {s:#x})")


@pytest.mark.parametrize("group,value,shift,rest", [
    # 0x01d2276c: 7 leading zeros -> even shift 6; group 0 is the value itself
    (0, 0x01D2276C, 6, 0x01D2276C),
    # group 1: 0x01d2276c & (0xffffff >> 6 = 0x3ffff) = 0x2276c, 14 leading zeros -> shift 14
    (1, 0x01D2276C, 14, 0x2276C),
    # group 2: 0x2276c & (0xffffff >> 14 = 0x3ff) = 0x36c, 22 leading zeros -> shift 22
    (2, 0x01D2276C, 22, 0x36C),
    # 0x80000000: shift 0; group 1: & 0xffffff = 0 -> shift 32, nothing left
    (1, 0x80000000, 32, 0),
    (0, 0, 32, 0),
], ids=["g0", "g1", "g2", "g1-exhausted", "zero"])
def test_get_group_rem(group: int, value: int, shift: int, rest: int) -> None:
    got_shift, got_rest = arm.get_group_rem(group, np.array([value], dtype=np.int64))
    assert (int(got_shift[0]), int(got_rest[0])) == (shift, rest)


# ---- interworking ------------------------------------------------------------------------
@pytest.mark.parametrize("rtype,word,s", [
    (arm.R_ARM_CALL, 0xEBFFFFFE, S_K | 1),     # bit 0: a Thumb function
    (arm.R_ARM_JUMP24, 0xEAFFFFFE, S_K | 2),   # bit 1
    (arm.R_ARM_PC24, 0x0AFFFFFE, S_K | 3),
], ids=["call-bit0", "jump24-bit1", "pc24-bits"])
def test_arm_to_thumb_is_refused(rtype: int, word: int, s: int) -> None:
    ko = _module({".text": [Rel(0, "ksym", rtype)]}, text=words(0x100, w0=word))
    result = _load(ko, ksym=s)
    _rejected(result, f"{NAME}: section 7 reloc 0 sym 'ksym': unsupported interworking call (ARM -> Thumb)")


def test_thumb_to_arm_function_is_refused_but_not_to_other_symbols() -> None:
    fn = Sym("koc_arm_fn", ".data", 0x20, kind=STT_FUNC)           # STT_FUNC, bit 0 clear
    ko = _module({".text": [Rel(0, "koc_arm_fn", arm.R_ARM_THM_CALL)]}, text=words(0x100, w0=0xFFFEF7FF),
                 symbols=[fn])
    _rejected(_load(ko, **THUMB2), f"{NAME}: section 7 reloc 0 sym 'koc_arm_fn': unsupported interworking call "
                                    "(Thumb -> ARM)")
    # The same even address through a symbol that is not STT_FUNC: taken as is.
    label = Sym("koc_label", ".data", 0x20)
    ko = _module({".text": [Rel(0, "koc_label", arm.R_ARM_THM_CALL)]}, text=words(0x100, w0=0xFFFEF7FF),
                 symbols=[label])
    result = _load(ko, **THUMB2)
    assert result.status == "loaded", result.detail
    # off = -4 + 0xbf001020 - 0xbf000000 = 0x101c: upper 0xf000 | 1 = 0xf001,
    # lower 0xd000 | 0x2000 | 0x800 | (0x80e) & 0x7ff = 0xf80e
    assert _word(result, ".text", 0) == 0xF80EF001


# ---- per-entry checks --------------------------------------------------------------------
def test_bad_sym_offset() -> None:
    # symbols: null, .text, .data, ksym -> 4 entries; index 5 > 4
    result = _load(_module({".text": [Rel(0, 5, arm.R_ARM_ABS32)]}))
    _rejected(result, f"{NAME}: section 7 reloc 0: bad relocation sym offset")


def test_sym_index_equal_to_count_passes_the_check() -> None:
    # `offset > count`: index 4 of a 4-entry table reads the 16 bytes after it (here .strtab's copy in
    # the init allocation); no "bad relocation sym offset".
    result = _load(_module({".text": [Rel(0, 4, arm.R_ARM_NONE)]}))
    assert result.status == "loaded", result.detail


@pytest.mark.parametrize("offset,printed", [(0xFD, "253"), (0xFFFFFFF0, "-16")], ids=["past-end", "huge"])
def test_out_of_bounds_offset(offset: int, printed: str) -> None:
    # .text is 0x100 bytes: r_offset > 0x100 - 4 = 0xfc is refused; %d prints r_offset signed
    result = _load(_module({".text": [Rel(offset, "ksym", arm.R_ARM_ABS32)]}))
    _rejected(result, f"{NAME}: section 7 reloc 0 sym 'ksym': out of bounds relocation, offset {printed} size 256")


def test_last_word_is_in_bounds() -> None:
    result = _load(_module({".text": [Rel(0xFC, "ksym", arm.R_ARM_ABS32)]}))
    assert result.status == "loaded", result.detail
    assert _word(result, ".text", 0xFC) == S_K


def test_bounds_check_wraps_for_a_section_under_4_bytes() -> None:
    # sh_size 2: sh_size - 4 = 0xfffffffe (u32), so offset 0 passes and 4 bytes are written, the last
    # two into the two padding bytes the next section's alignment leaves
    tiny = Sec(".text.tiny", SHF_ALLOC | SHF_EXECINSTR, b"\x10\x00", align=4)
    ko = _module({".text.tiny": [Rel(0, "ksym", arm.R_ARM_ABS32)]}, extra=[tiny])
    result = _load(ko)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    # 0x10 + 0xc0d227c4 = 0xc0d227d4: low half d4 27 in the section
    assert result.sections[".text.tiny"] == bytes.fromhex("d427")


@pytest.mark.parametrize("rtype,config", [
    (4, {}),                                                     # R_ARM_LDR_PC_G0: never handled
    (arm.R_ARM_THM_CALL, {}),                                    # Debian armmp: no THUMB2_KERNEL
    (arm.R_ARM_THM_MOVT_PREL, {}),
    (arm.R_ARM_ALU_PC_G0_NC, {"CONFIG_ARM_HAS_GROUP_RELOCS": False}),
    (arm.R_ARM_LDR_PC_G2, {"CONFIG_ARM_HAS_GROUP_RELOCS": False}),
    (255, {}),
], ids=["ldr-pc-g0", "thm-call-compiled-out", "thm-movt-prel-compiled-out", "alu-g0-compiled-out",
        "ldr-g2-compiled-out", "255"])
def test_unknown_relocation(rtype: int, config: dict[str, bool]) -> None:
    result = _load(_module({".text": [Rel(0, "ksym", rtype)]}), **config)
    _rejected(result, f"{NAME}: unknown relocation: {rtype}")


def test_entries_before_a_failure_are_written_in_order() -> None:
    # .data is not executable: its section is applied in file order. Entry 0 writes, entry 1 fails.
    ko = _module({".data": [Rel(0x00, "ksym", arm.R_ARM_ABS32), Rel(0x04, "ksym", arm.R_ARM_CALL),
                            Rel(0x08, "ksym", arm.R_ARM_ABS32)]}, data=words(0x40, w4=0xEBFFFFFE))
    result = _load(ko, ksym=S_K | 1)
    # relsec: 1 .text 2 .data 3 .plt 4 .init.plt 5 .modinfo 6 this_module 7 .rel.data
    _rejected(result, f"{NAME}: section 7 reloc 1 sym 'ksym': unsupported interworking call (ARM -> Thumb)")
    memory = _staged_failure(ko, ksym=S_K | 1).memory.read(DATA, 0x10)
    assert memory == words(0x10, w0=S_K | 1, w4=0xEBFFFFFE)


def test_executable_target_is_applied_in_sorted_order() -> None:
    # In .rel.text module_frob_arch_sections sorted the entries by type first: ABS32 (2) before
    # CALL (28), so the failing CALL is reloc 2 and both ABS32 were written.
    ko = _module({".text": [Rel(0x00, "ksym", arm.R_ARM_ABS32), Rel(0x04, "ksym", arm.R_ARM_CALL),
                            Rel(0x08, "ksym", arm.R_ARM_ABS32)]}, text=words(0x100, w4=0xEBFFFFFE))
    result = _load(ko, ksym=S_K | 1)
    _rejected(result, f"{NAME}: section 7 reloc 2 sym 'ksym': unsupported interworking call (ARM -> Thumb)")
    memory = _staged_failure(ko, ksym=S_K | 1).memory.read(TEXT, 0x10)
    assert memory == words(0x10, w0=S_K | 1, w4=0xEBFFFFFE, w8=S_K | 1)


def test_relocations_of_unallocated_targets_are_skipped() -> None:
    note = Sec(".koc.note", 0, bytes(8))
    result = _load(_module({".koc.note": [Rel(0, "ksym", 255)]}, extra=[note]))
    assert result.status == "loaded", result.detail
