"""koconform corpus: every module a kernel package ships, through check, layout, resolve and relocate.

    koconform corpus x86_64 arm64 arm i386        # fetch each profile's Debian package, run it
    koconform corpus PACKAGE.deb                  # a linux-image-*.deb (its profile by package/version)
    koconform corpus DIR --arch x86_64            # a folder of .ko files with a System.map beside them

What the kernel would offer each module (the environment):
- the kernel's exports. For a package whose name and version are a profile's `package`, exactly the
  profile's default environment (conformance/environments/linux-6.1/<arch>.tsv, derived from that
  package's -dbg System.map and its headers' Module.symvers): the image package's own /boot/System.map
  is a placeholder. For a DIR, the System.map beside the .ko files: every name N with a
  `__ksymtab_N` entry is an export at N's address, with no CRC, not GPL-only, in no namespace
  (a Module.symvers beside it, when there is one, gives the vmlinux rows' CRC, licence and namespace);
- the exports of the modules loaded before it. Modules load in dependency order (`.modinfo`
  `depends=`, a depth-first topological order over the files in path order). A loaded module's
  exports are read as the kernel reads them (find_symbol on mod->syms / mod->gpl_syms, kernel/module/
  main.c): its relocated `__ksymtab` and `__ksymtab_gpl` entries, struct kernel_symbol
  ({value_offset, name_offset, namespace_offset} s32 place-relative fields with
  CONFIG_HAVE_ARCH_PREL32_RELOCATIONS, three absolute pointers without), names and namespaces read
  at the addresses they point to, CRCs from the module's own `__kcrctab`/`__kcrctab_gpl` (mod->crcs,
  what check_version compares), cross-checked against the headers' Module.symvers when present.
  The relocations of `.rela__ksymtab` are the loader's own work, so a wrong relocation shows up
  as a wrong export of a later module, not only as wrong bytes.
  A module exporting a name already exported (by vmlinux or an earlier module) is refused as 6.1's
  verify_exported_symbols does in complete_formation, after relocation ("exports duplicate symbol",
  -ENOEXEC, reported in phase `formation`) and its exports are not added.

Where each module goes (the rule): one boot that loads the modules one after another, as vmalloc's
first fit over an area nothing is freed from: the first core allocation at the profile's `core`
region (MODULES_VADDR on x86_64, with nokaslr), its init allocation one guard page after the core's
page-rounded end (the reference's default, observed on 6.1), the next module's core one guard page
after the previous module's init, and so on. A module rejected in or before layout allocates
nothing; one rejected after layout is freed by the kernel's error path and the next module takes
its place. Allocations never cover what vmalloc would find occupied: the kernel's temporary copy of
the file (the profile's `copy` region, up to the largest file, and its guard page) and the kernel
image where it lies inside the module area (the pages the kernel's exports span there); a module
whose allocations could reach such a range (by an upper bound of its sizes, computed from its
section headers) starts after it. When that bound would pass the arch's MODULES_END, the area
starts over at the `core` base (a real boot never holds every module at once; the report counts
the restarts).

Appended signatures (`~Module signature appended~\\n`) are stripped by the loader's module_sig_check
as the kernel does: the file is given unchanged. init is not run (drivers need hardware).

The result per module: loaded, or rejected (errno, phase, the first log line that is not one of
the taint notices every module of a corpus prints, and the loader's detail), or faulted, or a
traceback (a bug of the loader: the run exits 1). Every module's relocation sections are also
scanned for types the arch table does not know (must be 0; exit 1 otherwise).
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from koconform.reference import arch as arches
from koconform.reference import loader
from koconform.reference.elf import (
    SHF_ALLOC,
    SHF_RELA_LIVEPATCH,
    SHT_REL,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
    cstring,
    read_ehdr,
    read_table,
)

from . import profiles
from .model import Environment, KernelSymbol, Profile, Request, Result

# kernel arch -> Debian architecture of its linux-image package
DEB_ARCH = {"x86_64": "amd64", "i386": "i386", "arm64": "arm64", "arm": "armhf"}
E_MACHINE = {62: "x86_64", 3: "i386", 6: "i386", 183: "arm64", 40: "arm", 243: "riscv64"}
PROFILE = "linux-6.1"
# Debian 12 ("bookworm"): where apt finds the profiles' packages (its own source list, so a host
# of another release or distribution fetches the same packages).
SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# Log lines every module of a corpus prints before its own (one boot, the signing key not in the
# reference's keyring): not the reason a module is rejected.
TAINT_NOTICES = re.compile(r": (module verification failed|loading out-of-tree module taints kernel|"
                           r"module license '.*' taints kernel|loading test module taints kernel)|"
                           r"^Disabling lock debugging due to kernel taint")
MODULE_SIG_STRING = b"~Module signature appended~\n"


def cache_dir() -> Path:
    """~/.cache/koconform (or $XDG_CACHE_HOME/koconform): debs/, apt/, corpus/."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "koconform"


