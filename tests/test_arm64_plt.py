"""arm64 module PLTs as Linux 6.1 sizes and fills them (arch/arm64/kernel/module-plts.c; spec §5.3).

Modules are built byte by byte (test_arm64_relocations._module: .text at CORE, .plt at
CORE + 0x40 once it is NOBITS and 64-aligned). PLT words are worked out by hand:
  adrp x16, page = 0x90000000 | immlo << 29 | immhi << 5 | 16   (imm21 = pages from the entry's page)
  add x16, x16, #lo12 = 0x91000000 | lo12 << 10 | 16 << 5 | 16 = 0x91000210 | lo12 << 10
  br x16 = 0xd61f0000 | 16 << 5 = 0xd61f0200
"""
from __future__ import annotations

import dataclasses
import itertools
import struct

import numpy as np
import pytest
from elfbuild import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    STB_LOCAL,
    STT_SECTION,
    Rela,
    Section,
    Symbol,
)
from koconform.conformance.model import Request
from koconform.reference import loader
from koconform.reference.arch import arm64_plt
from koconform.reference.elf import SHF_ALLOC as ALLOC
from koconform.reference.elf import SHF_EXECINSTR as EXEC
from koconform.reference.elf import SHT_NOBITS
from test_arm64_relocations import (
    CORE,
    NAME,
    PROFILE,
    S_K,
    TEXT,
    VERIFY,
    R,
    _env,
    _load,
    _log,
    _module,
    _words,
)

PLT = CORE + 0x40
FAR = CORE + 0x10000000           # 256 MiB above the module: out of a branch's reach
ERRATUM = dataclasses.replace(PROFILE, facts={**PROFILE.facts, "erratum_843419": True})


def _frobbed(ko: bytes, profile: object = PROFILE) -> loader.Load:
    ld = loader.Load(Request(ko, "arm64", profile, _env(), run_init=False))  # type: ignore[arg-type]
    ld.copy_and_check()
    ld.layout_and_allocate()
    return ld


def _plt_words(result: object, section: str = ".plt") -> list[int]:
    data = result.sections[section]  # type: ignore[attr-defined]
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def test_get_plt_entry_by_hand() -> None:
    """Entry at 0xffff800000d00040 to _printk 0xffff800008cc767c: pages 0xffff800008cc7 - 0xffff800000d00
    = 0x7fc7: immlo 3 (0x60000000), immhi 0x1ff1 (<< 5 = 0x3fe20) -> 0xf003fe30; lo12 0x67c << 10 =
    0x19f000 -> add 0x9119f210."""
    assert arm64_plt.get_plt_entry(S_K, PLT) == (0xF003FE30, 0x9119F210, 0xD61F0200)


def test_gen_adrp_out_of_reach_is_break_fault() -> None:
    """4 GiB = 0x100000 pages is one past adrp's signed 21 bits: AARCH64_BREAK_FAULT."""
    assert arm64_plt.gen_adrp(PLT, (PLT & ~0xFFF) + (1 << 32), 16) == 0xD4202000
    # One page less fits: imm21 0xfffff -> immlo 3, immhi 0x3ffff -> 0x90000000 | 0x60000000 | 0x7fffe0 | 16
    assert arm64_plt.gen_adrp(PLT, (PLT & ~0xFFF) + (1 << 32) - 0x1000, 16) == 0xF07FFFF0


