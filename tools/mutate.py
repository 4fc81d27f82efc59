"""Mutations of a built .ko: exact field edits and raw byte patches, applied in order.

A field edit names a field of the ELF header, of a section header, of a symbol or of a
relocation entry, and writes exactly the bytes of that field; nothing else in the file
moves. (lief's builder was tried for this and rewrites ~200 bytes of a 1.6 KiB object
for a one-field header change, so edits are made at the field's offset instead.)

    - {set: "header.e_machine", value: 3}
    - {set: "section[.text].sh_flags", value: 0x7}        # by name, or section[#3] by index
    - {set: "symbol[foo].st_shndx", value: 0xfff2}          # first symbol with that name
    - {set: "relocation[.rela.text][0].type", value: 42}   # r_offset, r_addend, sym, type
    - {patch: {at: 0x10, hex: "0300"}}                      # raw, at a file offset
    - {patch: {section: .text, at: 0, hex: "90"}}           # raw, inside a section's bytes
    - {patch: {section: .shstrtab, at: -1, hex: "41"}}      # negative: from the section's end
    - {truncate: 100}                                        # keep the first 100 bytes
    - {append: "00ff"}
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from koconform.reference.arch import Arch
from koconform.reference.elf import ElfClass, SHT_SYMTAB, cstring, read_ehdr, read_table

_SELECTOR = re.compile(r"^(header|section\[(?P<sec>[^\]]+)\]|symbol\[(?P<sym>[^\]]+)\]|"
                       r"relocation\[(?P<rsec>[^\]]+)\]\[(?P<ridx>\d+)\])\.(?P<field>\w+)$")


class MutationError(Exception):
    pass


def apply(data: bytes, mutations: list[dict[str, Any]], arch: Arch) -> bytes:
    buf = bytearray(data)
    for k, m in enumerate(mutations):
        try:
            buf = _apply_one(buf, m, arch.elf)
        except (KeyError, IndexError, ValueError) as e:
            raise MutationError(f"mutation {k} {m}: {e}") from None
    return bytes(buf)


def _apply_one(buf: bytearray, m: dict[str, Any], cls: ElfClass) -> bytearray:
    if "set" in m:
        offset, size = field_location(bytes(buf), m["set"], cls)
        value = int(m["value"]) & ((1 << (8 * size)) - 1)
        buf[offset:offset + size] = value.to_bytes(size, "little")
    elif "patch" in m:
        p = m["patch"]
        at = int(p["at"])
        if "section" in p:                 # a negative `at` counts from the section's end
            hdr = _section_header(bytes(buf), p["section"], cls)
            at += int(hdr["sh_offset"]) + (int(hdr["sh_size"]) if at < 0 else 0)
        raw = bytes.fromhex(p["hex"])
        if at + len(raw) > len(buf):
            raise ValueError(f"patch at {at:#x} runs past the file ({len(buf):#x} bytes)")
        buf[at:at + len(raw)] = raw
    elif "truncate" in m:
        del buf[int(m["truncate"]):]
    elif "append" in m:
        buf += bytes.fromhex(m["append"])
    else:
        raise ValueError("unknown mutation (expected set, patch, truncate or append)")
    return buf


def _field(dtype: np.dtype, name: str) -> tuple[int, int]:
    names: tuple[str, ...] = dtype.names or ()
    fields: Any = dtype.fields or {}
    if name not in names:
        raise KeyError(f"no field {name}; fields: {', '.join(names)}")
    ftype, offset = fields[name][:2]
    return offset, ftype.itemsize


def _shdrs(buf: bytes, cls: ElfClass) -> tuple[int, np.ndarray]:
    ehdr = read_ehdr(buf, cls)
    shoff, shnum = int(ehdr["e_shoff"]), int(ehdr["e_shnum"])
    return shoff, read_table(buf, shoff, shnum, cls.shdr)


def _section_index(buf: bytes, sel: str, cls: ElfClass) -> int:
    _, sh = _shdrs(buf, cls)
    if sel.startswith("#"):
        return int(sel[1:])
    shstr = sh[int(read_ehdr(buf, cls)["e_shstrndx"])]
    for i in range(len(sh)):
        if cstring(buf, int(shstr["sh_offset"]) + int(sh[i]["sh_name"])).decode("latin-1") == sel:
            return i
    raise KeyError(f"no section named {sel}")


def _section_header(buf: bytes, sel: str, cls: ElfClass) -> np.void:
    return _shdrs(buf, cls)[1][_section_index(buf, sel, cls)]


def field_location(buf: bytes, selector: str, cls: ElfClass) -> tuple[int, int]:
    """(file offset, size) of the named field."""
    m = _SELECTOR.match(selector)
    if not m:
        raise ValueError(f"bad field selector {selector!r}")
    name = m["field"]
    if selector.startswith("header."):
        return _field(cls.ehdr, name)
    shoff, sh = _shdrs(buf, cls)
    if m["sec"]:
        i = _section_index(buf, m["sec"], cls)
        off, size = _field(cls.shdr, name)
        return shoff + i * cls.shdr.itemsize + off, size
    if m["sym"]:
        symtab = next(s for s in sh if int(s["sh_type"]) == SHT_SYMTAB)
        syms = read_table(buf, int(symtab["sh_offset"]), int(symtab["sh_size"]) // cls.sym.itemsize, cls.sym)
        strtab = sh[int(symtab["sh_link"])]
        for k in range(len(syms)):
            if cstring(buf, int(strtab["sh_offset"]) + int(syms[k]["st_name"])).decode("latin-1") == m["sym"]:
                off, size = _field(cls.sym, name)
                return int(symtab["sh_offset"]) + k * cls.sym.itemsize + off, size
        raise KeyError(f"no symbol named {m['sym']}")
    rel = _section_header(buf, m["rsec"], cls)
    dtype = cls.rela if int(rel["sh_type"]) == 4 else cls.rel
    entry = int(rel["sh_offset"]) + int(m["ridx"]) * dtype.itemsize
    if int(m["ridx"]) >= int(rel["sh_size"]) // dtype.itemsize:
        raise IndexError(f"{m['rsec']} has no entry {m['ridx']}")
    info_off, info_size = _field(dtype, "r_info")
    if name == "type":      # the low bits of r_info: 4 bytes (ELF64) or 1 byte (ELF32)
        return entry + info_off, 4 if cls.bits == 64 else 1
    if name == "sym":
        return (entry + info_off + 4, 4) if cls.bits == 64 else (entry + info_off + 1, 3)
    off, size = _field(dtype, name)
    return entry + off, size
