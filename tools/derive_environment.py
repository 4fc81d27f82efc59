"""Derive a profile's kernel-symbol environment and kernel format strings from Debian packages.

Writes OUT/ARCH.tsv (every symbol vmlinux exports: System.map link address, Module.symvers
CRC/licence/namespace, cross-checked against vmlinux's __ksymtab/__kcrctab) and
OUT/ARCH.kernel-strings.txt (vmlinux .rodata strings related to module loading). The output
is byte-reproducible: it records package versions and input sha256s, never a date.
"""
from __future__ import annotations

import argparse
import hashlib
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section

DEB_ARCH = {"x86_64": "amd64"}
DEFAULT_CACHE = Path.home() / ".cache" / "koconform" / "debs"
TSV_HEADER = "#name\taddress\tcrc\tgpl\tnamespace"
EXPORT_TYPES = {"EXPORT_SYMBOL": False, "EXPORT_SYMBOL_GPL": True}
KEYWORDS = (
    "ELF", "module", "Module", "symbol", "relocation", "taint", "version", "Unknown",
    "overflow", "mcmodel", "retpoline", "spectre v2", "suspiciously", "loading module anyway",
    "WRITE|EXEC", "percpu", "per-cpu", "Disabling lock debugging", "PKCS#7", "is rejected",
    "stripped", "kernel tainted", "please compile", "section name table", "Symbol",
)
# str.translate table for render_string; U+DC80..U+DCFF are undecodable bytes (surrogateescape)
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {ord("\\"): "\\\\", ord("\n"): "\\n"}
ESCAPES |= {0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}


@dataclass(frozen=True)
class Export:
    """One exported vmlinux symbol as the TSV describes it (address filled in by merge)."""
    name: str
    crc: int
    gpl: bool
    namespace: str
    address: int = 0


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


def format_tsv(rows: list[Export], provenance: list[str]) -> str:
    """The committed TSV: provenance comments, the header line, one row per export."""
    lines = [f"# {p}" for p in provenance] + [TSV_HEADER]
    for r in rows:
        lines.append(f"{r.name}\t0x{r.address:016x}\t0x{r.crc:08x}\t{int(r.gpl)}\t{r.namespace}")
    return "\n".join(lines) + "\n"


def _cstring(blob: bytes, offset: int) -> str:
    return blob[offset:blob.index(b"\0", offset)].decode()


def decode_ksymtab(tab: bytes, tab_addr: int, crcs: bytes, strs: bytes, strs_addr: int,
                   gpl: bool) -> dict[str, Export]:
    """Decode a PREL32 __ksymtab{,_gpl} (value, name, namespace offsets) plus its __kcrctab."""
    count = len(tab) // 12
    if len(tab) % 12 or len(crcs) != 4 * count:
        raise ValueError(f"ksymtab of {len(tab)} bytes does not match kcrctab of {len(crcs)}")
    found: dict[str, Export] = {}
    for i in range(count):
        where = tab_addr + 12 * i
        value, name_off, ns_off = struct.unpack_from("<iii", tab, 12 * i)
        name = _cstring(strs, where + 4 + name_off - strs_addr)
        ns = _cstring(strs, where + 8 + ns_off - strs_addr) if ns_off else ""
        crc = struct.unpack_from("<I", crcs, 4 * i)[0]
        found[name] = Export(name, crc, gpl, ns, (where + value) % (1 << 64))
    return found


def section(elf: ELFFile, name: str) -> Section:
    if (found := elf.get_section_by_name(name)) is None:
        raise ValueError(f"vmlinux has no {name} section")
    return found


def read_ksymtab(vmlinux: Path) -> dict[str, Export]:
    """Every export recorded in the vmlinux ELF itself."""
    with vmlinux.open("rb") as f:
        elf = ELFFile(f)
        strs = section(elf, "__ksymtab_strings")
        found: dict[str, Export] = {}
        for suffix, gpl in (("", False), ("_gpl", True)):
            tab, crcs = section(elf, f"__ksymtab{suffix}"), section(elf, f"__kcrctab{suffix}")
            found |= decode_ksymtab(tab.data(), tab["sh_addr"], crcs.data(), strs.data(),
                                    strs["sh_addr"], gpl)
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