def test_frob_sizes_and_flags() -> None:
    """JUMP26 ksym, CALL26 ksym twice (addend 0: one duplicate), CALL26 ksym2, and a CALL26 against the
    .text section symbol (same section: not counted): 3 core slots -> .plt (3 + 1) * 12 = 48."""
    text = _words(*((k * 4, 0x94000000) for k in range(5)))
    ko = _module({".text": [Rela(0, "ksym", R["R_AARCH64_CALL26"]), Rela(4, "ksym2", R["R_AARCH64_CALL26"]),
                            Rela(8, "ksym", R["R_AARCH64_JUMP26"]), Rela(12, "ksym", R["R_AARCH64_CALL26"]),
                            Rela(16, 1, R["R_AARCH64_CALL26"], 0x20)]}, text=text)
    ld = _frobbed(ko)
    s = ld.sechdrs
    plt, init_plt, tramp = ld.find_sec(".plt"), ld.find_sec(".init.plt"), ld.find_sec(".text.ftrace_trampoline")
    assert [int(s["sh_type"][i]) for i in (plt, init_plt, tramp)] == [SHT_NOBITS] * 3
    assert [int(s["sh_flags"][i]) for i in (plt, init_plt, tramp)] == [ALLOC | EXEC] * 3
    assert [int(s["sh_addralign"][i]) for i in (plt, init_plt, tramp)] == [64, 64, 4]
    assert [int(s["sh_size"][i]) for i in (plt, init_plt, tramp)] == [48, 12, 24]
    assert (ld.arm64_plt.core.max_entries, ld.arm64_plt.init.max_entries) == (3, 0)


def test_frob_sorts_the_file_copy() -> None:
    """The copy's .rela.text is reordered: branches needing a PLT first, sorted by (type, sym, addend)."""
    text = _words((0, 0xD2800000), (4, 0x94000000), (8, 0x14000000))
    ko = _module({".text": [Rela(0, "ksym", R["R_AARCH64_MOVW_UABS_G0_NC"]), Rela(4, "ksym2", R["R_AARCH64_CALL26"]),
                            Rela(8, "ksym", R["R_AARCH64_JUMP26"])]}, text=text)
    ld = _frobbed(ko)
    rel = ld.find_sec(".rela.text") or next(i for i in range(ld.shnum) if ld.secname(i) == ".rela.text")
    table = ld.memory.table(int(ld.sechdrs[rel]["sh_addr"]), 3, ld.cls.rela)
    # partition: needs = [F, T, T]: entry 0 swaps with entry 2 -> [JUMP26, CALL26, MOVW]; met at 2,
    # sort of the first two by type: JUMP26 (282) before CALL26 (283).
    assert [int(x) for x in table["r_offset"]] == [8, 4, 0]


def test_partition_is_the_kernels_loop() -> None:
    def loop(needs: tuple[bool, ...]) -> tuple[list[int], int]:
        a = list(range(len(needs)))
        i, j = 0, len(a) - 1
        while i < j:
            if needs[a[i]]:
                i += 1
            elif needs[a[j]]:
                a[i], a[j] = a[j], a[i]
            else:
                j -= 1
        return a, i
    for n in range(9):
        for needs in itertools.product((False, True), repeat=n):
            order, nents = arm64_plt.partition_branch_plt_relas(np.array(needs, dtype=bool))
            assert (list(order), nents) == loop(needs), needs


def test_missing_plt_section() -> None:
    ko = _module({}, extra=[])
    ko_no_plt = ko.replace(b".init.plt\0", b".init.plX\0")
    result = _load(ko_no_plt)
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "layout")
    assert _log(result)[-1] == (3, f"{NAME}: module PLT section(s) missing")


def test_far_call_goes_through_a_plt_entry() -> None:
    """bl at TEXT to FAR = CORE + 0x10000000: entry 0 at CORE + 0x40 -> bl +0x40: imm26 0x10 -> 0x94000010.
    Entry: pages 0x10000 from CORE's page: immlo 0, immhi 0x4000 (<< 5 = 0x80000) -> 0x90080010;
    lo12 0 -> add 0x91000210; br x16."""
    ko = _module({".text": [Rela(0, "ksym", R["R_AARCH64_CALL26"])]}, text=_words((0, 0x94000000)))
    result = _load(ko, ksym=FAR)
    assert result.status == "loaded"
    assert struct.unpack_from("<I", result.sections[".text"], 0)[0] == 0x94000010
    assert _plt_words(result) == [0x90080010, 0x91000210, 0xD61F0200, 0, 0, 0]


