"""Derive a profile's kernel-symbol environment, configuration and facts from Debian packages.

For an arch Debian 12 builds (x86_64 amd64, i386 i386, arm64 arm64, arm armhf) it writes
OUT/ARCH.tsv (every symbol vmlinux exports: System.map link address, Module.symvers
CRC/licence/namespace, cross-checked against vmlinux's __ksymtab/__kcrctab in the arch's
struct kernel_symbol format), OUT/ARCH.kernel-strings.txt (vmlinux .rodata strings related to
module loading), OUT/ARCH.config (the /boot/config lines of the options the module loader,
the arch Makefile and kbuild's module build test) and OUT/ARCH.facts.yaml (vermagic,
struct module size/alignment/field offsets and the arch module.lds sections, read from every
module the image package ships).

For an arch Debian 12 does not build (riscv64) `--rebase-from ARCH` writes a STATED
environment: ARCH's exports (names, gpl, namespace) with an empty crc column, and ARCH's
System.map addresses moved from ARCH's image base (_text) to the riscv64 KERNEL_LINK_ADDR,
plus kernel strings = the strings all four Debian arches' files share (arch-independent code)
and the riscv64 module loader's own format strings (RISCV64_MODULE_STRINGS, from the 6.1
source). The output is byte-reproducible: it records package versions and input sha256s,
never a date.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import re
import struct
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, SymbolTableSection

# kernel arch -> Debian arch, for the arches whose Debian 12 kernel packages are read
DEB_ARCH = {"x86_64": "amd64", "i386": "i386", "arm64": "arm64", "arm": "armhf"}
# CONFIG_HAVE_ARCH_PREL32_RELOCATIONS: arch/x86/Kconfig (32- and 64-bit) and arch/arm64/Kconfig
# select it, arch/arm/Kconfig does not (main() checks this against each /boot/config)
PREL32 = {"x86_64": True, "i386": True, "arm64": True, "arm": False}
# arches without a Debian 12 kernel: their stated environment is rebased from a Debian arch's,
# to the arch's kernel link address (riscv64: KERNEL_LINK_ADDR, arch/riscv/include/asm/page.h)
LINK_ADDRESS = {"riscv64": 0xFFFFFFFF80000000}
DEFAULT_CACHE = Path.home() / ".cache" / "koconform" / "debs"
TSV_HEADER = "#name\taddress\tcrc\tgpl\tnamespace"
EXPORT_TYPES = {"EXPORT_SYMBOL": False, "EXPORT_SYMBOL_GPL": True}
KEYWORDS = (
    "ELF", "module", "Module", "symbol", "relocation", "taint", "version", "Unknown",
    "overflow", "mcmodel", "retpoline", "spectre v2", "suspiciously", "loading module anyway",
    "WRITE|EXEC", "percpu", "per-cpu", "Disabling lock debugging", "PKCS#7", "is rejected",
    "stripped", "kernel tainted", "please compile", "section name table", "Symbol",
)
# Arch messages of apply_relocate that contain none of KEYWORDS (arch/arm/kernel/module.c:
# "...: unsupported interworking call (ARM -> Thumb)").
ARCH_KEYWORDS: dict[str, tuple[str, ...]] = {"arm": ("interworking",)}
# str.translate table for render_string; U+DC80..U+DCFF are undecodable bytes (surrogateescape)
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {ord("\\"): "\\\\", ord("\n"): "\\n"}
ESCAPES |= {0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}

# The options written to ARCH.config: what kernel/module/*.c, the arch's module.c /
# module-plts.c / module-sections.c, include/linux/vermagic.h, the arch Makefile and
# scripts/Makefile.{build,modpost,modfinal} test in 6.1, plus the ones a profile states.
CONFIG_NAMES = (
    # the module loader and the module build
    r"MODULES", r"MODULE_\w+", r"MODVERSIONS", r"ASM_MODVERSIONS", r"MODULES_\w+",
    r"STRICT_MODULE_RWX", r"ARCH_HAS_STRICT_MODULE_RWX", r"STRICT_KERNEL_RWX",
    r"ARCH_WANTS_MODULES_DATA_IN_VMALLOC", r"HAVE_ARCH_PREL32_RELOCATIONS",
    r"KALLSYMS\w*", r"LIVEPATCH", r"CONSTRUCTORS", r"GENERIC_BUG\w*", r"SMP", r"TRACEPOINTS",
    r"TREE_SRCU", r"JUMP_LABEL", r"HAVE_STATIC_CALL\w*", r"EVENT_TRACING", r"BPF_EVENTS",
    r"KPROBES", r"PRINTK_INDEX", r"DEBUG_INFO_BTF\w*", r"MESSAGE_LOGLEVEL_DEFAULT",
    r"FUNCTION_TRACER", r"DYNAMIC_FTRACE\w*", r"FTRACE_MCOUNT_\w+", r"HAVE_FENTRY",
    r"RANDOMIZE_BASE", r"RANDOMIZE_MODULE_REGION_FULL", r"RELOCATABLE", r"PERF_EVENTS",
    r"UNWIND_TABLES", r"64BIT", r"CPU_BIG_ENDIAN", r"CPU_LITTLE_ENDIAN",
    r"PAGE_OFFSET", r"VMSPLIT_\w+", r"HIGHMEM\w*", r"LOCALVERSION\w*", r"PREEMPT", r"PREEMPTION",
    r"PREEMPT_(?:BUILD|VOLUNTARY|VOLUNTARY_BUILD|NONE|NONE_BUILD|DYNAMIC|RT)",
    r"CC_VERSION_TEXT", r"CC_IS_\w+", r"GCC_VERSION", r"LD_VERSION", r"LTO\w*",
    r"STACKPROTECTOR\w*", r"KASAN", r"KASAN_VMALLOC", r"CFI_CLANG", r"SHADOW_CALL_STACK",
    r"FRAME_POINTER", r"UNWINDER_\w+", r"OBJTOOL",
    # x86 (arch/x86/Makefile, Makefile_32.cpu, asm/module.h MODULE_PROC_FAMILY)
    r"X86_32", r"X86_64", r"X86_PAE", r"X86_GENERIC", r"X86_L1_CACHE_SHIFT",
    r"X86_MINIMUM_CPU_FAMILY", r"X86_KERNEL_IBT", r"RETPOLINE", r"RETHUNK", r"SLS",
    r"CPU_UNRET_ENTRY", r"CPU_IBPB_ENTRY", r"CPU_IBRS_ENTRY", r"CPU_SRSO", r"CALL_DEPTH_TRACKING",
    r"M486SX|M486|M586\w*|M686|MPENTIUM\w+|MK6|MK7|MK8|MCRUSOE|MEFFICEON|MWINCHIP\w+|MELAN",
    r"MGEODE\w+|MCYRIXIII|MVIAC3_2|MVIAC7|MCORE2|MATOM",
    # arm64 (arch/arm64/Makefile, kernel/module.c, module-plts.c)
    r"ARM64_MODULE_PLTS", r"ARM64_ERRATUM_843419", r"ARM64_LD_HAS_FIX_ERRATUM_843419",
    r"ARM64_VA_BITS\w*", r"ARM64_PA_BITS\w*", r"ARM64_4K_PAGES", r"ARM64_16K_PAGES",
    r"ARM64_64K_PAGES", r"ARM64_PTR_AUTH\w*", r"ARM64_BTI\w*", r"ARM64_USE_LSE_ATOMICS",
    r"ARM64_LSE_ATOMICS", r"CC_HAS_BRANCH_PROT_PAC_RET\w*",
    # arm (arch/arm/Makefile, kernel/module.c, module-plts.c)
    r"ARM_MODULE_PLTS", r"THUMB2_KERNEL", r"ARM_HAS_GROUP_RELOCS", r"ARM_UNWIND", r"AEABI",
    r"OABI_COMPAT", r"CPU_V7", r"CPU_32v7", r"ARCH_MULTI_V6", r"ARCH_MULTI_V7", r"ARM_LPAE",
    r"ARM_PATCH_PHYS_VIRT", r"ARM_PATCH_IDIV", r"VFP", r"NEON", r"KERNEL_MODE_NEON", r"ARM_THUMB",
    r"CPU_ENDIAN_BE8", r"CPU_ENDIAN_BE32", r"CURRENT_POINTER_IN_TPIDRURO",
)
CONFIG_OPTIONS = re.compile(rf"CONFIG_({'|'.join(CONFIG_NAMES)})")
# options the profiles name that a .config may lack entirely (an invisible bool that is n gets
# no line): the config file says so explicitly, per arch
CONFIG_STATED = {
    "": ("CONSTRUCTORS", "LIVEPATCH", "MODULE_SIG_FORCE", "KALLSYMS_ALL", "RANDOMIZE_BASE"),
    "x86_64": ("RETPOLINE", "RETHUNK"),
    "i386": ("RETPOLINE", "RETHUNK", "HIGHMEM", "X86_PAE"),
    "arm64": ("ARM64_MODULE_PLTS", "ARM64_ERRATUM_843419", "ARM64_BTI_KERNEL", "ARM64_PTR_AUTH_KERNEL"),
    "arm": ("ARM_MODULE_PLTS", "THUMB2_KERNEL", "ARM_HAS_GROUP_RELOCS", "ARM_UNWIND", "HIGHMEM"),
}
CONFIG_LINE = re.compile(r"(?:(CONFIG_\w+)=(.*)|# (CONFIG_\w+) is not set)")
# the sections an arch's asm/module.lds.h adds to every module (arm64, arm: .plt/.init.plt,
# arm64 also the ftrace trampoline; riscv: .plt/.got/.got.plt)
ARCH_SECTIONS = (".plt", ".init.plt", ".text.ftrace_trampoline", ".got", ".got.plt")
T = TypeVar("T")
SHF_LETTERS = ((0x1, "W"), (0x2, "A"), (0x4, "X"), (0x10, "M"), (0x20, "S"), (0x40, "I"))

# arch/riscv/kernel/module.c and module-sections.c (v6.1): apply_relocate_add's and
# module_frob_arch_sections' messages (pr_err = level 3, pr_warn = level 4), as rendered.
RISCV64_MODULE_STRINGS = (
    "<3>%s: value %016llx out of range for 32-bit field\\n",
    "<3>%s: target %016llx can not be addressed by the 32-bit offset from PC = %p\\n",
    "<3>%s: can not generate the GOT entry for symbol = %016llx from PC = %p\\n",
    "<3>%s: The unexpected relocation type 'R_RISCV_ALIGN' from PC = %p\\n",
    "<4>%s: Unknown symbol %s\\n",
    "<3>%s: Unknown relocation type %u\\n",
    "<3>%s: Can not find HI20 relocation information\\n",
    "<3>%s: module PLT section(s) missing\\n",
    "<3>%s: module GOT section(s) missing\\n",
    "<3>%s: module GOT.PLT section(s) missing\\n",
)


@dataclass(frozen=True)
class Export:
    """One exported vmlinux symbol as the TSV describes it (address filled in by merge)."""
    name: str
    crc: int | None
    gpl: bool
    namespace: str
    address: int = 0


@dataclass(frozen=True)
class KsymtabFormat:
    """How struct kernel_symbol is laid out (include/linux/export.h, 6.1).

    With CONFIG_HAVE_ARCH_PREL32_RELOCATIONS (x86 32 and 64, arm64): three s32 offsets
    {value_offset, name_offset, namespace_offset}, each relative to its own field; without
    it (arm): three absolute pointers {value, name, namespace} of the word size.
    """
    prel32: bool = True
    word: int = 8
    little_endian: bool = True

    @property
    def entry(self) -> int:
        return 12 if self.prel32 else 3 * self.word

    @property
    def fields(self) -> str:
        order = "<" if self.little_endian else ">"
        return order + ("iii" if self.prel32 else ("III" if self.word == 4 else "QQQ"))


def parse_module_symvers(text: str) -> dict[str, Export]:
    """Return the rows of Module.symvers whose module column is `vmlinux`, keyed by name."""
    exports: dict[str, Export] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"Module.symvers:{lineno}: expected 5 tab-separated fields: {line!r}")
        crc, name, module, kind, namespace = fields
        if module != "vmlinux":
            continue
        if kind not in EXPORT_TYPES:
            raise ValueError(f"Module.symvers:{lineno}: unknown export type {kind!r}")
        if name in exports:
            raise ValueError(f"Module.symvers:{lineno}: duplicate export {name!r}")
        exports[name] = Export(name, int(crc, 16), EXPORT_TYPES[kind], namespace)
    return exports


def parse_system_map(text: str) -> dict[str, list[tuple[int, str]]]:
    """Return System.map as name -> [(address, type letter), ...] (names may repeat)."""
    symbols: dict[str, list[tuple[int, str]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"System.map:{lineno}: expected 3 fields: {line!r}")
        address, kind, name = fields
        symbols.setdefault(name, []).append((int(address, 16), kind))
    return symbols


def resolve_address(name: str, symbols: dict[str, list[tuple[int, str]]]) -> int:
    """Address of an exported symbol; a file-local (lowercase) namesake never wins."""
    if f"__ksymtab_{name}" not in symbols:
        raise ValueError(f"{name}: no __ksymtab_{name} in System.map; is it really exported?")
    entries = symbols.get(name)
    if not entries:
        raise ValueError(f"{name}: exported (has __ksymtab_{name}) but absent from System.map")
    addresses = {a for a, k in entries if len(entries) == 1 or k.isupper()}
    if len(addresses) != 1:
        raise ValueError(f"{name}: ambiguous in System.map: {entries}")
    return addresses.pop()


def merge(exports: dict[str, Export], symbols: dict[str, list[tuple[int, str]]]) -> list[Export]:
    """Attach System.map addresses to the exports and sort them by name."""
    return [Export(e.name, e.crc, e.gpl, e.namespace, resolve_address(e.name, symbols))
            for e in sorted(exports.values(), key=lambda e: e.name)]


def image_base(symbols: dict[str, list[tuple[int, str]]]) -> int:
    """The link address of the kernel image: System.map's `_text`."""
    entries = {a for a, _ in symbols.get("_text", [])}
    if len(entries) != 1:
        raise ValueError(f"System.map: need exactly one _text address, found {sorted(entries)}")
    return entries.pop()


