"""Module PLTs of 32-bit arm (arch/arm/kernel/module-plts.c, CONFIG_ARM_MODULE_PLTS, 6.1.y).

Sizing (module_frob_arch_sections), the kernel's heapsort the counting and the application
order depend on, and the bytes get_module_plt writes, on modules built byte by byte
(test_arm_relocations.build_arm). Expected words are encoded by hand:

  ldr pc, [pc, #56]   A1 LDR (literal): cond 1110 | 010 P=1 U=1 0 W=0 L=1 | Rn 1111 | Rt 1111 | imm12 0x038
                      = 0xe59ff038; at entry E the pc reads E + 8, and E + 8 + 56 = E + 64, the literal
  ldr.w pc, [pc, #60] T2 LDR (literal): 1111 1000 U=1 101 1111 | Rt 1111 | imm12 0x03c = 0xf8df 0xf03c,
                      halfwords in that order: bytes df f8 3c f0
A block is 16 such words then their 16 literals (128 bytes); with DYNAMIC_FTRACE slots 0 and 1
hold FTRACE_ADDR (ftrace_caller 0xc0312a38) and MCOUNT_ADDR (__gnu_mcount_nc 0xc0312a2c).
"""
from __future__ import annotations

import pytest
from koconform.conformance.model import Environment, KernelSymbol, Request, Result
from koconform.conformance.profiles import load_profile
from koconform.reference import loader
from koconform.reference.arch import arm
from koconform.reference.arch.arm_plt import kernel_sort
from test_arm_relocations import (
    NAME,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    STB_LOCAL,
    STT_FUNC,
    STT_SECTION,
    Module,
    Rel,
    Sec,
    Sym,
    build_arm,
    words,
)

VMALLOC, FAR_INIT, COPY = 0xE0000000, 0xE4000000, 0xF0800000
FTRACE, MCOUNT = 0xC0312A38, 0xC0312A2C
LDR = 0xE59FF038
CALL, JUMP = 0xEBFFFFFE, 0xEAFFFFFE
KSYMS = {f"k{n}": 0xC0400000 + 0x100 * n for n in range(20)}
VERIFY = (5, f"{NAME}: module verification failed: signature and/or required key missing - tainting kernel")


def _module(text_relocs: list[Rel], text: bytes = bytes(0x100), sections: list[Sec] | None = None,
            relocs: dict[str, list[Rel]] | None = None, plts: tuple[str, ...] = (".plt", ".init.plt"),
            local: list[Sym] | None = None) -> bytes:
    return build_arm(Module(
        sections=[Sec(".text", SHF_ALLOC | SHF_EXECINSTR, text), *(Sec(p, SHF_ALLOC, b"\0", align=1) for p in plts),
                  *(sections or [])],
        symbols=[Sym("", ".text", bind=STB_LOCAL, kind=STT_SECTION), *(local or []), *(Sym(k) for k in KSYMS)],
        relocs={".text": text_relocs, **(relocs or {})},
        modinfo={"name": NAME, "vermagic": load_profile("linux-6.1", "arm").vermagic, "license": "GPL",
                 "intree": "Y"}))


def _request(ko: bytes, core: int, init: int | None, config: dict[str, bool],
             symbols: dict[str, int] | None = None) -> Request:
    regions = {"core": core, "copy": COPY} | ({"init": init} if init is not None else {})
    env = Environment(symbols={k: KernelSymbol(k, v) for k, v in (KSYMS | (symbols or {})).items()},
                      regions=regions)
    return Request(ko, "arm", load_profile("linux-6.1", "arm", config), env, run_init=False)


def _load(ko: bytes, core: int = VMALLOC, init: int | None = None, symbols: dict[str, int] | None = None,
          **config: bool) -> Result:
    return loader.load(_request(ko, core, init, config, symbols))


def _frob(ko: bytes, **config: bool) -> dict[str, tuple[int, int, int, int]]:
    """(sh_type, sh_flags, sh_addralign, sh_size) of .plt and .init.plt after layout_and_allocate."""
    ld = loader.Load(_request(ko, 0xBF000000, None, config))
    ld.copy_and_check()
    ld.layout_and_allocate()
    out = {}
    for i in range(ld.shnum):
        if ld.secname(i) in (".plt", ".init.plt"):
            h = ld.sechdrs[i]
            out[ld.secname(i)] = tuple(int(h[f]) for f in ("sh_type", "sh_flags", "sh_addralign", "sh_size"))
    return out  # type: ignore[return-value]


def _calls(names: list[str], start: int = 0, rtype: int = arm.R_ARM_CALL) -> list[Rel]:
    return [Rel(start + 4 * k, n, rtype) for k, n in enumerate(names)]


def _word(data: bytes, off: int) -> int:
    return int.from_bytes(data[off:off + 4], "little")


