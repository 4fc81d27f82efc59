"""Explain a byte difference: which relocation writes there, and what the code says."""
from __future__ import annotations

from typing import Any, Callable

from koconform.reference import arch as arches
from koconform.reference.elf import SHT_REL, SHT_RELA, cstring, read_ehdr, read_table

# capstone (arch, modes OR'd together) per arch; arm is ARM state (Debian's armmp is not THUMB2_KERNEL).
_CAPSTONE = {"x86_64": ("CS_ARCH_X86", ("CS_MODE_64",)), "i386": ("CS_ARCH_X86", ("CS_MODE_32",)),
             "arm64": ("CS_ARCH_ARM64", ("CS_MODE_ARM",)), "arm": ("CS_ARCH_ARM", ("CS_MODE_ARM",)),
             "riscv64": ("CS_ARCH_RISCV", ("CS_MODE_RISCV64", "CS_MODE_RISCVC"))}


def relocations_at(ko: bytes, arch_name: str, section: str, offset: int) -> list[str]:
    """The .ko's relocation entries whose field covers `offset` of `section`."""
    arch = arches.get(arch_name)
    cls = arch.elf
    try:
        eh = read_ehdr(ko, cls)
        sh = read_table(ko, int(eh["e_shoff"]), int(eh["e_shnum"]), cls.shdr)
        shstr = int(sh[int(eh["e_shstrndx"])]["sh_offset"])
        names = [cstring(ko, shstr + int(s["sh_name"])).decode("latin-1") for s in sh]
        target = section.split("#")[1] if "#" in section else None
        found = []
        for i, s in enumerate(sh):
            if int(s["sh_type"]) not in (SHT_REL, SHT_RELA):
                continue
            info = int(s["sh_info"])
            if info >= len(sh) or (str(info) != target if target else names[info] != section):
                continue
            dtype = cls.rela if int(s["sh_type"]) == SHT_RELA else cls.rel
            rows = read_table(ko, int(s["sh_offset"]), int(s["sh_size"]) // dtype.itemsize, dtype)
            symtab = sh[int(s["sh_link"])] if int(s["sh_link"]) < len(sh) else None
            for k, r in enumerate(rows):
                rtype = int(r["r_info"]) & cls.r_type_mask
                rec = arch.relocations.get(rtype)
                size = rec.size if rec else 4
                if int(r["r_offset"]) <= offset < int(r["r_offset"]) + max(size, 1):
                    sym = _symbol_name(ko, cls, sh, symtab, int(r["r_info"]) >> cls.r_sym_shift)
                    addend = f" {int(r['r_addend']):+#x}" if "r_addend" in rows.dtype.names else ""
                    found.append(f"{names[i]}[{k}]: {rec.name if rec else f'type {rtype}'} at "
                                 f"{section}+{int(r['r_offset']):#x} against {sym}{addend}")
        return found
    except (ValueError, IndexError):
        return []


def _symbol_name(ko: bytes, cls: Any, sh: Any, symtab: Any, index: int) -> str:
    if symtab is None:
        return f"symbol {index}"
    syms = read_table(ko, int(symtab["sh_offset"]), int(symtab["sh_size"]) // cls.sym.itemsize, cls.sym)
    if index >= len(syms):
        return f"symbol {index}"
    strtab = sh[int(symtab["sh_link"])]
    name = cstring(ko, int(strtab["sh_offset"]) + int(syms[index]["st_name"])).decode("latin-1")
    return name or f"symbol {index} (section {int(syms[index]['st_shndx'])})"


def disassemble(arch_name: str, code: bytes, address: int, around: int, count: int = 4) -> list[str]:
    """Instructions from a little before `around` (by linear sweep from the section start)."""
    spec = _CAPSTONE.get(arch_name)
    if spec is None:
        return []
    import capstone
    mode = 0
    for name in spec[1]:
        mode |= getattr(capstone, name)
    md = capstone.Cs(getattr(capstone, spec[0]), mode)
    insns = list(md.disasm(code, address))
    at = next((k for k, i in enumerate(insns) if i.address + i.size > around), len(insns))
    window = insns[max(0, at - 1):at + count - 1]
    return [f"{i.address:#x}: {i.bytes.hex(' '):<24} {i.mnemonic} {i.op_str}".rstrip() for i in window]


def explainer(ko: bytes | None, arch_name: str, expect: dict[str, Any]) -> Callable[[str, int, bytes, bytes], str]:
    def explain(section: str, offset: int, ours: bytes, theirs: bytes) -> str:
        lines = []
        if ko is not None:
            relocs = relocations_at(ko, arch_name, section, offset)
            lines += [f"    written by {r}" for r in relocs] or ["    no relocation writes this offset"]
        place = (expect.get("layout") or {}).get(section)
        if place is not None and "text" in section:
            base = int(place["address"], 16)
            exp = disassemble(arch_name, ours, base, base + offset)
            got = disassemble(arch_name, theirs, base, base + offset)
            if exp:
                lines += ["    expected:"] + [f"      {x}" for x in exp]
                lines += ["    got:"] + [f"      {x}" for x in got]
        return ("\n" + "\n".join(lines)) if lines else ""
    return explain
