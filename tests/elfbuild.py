"""Minimal ELF64 relocatable objects (.ko files) built byte by byte with struct.

Tests describe sections, symbols and RELA entries; `build` lays them out and returns the
bytes plus where everything landed, so a test can then corrupt any single field.
No compiler, no linker, no library that might "fix" what a test means to break.

File layout: Elf64_Ehdr, then each section's bytes (file offset aligned to
max(sh_addralign, 8), capped at 64), then the section header table. Section order:
null, the caller's sections in order (a `.gnu.linkonce.this_module` / `.modinfo` the
caller gives is used where given, else one is appended), then `.rela<target>` for each
target with entries, then `.symtab`, `.strtab`, `.shstrtab`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")                 # Elf64_Ehdr, 64 bytes
SHDR = struct.Struct("<IIQQQQIIQQ")                       # Elf64_Shdr, 64 bytes
SYM = struct.Struct("<IBBHQQ")                            # Elf64_Sym, 24 bytes
RELA = struct.Struct("<QQq")                              # Elf64_Rela, 24 bytes

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS = 1, 2, 3, 4, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK = 0x1, 0x2, 0x4, 0x40
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
EM_X86_64, ET_REL = 62, 1
R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32 = 0, 1, 2, 4
R_X86_64_32, R_X86_64_32S, R_X86_64_PC64 = 10, 11, 24

THIS_MODULE = ".gnu.linkonce.this_module"
MODULE_SIZE, MODULE_NAME_OFF = 0x380, 0x18      # linux-6.1 x86_64 struct module

# Offsets of Elf64_Shdr fields inside one header, for patching.
SHDR_FIELDS = {"sh_name": (0, "<I"), "sh_type": (4, "<I"), "sh_flags": (8, "<Q"),
               "sh_addr": (16, "<Q"), "sh_offset": (24, "<Q"), "sh_size": (32, "<Q"),
               "sh_link": (40, "<I"), "sh_info": (44, "<I"), "sh_addralign": (48, "<Q"),
               "sh_entsize": (56, "<Q")}
EHDR_FIELDS = {"e_type": (16, "<H"), "e_machine": (18, "<H"), "e_version": (20, "<I"),
               "e_shoff": (40, "<Q"), "e_ehsize": (52, "<H"), "e_shentsize": (58, "<H"),
               "e_shnum": (60, "<H"), "e_shstrndx": (62, "<H")}


@dataclass
class Section:
    name: str
    flags: int = 0
    data: bytes = b""
    sh_type: int = SHT_PROGBITS
    align: int = 1
    size: int | None = None      # SHT_NOBITS size (data is ignored for NOBITS)


@dataclass
class Symbol:
    name: str
    section: str | int | None = None   # section name, raw st_shndx, or None (SHN_UNDEF)
    value: int = 0
    bind: int = STB_GLOBAL
    kind: int = STT_NOTYPE
    size: int = 0


@dataclass
class Rela:
    offset: int
    sym: str | int               # symbol name (first match) or raw symbol index
    rtype: int
    addend: int = 0


@dataclass
class Module:
    name: str = "koctest"                            # modinfo name= and struct module name
    sections: list[Section] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)   # index 0 (null) is added
    relocs: dict[str, list[Rela]] = field(default_factory=dict)   # target section -> entries
    modinfo: dict[str, str] | None = None            # None: no .modinfo section at all
    struct_name: str | None = None                   # struct module name if not `name`
    with_symtab: bool = True
    with_this_module: bool = True


@dataclass
class Built:
    data: bytearray
    index: dict[str, int]        # section name -> index (first of that name)
    offset: dict[str, int]       # section name -> file offset of its bytes
    shoff: int
    shnum: int

    def set_ehdr(self, name: str, value: int) -> None:
        off, fmt = EHDR_FIELDS[name]
        struct.pack_into(fmt, self.data, off, value)

    def set_shdr(self, section: str | int, name: str, value: int) -> None:
        i = self.index[section] if isinstance(section, str) else section
        off, fmt = SHDR_FIELDS[name]
        struct.pack_into(fmt, self.data, self.shoff + i * SHDR.size + off, value)

    def shdr(self, section: str | int, name: str) -> int:
        i = self.index[section] if isinstance(section, str) else section
        off, fmt = SHDR_FIELDS[name]
        return int(struct.unpack_from(fmt, self.data, self.shoff + i * SHDR.size + off)[0])

    def ko(self) -> bytes:
        return bytes(self.data)


def this_module_section(name: str) -> Section:
    body = bytearray(MODULE_SIZE)
    raw = name.encode()
    body[MODULE_NAME_OFF:MODULE_NAME_OFF + len(raw)] = raw
    return Section(THIS_MODULE, SHF_WRITE | SHF_ALLOC, bytes(body), align=64)


def modinfo_section(entries: dict[str, str]) -> Section:
    return Section(".modinfo", SHF_ALLOC, b"".join(f"{k}={v}\0".encode() for k, v in entries.items()))


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def build(m: Module) -> Built:
    secs = list(m.sections)
    given = {s.name for s in secs}
    if m.modinfo is not None and ".modinfo" not in given:
        secs.append(modinfo_section(m.modinfo))
    if m.with_this_module and THIS_MODULE not in given:
        secs.append(this_module_section(m.struct_name or m.name))
    names = [s.name for s in secs]
    sec_index = {n: names.index(n) + 1 for n in names}
    rela_targets = [t for t, entries in m.relocs.items() if entries]
    n_user = len(secs)
    symtab_i = n_user + len(rela_targets) + 1 if m.with_symtab else 0
    strtab_i = symtab_i + 1 if m.with_symtab else 0

    # .strtab: leading NUL, then every non-empty name in symbol order (no sharing).
    strtab, st_name = bytearray(b"\0"), []
    for sym in m.symbols:
        st_name.append(len(strtab) if sym.name else 0)
        if sym.name:
            strtab += sym.name.encode() + b"\0"
    symtab = bytearray(SYM.pack(0, 0, 0, 0, 0, 0))
    for sym, name_off in zip(m.symbols, st_name):
        shndx = (SHN_UNDEF if sym.section is None else sym.section if isinstance(sym.section, int)
                 else sec_index[sym.section])
        symtab += SYM.pack(name_off, (sym.bind << 4) | sym.kind, 0, shndx, sym.value, sym.size)
    first_global = 1 + next((k for k, sym in enumerate(m.symbols) if sym.bind != STB_LOCAL),
                            len(m.symbols))
    sym_index: dict[str, int] = {}
    for k, sym in enumerate(m.symbols):
        sym_index.setdefault(sym.name, k + 1)

    # (name, type, flags, data, align, link, info, entsize, size)
    table: list[tuple[str, int, int, bytes, int, int, int, int, int]] = []
    for s in secs:
        size = (s.size or 0) if s.sh_type == SHT_NOBITS else len(s.data)
        table.append((s.name, s.sh_type, s.flags, s.data, s.align, 0, 0, 0, size))
    for t in rela_targets:
        body = b"".join(RELA.pack(r.offset, ((r.sym if isinstance(r.sym, int) else sym_index[r.sym]) << 32)
                                  | r.rtype, r.addend) for r in m.relocs[t])
        table.append((".rela" + t, SHT_RELA, SHF_INFO_LINK, body, 8, symtab_i, sec_index[t], RELA.size,
                      len(body)))
    if m.with_symtab:
        table.append((".symtab", SHT_SYMTAB, 0, bytes(symtab), 8, strtab_i, first_global, SYM.size,
                      len(symtab)))
        table.append((".strtab", SHT_STRTAB, 0, bytes(strtab), 1, 0, 0, 0, len(strtab)))
    shstrtab, sh_name = bytearray(b"\0"), []
    for name in [entry[0] for entry in table] + [".shstrtab"]:
        sh_name.append(len(shstrtab))
        shstrtab += name.encode() + b"\0"
    table.append((".shstrtab", SHT_STRTAB, 0, bytes(shstrtab), 1, 0, 0, 0, len(shstrtab)))

    out = bytearray(EHDR.size)
    index: dict[str, int] = {}
    offset: dict[str, int] = {}
    headers = [bytes(SHDR.size)]
    for k, (name, sh_type, flags, data, align, link, info, entsize, size) in enumerate(table):
        out += bytes(_align(len(out), min(max(align, 8), 64)) - len(out))
        here = len(out)
        index.setdefault(name, k + 1)
        offset.setdefault(name, here)
        if sh_type != SHT_NOBITS:
            out += data
        headers.append(SHDR.pack(sh_name[k], sh_type, flags, 0, here, size, link, info, align, entsize))
    out += bytes(_align(len(out), 8) - len(out))
    shoff = len(out)
    for h in headers:
        out += h
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)   # ELFCLASS64, ELFDATA2LSB, EV_CURRENT
    shnum = len(headers)
    out[:EHDR.size] = EHDR.pack(ident, ET_REL, EM_X86_64, 1, 0, 0, shoff, 0, EHDR.size, 0, 0,
                                SHDR.size, shnum, shnum - 1)
    return Built(out, index, offset, shoff, shnum)