def _block(lits: list[int], ldr: int = LDR) -> bytes:
    return ldr.to_bytes(4, "little") * 16 + b"".join(v.to_bytes(4, "little") for v in lits) + bytes(4 * (16 - len(lits)))


# ---- lib/sort.c ----------------------------------------------------------------------------
@pytest.mark.parametrize("keys,order", [
    # three equal keys: heapify leaves them; extract swaps 0<->2 then 0<->1: [1, 2, 0]
    ([5, 5, 5], [1, 2, 0]),
    # heapify keeps [3,1,2]; extract: swap 0<->2 -> [2,1,3], swap 0<->1 -> [1,2,3]: originals [1, 2, 0]
    ([3, 1, 2], [1, 2, 0]),
    # [1,0,1,0]: heapify leaves it; extract swaps 0<->3 -> [0,0,1,1], the sift-down of 0 swaps 0<->2 ->
    # [1,0,0,1]; swap 0<->2 -> [0,0,1,1]; swap 0<->1. The two 1s end up reversed (2 before 0)
    ([1, 0, 1, 0], [1, 3, 2, 0]),
    ([7], [0]),
    ([], []),
], ids=["equal", "distinct", "duplicates", "one", "empty"])
def test_kernel_sort_hand_traced(keys: list[int], order: list[int]) -> None:
    assert kernel_sort(keys) == order


def test_kernel_sort_sorts() -> None:
    keys = [(k * 7919) % 31 for k in range(200)]
    order = kernel_sort(keys)
    assert sorted(order) == list(range(200))
    assert [keys[i] for i in order] == sorted(keys)


# ---- module_frob_arch_sections -------------------------------------------------------------
NOBITS, AX = 8, SHF_ALLOC | SHF_EXECINSTR


def test_frob_makes_both_plts_nobits_executable_64_aligned() -> None:
    # no branch to count: (2 fixed + 0) * 8 = 16 -> round_up(16, 128) = 128
    assert _frob(_module([])) == {".plt": (NOBITS, AX, 64, 128), ".init.plt": (NOBITS, AX, 64, 128)}


@pytest.mark.parametrize("count,size", [(14, 128), (15, 256), (30, 256), (31, 384)])
def test_plt_size_is_counted_branches_plus_two_rounded_to_128(count: int, size: int) -> None:
    names = [f"k{n % 20}" for n in range(count)]
    # distinct targets need distinct symbols: k0..k19, then the same ones with nonzero addends
    text = words(0x100, **{f"w{4 * k:x}": CALL if k < 20 else 0xEBFFFFFF for k in range(count)})
    assert _frob(_module(_calls(names), text=text))[".plt"][3] == size


BASE14 = [f"k{n}" for n in range(14)]           # 2 + 14 = 16 slots: exactly one block


@pytest.mark.parametrize("extra,word,size", [
    # the same symbol, zero addend, right after its twin in sorted order: a duplicate
    (Rel(0x40, "k3", arm.R_ARM_CALL), CALL, 128),
    # the same symbol with addend -4 (imm24 0xffffff): counted
    (Rel(0x40, "k3", arm.R_ARM_CALL), 0xEBFFFFFF, 256),
    # another type against the same symbol: another key, counted
    (Rel(0x40, "k3", arm.R_ARM_JUMP24), JUMP, 256),
    # a Thumb branch is counted even where THUMB2_KERNEL compiles it out of apply_relocate
    (Rel(0x40, "k15", arm.R_ARM_THM_CALL), 0xFFFEF7FF, 256),
    # not a branch
    (Rel(0x40, "k15", arm.R_ARM_ABS32), 0, 128),
    # a branch to a symbol of the target section itself is never counted
    (Rel(0x40, "koc_local", arm.R_ARM_CALL), CALL, 128),
], ids=["duplicate", "nonzero-addend", "other-type", "thumb-branch", "not-a-branch", "same-section"])
def test_count_plts(extra: Rel, word: int, size: int) -> None:
    local = [Sym("koc_local", ".text", 0x80, kind=STT_FUNC)]
    text = words(0x100, **{f"w{4 * k:x}": CALL for k in range(14)}, w40=word)
    assert _frob(_module([*_calls(BASE14), extra], text=text, local=local))[".plt"][3] == size


def test_branches_of_non_executable_sections_are_not_counted() -> None:
    data = Sec(".data", SHF_WRITE | SHF_ALLOC, words(0x40, w0=CALL))
    ko = _module(_calls(BASE14), text=words(0x100, **{f"w{4 * k:x}": CALL for k in range(14)}),
                 sections=[data], relocs={".data": [Rel(0, "k15", arm.R_ARM_CALL)]})
    assert _frob(ko)[".plt"][3] == 128