def select_strings(rodata: bytes) -> list[str]:
    """Sorted, deduplicated renderings of the NUL-terminated strings matching KEYWORDS."""
    needles = [k.encode() for k in KEYWORDS]
    chosen = {render_string(s) for s in rodata.split(b"\0") if any(n in s for n in needles)}
    return sorted(chosen)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def obtain_deb(debs: Path, package: str, version: str, arch: str, fetch: bool) -> Path:
    """Path of package_version_arch.deb in debs, running `apt-get download` if allowed."""
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
    p.add_argument("--arch", required=True, choices=sorted(DEB_ARCH), help="kernel architecture")
    p.add_argument("--kernel", required=True, help="Debian kernel ABI name, e.g. 6.1.0-56-amd64")
    p.add_argument("--version", required=True, help="Debian package version, e.g. 6.1.192-2")
    p.add_argument("--debs", type=Path, help="directory already holding the linux-image-KERNEL-dbg "
                   "and linux-headers-KERNEL .debs (default: `apt-get download` them into "
                   f"{DEFAULT_CACHE})")
    p.add_argument("--out", type=Path, help="output directory "
                   "(default: conformance/environments/linux-MAJOR.MINOR of this checkout)")
    return p.parse_args(argv)


def deb_members(kernel: str) -> tuple[str, str, str]:
    """Paths of System.map, vmlinux (in -dbg) and Module.symvers (in headers) inside the debs."""
    boot = "./usr/lib/debug/boot"
    return (f"{boot}/System.map-{kernel}", f"{boot}/vmlinux-{kernel}",
            f"./usr/src/linux-headers-{kernel}/Module.symvers")


def derive(image: Path, headers: Path,
           kernel: str) -> tuple[list[Export], list[str], dict[str, str]]:
    """Extract the inputs; return (TSV rows, kernel strings, member -> sha256)."""
    m_map, m_vmlinux, m_symvers = deb_members(kernel)
    with tempfile.TemporaryDirectory(prefix="koconform-env-") as tmp:
        files = {m: Path(tmp) / Path(m).name for m in (m_map, m_vmlinux, m_symvers)}
        sha = extract(image, {m: files[m] for m in (m_map, m_vmlinux)})
        sha |= extract(headers, {m_symvers: files[m_symvers]})
        exports = parse_module_symvers(files[m_symvers].read_text("utf-8"))
        rows = merge(exports, parse_system_map(files[m_map].read_text("utf-8")))
        cross_check(rows, read_ksymtab(files[m_vmlinux]))
        with files[m_vmlinux].open("rb") as f:
            strings = select_strings(section(ELFFile(f), ".rodata").data())
    return rows, strings, sha


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    arch, kernel, version, deb_arch = args.arch, args.kernel, args.version, DEB_ARCH[args.arch]
    profile = "linux-" + ".".join(kernel.split(".")[:2])
    out = args.out or Path(__file__).resolve().parents[1] / "conformance" / "environments" / profile
    pkgs = (f"linux-image-{kernel}-dbg", f"linux-headers-{kernel}")
    debs = [obtain_deb(args.debs or DEFAULT_CACHE, p, version, deb_arch, args.debs is None)
            for p in pkgs]
    rows, strings, sha = derive(debs[0], debs[1], kernel)
    m_map, m_vmlinux, m_symvers = deb_members(kernel)
    head = [f"koconform derive_environment: profile {profile}, arch {arch}, kernel {kernel}"]
    head += [f"package {p} {version} {deb_arch} sha256 {sha256_file(d)}"
             for p, d in zip(pkgs, debs, strict=True)]
    src = {m: f"input {pkgs[1] if m == m_symvers else pkgs[0]}:{m} sha256 {sha[m]}" for m in sha}
    tsv = format_tsv(rows, head + [
        src[m_map], src[m_symvers], src[m_vmlinux] + " (cross-check: __ksymtab*, __kcrctab*)",
        ("rows: Module.symvers exports of module vmlinux; address: System.map nokaslr link "
         "address (per-cpu variables: offset in .data..percpu)")])
    txt = "".join(f"# {h}\n" for h in head + [
        src[m_vmlinux] + " section .rodata",
        "NUL-terminated strings containing any of: " + " ".join(f'"{k}"' for k in KEYWORDS),
        "leading SOH+digit shown as <N>; escapes \\\\ \\n \\xNN; a leading '#' is written \\x23"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{arch}.tsv").write_text(tsv, encoding="utf-8", newline="\n")
    (out / f"{arch}.kernel-strings.txt").write_text(
        txt + "".join(f"{s}\n" for s in strings), encoding="utf-8", newline="\n")
    print(f"{out}: {len(rows)} symbols, {len(strings)} kernel strings")


if __name__ == "__main__":
    main()