def test_repeat_reuses_the_entry_and_leaves_a_copy() -> None:
    """Two bl to FAR: counted once ((1 + 1) * 12 = 24 bytes); the second builds its entry in slot 1,
    finds it equal to slot 0 (same page, same words) and branches to slot 0: bl at TEXT+4 -> +0x3c
    (imm26 0xf -> 0x9400000f); the copy stays in slot 1."""
    text = _words((0, 0x94000000), (4, 0x94000000))
    ko = _module({".text": [Rela(0, "ksym", R["R_AARCH64_CALL26"]), Rela(4, "ksym", R["R_AARCH64_CALL26"])]},
                 text=text)
    result = _load(ko, ksym=FAR)
    assert struct.unpack_from("<2I", result.sections[".text"], 0) == (0x94000010, 0x9400000F)
    entry = [0x90080010, 0x91000210, 0xD61F0200]
    assert _plt_words(result) == entry + entry


def test_uncounted_branch_warns_and_fails() -> None:
    """bl against its own section's symbol + 0x8000000 (one past the reach): no slot was counted, so
    module_emit_plt_entry's WARN_ON and -ENOEXEC, with no message from module.c."""
    ko = _module({".text": [Rela(0, 1, R["R_AARCH64_CALL26"], 0x8000000)]}, text=_words((0, 0x94000000)))
    result = _load(ko)
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "relocate")
    assert _log(result) == [VERIFY]


def test_reorder_decides_the_first_failure() -> None:
    """UABS_G0 0x10000 (fails), UABS_G1 0x100000000 (fails), bl FAR: the partition puts the bl first and
    the first movz last, so the kernel reports type 265, not 263."""
    text = _words((0, 0xD2800000), (4, 0xD2A00000), (8, 0x94000000))
    ko = _module({".text": [Rela(0, 1, R["R_AARCH64_MOVW_UABS_G0"], 0),            # S = TEXT: huge
                            Rela(4, "ksym2", R["R_AARCH64_MOVW_UABS_G1"], 0),
                            Rela(8, "ksym", R["R_AARCH64_CALL26"])]}, text=text)
    ld = loader.Load(Request(ko, "arm64", PROFILE, _env(FAR, 0x100000000), run_init=False))
    result = loader.load(ld.req)
    assert result.log[-1].text == f"module {NAME}: overflow in relocation type 265 val 100000000"


def test_init_code_uses_the_init_plt() -> None:
    """A bl in .init.text counts for .init.plt and goes through it; .plt stays empty."""
    init_text = Section(".init.text", SHF_ALLOC | SHF_EXECINSTR, struct.pack("<I", 0x94000000), align=4)
    syms = [Symbol("", ".text", bind=STB_LOCAL, kind=STT_SECTION), Symbol("", ".data", bind=STB_LOCAL,
            kind=STT_SECTION), Symbol("ksym"), Symbol("ksym2")]
    ko = _module({".init.text": [Rela(0, "ksym", R["R_AARCH64_CALL26"])]}, extra=[init_text], symbols=syms)
    result = _load(ko, ksym=FAR)
    assert result.status == "loaded"
    assert _plt_words(result) == [0, 0, 0]
    init_plt = int(result.layout[".init.plt"].address)
    words = _plt_words(result, ".init.plt")
    assert words[1:3] == [0x91000210, 0xD61F0200] and words[3:] == [0, 0, 0]
    assert words[0] == arm64_plt.gen_adrp(init_plt, FAR, 16)
    bl = struct.unpack_from("<I", result.sections[".init.text"], 0)[0]
    offset = init_plt - int(result.layout[".init.text"].address)
    assert bl == 0x94000000 | ((offset >> 2) & 0x3FFFFFF)


