"""i386 REL relocations as Linux 6.1 applies them (spec §5.1, §5.2), through the whole loader,
and the ELF32 header checks that differ from x86_64 (spec §2.2).

6.1's apply_relocate for CONFIG_X86_32 (arch/x86/kernel/module.c): for each Elf32_Rel entry,
with the 32-bit word at P as the addend A,
  R_386_32:               *P += S          (S + A)
  R_386_PC32, R_386_PLT32: *P += S - P      (S + A - P)
all modulo 2^32, no overflow check, no "place must be zero" check; any other type (R_386_NONE
included) prints "module: %s: Unknown relocation: %u" and fails with -ENOEXEC.

Every module is built byte by byte here (ELF32; tests/elfbuild.py writes ELF64 only). Expected
bytes are worked out by hand; the arithmetic is in the comment next to each value.

Where things land (spec §3.3, STRICT_MODULE_RWX, 4 KiB pages): sections 1 .text (AX, align 16,
0x40 bytes), 2 .data (WA, align 4, 0x20 bytes), 3 .comment (no flags), 4 .modinfo (ALLOC
cleared before layout), 5 .gnu.linkonce.this_module (WA, 0x240, align 64).
  core m=0: .text @ 0 -> 0x40 -> strict_align -> 0x1000; m=1, m=2: nothing -> 0x1000
  m=3: .data @ ALIGN(0x1000, 4) = 0x1000; this_module @ ALIGN(0x1020, 64) = 0x1040
So .text = CORE + 0 = 0xf77fe000 and .data = CORE + 0x1000 = 0xf77ff000.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import pytest
from koconform.conformance.model import Environment, KernelSymbol, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader
from koconform.reference.arch import get
from koconform.reference.errors import RelocationError

PROFILE = load_profile("linux-6.1", "i386")
CORE, INIT, COPY = 0xF77FE000, 0xF7900000, 0xFC000000
TEXT = CORE                  # .text: offset 0 of core (module docstring)
DATA = CORE + 0x1000         # .data: offset 0x1000 of core
S_K = 0xC1A07E3D             # the address we give the kernel export `ksym`
S_SMALL = 0x11               # and `ksmall`
NAME = "koctest"
VERIFY = (5, f"{NAME}: module verification failed: signature and/or required key missing - tainting kernel")

R_386_NONE, R_386_32, R_386_PC32, R_386_GOT32, R_386_PLT32 = 0, 1, 2, 3, 4
R_386_GOTOFF, R_386_GOTPC, R_386_16, R_386_PC16 = 9, 10, 20, 21

# ---- a minimal ELF32 relocatable object ------------------------------------------------------
EHDR = struct.Struct("<16sHHIIIIIHHHHHH")          # Elf32_Ehdr, 52 bytes
SHDR = struct.Struct("<IIIIIIIIII")                # Elf32_Shdr, 40 bytes
SYM = struct.Struct("<IIIBBH")                     # Elf32_Sym, 16 bytes
REL = struct.Struct("<II")                         # Elf32_Rel, 8 bytes
RELA = struct.Struct("<IIi")                       # Elf32_Rela, 12 bytes
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_REL = 1, 2, 3, 4, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK = 0x1, 0x2, 0x4, 0x40
STB_LOCAL, STB_GLOBAL, STB_WEAK, STT_SECTION = 0, 1, 2, 3
EM_386, EM_486, EM_X86_64 = 3, 6, 62
MODULE_SIZE, MODULE_NAME = 0x240, 0xC               # linux-6.1 686 struct module


@dataclass
class Rel:
    offset: int
    sym: int                 # symbol index
    rtype: int
    addend: int | None = None    # set: the entry goes in a .rela section


@dataclass
class Obj:
    text: bytes = bytes(0x40)
    data: bytes = bytes(0x20)
    relocs: dict[str, list[Rel]] = field(default_factory=dict)    # target -> entries
    machine: int = EM_386
    ident_class: int = 1        # ELFCLASS32
    shentsize: int = SHDR.size
    this_words: dict[int, int] = field(default_factory=dict)      # struct module offset -> word


# Symbols: 1 .text (section), 2 .data (section), 3 ksym, 4 ksmall, 5 wsym (weak, not exported).
SYM_TEXT, SYM_DATA, KSYM, KSMALL, WSYM = 1, 2, 3, 4, 5


def _ko(o: Obj) -> bytes:
    modinfo = "".join(f"{k}={v}\0" for k, v in {"name": NAME, "vermagic": PROFILE.vermagic, "license": "GPL",
                                                 "intree": "Y", "retpoline": "Y"}.items()).encode()
    this = bytearray(MODULE_SIZE)
    this[MODULE_NAME:MODULE_NAME + len(NAME)] = NAME.encode()
    for off, word in o.this_words.items():
        this[off:off + 4] = _u32(word)
    # (name, type, flags, bytes, align, link, info, entsize)
    secs: list[tuple[str, int, int, bytes, int, int, int, int]] = [
        (".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, o.text, 16, 0, 0, 0),
        (".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, o.data, 4, 0, 0, 0),
        (".comment", SHT_PROGBITS, 0, bytes(0x10), 1, 0, 0, 0),
        (".modinfo", SHT_PROGBITS, SHF_ALLOC, modinfo, 1, 0, 0, 0),
        (".gnu.linkonce.this_module", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, bytes(this), 64, 0, 0, 0),
    ]
    index = {s[0]: k + 1 for k, s in enumerate(secs)}
    nrel = sum(1 for entries in o.relocs.values() if entries)
    symtab_i = len(secs) + nrel + 1
    for target, entries in o.relocs.items():
        if not entries:
            continue
        rela = entries[0].addend is not None
        body = b"".join(RELA.pack(r.offset, r.sym << 8 | r.rtype, r.addend or 0) if rela
                        else REL.pack(r.offset, r.sym << 8 | r.rtype) for r in entries)
        secs.append(((".rela" if rela else ".rel") + target, SHT_RELA if rela else SHT_REL, SHF_INFO_LINK, body,
                     4, symtab_i, index[target], RELA.size if rela else REL.size))
    strtab = b"\0ksym\0ksmall\0wsym\0"
    symtab = SYM.pack(0, 0, 0, 0, 0, 0)
    symtab += SYM.pack(0, 0, 0, STT_SECTION, 0, index[".text"])
    symtab += SYM.pack(0, 0, 0, STT_SECTION, 0, index[".data"])
    symtab += SYM.pack(1, 0, 0, STB_GLOBAL << 4, 0, 0)
    symtab += SYM.pack(6, 0, 0, STB_GLOBAL << 4, 0, 0)
    symtab += SYM.pack(13, 0, 0, STB_WEAK << 4, 0, 0)
    secs.append((".symtab", SHT_SYMTAB, 0, symtab, 4, symtab_i + 1, 3, SYM.size))
    secs.append((".strtab", SHT_STRTAB, 0, strtab, 1, 0, 0, 0))
    names = b"\0" + b"".join(s[0].encode() + b"\0" for s in secs) + b".shstrtab\0"
    secs.append((".shstrtab", SHT_STRTAB, 0, names, 1, 0, 0, 0))
    out = bytearray(EHDR.size)
    headers = [bytes(SHDR.size)]
    name_off = 1
    for name, sh_type, flags, body, align, link, info, entsize in secs:
        out += bytes(-len(out) % max(align, 4))
        headers.append(SHDR.pack(name_off, sh_type, flags, 0, len(out), len(body), link, info, align, entsize))
        name_off += len(name) + 1
        out += body
    out += bytes(-len(out) % 4)
    shoff = len(out)
    out += b"".join(headers)
    ident = b"\x7fELF" + bytes([o.ident_class, 1, 1]) + bytes(9)
    out[:EHDR.size] = EHDR.pack(ident, 1, o.machine, 1, 0, 0, shoff, 0, EHDR.size, 0, 0, o.shentsize,
                                len(headers), len(headers) - 1)
    return bytes(out)


def _env(ksym: int = S_K) -> Environment:
    return Environment(symbols={"ksym": KernelSymbol("ksym", ksym), "ksmall": KernelSymbol("ksmall", S_SMALL)},
                       regions={"core": CORE, "init": INIT, "copy": COPY})


def _load(o: Obj, ksym: int = S_K) -> Result:
    return loader.load(Request(_ko(o), "i386", PROFILE, _env(ksym), run_init=False))


def _staged_failure(o: Obj) -> loader.Load:
    """The stages up to apply_relocations, which must fail; the Load keeps the memory."""
    ld = loader.Load(Request(_ko(o), "i386", PROFILE, _env(), run_init=False))
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


def _u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


def _log(result: Result) -> list[tuple[int, str]]:
    return [(r.level, r.text) for r in result.log]


def _loaded_text(result: Result) -> bytes:
    assert result.status == "loaded", result.detail
    assert _log(result) == [VERIFY]
    assert result.sections is not None
    return result.sections[".text"]


# ---- the arch record ---------------------------------------------------------------------------
def test_arch_record() -> None:
    arch = get("i386")
    assert (arch.e_machine, arch.elf.bits, arch.rela) == (EM_386, 32, False)
    assert sorted(arch.relocations) == [R_386_32, R_386_PC32, R_386_PLT32]     # no R_386_NONE
    assert all(r.size == 4 and r.check is None and not r.zero_target for r in arch.relocations.values())
    # pgtable_32_areas.h: MODULES_VADDR = VMALLOC_START = high_memory + 8 MiB, MODULES_END = VMALLOC_END
    # = PKMAP_BASE - 2 pages; high_memory = PAGE_OFFSET + MAXMEM = VMALLOC_END - 128 MiB.
    assert arch.modules_end == 0xFF000000 - 2 * 0x1000
    assert arch.modules_vaddr == arch.modules_end - (128 << 20) + (8 << 20) == 0xF77FE000


# ---- the formulas, one entry per module ----------------------------------------------------------
FORMULAS = [
    # (id, type, symbol, S, r_offset, word at P before, word at P after)
    # S+A = 0xc1a07e3d + 0x10 = 0xc1a07e4d
    ("32", R_386_32, KSYM, S_K, 0x08, 0x10, 0xC1A07E4D),
    # S+A = 0xc1a07e3d + 0 = 0xc1a07e3d
    ("32-zero-addend", R_386_32, KSYM, S_K, 0x08, 0, 0xC1A07E3D),
    # A = 0xffffffc3 = -0x3d: S+A = 0xc1a07e3d - 0x3d = 0xc1a07e00
    ("32-negative-addend", R_386_32, KSYM, S_K, 0x08, 0xFFFFFFC3, 0xC1A07E00),
    # A = 0x12345678 (a place that is not zero is the addend): byte by byte without carries,
    # 3d+78 = b5, 7e+56 = d4, a0+34 = d4, c1+12 = d3 -> 0xd3d4d4b5
    ("32-addend-from-place", R_386_32, KSYM, S_K, 0x08, 0x12345678, 0xD3D4D4B5),
    # P = 0xf77fe013, A = -4: S+A-P = 0xc1a07e39 - 0xf77fe013 = -(0xf77fe013 - 0xc1a07e39)
    #   = -0x35df61da -> 2^32 - 0x35df61da = 0xca209e26
    ("pc32", R_386_PC32, KSYM, S_K, 0x13, 0xFFFFFFFC, 0xCA209E26),
    # P = 0xf77fe021: S+A-P = -(0xf77fe021 - 0xc1a07e39) = -0x35df61e8 -> 0xca209e18
    ("plt32", R_386_PLT32, KSYM, S_K, 0x21, 0xFFFFFFFC, 0xCA209E18),
    # .data section symbol: S = 0xf77ff000, A = 0xc, P = 0xf77fe004: 0xf77ff00c - 0xf77fe004 = 0x1008
    ("pc32-forward", R_386_PC32, SYM_DATA, DATA, 0x04, 0xC, 0x1008),
    # weak, not exported: S = 0, the addend stays: 0 + 0x1234 = 0x1234
    ("32-weak-undefined", R_386_32, WSYM, 0, 0x08, 0x1234, 0x1234),
    # past 2^32: S+A = 0xfffffff0 + 0x20 = 0x100000010 -> written 0x00000010
    ("32-wraps", R_386_32, KSYM, 0xFFFFFFF0, 0x08, 0x20, 0x10),
    # past -2^31: P = 0xf77fe010, S+A-P = 0x1000 - 0xf77fe010 = -0xf77fd010 -> 2^32 - 0xf77fd010 = 0x08802ff0
    ("pc32-wraps", R_386_PC32, KSYM, 0x1000, 0x10, 0, 0x08802FF0),
    # past +2^31: A = 0x7ffffff0, S+A-P = 0xfffffff0 + 0x7ffffff0 - 0xf77fe010 = 0x17fffffe0 - 0xf77fe010
    #   = (0x17fffffe0 - 0xf0000000) - 0x077fe010 = 0x8fffffe0 - 0x077fe010 = 0x88801fd0 (> 0x7fffffff)
    ("plt32-wraps", R_386_PLT32, KSYM, 0xFFFFFFF0, 0x10, 0x7FFFFFF0, 0x88801FD0),
]


@pytest.mark.parametrize("rtype,sym,s,offset,before,after", [f[1:] for f in FORMULAS], ids=[f[0] for f in FORMULAS])
def test_formula(rtype: int, sym: int, s: int, offset: int, before: int, after: int) -> None:
    text = _with(0x40, (offset, _u32(before)))
    result = _load(Obj(text=text, relocs={".text": [Rel(offset, sym, rtype)]}), ksym=s)
    assert _loaded_text(result) == _with(0x40, (offset, _u32(after)))


def test_all_types_in_one_section_and_a_data_target() -> None:
    text = _with(0x40, (0x08, _u32(0x10)), (0x13, _u32(0xFFFFFFFC)), (0x21, _u32(0xFFFFFFFC)))
    data = _with(0x20, (0x04, _u32(0x18)), (0x10, _u32(0x20)))
    result = _load(Obj(text=text, data=data, relocs={
        ".text": [Rel(0x08, KSYM, R_386_32), Rel(0x13, KSYM, R_386_PC32), Rel(0x21, KSYM, R_386_PLT32)],
        ".data": [Rel(0x04, SYM_DATA, R_386_32), Rel(0x10, SYM_TEXT, R_386_PC32)]}))
    # The same values as the single-entry cases "32", "pc32" and "plt32" (same S, P and A).
    assert _loaded_text(result) == _with(0x40, (0x08, _u32(0xC1A07E4D)), (0x13, _u32(0xCA209E26)),
                                         (0x21, _u32(0xCA209E18)))
    assert result.sections is not None
    assert result.sections[".data"] == _with(
        0x20,
        # S+A = .data + 0x18 = 0xf77ff018
        (0x04, _u32(0xF77FF018)),
        # S+A-P = .text + 0x20 - (.data + 0x10) = 0xf77fe020 - 0xf77ff010 = -0xff0 -> 0xfffff010
        (0x10, _u32(0xFFFFF010)))
    assert result.symbols == {"ksym": S_K, "ksmall": S_SMALL, "wsym": 0}


def test_this_module_init_and_exit_pointers() -> None:
    # struct module's init (0xcc) and exit (0x20c) hold 0 and 0x20: R_386_32 against .text
    # (0xf77fe000) writes 0xf77fe000 and 0xf77fe020 there.
    relocs = {".gnu.linkonce.this_module": [Rel(0xCC, SYM_TEXT, R_386_32), Rel(0x20C, SYM_TEXT, R_386_32)]}
    result = _load(Obj(relocs=relocs, this_words={0x20C: 0x20}))
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    this_module = result.sections[".gnu.linkonce.this_module"]
    assert this_module[0xCC:0xD0] == _u32(0xF77FE000)
    assert this_module[0x20C:0x210] == _u32(0xF77FE020)


# ---- entries are applied one by one: a later entry reads what an earlier one wrote -------------
def test_same_place_twice_adds_twice() -> None:
    # 1st: 0 + S = 0xc1a07e3d; 2nd: 0xc1a07e3d + S = 0x18340fc7a -> 0x8340fc7a
    result = _load(Obj(relocs={".text": [Rel(0x08, KSYM, R_386_32), Rel(0x08, KSYM, R_386_32)]}))
    assert _loaded_text(result) == _with(0x40, (0x08, _u32(0x8340FC7A)))


def test_overlapping_places_see_earlier_writes() -> None:
    # 1st: R_386_32 @0x08 writes 0xc1a07e3d: bytes 08..0b = 3d 7e a0 c1.
    # 2nd: R_386_32 @0x0a against ksmall (0x11) reads a0 c1 00 00 = 0x0000c1a0, writes
    #      0xc1a0 + 0x11 = 0xc1b1: bytes 0a..0d = b1 c1 00 00. Result 08..0d: 3d 7e b1 c1 00 00.
    result = _load(Obj(relocs={".text": [Rel(0x08, KSYM, R_386_32), Rel(0x0A, KSMALL, R_386_32)]}))
    assert _loaded_text(result) == _with(0x40, (0x08, bytes.fromhex("3d7eb1c1")))


# ---- unknown types --------------------------------------------------------------------------------
@pytest.mark.parametrize("rtype", [R_386_NONE, R_386_GOT32, R_386_GOTOFF, R_386_GOTPC, R_386_16, R_386_PC16, 42, 255],
                         ids=["none", "got32", "gotoff", "gotpc", "16", "pc16", "42", "255"])
def test_unknown_type(rtype: int) -> None:
    result = _load(Obj(relocs={".text": [Rel(0x00, KSYM, rtype)]}))
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY, (3, f"module: {NAME}: Unknown relocation: {rtype}")]


def test_unknown_type_stops_after_the_earlier_entries() -> None:
    # Entry 0 (R_386_32 @0x00 -> 0xc1a07e3d) and entry 1 (R_386_PC32 @0x04, A = -4:
    # S+A-P = 0xc1a07e39 - 0xf77fe004 = -(0x35df61cb) -> 0xca209e35) are written; entry 2
    # (R_386_NONE) fails; entry 3 (@0x0c) is never applied, its addend 0x77 stays.
    text = _with(0x40, (0x04, _u32(0xFFFFFFFC)), (0x0C, _u32(0x77)))
    o = Obj(text=text, relocs={".text": [Rel(0x00, KSYM, R_386_32), Rel(0x04, KSYM, R_386_PC32),
                                         Rel(0x08, KSYM, R_386_NONE), Rel(0x0C, KSYM, R_386_32)]})
    result = _load(o)
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY, (3, f"module: {NAME}: Unknown relocation: 0")]
    ld = _staged_failure(o)
    assert ld.memory.read(TEXT, 0x40) == _with(0x40, (0x00, _u32(0xC1A07E3D)), (0x04, _u32(0xCA209E35)),
                                               (0x0C, _u32(0x77)))


def test_relocations_of_unallocated_targets_are_skipped() -> None:
    # §5.1 step 2: .comment has no SHF_ALLOC, so even an unknown type there is never looked at.
    result = _load(Obj(relocs={".comment": [Rel(0, KSYM, 42)]}))
    assert _loaded_text(result) == bytes(0x40)


# ---- a RELA section on i386 ---------------------------------------------------------------------
def test_rela_section_is_refused_by_the_stub() -> None:
    # No CONFIG_MODULES_USE_ELF_RELA on X86_32: moduleloader.h's apply_relocate_add stub says "REL".
    result = _load(Obj(relocs={".text": [Rel(0x08, KSYM, R_386_32, addend=0x10)]}))
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY, (3, f"module {NAME}: REL relocation unsupported")]


def test_rel_sections_before_a_rela_section_are_applied() -> None:
    # Sections are applied in index order: .rel.text (first) is written, then .rela.data fails.
    o = Obj(relocs={".text": [Rel(0x08, KSYM, R_386_32)], ".data": [Rel(0x00, KSYM, R_386_32, addend=0)]})
    result = _load(o)
    assert _log(result)[-1] == (3, f"module {NAME}: REL relocation unsupported")
    ld = _staged_failure(o)
    assert ld.memory.read(TEXT, 0x40) == _with(0x40, (0x08, _u32(S_K)))


# ---- many entries: the bulk path, checked against the formula entry by entry ------------------
def test_many_entries() -> None:
    n = 20000
    rng = np.random.default_rng(7)
    size = 4 * n
    before = rng.integers(0, 1 << 32, n, dtype=np.uint64)
    kinds = rng.choice([R_386_32, R_386_PC32, R_386_PLT32], n)
    text = before.astype("<u4").tobytes()
    o = Obj(text=text, relocs={".text": [Rel(4 * k, KSYM, int(kinds[k])) for k in range(n)]})
    result = _load(o)
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    got = np.frombuffer(result.sections[".text"], dtype="<u4")
    for k in range(n):
        p = TEXT + 4 * k
        want = (S_K + int(before[k]) - (p if kinds[k] != R_386_32 else 0)) % (1 << 32)
        assert int(got[k]) == want, k
    assert len(result.sections[".text"]) == size


# ---- elf_validity_check on a 32-bit kernel -----------------------------------------------------
def test_em_486_is_accepted() -> None:
    # asm/elf.h: elf_check_arch_ia32 accepts EM_386 and EM_486.
    result = _load(Obj(machine=EM_486, relocs={".text": [Rel(0x08, KSYM, R_386_32)]}))
    assert _loaded_text(result) == _with(0x40, (0x08, _u32(S_K)))


@pytest.mark.parametrize("machine", [EM_X86_64, 7, 0])
def test_other_machines_are_refused(machine: int) -> None:
    result = _load(Obj(machine=machine))
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "check")
    assert _log(result) == [(3, f"Invalid architecture in ELF header: {machine}")]


def test_elf64_section_header_size_is_refused() -> None:
    # e_shentsize must be sizeof(Elf32_Shdr) = 40.
    result = _load(Obj(shentsize=64))
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "check")
    assert _log(result) == [(3, "Invalid ELF section header size")]


def test_ident_class_is_not_checked() -> None:
    # 6.1 never looks at e_ident[EI_CLASS]: ELFCLASS64 in an Elf32 file loads.
    result = _load(Obj(ident_class=2, relocs={".text": [Rel(0x08, KSYM, R_386_32)]}))
    assert _loaded_text(result) == _with(0x40, (0x08, _u32(S_K)))
