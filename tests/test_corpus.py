"""koconform corpus on a directory of hand-built modules (tests/elfbuild.py), no Debian package needed.

Two x86_64 modules: `kocexp` exports kocexp_value (EXPORT_SYMBOL, a .data object) and kocexp_fn
(EXPORT_SYMBOL_GPL, in namespace KOCNS, a .text function), as 6.1 kbuild lays exports out:
`__ksymtab`/`__ksymtab_gpl` entries of three place-relative s32 fields {value, name, namespace}
(R_X86_64_PC32 against the symbol and against the strings in `__ksymtab_strings`), CRCs in
`__kcrctab`/`__kcrctab_gpl`. `kocuse` depends on it (`depends=kocexp`, `import_ns=KOCNS`),
holds an R_X86_64_64 against kocexp_value and an R_X86_64_PLT32 against kocexp_fn and _printk
(a kernel export from the System.map written beside them), and a `__versions` table with the
CRCs. Files are named so that path order would load the user first.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from elfbuild import (
    R_X86_64_64,
    R_X86_64_PC32,
    R_X86_64_PLT32,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    STB_LOCAL,
    STT_FUNC,
    STT_OBJECT,
    Module,
    Rela,
    Section,
    Symbol,
    build,
)
from koconform.conformance import corpus
from koconform.conformance.model import Environment, Request, Result
from koconform.conformance.profiles import default_environment, load_profile
from koconform.reference import loader

PROFILE = load_profile("linux-6.1", "x86_64")
CORE = 0xFFFFFFFFC0000000            # the profile's core region (MODULES_VADDR, nokaslr)
PAGE = 0x1000
PRINTK = 0xFFFFFFFF81A07EF0
CRC_VALUE, CRC_FN = 0x1234ABCD, 0x0BADF00D
AX, A, WA = SHF_ALLOC | SHF_EXECINSTR, SHF_ALLOC, SHF_ALLOC | SHF_WRITE
SIG_MARKER = b"~Module signature appended~\n"


def _modinfo(name: str, **more: str) -> dict[str, str]:
    return {"name": name, "vermagic": PROFILE.vermagic, "license": "GPL", "intree": "Y", "retpoline": "Y", **more}


def exporter(name: str = "kocexp", exports: tuple[str, str] = ("kocexp_value", "kocexp_fn")) -> bytes:
    value, fn = exports
    strings = f"{value}\0{fn}\0KOCNS\0".encode()      # the last NUL doubles as the empty namespace
    s_value, s_fn, s_ns = 0, len(value) + 1, len(value) + len(fn) + 2
    s_empty = len(strings) - 1
    m = Module(
        name=name,
        sections=[Section(".text", AX, bytes(16), align=16),
                  Section(".data", WA, (0x55).to_bytes(8, "little"), align=8),
                  Section("__ksymtab", A, bytes(12), align=4),
                  Section("__ksymtab_gpl", A, bytes(12), align=4),
                  Section("__kcrctab", A, struct.pack("<I", CRC_VALUE), align=4),
                  Section("__kcrctab_gpl", A, struct.pack("<I", CRC_FN), align=4),
                  Section("__ksymtab_strings", A, strings)],
        symbols=[Symbol("__kstrtab_value", "__ksymtab_strings", s_value, bind=STB_LOCAL),
                 Symbol("__kstrtab_fn", "__ksymtab_strings", s_fn, bind=STB_LOCAL),
                 Symbol("__kstrtabns_fn", "__ksymtab_strings", s_ns, bind=STB_LOCAL),
                 Symbol("__kstrtabns_none", "__ksymtab_strings", s_empty, bind=STB_LOCAL),
                 Symbol(value, ".data", 0, kind=STT_OBJECT, size=8),
                 Symbol(fn, ".text", 4, kind=STT_FUNC, size=12)],
        relocs={"__ksymtab": [Rela(0, value, R_X86_64_PC32), Rela(4, "__kstrtab_value", R_X86_64_PC32),
                              Rela(8, "__kstrtabns_none", R_X86_64_PC32)],
                "__ksymtab_gpl": [Rela(0, fn, R_X86_64_PC32), Rela(4, "__kstrtab_fn", R_X86_64_PC32),
                                  Rela(8, "__kstrtabns_fn", R_X86_64_PC32)]},
        modinfo=_modinfo(name))
    return build(m).ko()


def _versions(*entries: tuple[str, int]) -> bytes:
    """struct modversion_info {unsigned long crc; char name[56];} per entry."""
    return b"".join(struct.pack("<Q", crc) + name.encode().ljust(56, b"\0") for name, crc in entries)


def user(crc_value: int = CRC_VALUE, import_ns: bool = True, depends: str = "kocexp") -> bytes:
    extra = {"depends": depends, **({"import_ns": "KOCNS"} if import_ns else {})}
    m = Module(
        name="kocuse",
        sections=[Section(".text", AX, bytes(32), align=16),
                  Section("__versions", A, _versions(("kocexp_value", crc_value), ("kocexp_fn", CRC_FN)),
                          align=32)],
        symbols=[Symbol("kocexp_value"), Symbol("kocexp_fn"), Symbol("_printk")],
        relocs={".text": [Rela(0, "kocexp_value", R_X86_64_64), Rela(9, "kocexp_fn", R_X86_64_PLT32, -4),
                          Rela(14, "_printk", R_X86_64_PLT32, -4)]},
        modinfo=_modinfo("kocuse", **extra))
    return build(m).ko()


def signed(ko: bytes, sig: bytes = b"\x30" * 40) -> bytes:
    """An appended PKCS#7 signature (struct module_signature: id_type 2, sig_len big-endian)."""
    return ko + sig + bytes([0, 0, 2, 0, 0, 0, 0, 0]) + struct.pack(">I", len(sig)) + SIG_MARKER