# ---- packages ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """A Debian kernel image package a profile names, and its headers package."""
    arch: str                      # kernel arch (x86_64)
    name: str                      # linux-image-6.1.0-56-amd64
    version: str                   # 6.1.192-2
    release: str                   # 6.1.0-56-amd64

    @property
    def deb_arch(self) -> str:
        return DEB_ARCH[self.arch]

    @property
    def headers(self) -> str:
        return f"linux-headers-{self.release}"

    def deb(self, name: str) -> str:
        return f"{name}_{self.version.replace(':', '%3a')}_{self.deb_arch}.deb"

    @classmethod
    def of_profile(cls, arch: str, profile: str = PROFILE) -> Package:
        doc = profiles.arch_doc(profile, arch)
        fields = str(doc.get("package", "")).split()
        if arch not in DEB_ARCH or len(fields) != 2 or not fields[0].startswith("linux-image-"):
            raise SystemExit(f"koconform corpus: profile {profile}/{arch} names no Debian package "
                             f"({doc.get('package')!r})")
        return cls(arch, fields[0], fields[1], str(doc["kernel_release"]))


def apt_options(deb_arch: str, cache: Path) -> list[str]:
    """apt-get options for one Debian architecture: its own package lists and source list in the
    cache (no `dpkg --add-architecture`, nothing written outside the cache)."""
    lists = cache / "apt" / f"lists-{deb_arch}"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    parts = cache / "apt" / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    sources = parts / "bookworm.sources"
    if not sources.exists() or sources.read_text() != SOURCES:
        sources.write_text(SOURCES)
    return ["-o", f"APT::Architecture={deb_arch}", "-o", f"APT::Architectures={deb_arch}",
            "-o", f"Dir::State::Lists={lists}", "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={parts}", "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=", "-o", "APT::Sandbox::User=root"]


