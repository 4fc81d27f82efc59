"""ELF structures read in bulk: whole tables as numpy structured arrays, never entry by entry.

The kernel reads a module with its own native ELF class (Elf64_* on a 64-bit kernel),
whatever EI_CLASS says, so the class here comes from the architecture, not the file.
All five supported architectures are little-endian.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ELF constants (include/uapi/linux/elf.h, System V gABI).
ELFMAG = b"\x7fELF"
ET_REL = 1
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL = 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHF_RELA_LIVEPATCH = 0x00100000
SHF_RO_AFTER_INIT = 0x00200000
SHN_UNDEF, SHN_LIVEPATCH, SHN_ABS, SHN_COMMON = 0, 0xFF20, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2


@dataclass(frozen=True)
class ElfClass:
    """Sizes and record layouts of one ELF class (the kernel's Elf_Ehdr, Elf_Shdr, ...)."""
    bits: int
    ehdr: np.dtype
    shdr: np.dtype
    sym: np.dtype
    rela: np.dtype
    rel: np.dtype
    r_sym_shift: int          # ELF64_R_SYM: info >> 32; ELF32_R_SYM: info >> 8
    r_type_mask: int

    @property
    def addr_mask(self) -> int:
        return (1 << self.bits) - 1

    def r_sym(self, info: np.ndarray) -> np.ndarray:
        return info >> np.uint64(self.r_sym_shift)

    def r_type(self, info: np.ndarray) -> np.ndarray:
        return info & np.uint64(self.r_type_mask)


def _dtype(fields: list[tuple[str, str]]) -> np.dtype:
    return np.dtype([(name, "<" + code) for name, code in fields])


ELF64 = ElfClass(
    bits=64,
    ehdr=np.dtype([("e_ident", "u1", 16)] + [(n, "<" + c) for n, c in [
        ("e_type", "u2"), ("e_machine", "u2"), ("e_version", "u4"), ("e_entry", "u8"),
        ("e_phoff", "u8"), ("e_shoff", "u8"), ("e_flags", "u4"), ("e_ehsize", "u2"),
        ("e_phentsize", "u2"), ("e_phnum", "u2"), ("e_shentsize", "u2"), ("e_shnum", "u2"),
        ("e_shstrndx", "u2")]]),
    shdr=_dtype([("sh_name", "u4"), ("sh_type", "u4"), ("sh_flags", "u8"), ("sh_addr", "u8"),
                 ("sh_offset", "u8"), ("sh_size", "u8"), ("sh_link", "u4"), ("sh_info", "u4"),
                 ("sh_addralign", "u8"), ("sh_entsize", "u8")]),
    sym=_dtype([("st_name", "u4"), ("st_info", "u1"), ("st_other", "u1"), ("st_shndx", "u2"),
                ("st_value", "u8"), ("st_size", "u8")]),
    rela=_dtype([("r_offset", "u8"), ("r_info", "u8"), ("r_addend", "i8")]),
    rel=_dtype([("r_offset", "u8"), ("r_info", "u8")]),
    r_sym_shift=32, r_type_mask=0xFFFFFFFF,
)
ELF32 = ElfClass(
    bits=32,
    ehdr=np.dtype([("e_ident", "u1", 16)] + [(n, "<" + c) for n, c in [
        ("e_type", "u2"), ("e_machine", "u2"), ("e_version", "u4"), ("e_entry", "u4"),
        ("e_phoff", "u4"), ("e_shoff", "u4"), ("e_flags", "u4"), ("e_ehsize", "u2"),
        ("e_phentsize", "u2"), ("e_phnum", "u2"), ("e_shentsize", "u2"), ("e_shnum", "u2"),
        ("e_shstrndx", "u2")]]),
    shdr=_dtype([("sh_name", "u4"), ("sh_type", "u4"), ("sh_flags", "u4"), ("sh_addr", "u4"),
                 ("sh_offset", "u4"), ("sh_size", "u4"), ("sh_link", "u4"), ("sh_info", "u4"),
                 ("sh_addralign", "u4"), ("sh_entsize", "u4")]),
    sym=_dtype([("st_name", "u4"), ("st_value", "u4"), ("st_size", "u4"), ("st_info", "u1"),
                ("st_other", "u1"), ("st_shndx", "u2")]),
    rela=_dtype([("r_offset", "u4"), ("r_info", "u4"), ("r_addend", "i4")]),
    rel=_dtype([("r_offset", "u4"), ("r_info", "u4")]),
    r_sym_shift=8, r_type_mask=0xFF,
)


def read_ehdr(buf: bytes, cls: ElfClass) -> np.void:
    """The ELF header; the caller has checked that len(buf) >= cls.ehdr.itemsize."""
    return np.frombuffer(buf, dtype=cls.ehdr, count=1)[0]


def read_table(buf: bytes | np.ndarray, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """A writable copy of `count` records at `offset` (the caller checked the bounds)."""
    raw = np.frombuffer(buf, dtype=np.uint8, count=count * dtype.itemsize, offset=offset)
    return raw.view(dtype).copy()


def cstring(buf: bytes, offset: int, limit: int | None = None) -> bytes:
    """NUL-terminated bytes at `offset`, cut at the end of `buf` (or at `limit` bytes)."""
    if offset < 0 or offset >= len(buf):
        return b""
    end = len(buf) if limit is None else min(len(buf), offset + limit)
    nul = buf.find(b"\0", offset, end)
    return buf[offset:end if nul < 0 else nul]