def test_init_sections_count_towards_init_plt() -> None:
    init = Sec(".init.text", AX, words(0x40, **{f"w{4 * k:x}": CALL for k in range(15)}))
    ko = _module(_calls(BASE14[:3]), text=words(0x100, w0=CALL, w4=CALL, w8=CALL), sections=[init],
                 relocs={".init.text": _calls([f"k{n}" for n in range(15)])})
    # core: 2 + 3 = 5 -> 128; init: 2 + 15 = 17 -> 256
    assert {k: v[3] for k, v in _frob(ko).items()} == {".plt": 128, ".init.plt": 256}


@pytest.mark.parametrize("order,size", [
    # file order Z, N, Z (Z: zero addend, N: addend -4) of one (type, symbol) key: the heapsort of
    # three equal keys gives originals [1, 2, 0] = N, Z, Z: N counted, the first Z (after N) counted,
    # the second Z a duplicate: 2, so 2 + 12 + 2 = 16 -> 128 (a stable sort: Z, N, Z counts 3 -> 256)
    ([CALL, 0xEBFFFFFF, CALL], 128),
    # file order Z, Z, N: sorted Z(1), N(2), Z(0): all three counted, 2 + 12 + 3 = 17 -> 256
    # (a stable sort: Z, Z, N counts 2 -> 128)
    ([CALL, CALL, 0xEBFFFFFF], 256),
], ids=["z-n-z", "z-z-n"])
def test_count_follows_the_unstable_heapsort(order: list[int], size: int) -> None:
    b = Sec(".text.b", AX, words(0x10, w0=order[0], w4=order[1], w8=order[2]))
    ko = _module(_calls(BASE14[:12]), text=words(0x100, **{f"w{4 * k:x}": CALL for k in range(12)}),
                 sections=[b], relocs={".text.b": _calls(["k19"] * 3)})
    assert _frob(ko)[".plt"][3] == size


def test_without_dynamic_ftrace_no_slots_are_reserved() -> None:
    names = [f"k{n}" for n in range(16)]
    text = words(0x100, **{f"w{4 * k:x}": CALL for k in range(16)})
    # 16 * 8 = 128
    assert _frob(_module(_calls(names), text=text), CONFIG_DYNAMIC_FTRACE=False)[".plt"][3] == 128


@pytest.mark.parametrize("plts", [(".init.plt",), (".plt",), ()], ids=["no-plt", "no-init-plt", "neither"])
def test_missing_plt_section(plts: tuple[str, ...]) -> None:
    result = _load(_module([], plts=plts))
    assert (result.status, result.errno, result.phase) == ("rejected", "ENOEXEC", "layout")
    assert result.log[-1].text == f"{NAME}: module PLT section(s) missing"


def test_no_plt_sections_needed_without_module_plts() -> None:
    result = _load(_module([], plts=()), core=0xBF000000, CONFIG_ARM_MODULE_PLTS=False)
    assert result.status == "loaded", result.detail


# ---- get_module_plt ----------------------------------------------------------------------
# Layout (see test_arm_relocations): .text @ core + 0 (0x100 bytes), .plt @ core + 0x100.
PLT = VMALLOC + 0x100


def _loaded(result: Result) -> dict[str, bytes]:
    assert result.status == "loaded", result.detail
    assert result.sections is not None
    return result.sections


def _bl(place: int, target: int, opcode: int = 0xEB) -> int:
    return (opcode << 24) | (((target - place - 8) >> 2) & 0xFFFFFF)


def test_first_entry_fills_block_zero() -> None:
    s = _loaded(_load(_module(_calls(["k0"]), text=words(0x100, w0=CALL))))
    # block 0: 16 ldr words, then ftrace_caller, __gnu_mcount_nc and k0 = 0xc0400000
    assert s[".plt"] == _block([FTRACE, MCOUNT, 0xC0400000])
    # bl to slot 2 (0xe0000108) from 0xe0000000: (0x108 - 8) >> 2 = 0x40
    assert _word(s[".text"], 0) == 0xEB000040 == _bl(VMALLOC, PLT + 8)
    assert s[".init.plt"] == bytes(128)      # never used: still zero


def test_branch_to_the_mcount_or_ftrace_address_uses_its_reserved_slot() -> None:
    s = _loaded(_load(_module(_calls(["k18", "k19"]), text=words(0x100, w0=CALL, w4=CALL)),
                      symbols={"k18": MCOUNT, "k19": FTRACE}))
    assert s[".plt"] == _block([FTRACE, MCOUNT])      # no new literal
    # k18 -> slot 1 (0xe0000104): (0x104 - 8) >> 2 = 0x3f; k19 from 0xe0000004 -> slot 0: (0xfc - 8) >> 2 = 0x3d
    assert (_word(s[".text"], 0), _word(s[".text"], 4)) == (0xEB00003F, 0xEB00003D)