def fetch(pkg: Package, names: Iterable[str], cache: Path, log: Callable[[str], None]) -> list[Path]:
    """`apt-get download` each package at the profile's exact version into cache/debs (once);
    the package lists are updated (into the cache) when a download fails."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    opts = apt_options(pkg.deb_arch, cache)
    lists = cache / "apt" / f"lists-{pkg.deb_arch}"
    out = []
    for name in names:
        path = debs / pkg.deb(name)
        if not path.exists():
            spec = f"{name}:{pkg.deb_arch}={pkg.version}"
            cmd = ["apt-get", *opts, "download", spec]
            fresh = not any(lists.glob("*_Packages*"))
            if fresh or subprocess.run(cmd, cwd=debs, check=False, stderr=subprocess.DEVNULL).returncode:
                log(f"apt-get update ({pkg.deb_arch} package lists in {lists})")
                if subprocess.run(["apt-get", *opts, "update"], check=False).returncode:
                    log("apt-get update reported errors (a mirror syncing?); trying the lists it fetched")
                log(f"apt-get download {spec}")
                if subprocess.run(cmd, cwd=debs, check=False).returncode:
                    raise SystemExit(f"koconform corpus: {spec} is not in Debian 12's archive any more (it moves on; "
                                     "snapshot.debian.org keeps every version): download it there into "
                                     f"{debs} or move the profile to the current version")
        out.append(path)
    return out


def deb_fields(deb: Path) -> tuple[str, str, str]:
    """(Package, Version, Architecture) of a .deb."""
    text = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"],
                          check=True, capture_output=True, text=True).stdout
    f = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return f.get("Package", ""), f.get("Version", ""), f.get("Architecture", "")


def _members(deb: Path) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            if info.isfile() and (src := tar.extractfile(info)) is not None:
                yield info, src.read()
    if proc.wait():
        raise subprocess.CalledProcessError(proc.returncode, f"dpkg-deb --fsys-tarfile {deb}")


def unpack(deb: Path, headers: Path | None, dest: Path, log: Callable[[str], None]) -> Path:
    """The package's modules (lib/modules/*/**.ko), /boot files and the headers' Module.symvers,
    unpacked once into dest (a `complete` file marks a finished unpack)."""
    marker = dest / "complete"
    if marker.exists():
        return dest
    log(f"unpacking {deb.name} into {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    wanted = re.compile(r"^\.?/?(lib/modules/[^/]+/.*\.ko|boot/[^/]+|usr/src/linux-headers-[^/]+/Module\.symvers)$")
    for src in (deb, headers):
        if src is None:
            continue
        for info, data in _members(src):
            name = info.name.removeprefix("./")
            if not wanted.match(name):
                continue
            if name.endswith("Module.symvers"):
                name = "Module.symvers"
            path = dest / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    marker.write_text(f"{deb.name}\n{headers.name if headers else ''}\n")
    return dest


# ---- the modules ---------------------------------------------------------------------------------
@dataclass
class Module:
    path: Path
    rel: str                       # path relative to the corpus root
    name: str                      # modinfo name= (the file stem with - as _ when absent)
    depends: list[str]


def canonical(name: str) -> str:
    return name.replace("-", "_")


def modinfo(ko: bytes, arch: arches.Arch) -> dict[str, list[str]]:
    """`.modinfo` key=value pairs of a module (sections read in bulk; empty if unreadable)."""
    cls = arch.elf
    try:
        hdr = read_ehdr(ko, cls)
        shdrs = read_table(ko, int(hdr["e_shoff"]), int(hdr["e_shnum"]), cls.shdr)
        strtab = int(shdrs[int(hdr["e_shstrndx"])]["sh_offset"])
    except (ValueError, IndexError):
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    for s in shdrs:
        if cstring(ko, strtab + int(s["sh_name"])) == b".modinfo":
            off, size = int(s["sh_offset"]), int(s["sh_size"])
            for entry in ko[off:off + size].split(b"\0"):
                key, eq, value = entry.partition(b"=")
                if eq:
                    out[key.decode("latin-1")].append(value.decode("latin-1"))
            break
    return out


def discover(root: Path, arch: arches.Arch) -> list[Module]:
    mods = []
    for path in sorted(root.rglob("*.ko")):
        head = path.read_bytes()
        info = modinfo(head, arch)
        name = (info.get("name") or [canonical(path.stem)])[0]
        deps = [canonical(d) for d in ",".join(info.get("depends", [])).split(",") if d]
        mods.append(Module(path, path.relative_to(root).as_posix(), canonical(name), deps))
    return mods


def load_order(mods: list[Module]) -> tuple[list[Module], dict[str, list[str]]]:
    """Dependencies first (depth first, in path order); notes: missing dependencies, cycles."""
    by_name = {m.name: m for m in mods}
    order: list[Module] = []
    state: dict[str, int] = {}              # 1: visiting, 2: done
    notes: dict[str, list[str]] = defaultdict(list)

    def visit(m: Module) -> None:
        stack = [(m, iter(m.depends))]
        state[m.name] = 1
        while stack:
            cur, deps = stack[-1]
            for d in deps:
                dep = by_name.get(d)
                if dep is None:
                    notes[cur.name].append(f"dependency {d} is not in the corpus")
                elif state.get(d) == 1:
                    notes[cur.name].append(f"dependency cycle through {d}")
                elif d not in state:
                    state[d] = 1
                    stack.append((dep, iter(dep.depends)))
                    break
            else:
                stack.pop()
                state[cur.name] = 2
                order.append(cur)

    for m in mods:
        if m.name not in state:
            visit(m)
    return order, notes


def relocation_types(ko: bytes, arch: arches.Arch) -> tuple[int, Counter[int]]:
    """(relocation entries, entries per unknown type) over the sections the kernel relocates
    (SHT_REL/RELA whose target is SHF_ALLOC, not livepatch), read in bulk."""
    cls = arch.elf
    hdr = read_ehdr(ko, cls)
    shdrs = read_table(ko, int(hdr["e_shoff"]), int(hdr["e_shnum"]), cls.shdr)
    n, unknown = 0, Counter[int]()
    known = np.array(sorted(arch.relocations), dtype=np.uint64)
    for s in shdrs:
        if int(s["sh_type"]) not in (SHT_REL, SHT_RELA) or int(s["sh_flags"]) & SHF_RELA_LIVEPATCH:
            continue
        info = int(s["sh_info"])
        if info >= len(shdrs) or not int(shdrs[info]["sh_flags"]) & SHF_ALLOC:
            continue
        dtype = cls.rela if int(s["sh_type"]) == SHT_RELA else cls.rel
        table = read_table(ko, int(s["sh_offset"]), int(s["sh_size"]) // dtype.itemsize, dtype)
        n += len(table)
        types = cls.r_type(table["r_info"].astype(np.uint64))
        bad = types[~np.isin(types, known)]
        if len(bad):
            for t, c in zip(*np.unique(bad, return_counts=True)):
                unknown[int(t)] += int(c)
    return n, unknown


# ---- exports -------------------------------------------------------------------------------------
def prel32(arch: str) -> bool:
    """CONFIG_HAVE_ARCH_PREL32_RELOCATIONS of the profile's kernel (its /boot/config lines when the
    environment has them; x86 and arm64 select it, arm and riscv64 6.1 do not)."""
    config = profiles.HERE / "environments" / PROFILE / f"{arch}.config"
    if config.exists():
        return "CONFIG_HAVE_ARCH_PREL32_RELOCATIONS=y" in config.read_text().splitlines()
    return arch in ("x86_64", "i386", "arm64")


class Image:
    """A loaded module's memory as its result shows it: placed sections' bytes by address."""

    def __init__(self, result: Result):
        assert result.layout is not None and result.sections is not None
        self.spans = sorted((p.address, result.sections[k]) for k, p in result.layout.items()
                            if k in result.sections)
        self.starts = [a for a, _ in self.spans]

    def cstring(self, address: int) -> bytes | None:
        k = bisect.bisect_right(self.starts, address) - 1
        if k < 0:
            return None
        base, data = self.spans[k]
        if address - base >= len(data):
            return None
        return cstring(data, address - base)


def module_exports(result: Result, arch: arches.Arch, rel32: bool) -> list[KernelSymbol]:
    """The exports of a loaded module, read from its relocated __ksymtab(_gpl) and __kcrctab(_gpl)."""
    assert result.sections is not None and result.layout is not None
    image = Image(result)
    mask = arch.elf.addr_mask
    word = arch.elf.bits // 8
    out = []
    for suffix, gpl in (("", False), ("_gpl", True)):
        tab, place = result.sections.get("__ksymtab" + suffix), result.layout.get("__ksymtab" + suffix)
        if not tab or place is None:
            continue
        crcs = result.sections.get("__kcrctab" + suffix) or b""
        width = 4 if rel32 else word
        fields = np.frombuffer(tab[:len(tab) // (3 * width) * 3 * width], dtype=f"<i{width}" if rel32 else f"<u{width}")
        fields = fields.reshape(-1, 3).astype(np.int64 if rel32 else np.uint64)
        for k, (v, n, ns) in enumerate(fields.tolist()):
            at = place.address + k * 3 * width
            if rel32:
                value, name_at, ns_at = (at + v) & mask, (at + 4 + n) & mask, (at + 8 + ns) & mask if ns else 0
            else:
                value, name_at, ns_at = v, n, ns
            name = image.cstring(name_at)
            if name is None:
                continue
            namespace = (image.cstring(ns_at) or b"") if ns_at else b""
            crc = int.from_bytes(crcs[4 * k:4 * k + 4], "little") if len(crcs) >= 4 * k + 4 else None
            out.append(KernelSymbol(name.decode("latin-1"), value, crc, gpl, namespace.decode("latin-1")))
    return out


def parse_symvers(path: Path) -> dict[str, tuple[int, bool, str, str]]:
    """Module.symvers: name -> (crc, gpl, module, namespace)."""
    out = {}
    for line in path.read_text("utf-8").splitlines():
        f = line.split("\t")
        if len(f) == 5:
            out[f[1]] = (int(f[0], 16), f[3] == "EXPORT_SYMBOL_GPL", f[2], f[4])
    return out


def system_map_symbols(path: Path, symvers: dict[str, tuple[int, bool, str, str]]) -> dict[str, KernelSymbol]:
    """The kernel's exports from a System.map: every N with a __ksymtab_N entry, at N's address."""
    from koconform.tools.derive_environment import parse_system_map, resolve_address
    table = parse_system_map(path.read_text("utf-8"))
    out = {}
    for sym in table:
        if not sym.startswith("__ksymtab_"):
            continue
        name = sym.removeprefix("__ksymtab_")
        try:
            address = resolve_address(name, table)
        except ValueError:
            continue
        crc, gpl, module, ns = symvers.get(name, (None, False, "vmlinux", ""))
        out[name] = KernelSymbol(name, address, crc if module == "vmlinux" else None, gpl, ns)
    return out


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    module: str
    path: str
    status: str                    # loaded | rejected | faulted | traceback
    errno: str | None = None
    phase: str | None = None
    line: str = ""                 # first log line that is not a taint notice
    detail: str = ""
    relocations: int = 0
    exports: int = 0
    signed: bool = False           # an appended signature (the loader strips it)
    blocked_by: str | None = None  # an unknown symbol's exporter (Module.symvers), itself not loaded
    core: str | None = None
    init: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def reason(self) -> str:
        """The rejection's kind: phase, errno and the log line with names taken out."""
        line = re.sub(rf"\b{re.escape(self.module)}\b", "MOD", self.line) if self.module else self.line
        line = re.sub(r"([Ss]ymbol \(?)[^\s)]+", r"\1SYM", line)
        line = re.sub(r"(owned by )\S+", r"\1MOD", line)
        line = re.sub(r"0x[0-9a-f]+|\b\d+\b", "N", line)
        if self.status == "traceback":
            return f"traceback: {self.detail.strip().splitlines()[-1] if self.detail else ''}"
        if self.status == "faulted":
            return f"faulted in {self.phase}: {re.sub(r'0x[0-9a-f]+', 'N', self.detail)}"
        why = f"{self.phase} {self.errno}: {line or re.sub(r'0x[0-9a-f]+', 'N', self.detail)}"
        return why + (" (its exporter was not loaded)" if self.blocked_by else "")