def rebase(rows: list[Export], old_base: int, new_base: int) -> list[Export]:
    """Stated exports: same names/gpl/namespace, no crc, address moved by new_base - old_base.

    Every exported address must lie at or above old_base (in the kernel image), so the
    distances between kernel symbols survive the move.
    """
    out = []
    for r in rows:
        if r.address < old_base:
            raise ValueError(f"{r.name}: address {r.address:#x} below the image base {old_base:#x}")
        out.append(Export(r.name, None, r.gpl, r.namespace, (r.address - old_base + new_base) % (1 << 64)))
    return out


def format_tsv(rows: list[Export], provenance: list[str], width: int = 16) -> str:
    """The committed TSV: provenance comments, the header line, one row per export.

    width: hex digits of an address (16 on 64-bit kernels, 8 on 32-bit); an export without a
    CRC (a stated environment without MODVERSIONS) has an empty crc column.
    """
    lines = [f"# {p}" for p in provenance] + [TSV_HEADER]
    for r in rows:
        crc = "" if r.crc is None else f"0x{r.crc:08x}"
        lines.append(f"{r.name}\t0x{r.address:0{width}x}\t{crc}\t{int(r.gpl)}\t{r.namespace}")
    return "\n".join(lines) + "\n"


def _cstring(blob: bytes, offset: int) -> str:
    if not 0 <= offset < len(blob):
        raise ValueError(f"string offset {offset:#x} outside __ksymtab_strings ({len(blob):#x} bytes)")
    return blob[offset:blob.index(b"\0", offset)].decode()


