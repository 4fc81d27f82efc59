"""Independent truth for relocated bytes: ld.lld links the same .ko at the same layout.

Given a loaded result (where every section went, what each undefined symbol became),
write a linker script that places every laid-out section of the .ko at its address,
define every kernel symbol with --defsym, link with ld.lld (ziglang's, the same binary
for every arch) and read the sections back. Equal bytes mean two implementations that
share no code agree; a difference must be one the vector explains.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

# ld emulation per arch (the same names GNU ld uses).
LD_EMULATION = {"x86_64": "elf_x86_64", "i386": "elf_i386", "arm64": "aarch64linux",
                "arm": "armelf_linux_eabi", "riscv64": "elf64lriscv"}
# Sections the loader lays out that no linker output holds as such.
# .note.gnu.build-id: lld drops input build-id notes (it synthesises its own); the bytes are
# the file's either way, no relocation applies to them.
NOT_LINKED = (".symtab", ".strtab", ".note.gnu.build-id")


@dataclass
class PeerOutcome:
    sections: dict[str, bytes]
    diagnostics: str


def _output_name(section: str) -> str:
    """Output sections get neutral names: some input names (.note.gnu.build-id) are special to lld."""
    return ".koc." + "".join(c if c.isalnum() else "_" for c in section)


def _script(layout: dict[str, Any]) -> str:
    placed = sorted(((int(p["address"], 16), name) for name, p in layout.items()
                     if name.split("#")[0] not in NOT_LINKED), key=lambda t: t[0])
    out = ["SECTIONS {"]
    for k, (address, name) in enumerate(placed):
        real = name.split("#")[0]
        out.append(f"  {_output_name(name)} {address:#x} : {{ KEEP(*({real})) }}")
    out.append("  /DISCARD/ : { *(.modinfo) *(__versions) }")
    out.append("}")
    return "\n".join(out) + "\n"


def link(ko: bytes, arch: str, result: dict[str, Any], symbols: dict[str, int]) -> PeerOutcome:
    """Sections as ld.lld relocates them at the result's layout, with `symbols` defined."""
    with tempfile.TemporaryDirectory(prefix="koconform-lld-") as tmp:
        work = Path(tmp)
        (work / "in.ko").write_bytes(ko)
        (work / "layout.lds").write_text(_script(result["layout"]))
        defsyms = [f"--defsym={name}={value:#x}" for name, value in sorted(symbols.items()) if value]
        cmd = [sys.executable, "-m", "ziglang", "ld.lld", "-m", LD_EMULATION[arch], "--noinhibit-exec",
               "--no-relax", "-z", "norelro", "-e", "0", "--unresolved-symbols=ignore-all", "-T", "layout.lds",
               *defsyms, "-o", "out.elf", "in.ko"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if not (work / "out.elf").exists():
            return PeerOutcome({}, proc.stderr.strip() or f"ld.lld exited {proc.returncode}")
        out: dict[str, bytes] = {}
        with (work / "out.elf").open("rb") as f:
            elf = ELFFile(f)
            for name in result["layout"]:
                real = name.split("#")[0]
                if real in NOT_LINKED or name not in (result.get("sections") or {}):
                    continue
                sec = elf.get_section_by_name(_output_name(name))
                if sec is not None and sec["sh_type"] != "SHT_NOBITS":
                    out[name] = sec.data()
        return PeerOutcome(out, proc.stderr.strip())


def differences(result: dict[str, Any], peer: PeerOutcome) -> list[str]:
    """Sections whose bytes differ between the result and the peer (by name, first offset)."""
    diffs = []
    for name, hexdata in (result.get("sections") or {}).items():
        if name.split("#")[0] in NOT_LINKED:
            continue
        ours = bytes.fromhex(hexdata)
        theirs = peer.sections.get(name)
        if theirs is None:
            diffs.append(f"{name}: ld.lld produced no such section")
        elif theirs != ours:
            first = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            diffs.append(f"{name}+{first:#x}: reference {ours[first:first + 8].hex()} "
                         f"ld.lld {theirs[first:first + 8].hex()}")
    return diffs