@dataclass
class Report:
    source: str
    arch: str
    package: str
    profile: str
    environment: str
    outcomes: list[Outcome] = field(default_factory=list)
    unknown_types: dict[int, dict[str, int]] = field(default_factory=dict)   # type -> module -> entries
    restarts: int = 0
    crc_mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, Any]:
        by = Counter(o.status for o in self.outcomes)
        return {"modules": len(self.outcomes), **{s: by.get(s, 0) for s in ("loaded", "rejected", "faulted",
                                                                             "traceback")},
                "signed": sum(o.signed for o in self.outcomes),
                "relocations": sum(o.relocations for o in self.outcomes),
                "relocations_loaded": sum(o.relocations for o in self.outcomes if o.status == "loaded"),
                "unknown_relocation_types": len(self.unknown_types),
                "area_restarts": self.restarts, "crc_mismatches": len(self.crc_mismatches),
                "seconds": round(self.seconds, 3),
                "load_seconds": round(sum(o.seconds for o in self.outcomes), 3)}

    def reasons(self) -> dict[str, int]:
        c = Counter(o.reason() for o in self.outcomes if o.status != "loaded")
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def ok(self) -> bool:
        return not self.unknown_types and not any(o.status in ("faulted", "traceback") for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "arch": self.arch, "package": self.package, "profile": self.profile,
                "environment": self.environment, "totals": self.totals(), "reasons": self.reasons(),
                "unknown_relocation_types": {str(t): m for t, m in sorted(self.unknown_types.items())},
                "crc_mismatches": self.crc_mismatches,
                "modules": [{**asdict(o), "seconds": round(o.seconds, 6)} for o in self.outcomes]}

    def text(self, every: bool = False) -> str:
        t = self.totals()
        lines = [(f"{self.source}: {self.package} ({self.arch}, profile {self.profile}; kernel exports: "
                  f"{self.environment})")]
        for o in self.outcomes:
            if every or o.status != "loaded":
                what = o.status if o.status == "loaded" else f"{o.status} {o.errno or ''} {o.phase or ''}".rstrip()
                why = o.line or (o.detail.strip().splitlines() or [""])[-1]
                lines.append(f"  {what:<28} {o.path}" + (f": {why}" if o.status != "loaded" else ""))
        lines.append(f"modules {t['modules']}: loaded {t['loaded']}, rejected {t['rejected']}, "
                     f"faulted {t['faulted']}, tracebacks {t['traceback']} ({t['signed']} signed: signature "
                     "stripped by the loader)")
        lines.append(f"relocations {t['relocations']:,} ({t['relocations_loaded']:,} in loaded modules); "
                     f"unknown relocation types: {t['unknown_relocation_types']}; module area restarts: "
                     f"{self.restarts}; export CRCs differing from Module.symvers: {len(self.crc_mismatches)}")
        for rtype, mods in sorted(self.unknown_types.items()):
            lines.append(f"  unknown type {rtype}: {sum(mods.values())} entries in {len(mods)} modules, e.g. "
                         + ", ".join(sorted(mods)[:5]))
        if self.reasons():
            lines.append("rejections by reason:")
            lines += [f"  {n:>5}  {r}" for r, n in self.reasons().items()]
        rate = t["relocations"] / t["load_seconds"] if t["load_seconds"] else 0.0
        lines.append(f"time: {t['seconds']:.1f} s ({t['load_seconds']:.1f} s in the loader, "
                     f"{rate:,.0f} relocations/s)")
        return "\n".join(lines)