def test_same_target_shares_the_last_entry() -> None:
    s = _loaded(_load(_module(_calls(["k0", "k0", "k0"]), text=words(0x100, w0=CALL, w4=CALL, w8=CALL))))
    assert s[".plt"] == _block([FTRACE, MCOUNT, 0xC0400000])
    assert [_word(s[".text"], o) for o in (0, 4, 8)] == [_bl(VMALLOC + o, PLT + 8) for o in (0, 4, 8)]


def test_only_the_last_entry_is_compared() -> None:
    # file order: b k0, bl k0, bl k1; sorted by type: CALL k0, CALL k1, JUMP24 k0 -> slots 2, 3 and 4
    relocs = [Rel(0, "k0", arm.R_ARM_JUMP24), Rel(4, "k0", arm.R_ARM_CALL), Rel(8, "k1", arm.R_ARM_CALL)]
    s = _loaded(_load(_module(relocs, text=words(0x100, w0=JUMP, w4=CALL, w8=CALL))))
    assert s[".plt"] == _block([FTRACE, MCOUNT, 0xC0400000, 0xC0400100, 0xC0400000])
    assert _word(s[".text"], 0) == _bl(VMALLOC, PLT + 16, 0xEA)
    assert _word(s[".text"], 4) == _bl(VMALLOC + 4, PLT + 8)
    assert _word(s[".text"], 8) == _bl(VMALLOC + 8, PLT + 12)


def test_fifteenth_entry_starts_a_new_block() -> None:
    names = [f"k{n}" for n in range(15)]
    s = _loaded(_load(_module(_calls(names), text=words(0x100, **{f"w{4 * k:x}": CALL for k in range(15)}))))
    assert len(s[".plt"]) == 256
    assert s[".plt"][:128] == _block([FTRACE, MCOUNT, *(KSYMS[n] for n in names[:14])])
    assert s[".plt"][128:] == _block([KSYMS["k14"]])
    # the 15th bl (at 0xe0000038) goes to block 1's first ldr, 0xe0000180
    assert _word(s[".text"], 0x38) == _bl(VMALLOC + 0x38, PLT + 0x80)


def test_without_dynamic_ftrace_the_first_entry_is_slot_zero() -> None:
    s = _loaded(_load(_module(_calls(["k0"]), text=words(0x100, w0=CALL)), CONFIG_DYNAMIC_FTRACE=False))
    assert s[".plt"] == _block([0xC0400000])
    assert _word(s[".text"], 0) == _bl(VMALLOC, PLT)


def test_init_code_uses_the_init_plt() -> None:
    init = Sec(".init.text", AX, words(0x10, w0=CALL))
    ko = _module([], sections=[init], relocs={".init.text": _calls(["k0"])})
    s = _loaded(_load(ko, init=FAR_INIT))
    # init: .init.plt @ 0, .init.text @ 0x80
    assert s[".init.plt"] == _block([FTRACE, MCOUNT, 0xC0400000])
    assert s[".plt"] == bytes(128)
    assert _word(s[".init.text"], 0) == _bl(FAR_INIT + 0x80, FAR_INIT + 8)


def test_thumb2_plt_entries() -> None:
    # THUMB2_KERNEL: bl (Thumb-2) k0 from 0xe0000000; entry = slot 2 (0xe0000108):
    # off = 0xe0000108 - 0xe0000000 - 4 = 0x104: sign 0, J1 = J2 = 1, imm10 0, imm11 0x82
    # -> upper 0xf000, lower 0xd000 | 0x2000 | 0x800 | 0x82 = 0xf882
    s = _loaded(_load(_module(_calls(["k0"], rtype=arm.R_ARM_THM_CALL), text=words(0x100, w0=0xFFFEF7FF)),
                      CONFIG_THUMB2_KERNEL=True))
    assert s[".plt"][:8] == bytes.fromhex("dff83cf0dff83cf0")
    assert s[".plt"] == _block([FTRACE, MCOUNT, 0xC0400000], ldr=0xF03CF8DF)
    assert _word(s[".text"], 0) == 0xF882F000


def test_more_plt_entries_than_counted_is_the_kernels_bug_on() -> None:
    # Branches in a non-executable section are not counted (128 bytes: 14 free slots) but are applied:
    # the 15th needs slot 17 > 16, BUG_ON() in get_module_plt: an oops, here a fault.
    data = Sec(".data", SHF_WRITE | SHF_ALLOC, words(0x40, **{f"w{4 * k:x}": CALL for k in range(15)}))
    ko = _module([], sections=[data], relocs={".data": _calls([f"k{n}" for n in range(15)])})
    result = _load(ko)
    assert (result.status, result.phase) == ("faulted", "relocate")