def decode_ksymtab(tab: bytes, tab_addr: int, crcs: bytes, strs: bytes, strs_addr: int,
                   gpl: bool, fmt: KsymtabFormat = KsymtabFormat()) -> dict[str, Export]:
    """Decode a __ksymtab{,_gpl} of struct kernel_symbol (fmt) plus its u32 __kcrctab.

    A PREL32 field holds target - (address of the field); an absolute one the target itself.
    A namespace of 0 (no pointer/offset) and one pointing at "" both mean no namespace.
    """
    count, mask = len(tab) // fmt.entry, (1 << (8 * fmt.word)) - 1
    if len(tab) % fmt.entry or len(crcs) != 4 * count:
        raise ValueError(f"ksymtab of {len(tab)} bytes ({fmt.entry}-byte entries) does not match "
                         f"kcrctab of {len(crcs)}")
    crc_format = "<I" if fmt.little_endian else ">I"
    found: dict[str, Export] = {}
    for i in range(count):
        where = tab_addr + fmt.entry * i
        value, name_ref, ns_ref = struct.unpack_from(fmt.fields, tab, fmt.entry * i)
        if fmt.prel32:
            value, name_ptr = (where + value) & mask, (where + 4 + name_ref) & mask
            ns_ptr = (where + 8 + ns_ref) & mask if ns_ref else 0
        else:
            name_ptr, ns_ptr = name_ref, ns_ref
        name = _cstring(strs, name_ptr - strs_addr)
        ns = _cstring(strs, ns_ptr - strs_addr) if ns_ptr else ""
        crc = struct.unpack_from(crc_format, crcs, 4 * i)[0]
        found[name] = Export(name, crc, gpl, ns, value)
    return found