SYSTEM_MAP = f"""\
ffffffff81000000 T _text
{PRINTK:016x} T _printk
ffffffff82a1b2c4 r __ksymtab__printk
ffffffff81a08000 T not_exported
ffffffff81a09000 t static_helper
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a_user/kocuse.ko sorts before b_lib/kocexp.ko: only the dependency puts kocexp first."""
    (tmp_path / "a_user").mkdir()
    (tmp_path / "b_lib").mkdir()
    (tmp_path / "a_user" / "kocuse.ko").write_bytes(user())
    (tmp_path / "b_lib" / "kocexp.ko").write_bytes(signed(exporter()))
    (tmp_path / "System.map").write_text(SYSTEM_MAP)
    return tmp_path


def run_tree(root: Path) -> tuple[corpus.Report, dict[str, Result]]:
    """The corpus run of a directory, with every result the loader gave (by module file name)."""
    results: dict[str, Result] = {}

    def load(request: Request) -> Result:
        results[request.name] = loader.load(request)
        return results[request.name]
    kernel = corpus.system_map_symbols(root / "System.map", {})
    the_arch = corpus.arches.get("x86_64")
    order, _ = corpus.load_order(corpus.discover(root, the_arch))
    run = corpus.Run("x86_64", PROFILE, kernel, default_environment("linux-6.1", "x86_64").regions, load=load)
    report = corpus.Report(str(root), "x86_64", "directory", "linux-6.1", "System.map")
    report.outcomes = [run.one(m, m.path.read_bytes()) for m in order]
    return report, results


# ---- the kernel's exports from a System.map -------------------------------------------------------
def test_system_map_exports_are_the_names_with_a_ksymtab_entry(tree: Path) -> None:
    kernel = corpus.system_map_symbols(tree / "System.map", {})
    assert set(kernel) == {"_printk"}                  # not_exported, static_helper: no __ksymtab_ entry
    assert kernel["_printk"].address == PRINTK
    assert kernel["_printk"].crc is None and not kernel["_printk"].gpl_only and kernel["_printk"].namespace == ""


def test_system_map_with_module_symvers_gives_crc_licence_namespace(tree: Path) -> None:
    symvers = {"_printk": (0xDEADBEEF, True, "vmlinux", "NS")}
    s = corpus.system_map_symbols(tree / "System.map", symvers)["_printk"]
    assert (s.crc, s.gpl_only, s.namespace) == (0xDEADBEEF, True, "NS")


# ---- dependency order ----------------------------------------------------------------------------
def test_dependencies_load_first(tree: Path) -> None:
    mods = corpus.discover(tree, corpus.arches.get("x86_64"))
    assert [m.name for m in mods] == ["kocuse", "kocexp"]          # path order
    assert mods[0].depends == ["kocexp"]
    order, notes = corpus.load_order(mods)
    assert [m.name for m in order] == ["kocexp", "kocuse"]
    assert notes == {}


