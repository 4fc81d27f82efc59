"""Architectures, registered explicitly by name and by e_machine.

Each architecture lives in its own module exporting one `ARCH` record whose
`relocations` table maps r_type to a `RelocType`. Everything that needs to know
which relocation types exist (the loader, the generator, the coverage report, the
docs) reads that table: a type absent from it is unsupported everywhere at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..elf import ElfClass

# ---- value kinds: compute once, shared by every architecture -------------------------
# Each takes S, A, P as uint64 arrays (wrapping arithmetic) and returns the value.
ValueFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _s_plus_a(s: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    return s + a


def _s_plus_a_minus_p(s: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    return s + a - p


def _page_minus_page(s: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    page = ~np.uint64(0xFFF)
    return ((s + a) & page) - (p & page)


VALUE_KINDS: dict[str, ValueFn] = {
    "none": lambda s, a, p: np.zeros_like(s),
    "S+A": _s_plus_a,
    "S+A-P": _s_plus_a_minus_p,
    "Page(S+A)-Page(P)": _page_minus_page,      # arm64 ADRP (4 KiB pages)
}


# ---- range checks -------------------------------------------------------------------
@dataclass(frozen=True)
class RangeCheck:
    """The kernel's overflow test for a value, as an inclusive range of signed 64-bit values.

    `signed=False` means the value, read as unsigned 64-bit, must be <= hi.
    """
    lo: int
    hi: int
    signed: bool

    def fits(self, val: np.ndarray) -> np.ndarray:
        if self.signed:
            v = val.view(np.int64)
            return (v >= self.lo) & (v <= self.hi)
        return val <= np.uint64(self.hi)

    def describe(self) -> str:
        return f"[{_h(self.lo)}, {_h(self.hi)}]"


def _h(v: int) -> str:
    return f"-{-v:#x}" if v < 0 else f"{v:#x}"


def unsigned(bits: int) -> RangeCheck:
    return RangeCheck(0, (1 << bits) - 1, signed=False)


def signed(bits: int) -> RangeCheck:
    return RangeCheck(-(1 << (bits - 1)), (1 << (bits - 1)) - 1, signed=True)


@dataclass(frozen=True)
class RelocType:
    """One relocation type as one kernel version applies it."""
    number: int
    name: str
    value: str                      # key of VALUE_KINDS
    size: int                       # bytes written at P (0: nothing)
    check: RangeCheck | None = None  # the kernel's overflow check, None if it makes none
    check_after_write: bool = False  # 6.1 x86_64 writes first, then checks
    zero_target: bool = False        # the kernel refuses a place that is not all zero
    unchecked_range: RangeCheck | None = None  # the field's range where the kernel does not check it
    requires: str | None = None      # CONFIG_* option without which 6.1 compiles the type out
    cite: str = ""                   # where the behaviour is defined

    def compute(self, s: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
        return VALUE_KINDS[self.value](s, a, p)


# Arch hooks take the loader's state (reference/loader.py `Load`), typed loosely to keep the
# arch modules free of an import cycle.
Loader = Any
# apply(ld, relsec, target): apply one relocation section, as apply_relocate(_add) does.
ApplyFn = Callable[[Loader, int, int], None]
# frob(ld): module_frob_arch_sections, run in layout_and_allocate after check_modinfo.
FrobFn = Callable[[Loader], None]


@dataclass(frozen=True)
class Arch:
    name: str
    e_machine: int
    elf: ElfClass
    rela: bool                                   # RELA (apply_relocate_add) or REL
    relocations: dict[int, RelocType]
    # Undefined names the kernel lets stay unresolved besides weak ones (ignore_undef_symbol).
    ignore_undefined: frozenset[str] = frozenset()
    # Further e_machine values the arch's elf_check_arch accepts besides e_machine (i386: EM_486).
    also_machines: frozenset[int] = frozenset()
    # e_ident[EI_CLASS] the arch's elf_check_arch also requires (riscv: ELF_CLASS); None: not checked.
    ei_class: int | None = None
    # Message formats of this arch's apply_relocate(_add), as the kernel prints them.
    messages: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Default profile facts of the arch: where module memory lives.
    modules_vaddr: int = 0
    modules_end: int = 0
    # The arch's own apply_relocate(_add), for relocations that are more than "compute a value,
    # check its range, store `size` little-endian bytes" (instruction fields, PLT/GOT entries,
    # partner relocations). None: the table-driven bulk path of reference/relocate.py.
    apply: ApplyFn | None = None
    # module_frob_arch_sections (PLT/GOT sizing); None: the kernel's weak no-op.
    frob_arch_sections: FrobFn | None = None
    # SHT_NOBITS sections the loader writes (module PLT/GOT areas): their bytes are part of the
    # result's `sections`, as for PROGBITS sections.
    written_sections: frozenset[str] = frozenset()
    # module_init_section / module_exit_section: section name prefixes of init and exit code
    # (arm overrides both to add its unwind tables, .ARM.extab.init* / .ARM.exidx.init* ...).
    init_prefixes: tuple[str, ...] = (".init",)
    exit_prefixes: tuple[str, ...] = (".exit",)
    # module_alloc's second range when the module area is too small: (CONFIG option, its size in
    # bytes). arm with ARM_MODULE_PLTS falls back to the whole vmalloc area.
    module_alloc_fallback: tuple[str, int] | None = None

    def reloc_by_name(self, name: str) -> RelocType:
        for r in self.relocations.values():
            if r.name == name:
                return r
        raise KeyError(name)


# Every arch the suite knows, each in reference/arch/<name>.py.
NAMES = ("x86_64", "i386", "arm64", "arm", "riscv64")


def _registry() -> dict[str, Arch]:
    import importlib
    out = {}
    for name in NAMES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue                    # not written yet: the coverage report shows the gap
        out[name] = module.ARCH
    return out


ARCHES: dict[str, Arch] = _registry()
BY_MACHINE: dict[int, Arch] = {a.e_machine: a for a in ARCHES.values()}


def get(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise KeyError(f"unknown arch {name!r}; known: {', '.join(ARCHES)}") from None