def section(elf: ELFFile, name: str) -> Section:
    if (found := elf.get_section_by_name(name)) is None:
        raise ValueError(f"vmlinux has no {name} section")
    return found


def ksymtab_format(elf: ELFFile, prel32: bool) -> KsymtabFormat:
    return KsymtabFormat(prel32, elf.elfclass // 8, elf.little_endian)


def read_ksymtab(vmlinux: Path, prel32: bool = True) -> dict[str, Export]:
    """Every export recorded in the vmlinux ELF itself."""
    with vmlinux.open("rb") as f:
        elf = ELFFile(f)
        fmt = ksymtab_format(elf, prel32)
        strs = section(elf, "__ksymtab_strings")
        found: dict[str, Export] = {}
        for suffix, gpl in (("", False), ("_gpl", True)):
            tab, crcs = section(elf, f"__ksymtab{suffix}"), section(elf, f"__kcrctab{suffix}")
            found |= decode_ksymtab(tab.data(), tab["sh_addr"], crcs.data(), strs.data(),
                                    strs["sh_addr"], gpl, fmt)
    return found


def cross_check(rows: list[Export], ksymtab: dict[str, Export]) -> None:
    """Fail unless Module.symvers + System.map agree exactly with the vmlinux export tables."""
    ours = {r.name: r for r in rows}
    if ours.keys() != ksymtab.keys():
        diff = sorted(ours.keys() ^ ksymtab.keys())
        raise ValueError(f"export sets differ between Module.symvers and vmlinux: {diff[:10]}")
    bad = [(ours[n], ksymtab[n]) for n in sorted(ours) if ours[n] != ksymtab[n]]
    if bad:
        raise ValueError(f"{len(bad)} exports disagree with vmlinux, e.g. {bad[0]}")


def render_string(raw: bytes) -> str:
    """One-line form of a stored string: SOH+digit -> <N>, \\n, \\\\, \\xNN for other controls."""
    prefix = ""
    if len(raw) >= 2 and raw[0] == 1 and raw[1] in b"01234567":
        prefix, raw = f"<{chr(raw[1])}>", raw[2:]
    line = prefix + raw.decode("utf-8", errors="surrogateescape").translate(ESCAPES)
    return "\\x23" + line[1:] if line.startswith("#") else line  # '#' starts a comment


def select_strings(rodata: bytes, keywords: Iterable[str] = KEYWORDS) -> list[str]:
    """Sorted, deduplicated renderings of the NUL-terminated strings matching keywords."""
    needles = [k.encode() for k in keywords]
    chosen = {render_string(s) for s in rodata.split(b"\0") if any(n in s for n in needles)}
    return sorted(chosen)


# --- /boot/config ---------------------------------------------------------------------------

def config_value(raw: str) -> bool | int | str:
    """A .config value as a profile states it: y -> True, n -> False, numbers -> int."""
    if raw in ("y", "n"):
        return raw == "y"
    if raw.startswith('"'):
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    try:
        return int(raw, 0)
    except ValueError:
        return raw  # "m" and anything else stay as written


def parse_config(text: str) -> dict[str, bool | int | str]:
    """CONFIG_X -> value for every `CONFIG_X=v` and `# CONFIG_X is not set` (False) line."""
    values: dict[str, bool | int | str] = {}
    for line in text.splitlines():
        if m := CONFIG_LINE.fullmatch(line):
            if m.group(1):
                values[m.group(1)] = config_value(m.group(2))
            else:
                values[m.group(3)] = False
    return values


def select_config(text: str) -> list[str]:
    """The lines of text (verbatim, in order) that set or unset an option CONFIG_OPTIONS names."""
    chosen = []
    for line in text.splitlines():
        m = CONFIG_LINE.fullmatch(line)
        if m and CONFIG_OPTIONS.fullmatch(m.group(1) or m.group(3)):
            chosen.append(line)
    return chosen


def absent_options(text: str, arch: str) -> list[str]:
    """The CONFIG_STATED options (common and arch's) that have no line at all in text."""
    present = parse_config(text)
    stated = CONFIG_STATED[""] + CONFIG_STATED.get(arch, ())
    return [f"CONFIG_{o}" for o in stated if f"CONFIG_{o}" not in present]


# --- the modules an image package ships -----------------------------------------------------

@dataclass(frozen=True)
class ModuleFacts:
    """What one shipped .ko says about the kernel it was built for."""
    size: int                      # sizeof(struct module): size of .gnu.linkonce.this_module
    align: int                     # its sh_addralign (____cacheline_aligned)
    name: int                      # offset of the module's name (.modinfo name=) in it
    init: int | None               # offset relocated against init_module, if any
    exit: int | None               # offset relocated against cleanup_module, if any
    vermagic: str
    sections: tuple[tuple[str, str, str, int, int], ...]  # (name, type, flags, size, align)


def _flags(value: int) -> str:
    return "".join(letter for bit, letter in SHF_LETTERS if value & bit)


def modinfo(data: bytes) -> dict[str, str]:
    """.modinfo `key=value` entries (first of each key)."""
    out: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            out.setdefault(key, value)
    return out


def module_facts(ko: bytes) -> ModuleFacts:
    """Read struct module's layout and the arch sections from one module's ELF."""
    elf = ELFFile(io.BytesIO(ko))
    this = elf.get_section_by_name(".gnu.linkonce.this_module")
    info_sec = elf.get_section_by_name(".modinfo")
    if this is None or info_sec is None:
        raise ValueError("no .gnu.linkonce.this_module or .modinfo section")
    info = modinfo(info_sec.data())
    name = info["name"].encode() + b"\0"
    data = this.data()
    if (name_off := data.find(name)) < 0:
        raise ValueError(f"module name {info['name']!r} not in .gnu.linkonce.this_module")
    relocated: dict[str, int] = {}
    for prefix in (".rela", ".rel"):
        if (rel := elf.get_section_by_name(prefix + this.name)) is None:
            continue
        symtab = elf.get_section(rel["sh_link"])
        assert isinstance(rel, RelocationSection) and isinstance(symtab, SymbolTableSection)
        for r in rel.iter_relocations():
            relocated[symtab.get_symbol(r["r_info_sym"]).name] = r["r_offset"]
    sections = tuple((s.name, s["sh_type"], _flags(s["sh_flags"]), s["sh_size"], s["sh_addralign"])
                     for s in elf.iter_sections() if s.name in ARCH_SECTIONS)
    return ModuleFacts(this["sh_size"], this["sh_addralign"], name_off,
                       relocated.get("init_module"), relocated.get("cleanup_module"),
                       info["vermagic"], sections)


def _one(values: Iterable[T | None], what: str) -> T:
    """The single value all non-None values share."""
    seen = Counter(v for v in values if v is not None)
    if len(seen) != 1:
        raise ValueError(f"shipped modules disagree about {what}: {dict(seen)}")
    return next(iter(seen))


@dataclass(frozen=True)
class ImageFacts:
    """The kernel facts every shipped module agrees on."""
    modules: int
    with_init: int
    with_exit: int
    vermagic: str
    module_struct: dict[str, int]
    sections: dict[tuple[str, str, str, int, int], int]   # section form -> modules having it


def summarise(modules: list[ModuleFacts]) -> ImageFacts:
    """Fail unless every module agrees on vermagic and on struct module's layout."""
    if not modules:
        raise ValueError("no modules")
    layout: dict[str, int] = {key: _one((getattr(m, key) for m in modules), key)
                              for key in ("size", "align", "name", "init", "exit")}
    return ImageFacts(len(modules), sum(m.init is not None for m in modules),
                      sum(m.exit is not None for m in modules),
                      _one((m.vermagic for m in modules), "vermagic"), layout,
                      dict(sorted(Counter(s for m in modules for s in m.sections).items())))


def format_facts(facts: ImageFacts, provenance: list[str], package: str, kernel: str) -> str:
    """ARCH.facts.yaml: provenance comments, then the facts in the profile's spelling."""
    ms = facts.module_struct
    lines = [f"# {p}" for p in provenance] + [
        f"package: {package}",
        f"kernel_release: {kernel}",
        (f"modules: {facts.modules}  # .ko files shipped; {facts.with_init} relocate init_module, "
         f"{facts.with_exit} cleanup_module"),
        f'vermagic: "{facts.vermagic}"',
        (f"module_struct: {{size: {ms['size']:#x}, align: {ms['align']}, name: {ms['name']:#x}, "
         f"init: {ms['init']:#x}, exit: {ms['exit']:#x}}}"),
    ]
    if not facts.sections:
        lines.append("arch_sections: {}  # no module carries .plt/.init.plt/.got/... sections")
    else:
        lines.append("arch_sections:  # section headers as shipped (before module_frob_arch_sections)")
        for (name, kind, flags, size, align), count in facts.sections.items():
            lines.append(f"  - {{name: {name}, type: {kind}, flags: {flags}, size: {size:#x}, "
                         f"align: {align}, modules: {count}}}")
    return "\n".join(lines) + "\n"


def scan_image(image: Path, kernel: str) -> tuple[str, str, list[ModuleFacts], str]:
    """Stream the image package: (its /boot/config text, config sha256, module facts, modules digest).

    The modules' digest is the sha256 of the lines "PATH SHA256-OF-FILE\\n" in path order.
    """
    config_member = f"./boot/config-{kernel}"
    prefix = f"./lib/modules/{kernel}/"
    config: tuple[str, str] | None = None
    facts: dict[str, tuple[str, ModuleFacts]] = {}
    for name, blob in _tar_files(image):
        if name == config_member:
            config = (blob.decode("utf-8"), hashlib.sha256(blob).hexdigest())
        elif name.startswith(prefix) and name.endswith(".ko"):
            try:
                facts[name] = (hashlib.sha256(blob).hexdigest(), module_facts(blob))
            except (ValueError, KeyError) as e:
                raise ValueError(f"{image}:{name}: {e}") from e
    if config is None or not facts:
        raise FileNotFoundError(f"{image}: no {config_member} or no {prefix}**.ko")
    listing = "".join(f"{name} {facts[name][0]}\n" for name in sorted(facts))
    return (config[0], config[1], [facts[name][1] for name in sorted(facts)],
            hashlib.sha256(listing.encode()).hexdigest())


def _tar_files(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(./-relative path, contents) of every regular file in deb's data archive."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            if info.isfile() and (src := tar.extractfile(info)) is not None:
                yield "./" + info.name.removeprefix("./"), src.read()
    if proc.wait():
        raise subprocess.CalledProcessError(proc.returncode, "dpkg-deb --fsys-tarfile")


# --- packages -------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def obtain_deb(debs: Path, package: str, version: str, arch: str, fetch: bool) -> Path:
    """Path of package_version_arch.deb in debs, running `apt-get download` if allowed.

    A foreign arch needs its package lists (`dpkg --add-architecture ARCH; apt-get update`).
    """
    path = debs / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    if not path.exists():
        if not fetch:
            raise FileNotFoundError(f"{path} missing (omit --debs to fetch into {DEFAULT_CACHE})")
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", f"{package}:{arch}={version}"], cwd=debs, check=True)
    fields = subprocess.run(["dpkg-deb", "-f", str(path), "Package", "Version", "Architecture"],
                            check=True, capture_output=True, text=True).stdout
    if fields.split() != ["Package:", package, "Version:", version, "Architecture:", arch]:
        raise ValueError(f"{path}: control fields do not match: {fields!r}")
    return path


def extract(deb: Path, wanted: dict[str, Path]) -> dict[str, str]:
    """Stream the named members (./-relative paths) out of deb; return member -> sha256."""
    digests: dict[str, str] = {}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            name = "./" + info.name.removeprefix("./")
            if name not in wanted or not info.isfile():
                continue
            digest, src = hashlib.sha256(), tar.extractfile(info)
            assert src is not None
            with wanted[name].open("wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            digests[name] = digest.hexdigest()
            if len(digests) == len(wanted):
                break
    proc.stdout.close()  # stopping early makes dpkg-deb die of SIGPIPE: only fail on a miss
    stderr = proc.communicate()[1].decode(errors="replace")
    if missing := sorted(wanted.keys() - digests.keys()):
        raise FileNotFoundError(f"{deb}: no regular file {missing}; dpkg-deb said {stderr!r}")
    return digests


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m koconform.tools.derive_environment",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=sorted(DEB_ARCH.keys() | LINK_ADDRESS.keys()),
                   help="kernel architecture")
    p.add_argument("--kernel", required=True, help="Debian kernel ABI name, e.g. 6.1.0-56-amd64 "
                   "(with --rebase-from: the source arch's, e.g. 6.1.0-56-arm64)")
    p.add_argument("--version", required=True, help="Debian package version, e.g. 6.1.192-2")
    p.add_argument("--rebase-from", choices=sorted(DEB_ARCH),
                   help="for an arch without a Debian kernel (riscv64): state its environment "
                   "from this Debian arch's exports, rebased to the arch's kernel link address")
    p.add_argument("--debs", type=Path, help="directory already holding the linux-image-KERNEL, "
                   "linux-image-KERNEL-dbg and linux-headers-KERNEL .debs (default: `apt-get "
                   f"download` them into {DEFAULT_CACHE})")
    p.add_argument("--out", type=Path, help="output directory "
                   "(default: conformance/environments/linux-MAJOR.MINOR of this checkout)")
    args = p.parse_args(argv)
    if (args.arch in LINK_ADDRESS) != (args.rebase_from is not None):
        p.error(f"--rebase-from is required for {', '.join(LINK_ADDRESS)} and only for them")
    return args


def deb_members(kernel: str) -> tuple[str, str, str]:
    """Paths of System.map, vmlinux (in -dbg) and Module.symvers (in headers) inside the debs."""
    boot = "./usr/lib/debug/boot"
    return (f"{boot}/System.map-{kernel}", f"{boot}/vmlinux-{kernel}",
            f"./usr/src/linux-headers-{kernel}/Module.symvers")


@dataclass(frozen=True)
class Derived:
    """What derive() read from the -dbg and headers packages."""
    rows: list[Export]
    strings: list[str]
    sha: dict[str, str]
    width: int                 # hex digits of an address
    percpu_zero_based: bool    # .data..percpu linked at 0 (x86_64 SMP)
    text: int                  # System.map _text


def derive(image: Path, headers: Path, kernel: str, prel32: bool = True,
           keywords: Iterable[str] = KEYWORDS) -> Derived:
    """Extract the inputs from the -dbg (image) and headers packages and cross-check them."""
    m_map, m_vmlinux, m_symvers = deb_members(kernel)
    with tempfile.TemporaryDirectory(prefix="koconform-env-") as tmp:
        files = {m: Path(tmp) / Path(m).name for m in (m_map, m_vmlinux, m_symvers)}
        sha = extract(image, {m: files[m] for m in (m_map, m_vmlinux)})
        sha |= extract(headers, {m_symvers: files[m_symvers]})
        exports = parse_module_symvers(files[m_symvers].read_text("utf-8"))
        symbols = parse_system_map(files[m_map].read_text("utf-8"))
        rows = merge(exports, symbols)
        cross_check(rows, read_ksymtab(files[m_vmlinux], prel32))
        with files[m_vmlinux].open("rb") as f:
            elf = ELFFile(f)
            strings = select_strings(section(elf, ".rodata").data(), keywords)
            width, percpu = elf.elfclass // 4, section(elf, ".data..percpu")["sh_addr"] == 0
    return Derived(rows, strings, sha, width, percpu, image_base(symbols))


def stated_strings(out: Path) -> tuple[list[str], list[str]]:
    """(strings every Debian arch's committed kernel-strings file has, the files read)."""
    common: set[str] | None = None
    read = []
    for arch in sorted(DEB_ARCH):
        path = out / f"{arch}.kernel-strings.txt"
        lines = {line for line in path.read_text("utf-8").splitlines() if not line.startswith("#")}
        common = lines if common is None else common & lines
        read.append(f"{path.name} sha256 {sha256_file(path)}")
    assert common is not None
    return sorted(common), read


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    arch, kernel, version = args.arch, args.kernel, args.version
    source = args.rebase_from or arch
    deb_arch = DEB_ARCH[source]
    profile = "linux-" + ".".join(kernel.split(".")[:2])
    out = args.out or Path(__file__).resolve().parents[1] / "conformance" / "environments" / profile
    out.mkdir(parents=True, exist_ok=True)
    pkgs = (f"linux-image-{kernel}-dbg", f"linux-headers-{kernel}", f"linux-image-{kernel}")
    fetch = args.debs is None
    debs = [obtain_deb(args.debs or DEFAULT_CACHE, p, version, deb_arch, fetch) for p in pkgs[:2]]
    m_map, m_vmlinux, m_symvers = deb_members(kernel)
    pkg_lines = [f"package {p} {version} {deb_arch} sha256 {sha256_file(d)}"
                 for p, d in zip(pkgs, debs, strict=False)]

    if args.rebase_from:
        write_stated(out, arch, profile, kernel, source, debs, pkgs, pkg_lines)
        return

    image = obtain_deb(args.debs or DEFAULT_CACHE, pkgs[2], version, deb_arch, fetch)
    config_text, config_sha, modules, modules_sha = scan_image(image, kernel)
    prel32 = PREL32[arch]
    if (parse_config(config_text).get("CONFIG_HAVE_ARCH_PREL32_RELOCATIONS") is True) != prel32:
        raise ValueError(f"{image}: CONFIG_HAVE_ARCH_PREL32_RELOCATIONS is not what PREL32[{arch!r}] says")
    keywords = KEYWORDS + ARCH_KEYWORDS.get(arch, ())
    d = derive(debs[0], debs[1], kernel, prel32, keywords)
    head = [f"koconform derive_environment: profile {profile}, arch {arch}, kernel {kernel}"]
    head += pkg_lines
    src = {m: f"input {pkgs[1] if m == m_symvers else pkgs[0]}:{m} sha256 {d.sha[m]}" for m in d.sha}
    percpu = ("offset in .data..percpu" if d.percpu_zero_based
              else "their link address in .data..percpu")
    tsv = format_tsv(d.rows, head + [
        src[m_map], src[m_symvers], src[m_vmlinux] + " (cross-check: __ksymtab*, __kcrctab*)",
        (f"rows: Module.symvers exports of module vmlinux; address: System.map nokaslr link "
         f"address (per-cpu variables: {percpu})")], d.width)
    txt = "".join(f"# {h}\n" for h in head + [
        src[m_vmlinux] + " section .rodata",
        "NUL-terminated strings containing any of: " + " ".join(f'"{k}"' for k in keywords),
        "leading SOH+digit shown as <N>; escapes \\\\ \\n \\xNN; a leading '#' is written \\x23"])
    (out / f"{arch}.tsv").write_text(tsv, encoding="utf-8", newline="\n")
    (out / f"{arch}.kernel-strings.txt").write_text(
        txt + "".join(f"{s}\n" for s in d.strings), encoding="utf-8", newline="\n")

    image_line = f"package {pkgs[2]} {version} {deb_arch} sha256 {sha256_file(image)}"
    config_head = [head[0], image_line,
                   f"input {pkgs[2]}:./boot/config-{kernel} sha256 {config_sha}",
                   ("its lines (verbatim, in its order) for the options the 6.1 module loader, the arch "
                    "Makefile and the module build test (tools/derive_environment.py CONFIG_OPTIONS)")]
    if absent := absent_options(config_text, arch):
        config_head.append("absent from the configuration (no line: not set): " + " ".join(absent))
    (out / f"{arch}.config").write_text(
        "".join(f"# {h}\n" for h in config_head) + "".join(f"{line}\n" for line in select_config(config_text)),
        encoding="utf-8", newline="\n")
    facts = summarise(modules)
    facts_head = [head[0], image_line,
                  (f"input {pkgs[2]}:./lib/modules/{kernel}/**/*.ko: {facts.modules} modules, sha256 of their "
                   f"'PATH SHA256' lines in path order {modules_sha}"),
                  ("vermagic: .modinfo vermagic= (the same in every module); module_struct: size and "
                   "sh_addralign of .gnu.linkonce.this_module,"),
                  ("name: offset of the .modinfo name= string in it, init/exit: offsets its .rel(a) "
                   "section relocates against init_module/cleanup_module (the same in every module)")]
    (out / f"{arch}.facts.yaml").write_text(format_facts(facts, facts_head, f"{pkgs[2]} {version}", kernel),
                                            encoding="utf-8", newline="\n")
    print(f"{out}: {len(d.rows)} symbols, {len(d.strings)} kernel strings, "
          f"{len(select_config(config_text))} config lines, {facts.modules} modules")


def write_stated(out: Path, arch: str, profile: str, kernel: str, source: str, debs: list[Path],
                 pkgs: tuple[str, ...], pkg_lines: list[str]) -> None:
    """ARCH.tsv and ARCH.kernel-strings.txt of an arch without a Debian kernel (see __doc__)."""
    m_map, m_vmlinux, m_symvers = deb_members(kernel)
    d = derive(debs[0], debs[1], kernel, PREL32[source])
    link = LINK_ADDRESS[arch]
    rows = rebase(d.rows, d.text, link)
    src = {m: f"input {pkgs[1] if m == m_symvers else pkgs[0]}:{m} sha256 {d.sha[m]}" for m in d.sha}
    head = [(f"koconform derive_environment: profile {profile}, arch {arch}: a STATED configuration "
             f"(Debian 12 has no {arch} kernel), derived from {source} kernel {kernel}")]
    tsv = format_tsv(rows, head + pkg_lines + [
        src[m_map], src[m_symvers], src[m_vmlinux] + " (cross-check: __ksymtab*, __kcrctab*)",
        (f"rows: {source}'s Module.symvers exports of module vmlinux (names, gpl, namespace as "
         f"{source} has them; {source}-only exports included, {arch}-only ones absent)"),
        f"crc: empty (the {arch} profile states MODVERSIONS=n)",
        (f"address: {source} System.map nokaslr link address - {source} _text {d.text:#x} + "
         f"{arch} KERNEL_LINK_ADDR {link:#x} (distances between kernel symbols are {source}'s)")])
    (out / f"{arch}.tsv").write_text(tsv, encoding="utf-8", newline="\n")
    common, read = stated_strings(out)
    strings = sorted(set(common) | set(RISCV64_MODULE_STRINGS))
    txt = "".join(f"# {h}\n" for h in [
        (f"koconform derive_environment: profile {profile}, arch {arch}: STATED kernel strings "
         f"(Debian 12 has no {arch} kernel, so no {arch} vmlinux was read)"),
        ("= the strings that all of these files (each from a real Debian 6.1 vmlinux) contain, i.e. "
         "arch-independent kernel code:"), *read,
        ("+ the format strings of arch/riscv/kernel/module.c and module-sections.c (v6.1), "
         "written in tools/derive_environment.py RISCV64_MODULE_STRINGS"),
        "leading SOH+digit shown as <N>; escapes \\\\ \\n \\xNN; a leading '#' is written \\x23"])
    (out / f"{arch}.kernel-strings.txt").write_text(
        txt + "".join(f"{s}\n" for s in strings), encoding="utf-8", newline="\n")
    print(f"{out}: {len(rows)} stated symbols, {len(strings)} kernel strings")


if __name__ == "__main__":
    main()