def test_depends_names_use_dashes_for_underscores_and_missing_ones_are_noted(tmp_path: Path) -> None:
    # modpost writes depends= with the file's name (i2c-algo-bit) for the module named i2c_algo_bit
    (tmp_path / "i2c-algo-bit.ko").write_bytes(exporter("i2c_algo_bit"))
    (tmp_path / "a.ko").write_bytes(user(depends="i2c-algo-bit,not-here"))
    order, notes = corpus.load_order(corpus.discover(tmp_path, corpus.arches.get("x86_64")))
    assert [m.name for m in order] == ["i2c_algo_bit", "kocuse"]
    assert notes == {"kocuse": ["dependency not_here is not in the corpus"]}


# ---- exports, resolution, placement, signatures --------------------------------------------------
def test_module_exports_are_read_from_the_relocated_ksymtab(tree: Path) -> None:
    report, results = run_tree(tree)
    exp = results["kocexp.ko"]
    assert exp.status == "loaded" and exp.layout is not None
    exports = {s.name: s for s in corpus.module_exports(exp, corpus.arches.get("x86_64"), True)}
    value, fn = exports["kocexp_value"], exports["kocexp_fn"]
    # value = &entry.value_offset + value_offset = the symbol's placed address
    assert value.address == exp.layout[".data"].address
    assert fn.address == exp.layout[".text"].address + 4
    assert (value.crc, value.gpl_only, value.namespace) == (CRC_VALUE, False, "")
    assert (fn.crc, fn.gpl_only, fn.namespace) == (CRC_FN, True, "KOCNS")
    assert [o.exports for o in report.outcomes] == [2, 0]


def test_a_dependent_resolves_against_the_exports(tree: Path) -> None:
    report, results = run_tree(tree)
    assert [(o.module, o.status) for o in report.outcomes] == [("kocexp", "loaded"), ("kocuse", "loaded")]
    exp, use = results["kocexp.ko"], results["kocuse.ko"]
    assert exp.layout is not None and use.layout is not None and use.sections is not None
    value_at = exp.layout[".data"].address
    fn_at = exp.layout[".text"].address + 4
    assert use.symbols == {"_printk": PRINTK, "kocexp_fn": fn_at, "kocexp_value": value_at}
    text, p = use.sections[".text"], use.layout[".text"].address
    assert text[0:8] == value_at.to_bytes(8, "little")                            # R_X86_64_64: S + A
    assert text[9:13] == ((fn_at - 4 - (p + 9)) & 0xFFFFFFFF).to_bytes(4, "little")      # PLT32: S + A - P
    assert text[14:18] == ((PRINTK - 4 - (p + 14)) & 0xFFFFFFFF).to_bytes(4, "little")


def test_modules_are_placed_one_after_another(tree: Path) -> None:
    """core at the region base; init one guard page after the core's pages; the next core one guard
    page after the previous init's pages."""
    _, results = run_tree(tree)
    exp, use = results["kocexp.ko"].regions, results["kocuse.ko"].regions
    assert exp is not None and use is not None

    def pages(size: int) -> int:
        return (size + PAGE - 1) // PAGE * PAGE
    assert exp["core"][0] == CORE
    assert exp["init"][0] == CORE + pages(exp["core"][1]) + PAGE
    assert use["core"][0] == exp["init"][0] + pages(exp["init"][1]) + PAGE
    assert use["init"][0] == use["core"][0] + pages(use["core"][1]) + PAGE


def test_area_starts_over_when_full(tree: Path) -> None:
    kernel = corpus.system_map_symbols(tree / "System.map", {})
    run = corpus.Run("x86_64", PROFILE, kernel, default_environment("linux-6.1", "x86_64").regions)
    order, _ = corpus.load_order(corpus.discover(tree, corpus.arches.get("x86_64")))
    user_ko = order[1].path.read_bytes()
    # room for the second module's bound only from the start of the area
    run.end = CORE + corpus.span(user_ko, corpus.arches.get("x86_64"), PAGE) + PAGE
    out = [run.one(m, m.path.read_bytes()) for m in order]
    assert [o.status for o in out] == ["loaded", "loaded"]
    assert [o.core for o in out] == [hex(CORE), hex(CORE)]
    assert run.restarts == 1