class Progress:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label = total, label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0

    def update(self, done: int, what: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        width = 30
        fill = width * done // max(self.total, 1)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} {what[:40]:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def span(ko: bytes, arch: arches.Arch, page: int) -> int:
    """An upper bound of what a module's core and init allocations take with their guard pages:
    every SHF_ALLOC section with its alignment, the symbol and string tables twice (the full copy
    in init, the kallsyms copy in core) and a type byte per symbol, 16 bytes per relocation (room
    for the PLT/GOT entries an arch's frob may add), and the pages the roundings and guards add."""
    cls = arch.elf
    try:
        hdr = read_ehdr(ko, cls)
        sh = read_table(ko, int(hdr["e_shoff"]), int(hdr["e_shnum"]), cls.shdr)
    except (ValueError, IndexError):
        return 16 * page
    size = sh["sh_size"].astype(np.int64)
    alloc = (sh["sh_flags"].astype(np.int64) & SHF_ALLOC) != 0
    tables = np.isin(sh["sh_type"], (SHT_SYMTAB, SHT_STRTAB))
    relocs = np.isin(sh["sh_type"], (SHT_REL, SHT_RELA))
    total = int((size + sh["sh_addralign"].astype(np.int64))[alloc].sum()) + 3 * int(size[tables].sum()) \
        + 16 * int(size[relocs].sum()) // 8 + 16 * page
    return min(total, 1 << 40)


def first_line(result: Result) -> str:
    for r in result.log:
        if not TAINT_NOTICES.search(r.text):
            return r.text
    return ""


def page_up(x: int, page: int) -> int:
    return (x + page - 1) // page * page


class Run:
    """One boot loading every module of a corpus in dependency order."""

    def __init__(self, arch: str, profile: Profile, kernel: dict[str, KernelSymbol], regions: dict[str, int],
                 symvers: dict[str, tuple[int, bool, str, str]] | None = None,
                 load: Callable[[Request], Result] = loader.load, largest: int = 1 << 26):
        self.arch = arches.get(arch)
        self.profile = profile
        self.symbols: dict[str, KernelSymbol] = dict(kernel)
        self.owner: dict[str, str] = {name: "vmlinux" for name in kernel}
        self.regions = dict(regions)
        self.base = regions["core"]
        self.end = self.arch.modules_end or (1 << self.arch.elf.bits)
        self.cursor = self.base
        self.restarts = 0
        self.symvers = symvers or {}
        self.rel32 = prel32(arch)
        self.load = load
        self.reserved = self.occupied(kernel, largest)
        # who exports what among the modules (Module.symvers' module column), and how each fared
        self.exporters = {name: canonical(row[2].rsplit("/", 1)[-1]) for name, row in self.symvers.items()}
        self.status_of: dict[str, str] = {}

    def occupied(self, kernel: dict[str, KernelSymbol], largest: int) -> list[tuple[int, int]]:
        """Address ranges no module allocation may take: the kernel's temporary copy of the file (a
        vmalloc area alive during the load: `copy` up to the largest file, and a guard page) and the
        kernel image where it lies inside the module area (the pages its exports span there)."""
        page = self.profile.page_size
        out = []
        copy = self.regions.get("copy")
        if copy is not None:
            out.append((copy // page * page, page_up(copy + largest, page) + page))
        inside = [s.address for s in kernel.values() if self.base <= s.address < self.end]
        if inside:
            out.append((min(inside) // page * page, page_up(max(inside) + 1, page)))
        return sorted(out)

    def fit(self, span: int) -> int:
        """Where the next module goes: the cursor, past any reserved range its allocations (at most
        `span` bytes) could reach; the area's start again when it would pass the end."""
        at = self.cursor
        for _ in range(len(self.reserved) + 2):
            if at + span > self.end and at != self.base:
                at = self.base
                self.restarts += 1
            hit = next(((lo, hi) for lo, hi in self.reserved if at < hi and at + span > lo), None)
            if hit is None:
                break
            at = page_up(hit[1], self.profile.page_size)
        return at

    def place(self, result: Result) -> int:
        """The next core address after a loaded module (a guard page after each allocation)."""
        page = self.profile.page_size
        assert result.regions is not None
        return max(base + page_up(size, page) + page for base, size in result.regions.values())

    def request(self, ko: bytes, name: str, core: int) -> Request:
        env = Environment(symbols=self.symbols, regions={**self.regions, "core": core})
        return Request(ko, self.arch.name, self.profile, env, name=name, run_init=False)

    def one(self, mod: Module, ko: bytes) -> Outcome:
        """Load one module (its file's bytes) where the next one goes; its outcome."""
        out = self.attempt(mod, ko)
        self.status_of[mod.name] = out.status
        return out

    def attempt(self, mod: Module, ko: bytes) -> Outcome:
        out = Outcome(mod.name, mod.rel, "traceback", signed=ko.endswith(MODULE_SIG_STRING))
        t0 = time.perf_counter()
        try:
            self.cursor = self.fit(span(ko, self.arch, self.profile.page_size))
            result = self.load(self.request(ko, mod.path.name, self.cursor))
        except Exception:                       # noqa: BLE001 - a loader bug, reported per module
            out.detail = traceback.format_exc()
            out.seconds = time.perf_counter() - t0
            return out
        out.seconds = time.perf_counter() - t0
        out.status, out.errno, out.phase, out.detail = result.status, result.errno, result.phase, result.detail
        out.line = first_line(result)
        unknown = re.search(r"Unknown symbol (\S+) \(err", out.line)
        owner = self.exporters.get(unknown.group(1)) if unknown else None
        if owner is not None and self.status_of.get(owner, "loaded") != "loaded":
            out.blocked_by = owner
            out.notes.append(f"{unknown.group(1) if unknown else ''} is exported by {owner}, which was not loaded")
        if result.status == "loaded":
            assert result.regions is not None
            out.core = hex(result.regions["core"][0])
            if "init" in result.regions:
                out.init = hex(result.regions["init"][0])
            self.cursor = self.place(result)
            self.add_exports(mod, out, result)
        return out

    def add_exports(self, mod: Module, out: Outcome, result: Result) -> None:
        """verify_exported_symbols, then the exports join the kernel's symbol table."""
        exports = module_exports(result, self.arch, self.rel32)
        for s in exports:
            if s.name in self.symbols:
                owner = self.owner[s.name]
                out.status, out.errno, out.phase = "rejected", "ENOEXEC", "formation"
                out.line = f"{mod.name}: exports duplicate symbol {s.name} (owned by {owner})"
                out.detail = "verify_exported_symbols (complete_formation): " + out.line
                return
        for s in exports:
            self.symbols[s.name] = s
            self.owner[s.name] = mod.name
            known = self.symvers.get(s.name)
            if known is not None and (known[0] != s.crc or known[1] != s.gpl_only or known[3] != s.namespace):
                out.notes.append(f"{s.name}: Module.symvers says crc {known[0]:#010x} gpl {known[1]} "
                                 f"namespace {known[3]!r}")
        out.exports = len(exports)


def run_corpus(root: Path, arch: str, kernel: dict[str, KernelSymbol], source: str, package: str,
               environment: str, symvers: dict[str, tuple[int, bool, str, str]] | None = None,
               progress: bool | None = None, only: set[str] | None = None,
               profile_overrides: dict[str, Any] | None = None) -> Report:
    """Every .ko under root, in dependency order, through the reference."""
    t0 = time.perf_counter()
    prof = profiles.load_profile(PROFILE, arch, profile_overrides)
    regions = {k: v for k, v in profiles.default_environment(PROFILE, arch).regions.items()}
    the_arch = arches.get(arch)
    mods = discover(root, the_arch)
    order, notes = load_order(mods)
    if only:        # those modules and what they depend on
        by_name = {m.name: m for m in mods}
        keep: set[str] = set()
        todo = [m.name for m in mods if m.name in only or m.rel in only or canonical(m.path.stem) in only]
        while todo:
            name = todo.pop()
            if name not in keep and name in by_name:
                keep.add(name)
                todo += by_name[name].depends
        order = [m for m in order if m.name in keep]
    run = Run(arch, prof, kernel, regions, symvers, largest=max((m.path.stat().st_size for m in order), default=0))
    report = Report(source, arch, package, PROFILE, environment)
    bar = Progress(len(order), arch, progress)
    unknown: dict[int, dict[str, int]] = defaultdict(dict)
    for k, mod in enumerate(order):
        bar.update(k, mod.name)
        ko = mod.path.read_bytes()
        out = run.one(mod, ko)
        out.notes = notes.get(mod.name, []) + out.notes
        try:
            out.relocations, bad = relocation_types(ko, the_arch)
        except (ValueError, IndexError) as e:
            out.notes.append(f"relocation scan: {e}")
            bad = Counter()
        for t, c in bad.items():
            unknown[t][mod.rel] = c
        report.crc_mismatches += [f"{mod.name}: {n}" for n in out.notes if "Module.symvers says" in n]
        report.outcomes.append(out)
    bar.update(len(order), "")
    bar.close()
    report.unknown_types = dict(unknown)
    report.restarts = run.restarts
    report.seconds = time.perf_counter() - t0
    return report


def from_package(pkg_deb: Path, headers_deb: Path | None, cache: Path, log: Callable[[str], None],
                 **kw: Any) -> Report:
    name, version, deb_arch = deb_fields(pkg_deb)
    arch = next((a for a, d in DEB_ARCH.items() if d == deb_arch), None)
    if arch is None:
        raise SystemExit(f"koconform corpus: {pkg_deb}: no profile arch for Debian architecture {deb_arch}")
    pkg = Package.of_profile(arch)
    if (name, version) != (pkg.name, pkg.version):
        raise SystemExit(f"koconform corpus: {pkg_deb} is {name} {version}; profile {PROFILE}/{arch} is "
                         f"{pkg.name} {pkg.version}, whose default environment holds that kernel's exports "
                         "(for another kernel: unpack it and give the directory with its -dbg System.map)")
    if headers_deb is None:
        candidate = pkg_deb.parent / pkg.deb(pkg.headers)
        headers_deb = candidate if candidate.exists() else None
    root = unpack(pkg_deb, headers_deb, cache / "corpus" / f"{pkg.name}_{pkg.version}_{deb_arch}", log)
    symvers_path = root / "Module.symvers"
    symvers = parse_symvers(symvers_path) if symvers_path.exists() else {}
    env = profiles.default_environment(PROFILE, arch)
    doc = profiles.arch_doc(PROFILE, arch)
    return run_corpus(root / "lib" / "modules" / pkg.release, arch, env.symbols, str(pkg_deb),
                      f"{pkg.name} {pkg.version} {deb_arch}", f"conformance/{doc['environment']}",
                      {k: v for k, v in symvers.items() if v[2] != "vmlinux"}, **kw)


def from_directory(root: Path, arch: str | None, **kw: Any) -> Report:
    kos = sorted(root.rglob("*.ko"))
    if not kos:
        raise SystemExit(f"koconform corpus: no .ko under {root}")
    if arch is None:
        head = kos[0].read_bytes()[:64]
        arch = E_MACHINE.get(int.from_bytes(head[18:20], "little"))
        if arch == "x86_64" and head[4] == 1:
            arch = "i386"
        if arch is None:
            raise SystemExit(f"koconform corpus: {kos[0]}: unknown e_machine; give --arch")
    maps = sorted(root.rglob("System.map*"))
    if not maps:
        raise SystemExit(f"koconform corpus: {root} has no System.map (the kernel's exports)")
    symvers_path = next(iter(sorted(root.rglob("Module.symvers"))), None)
    symvers = parse_symvers(symvers_path) if symvers_path else {}
    kernel = system_map_symbols(maps[0], symvers)
    return run_corpus(root, arch, kernel, str(root), "directory", f"{maps[0].name} ({len(kernel)} exports)",
                      {k: v for k, v in symvers.items() if v[2] != "vmlinux"}, **kw)


def from_arch(arch: str, cache: Path, log: Callable[[str], None], **kw: Any) -> Report:
    pkg = Package.of_profile(arch)
    image, headers = fetch(pkg, (pkg.name, pkg.headers), cache, log)
    return from_package(image, headers, cache, log, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="koconform corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help="an arch (fetch its profile's package), a linux-image .deb, "
                                                "or a directory of .ko files with a System.map")
    ap.add_argument("--arch", choices=sorted(arches.ARCHES), help="for a directory (default: from the first .ko)")
    ap.add_argument("--headers", type=Path, help="for a .deb: its linux-headers .deb (Module.symvers; default: "
                                                  "the one beside it, if any)")
    ap.add_argument("--cache", type=Path, default=None, help=f"download/unpack cache (default: {cache_dir()})")
    ap.add_argument("--json", type=Path, help="write the reports as JSON to this file ('-': stdout)")
    ap.add_argument("--only", action="append", help="only this module (name or path; repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every module, not only the ones not loaded")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    cache = args.cache or cache_dir()

    def log(msg: str) -> None:
        print(f"koconform corpus: {msg}", file=sys.stderr)

    kw: dict[str, Any] = {"progress": False if args.no_progress else None,
                          "only": set(args.only) if args.only else None}
    reports = []
    for target in args.targets:
        path = Path(target)
        if path.is_dir():
            report = from_directory(path, args.arch, **kw)
        elif path.suffix == ".deb" and path.exists():
            report = from_package(path, args.headers, cache, log, **kw)
        elif target in DEB_ARCH:
            report = from_arch(target, cache, log, **kw)
        else:
            ap.error(f"{target}: not a directory, a .deb, or one of {', '.join(DEB_ARCH)}")
        reports.append(report)
        print(report.text(args.verbose), flush=True)
    if args.json:
        doc = json.dumps({"corpora": [r.to_json() for r in reports]}, indent=1)
        if str(args.json) == "-":
            print(doc)
        else:
            args.json.write_text(doc + "\n")
    if len(reports) > 1:
        print("\n".join(f"{r.arch:<8} {r.package}: " + ", ".join(f"{k} {v}" for k, v in r.totals().items()
                                                                  if k in ("modules", "loaded", "rejected",
                                                                           "faulted", "traceback",
                                                                           "unknown_relocation_types"))
                        for r in reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
