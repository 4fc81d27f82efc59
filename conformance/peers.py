"""Independent truth: two static linkers relocate every vector's module at the vector's layout.

A peer is an adapter that shares no code with the reference. It is *given* what a static
link cannot decide by itself (where every section goes, the value of every undefined
symbol: the vector's expected layout and symbols) and produces `sections` only:

    lld      ziglang's ld.lld (PyPI), one binary for every arch
    gnu-ld   GNU ld 2.40 from Debian's cross binutils (<triple>-ld)

Method, the same for both: copy the .ko with every laid-out section renamed to a unique
neutral name (`.koc.N`, N = section index; the bytes of the sections and of every other
header field are untouched, so no linker treats a name specially and duplicate names stay
apart), write a linker script that places each at its address (ascending: lld refuses
otherwise), define every resolved kernel symbol with --defsym, link without relaxation,
and read the sections back with pyelftools.

Where the kernel does what no static linker does (module PLT/GOT areas it fills itself,
range checks one side makes and the other not, ...) the vector says so under
`peers: {ld.lld|gnu-ld: {differs: REASON, why: ...}}`; sections a linker cannot express
at all (the kernel's symbol table copies, SHT_NOBITS areas the kernel writes) are listed
as `unexpressed` and not compared.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .adapter import Adapter
from .model import Request

# Laid-out sections no linker output holds as the kernel does: the kernel's kallsyms copies of
# .symtab/.strtab (values rewritten by simplify_symbols), and .note.gnu.build-id (linkers
# synthesise their own note and drop the input one; no relocation applies to it).
NOT_LINKED = frozenset({".symtab", ".strtab", ".note.gnu.build-id"})

# ld -m emulation per arch (GNU ld and ld.lld use the same names).
EMULATION = {"x86_64": "elf_x86_64", "i386": "elf_i386", "arm64": "aarch64linux",
             "arm": "armelf_linux_eabi", "riscv64": "elf64lriscv"}
# Debian cross binutils: package binutils-<triple with _ as ->, command <triple>-ld.
GNU_TRIPLE = {"x86_64": "x86_64-linux-gnu", "i386": "i686-linux-gnu", "arm64": "aarch64-linux-gnu",
              "arm": "arm-linux-gnueabihf", "riscv64": "riscv64-linux-gnu"}
COMMON_FLAGS = ["--noinhibit-exec", "--no-relax", "-z", "norelro", "-e", "0", "--unresolved-symbols=ignore-all"]
TIMEOUT = 60


@dataclass(frozen=True)
class Given:
    """What the peer is given from the vector: section addresses and resolved symbol values."""
    layout: dict[str, int]          # section key (name, or name#index) -> address
    symbols: dict[str, int]         # undefined symbol -> value
    copy: int | None = None         # the kernel's temporary copy of the file (environment region `copy`)

    @classmethod
    def from_vector(cls, doc: dict[str, Any]) -> Given:
        expect, regions = doc["expect"], ((doc.get("environment") or {}).get("regions") or {})
        copy = regions.get("copy")
        return cls({k: int(v["address"], 16) for k, v in (expect.get("layout") or {}).items()},
                   {k: int(v, 16) for k, v in (expect.get("symbols") or {}).items()},
                   None if copy is None else int(str(copy), 0))


@dataclass
class Linked:
    sections: dict[str, bytes]
    unexpressed: list[str]
    diagnostics: str
    ok: bool


# ---- the renamed copy ---------------------------------------------------------------
ELF64_ARCHES = frozenset({"x86_64", "arm64", "riscv64"})


@dataclass(frozen=True)
class Shdrs:
    """Section headers read as the kernel reads them: the arch's class, little-endian, e_ident ignored."""
    is64: bool
    shoff: int
    shentsize: int
    shstrndx: int
    names: list[str]
    types: list[int]
    flags: list[int]
    offsets: list[int]

    @classmethod
    def read(cls, ko: bytes, arch: str) -> Shdrs:
        is64 = arch in ELF64_ARCHES
        if is64:
            shoff, = struct.unpack_from("<Q", ko, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
        else:
            shoff, = struct.unpack_from("<I", ko, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x2E)
        rows = [struct.unpack_from("<IIQQQQ" if is64 else "<IIIIII", ko, shoff + i * shentsize)
                for i in range(shnum)]
        strtab = rows[shstrndx][4]
        names = [ko[strtab + r[0]:ko.index(b"\0", strtab + r[0])].decode("latin-1") for r in rows]
        return cls(is64, shoff, shentsize, shstrndx, names, [r[1] for r in rows], [r[2] for r in rows],
                   [r[4] for r in rows])

    def keys(self) -> dict[str, int]:
        """Result key (`name`, or `name#index` for a repeated name) -> index, as results key sections."""
        counts: dict[str, int] = {}
        for n in self.names:
            counts[n] = counts.get(n, 0) + 1
        return {(n if counts[n] == 1 else f"{n}#{i}"): i for i, n in enumerate(self.names)}


SHT_NOBITS = 8
SHF_ALLOC = 2
# Per arch, laid-out sections a linker cannot express either. arm: `.plt`/`.init.plt` are 1-byte
# PROGBITS in the file (asm/module.lds.h) that the kernel turns into SHT_NOBITS PLT areas it
# fills itself (module_frob_arch_sections); SHT_ARM_EXIDX unwind tables, which a linker merges
# into one sorted index table of its own (their PREL31 words are not checked here).
ARCH_UNEXPRESSED_NAMES = {"arm": frozenset({".plt", ".init.plt"}),
                          "arm64": frozenset({".plt", ".init.plt", ".text.ftrace_trampoline"}),
                          # riscv64: .plt/.got/.got.plt, 1-byte PROGBITS the kernel's frob makes its PLT/GOT areas
                          "riscv64": frozenset({".plt", ".got", ".got.plt"})}
ARCH_UNEXPRESSED_TYPES = {"arm": frozenset({0x70000001})}


def renamed(ko: bytes, sh: Shdrs) -> bytes:
    """The .ko with section i named `.koc.<i>`: a new name table appended, e_shstrndx's header re-pointed."""
    table = bytearray(b"\0")
    offsets = []
    for i in range(len(sh.names)):
        offsets.append(len(table))
        table += f".koc.{i}".encode() + b"\0"
    out = bytearray(ko)
    table_at = len(out)
    out += table
    word = "<Q" if sh.is64 else "<I"
    for i, name_offset in enumerate(offsets):
        struct.pack_into("<I", out, sh.shoff + i * sh.shentsize, name_offset)      # sh_name
    hdr = sh.shoff + sh.shstrndx * sh.shentsize
    offset_field = hdr + (0x18 if sh.is64 else 0x10)                               # sh_offset, then sh_size
    struct.pack_into(word, out, offset_field, table_at)
    struct.pack_into(word, out, offset_field + (8 if sh.is64 else 4), len(table))
    return bytes(out)


def script(placed: list[tuple[int, int]], discard: list[int]) -> str:
    """A linker script placing input section `.koc.<i>` at its address, in ascending order."""
    lines = ["SECTIONS {"]
    for address, i in sorted(placed):
        lines.append(f"  .koc.{i} {address:#x} : {{ KEEP(*(.koc.{i})) }}")
    lines.append("  /DISCARD/ : { " + " ".join(f"*(.koc.{i})" for i in discard) + " }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def link(command: list[str], arch: str, ko: bytes, given: Given, timeout: float = TIMEOUT) -> Linked:
    """Run one linker over the renamed .ko at the given layout; the sections it wrote, by key."""
    try:
        sh = Shdrs.read(ko, arch)
    except (struct.error, ValueError, IndexError) as e:
        return Linked({}, list(given.layout), f"cannot read the section headers: {e}", False)
    keys = sh.keys()
    placed, unexpressed = [], []
    for key, address in given.layout.items():
        i = keys.get(key)
        if i is None:
            unexpressed.append(key)
            continue
        placed.append((address, i))
        # Placed (its symbols need addresses), but a linker has no bytes for it as the kernel has.
        if sh.types[i] == SHT_NOBITS or key.split("#")[0] in NOT_LINKED \
                or key.split("#")[0] in ARCH_UNEXPRESSED_NAMES.get(arch, ()) \
                or sh.types[i] in ARCH_UNEXPRESSED_TYPES.get(arch, ()):
            unexpressed.append(key)
    # Sections the kernel does not load stay in its temporary copy of the file: an allocatable
    # one goes at copy + sh_offset (where the kernel's symbols in it point), so no linker
    # places it over a loaded one. The module metadata nothing relocates is dropped.
    discard = [i for i, n in enumerate(sh.names) if n in (".modinfo", "__versions")]
    done = {i for _, i in placed} | set(discard)
    for i in range(1, len(sh.names)):
        if i not in done and sh.flags[i] & SHF_ALLOC and given.copy is not None:
            placed.append((given.copy + sh.offsets[i], i))
    with tempfile.TemporaryDirectory(prefix="koconform-peer-") as tmp:
        work = Path(tmp)
        (work / "in.o").write_bytes(renamed(ko, sh))
        (work / "layout.lds").write_text(script(placed, discard))
        defsyms = [f"--defsym={name}={value:#x}" for name, value in sorted(given.symbols.items()) if value]
        try:
            proc = subprocess.run([*command, *COMMON_FLAGS, "-T", "layout.lds", *defsyms, "-o", "out.elf", "in.o"],
                                  cwd=work, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Linked({}, unexpressed, f"{command[0]} timed out after {timeout} s", False)
        diagnostics = proc.stderr.strip()
        if not (work / "out.elf").exists():
            return Linked({}, unexpressed, diagnostics or f"{command[0]} exited {proc.returncode}", False)
        sections: dict[str, bytes] = {}
        by_index = {i: key for key, i in keys.items()}
        try:
            with (work / "out.elf").open("rb") as f:
                out = ELFFile(f)
                for _, i in placed:
                    if by_index[i] in unexpressed or by_index[i] not in given.layout:
                        continue
                    sec = out.get_section_by_name(f".koc.{i}")
                    if sec is not None and sec["sh_type"] != "SHT_NOBITS":
                        sections[by_index[i]] = sec.data()
        except ELFError as e:
            return Linked({}, unexpressed, f"{diagnostics}\nits output is not ELF: {e}".strip(), False)
        return Linked(sections, unexpressed, diagnostics, True)


# ---- the two peers ------------------------------------------------------------------
class LinkerPeer(Adapter):
    """A static linker as a peer adapter: produces `sections` only, from a given layout."""
    kind: ClassVar[str] = "peer"
    vector_key: ClassVar[str] = ""          # its key under a vector's `peers:`
    produces = frozenset({"sections"})

    def command(self, arch: str) -> list[str]:
        raise NotImplementedError

    def available(self) -> str | None:
        """None when the linker can run here, else why not."""
        return None

    def version(self) -> str:
        proc = subprocess.run([*self.command("x86_64"), "--version"], capture_output=True, text=True,
                              check=False)
        return proc.stdout.splitlines()[0] if proc.stdout else "?"

    def load(self, request: Request) -> dict[str, Any]:
        given = getattr(request, "given", None)
        if given is None:
            raise ValueError(f"{self.name} is a peer: it needs the vector's layout (request.given)")
        linked = link(self.command(request.arch), request.arch, request.ko, given)
        if not linked.ok:
            return {"status": "linker-failed", "detail": linked.diagnostics, "unexpressed": linked.unexpressed}
        return {"status": "loaded", "sections": {k: v.hex() for k, v in linked.sections.items()},
                "unexpressed": linked.unexpressed, "detail": linked.diagnostics}


def _zig() -> str:
    import ziglang
    base = Path(ziglang.__file__).parent
    return str(base / ("zig.exe" if os.name == "nt" else "zig"))


class LldPeer(LinkerPeer):
    name = "lld"
    vector_key = "ld.lld"
    description = "ld.lld (LLD, from the ziglang PyPI package) linking each module at the vector's layout"
    arches = frozenset(EMULATION)

    def command(self, arch: str) -> list[str]:
        return [_zig(), "ld.lld", "-m", EMULATION[arch]]


class GnuLdPeer(LinkerPeer):
    name = "gnu-ld"
    vector_key = "gnu-ld"
    description = "GNU ld 2.40 (Debian 12 cross binutils) linking each module at the vector's layout"
    arches = frozenset(GNU_TRIPLE)

    def command(self, arch: str) -> list[str]:
        return [f"{GNU_TRIPLE[arch]}-ld", "-m", EMULATION[arch]]

    def available(self) -> str | None:
        missing = [t for t in GNU_TRIPLE.values() if shutil.which(f"{t}-ld") is None]
        if missing:
            return ("GNU ld missing for " + ", ".join(missing) + "; install Debian's "
                    + " ".join(f"binutils-{t.replace('_', '-')}" for t in missing))
        return None


PEERS: dict[str, type[LinkerPeer]] = {"lld": LldPeer, "gnu-ld": GnuLdPeer}


def differences(want: dict[str, bytes], got: dict[str, bytes]) -> list[str]:
    """Sections whose bytes differ (name, first offset, 8 bytes of each side)."""
    out = []
    for name, ours in want.items():
        theirs = got.get(name)
        if theirs is None:
            out.append(f"{name}: the linker produced no such section")
        elif theirs != ours:
            first = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            out.append(f"{name}+{first:#x}: expected {ours[first:first + 8].hex()} linker {theirs[first:first + 8].hex()}")
    return out


# ---- the report: vectors/PEERS.md ---------------------------------------------------
OUTCOMES = ("agree", "agree-with-diagnostics", "differs", "cannot-express")


def report(outcomes: list[dict[str, Any]], versions: dict[str, str]) -> str:
    """PEERS.md: per arch and peer, how many vectors agree, differ (by reason), cannot be expressed."""
    lines = ["# Peers: every expected byte checked by two independent linkers", "",
             "Written by `koconform peers` (part of `tox -e peers`); do not edit. Each vector whose",
             "module loads is linked by each peer at the vector's layout with its symbol values, and",
             "the relocated sections are compared with the expectation (conformance/peers.py).", "",
             "- **agree**: every section the linker can express has the expected bytes;",
             "- **agree, with a warning**: same bytes, but the linker reports what the kernel accepts",
             "  silently (an out-of-range value it wrote truncated, ...);",
             "- **differs (reason)**: the vector declares why the kernel differs from a static linker;",
             "- **cannot express**: the kernel rejects or faults the module (a linker only relocates),",
             "  or the linker refuses the input, as the vector declares.", "",
             "Peers: " + "; ".join(f"`{name}` = {v}" for name, v in sorted(versions.items())), ""]
    peers_seen = sorted({o["peer"] for o in outcomes})
    arches = sorted({o["arch"] for o in outcomes})
    lines += ["| arch | peer | vectors | agree | agree, with a warning | differs (reason: count) | cannot express |",
              "|---|---|---:|---:|---:|---|---:|"]
    for arch in arches:
        for peer in peers_seen:
            rows = [o for o in outcomes if o["arch"] == arch and o["peer"] == peer]
            if not rows:
                continue
            count = {k: sum(1 for o in rows if o["outcome"] == k) for k in OUTCOMES}
            reasons: dict[str, int] = {}
            for o in rows:
                if o["outcome"] == "differs":
                    reasons[o["reason"]] = reasons.get(o["reason"], 0) + 1
            differs = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "0"
            lines.append(f"| {arch} | {peer} | {len(rows)} | {count['agree']} | {count['agree-with-diagnostics']} "
                         f"| {differs} | {count['cannot-express']} |")
    listed = [o for o in outcomes if o["outcome"] in ("differs", "agree-with-diagnostics")]
    if listed:
        lines += ["", "## Where a peer differs or warns", "", "| vector | peer | outcome | reason | first difference or warning |",
                  "|---|---|---|---|---|"]
        for o in sorted(listed, key=lambda o: (o["vector"], o["peer"])):
            why = o["why"].replace("|", "\\|")
            lines.append(f"| {o['vector']} | {o['peer']} | {o['outcome']} | {o['reason'] or ''} | {why} |")
    return "\n".join(lines) + "\n"