def test_allocations_skip_the_copy_of_the_file(tree: Path) -> None:
    """The profile's copy region inside the module area is taken while the kernel loads: a module
    that could reach it goes after it (and its guard page)."""
    kernel = corpus.system_map_symbols(tree / "System.map", {})
    regions = {**default_environment("linux-6.1", "x86_64").regions, "copy": CORE + 0x4000}
    largest = 0x2345
    run = corpus.Run("x86_64", PROFILE, kernel, regions, largest=largest)
    assert run.reserved == [(CORE + 0x4000, CORE + 0x4000 + 0x3000 + PAGE)]
    order, _ = corpus.load_order(corpus.discover(tree, corpus.arches.get("x86_64")))
    first = run.one(order[0], order[0].path.read_bytes())
    assert first.status == "loaded" and first.core == hex(CORE + 0x8000)


def test_kernel_image_inside_the_module_area_is_reserved(tree: Path) -> None:
    kernel = dict(corpus.system_map_symbols(tree / "System.map", {}))
    kernel["in_area"] = corpus.KernelSymbol("in_area", CORE + 0x1234)
    kernel["in_area2"] = corpus.KernelSymbol("in_area2", CORE + 0x5000)
    run = corpus.Run("x86_64", PROFILE, kernel, default_environment("linux-6.1", "x86_64").regions)
    assert (CORE + 0x1000, CORE + 0x6000) in run.reserved


def test_signature_is_stripped_by_the_loader(tree: Path) -> None:
    env = Environment(corpus.system_map_symbols(tree / "System.map", {}),
                      default_environment("linux-6.1", "x86_64").regions)
    plain = loader.load(Request(exporter(), "x86_64", PROFILE, env, run_init=False))
    _, results = run_tree(tree)
    assert results["kocexp.ko"].to_json() == plain.to_json()       # same module, signed: same answer


def test_a_signature_claiming_the_section_headers_is_cut_with_them(tmp_path: Path) -> None:
    # sig_len covers the whole ELF: stripping it leaves no section headers: rejected in check.
    ko = exporter()
    (tmp_path / "kocexp.ko").write_bytes(ko + bytes([0, 0, 2, 0, 0, 0, 0, 0]) + struct.pack(">I", len(ko) - 100)
                                         + SIG_MARKER)
    (tmp_path / "System.map").write_text(SYSTEM_MAP)
    report, _ = run_tree(tmp_path)
    (o,) = report.outcomes
    assert (o.status, o.errno, o.phase) == ("rejected", "ENOEXEC", "check")


# ---- rejections the kernel would give -------------------------------------------------------------
def test_wrong_crc_is_rejected_in_resolve(tree: Path) -> None:
    (tree / "a_user" / "kocuse.ko").write_bytes(user(crc_value=CRC_VALUE ^ 1))
    report, _ = run_tree(tree)
    o = report.outcomes[1]
    assert (o.status, o.errno, o.phase) == ("rejected", "EINVAL", "resolve")
    assert o.line == "kocuse: disagrees about version of symbol kocexp_value"


def test_namespace_not_imported_is_rejected(tree: Path) -> None:
    (tree / "a_user" / "kocuse.ko").write_bytes(user(import_ns=False))
    report, _ = run_tree(tree)
    o = report.outcomes[1]
    assert (o.status, o.errno, o.phase) == ("rejected", "EINVAL", "resolve")
    assert o.line == "kocuse: module uses symbol (kocexp_fn) from namespace KOCNS, but does not import it."
    assert o.reason() == "resolve EINVAL: MOD: module uses symbol (SYM) from namespace KOCNS, but does not import it."


def test_duplicate_export_is_refused_after_relocation(tree: Path) -> None:
    (tree / "b_lib" / "kocdup.ko").write_bytes(exporter("kocdup", ("kocexp_value", "kocdup_fn")))
    report, _ = run_tree(tree)
    dup = next(o for o in report.outcomes if o.module == "kocdup")
    assert (dup.status, dup.errno, dup.phase) == ("rejected", "ENOEXEC", "formation")
    assert dup.line == "kocdup: exports duplicate symbol kocexp_value (owned by kocexp)"