# ---- erratum 843419 (profile fact on) -------------------------------------------------------------
def test_erratum_raises_alignment_or_counts_a_veneer() -> None:
    """ADRP at r_offset 0x38: ffz(0x3f) = 6 -> min_align 2 << 6 = 128 raises .text's sh_addralign;
    at 0xff8: ffz(0xfff) = 12 -> 8192 > 4 KiB: a veneer slot, plus slack ceil(1 / 341) = 1 -> (2 + 1) * 12."""
    text = bytes(0x1000)
    ld = _frobbed(_module({".text": [Rela(0x38, "ksym", R["R_AARCH64_ADR_PREL_PG_HI21"])]}, text=text), ERRATUM)
    assert int(ld.sechdrs[ld.find_sec(".text")]["sh_addralign"]) == 128
    ld = _frobbed(_module({".text": [Rela(0xFF8, "ksym", R["R_AARCH64_ADR_PREL_PG_HI21"])]}, text=text), ERRATUM)
    assert int(ld.sechdrs[ld.find_sec(".text")]["sh_addralign"]) == 16
    assert int(ld.sechdrs[ld.find_sec(".plt")]["sh_size"]) == 36
    ld = _frobbed(_module({".text": [Rela(0xFF8, "ksym", R["R_AARCH64_ADR_PREL_PG_HI21"])]}, text=text))
    assert int(ld.sechdrs[ld.find_sec(".plt")]["sh_size"]) == 12        # fact off: nothing counted


def test_erratum_adrp_becomes_adr() -> None:
    """adrp x0 at TEXT + 0xff8 (page offset 0xff8), target CORE + 0x2345: the page CORE + 0x2000 is
    0x1008 bytes away: adr x0 = 0x10000000 | (0x1008 & 3) << 29 | (0x1008 >> 2 = 0x402) << 5 = 0x10008040."""
    ko = _module({".text": [Rela(0xFF8, "ksym", R["R_AARCH64_ADR_PREL_PG_HI21"])]},
                 text=bytes(0xFF8) + struct.pack("<I", 0x90000000) + bytes(4))
    result = loader.load(Request(ko, "arm64", ERRATUM, _env(CORE + 0x2345), run_init=False))
    assert result.status == "loaded"
    assert struct.unpack_from("<I", result.sections[".text"], 0xFF8)[0] == 0x10008040


def test_erratum_adrp_far_gets_a_veneer() -> None:
    """adrp x0 at TEXT + 0xff8 to _printk (beyond adr's 1 MiB): a veneer in .plt at CORE + 0x1000:
    adrp x0 from page CORE + 0x1000 to 0xffff800008cc7000: 0x7fc6 pages (immlo 2 -> 0x40000000, immhi
    0x1ff1 -> 0x3fe20) = 0xd003fe20; add x0, x0, #0 = 0x91000000; b from CORE + 0x1008 back to
    TEXT + 0xffc: -0xc -> imm26 0x3fffffd -> 0x17fffffd. The adrp becomes b +8 = 0x14000002."""
    ko = _module({".text": [Rela(0xFF8, "ksym", R["R_AARCH64_ADR_PREL_PG_HI21"])]},
                 text=bytes(0xFF8) + struct.pack("<I", 0x90000000) + bytes(4))
    result = loader.load(Request(ko, "arm64", ERRATUM, _env(S_K), run_init=False))
    assert result.status == "loaded"
    assert int(result.layout[".plt"].address) == TEXT + 0x1000
    assert struct.unpack_from("<I", result.sections[".text"], 0xFF8)[0] == 0x14000002
    assert _plt_words(result)[:3] == [0xD003FE20, 0x91000000, 0x17FFFFFD]


@pytest.mark.parametrize("off,forbidden", [(0xFF4, False), (0xFF8, True), (0xFFC, True), (0x1000, False)])
def test_forbidden_offsets(off: int, forbidden: bool) -> None:
    class Ld:
        profile = ERRATUM
    assert arm64_plt.is_forbidden_offset_for_adrp(Ld(), CORE + off) is forbidden