def test_unknown_relocation_types_are_counted(tmp_path: Path) -> None:
    m = Module(name="kocbad", sections=[Section(".text", AX, bytes(16), align=16)],
               symbols=[Symbol("f", ".text", 0, kind=STT_FUNC)],
               relocs={".text": [Rela(0, "f", 99), Rela(8, "f", 99), Rela(4, "f", R_X86_64_PC32)]},
               modinfo=_modinfo("kocbad"))
    (tmp_path / "kocbad.ko").write_bytes(build(m).ko())
    n, unknown = corpus.relocation_types((tmp_path / "kocbad.ko").read_bytes(), corpus.arches.get("x86_64"))
    assert (n, dict(unknown)) == (3, {99: 2})


# ---- the whole command: text and JSON ------------------------------------------------------------
def test_command_writes_text_and_json(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = corpus.main([str(tree), "--json", str(out), "--no-progress", "-v"])
    assert code == 0
    text = capsys.readouterr().out
    assert "modules 2: loaded 2, rejected 0, faulted 0, tracebacks 0" in text
    assert "unknown relocation types: 0" in text
    doc = json.loads(out.read_text())
    (rep,) = doc["corpora"]
    assert rep["arch"] == "x86_64" and rep["package"] == "directory"
    assert rep["totals"]["modules"] == 2 and rep["totals"]["loaded"] == 2 and rep["totals"]["relocations"] == 9
    assert rep["unknown_relocation_types"] == {} and rep["reasons"] == {}
    mods = {m["module"]: m for m in rep["modules"]}
    assert mods["kocexp"]["path"] == "b_lib/kocexp.ko" and mods["kocexp"]["exports"] == 2
    assert mods["kocexp"]["signed"] is True and mods["kocuse"]["signed"] is False
    assert [m["module"] for m in rep["modules"]] == ["kocexp", "kocuse"]
    assert mods["kocexp"]["core"] == hex(CORE)


def test_command_exit_status_reports_unknown_types(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = Module(name="kocbad", sections=[Section(".text", AX, bytes(16), align=16)],
               symbols=[Symbol("f", ".text", 0, kind=STT_FUNC)],
               relocs={".text": [Rela(0, "f", 99)]}, modinfo=_modinfo("kocbad"))
    (tree / "kocbad.ko").write_bytes(build(m).ko())
    assert corpus.main([str(tree), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "unknown type 99: 1 entries in 1 modules, e.g. kocbad.ko" in text
    assert "relocate ENOEXEC: module: MOD: Unknown rela relocation: N" in text


def test_a_module_whose_exporter_was_rejected_is_counted_as_such(tree: Path, tmp_path: Path) -> None:
    (tree / "b_lib" / "kocexp.ko").write_bytes(build(Module(
        name="kocexp", sections=[Section(".text", AX, bytes(16), align=16)],
        modinfo={**_modinfo("kocexp"), "vermagic": "5.10.0 SMP mod_unload "})).ko())
    (tree / "Module.symvers").write_text(f"0x{CRC_VALUE:08x}\tkocexp_value\tb_lib/kocexp\tEXPORT_SYMBOL\t\n"
                                         f"0x{CRC_FN:08x}\tkocexp_fn\tb_lib/kocexp\tEXPORT_SYMBOL_GPL\tKOCNS\n")
    out = tmp_path / "r.json"
    assert corpus.main([str(tree), "--json", str(out), "--no-progress"]) == 0
    (rep,) = json.loads(out.read_text())["corpora"]
    mods = {m["module"]: m for m in rep["modules"]}
    assert (mods["kocexp"]["status"], mods["kocexp"]["errno"], mods["kocexp"]["phase"]) == ("rejected", "ENOEXEC",
                                                                                         "layout")
    assert mods["kocuse"]["blocked_by"] == "kocexp"
    assert rep["reasons"] == {
        # numbers are taken out of a reason, so that one reason groups every module it applies to
        "layout ENOEXEC: MOD: version magic 'N.N.N SMP mod_unload ' should be "
        "'N.N.N-N-amd64 SMP preempt mod_unload modversions '": 1,
        "resolve ENOENT: MOD: Unknown symbol SYM (err -N) (its exporter was not loaded)": 1}
