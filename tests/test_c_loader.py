"""The C example loader (examples/c-loader), built with the system compiler and run through the protocol.

It is the proof that a loader in another language plugs in by following PROTOCOL.md alone:
over every x86_64 vector it must pass, or fail exactly as its expected-failure file says.
Beyond the vectors, modules built byte by byte (tests/elfbuild.py) exercise corners the
vectors do not (duplicate section names, non-ASCII names, every relocation type at once, the
configurations that change the layout, faults) against the reference loader.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported here once: each in-process pytester run would import it again)
import pytest
from elfbuild import (
    R_X86_64_32,
    R_X86_64_32S,
    R_X86_64_64,
    R_X86_64_NONE,
    R_X86_64_PC32,
    R_X86_64_PC64,
    R_X86_64_PLT32,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHN_ABS,
    SHT_NOBITS,
    STB_LOCAL,
    STB_WEAK,
    STT_SECTION,
    Module,
    Rela,
    Section,
    Symbol,
    build,
)
from koconform.conformance import profiles, xfail
from koconform.conformance.model import Request
from koconform.conformance.protocol import ProtocolAdapter, validate
from koconform.reference import loader

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "c-loader"
EXPECTED_FAILURES = SOURCE / "expected-failures.txt"
CORE, INIT, COPY = 0xFFFFFFFFC0000000, 0xFFFFFFFFC0100000, 0xFFFFC90000000000
AX, A, WA = SHF_ALLOC | SHF_EXECINSTR, SHF_ALLOC, SHF_WRITE | SHF_ALLOC
CHECKED = ("status", "errno", "phase", "layout", "regions", "symbols", "sections")


@pytest.fixture(scope="module")
def c_loader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/c-loader built with `cc` (libc only), as its Makefile does."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler: `cc` is not on PATH (Debian: apt-get install gcc)")
    out = tmp_path_factory.mktemp("c-loader") / "koc_loader"
    build_ = subprocess.run([cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-Wall", "-Wextra",
                             "-o", str(out), str(SOURCE / "koc_loader.c"), str(SOURCE / "json.c")],
                            capture_output=True, text=True, check=False)
    assert build_.returncode == 0, build_.stderr
    assert "warning" not in build_.stderr, build_.stderr
    return out


@pytest.fixture(scope="module")
def adapter(c_loader: Path) -> Any:
    impl = ProtocolAdapter([str(c_loader)], timeout=10)
    yield impl
    impl.close()


# ---- the suite ------------------------------------------------------------------------
def test_x86_64_vectors_pass_or_fail_as_listed(pytester: pytest.Pytester, c_loader: Path) -> None:
    listed = xfail.read(EXPECTED_FAILURES).entries
    result = pytester.runpytest(str(ROOT / "vectors" / "x86_64"), f"--adapter=cmd:{c_loader}",
                                f"--xfail-file={EXPECTED_FAILURES}", "-p", "no:randomly", "-rxs")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert outcomes.get("xfailed", 0) == len(listed) and "failed" not in outcomes
    assert outcomes["passed"] >= 60
    # What it skips is only what it declares it does not do: the module's own code (init, exit).
    skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert skips and all("koc-loader stops after relocate" in line for line in skips), skips


def test_every_expected_failure_is_a_vector_with_a_reason() -> None:
    entries = xfail.read(EXPECTED_FAILURES).entries
    known = xfail.known_ids([ROOT / "vectors"])
    assert entries and set(entries) <= known
    for vid, reason in entries.items():
        assert vid.startswith("x86_64/") and len(reason) > 20 and not reason.startswith(xfail.NEW_REASON), vid


# ---- the protocol, from the C side --------------------------------------------------------
def test_start_declares_what_it_does(c_loader: Path) -> None:
    run = subprocess.run([str(c_loader)], input='{"cmd":"start","protocol":1}\n{"cmd":"stop"}\n',
                         capture_output=True, text=True, check=True, timeout=10)
    answer = json.loads(run.stdout)
    assert validate("start-response", answer) == []
    caps = answer["capabilities"]
    assert caps["arches"] == ["x86_64"] and caps["last_phase"] == "relocate" and "log" not in caps["produces"]


def test_garbage_in_ends_it_with_a_message(c_loader: Path) -> None:
    run = subprocess.run([str(c_loader)], input="this is not json\n", capture_output=True, text=True,
                         check=False, timeout=10)
    assert run.returncode == 2 and run.stdout == "" and "not a request" in run.stderr


def test_ids_and_errors_round_trip(c_loader: Path) -> None:
    lines = ['{"cmd":"environment","id":"e\\u00e9\\ud83d\\ude00","arch":"x86_64","symbols":{}}',
             '{"cmd":"load","id":"x\\"y","environment":{"base":"nope","symbols":{},"regions":{}}}']
    run = subprocess.run([str(c_loader)], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True, timeout=10)
    env, load = map(json.loads, run.stdout.splitlines())
    assert env == {"id": "e\u00e9\U0001F600", "ok": True}
    assert load["id"] == 'x"y' and "not declared" in load["errored"]
    assert validate("environment-response", env) == [] and validate("load-response", load) == []


# ---- against the reference, on modules built byte by byte --------------------------------
def _modinfo() -> dict[str, str]:
    vermagic = profiles.load_profile("linux-6.1", "x86_64").vermagic
    return {"name": "koctest", "vermagic": vermagic, "license": "GPL"}


def _every_type() -> Module:
    """Every x86_64 type 6.1 applies, into core text, init text and data; symbols of every kind."""
    sections = [Section(".text", AX, bytes(0x40), align=16),
                Section(".data", WA, bytes(8) + bytes(range(1, 0x19)), align=8),
                Section(".rodata", A, b"const\0", align=4),
                Section(".bss", WA, sh_type=SHT_NOBITS, size=0x100, align=64),
                Section(".init.text", AX, bytes(0x10), align=16), Section(".exit.text", AX, bytes(8), align=16),
                Section(".data..ro_after_init", WA, bytes(8), align=8)]
    loc = {"bind": STB_LOCAL}
    symbols = [Symbol("", ".text", kind=STT_SECTION, **loc), Symbol("table", ".data", value=8, **loc),
               Symbol("info_sym", ".modinfo", **loc), Symbol("absval", SHN_ABS, value=0x1234, **loc),
               Symbol("_printk"), Symbol("maybe", bind=STB_WEAK), Symbol("_GLOBAL_OFFSET_TABLE_"),
               Symbol("init_module", ".init.text"), Symbol("cleanup_module", ".exit.text")]
    relocs = {".text": [Rela(0, "_printk", R_X86_64_64, 8), Rela(8, "table", R_X86_64_PC32, -4),
                        Rela(12, "_printk", R_X86_64_PLT32, -4), Rela(16, "table", R_X86_64_32S),
                        Rela(24, "table", R_X86_64_PC64, 0x10), Rela(32, "table", R_X86_64_NONE),
                        Rela(36, "absval", R_X86_64_32, 1), Rela(40, "maybe", R_X86_64_64),
                        Rela(48, "info_sym", R_X86_64_64, 2), Rela(56, 1, R_X86_64_64, 0x20)],
              ".init.text": [Rela(1, "_printk", R_X86_64_PLT32, -4), Rela(8, "cleanup_module", R_X86_64_64)],
              ".data": [Rela(0, "init_module", R_X86_64_64)]}
    return Module(sections=sections, symbols=symbols, relocs=relocs, modinfo=_modinfo())


def _odd_names() -> Module:
    """Two sections of one name (keyed NAME#INDEX) and a name with bytes outside ASCII."""
    sections = [Section(".text.dup", AX, bytes(8), align=8), Section(".text.dup", AX, bytes(16), align=16),
                Section(".rodata.\u00e9t\u00e9", A, b"summer\0", align=1)]
    symbols = [Symbol("_printk")]
    relocs = {".text.dup": [Rela(0, "_printk", R_X86_64_64)]}
    return Module(sections=sections, symbols=symbols, relocs=relocs, modinfo=_modinfo())


def _with(module: Module, **changes: Any) -> Module:
    from dataclasses import replace
    return replace(module, **changes)


def _rejected_by(kind: str) -> Module:
    m = _every_type()
    if kind == "unknown-symbol":
        return _with(m, symbols=[*m.symbols, Symbol("no_such_export")])
    if kind == "common":
        return _with(m, symbols=[*m.symbols, Symbol("tentative", 0xFFF2, value=8)])
    if kind == "bad-section-index":
        return _with(m, symbols=[*m.symbols, Symbol("broken", 0xFF00)])
    if kind == "overflow-32":
        return _with(m, relocs={**m.relocs, ".text": [*m.relocs[".text"], Rela(60, "_printk", R_X86_64_32)]})
    if kind == "nonzero-target":
        text = Section(".text", AX, bytes(4) + b"\x01" + bytes(0x3B), align=16)
        return _with(m, sections=[text, *m.sections[1:]])
    if kind == "unknown-type":
        return _with(m, relocs={**m.relocs, ".text": [*m.relocs[".text"], Rela(60, "_printk", 42)]})
    if kind == "outside-memory":
        return _with(m, relocs={**m.relocs, ".text": [*m.relocs[".text"], Rela(1 << 40, "_printk", R_X86_64_64)]})
    if kind == "wx":
        return _with(m, sections=[Section(".text", AX | SHF_WRITE, bytes(0x40), align=16), *m.sections[1:]])
    raise KeyError(kind)


def _request(ko: bytes, config: dict[str, Any] | None = None) -> Request:
    profile = profiles.load_profile("linux-6.1", "x86_64", config)
    env = profiles.environment("linux-6.1", "x86_64", {"regions": {"core": CORE, "init": INIT, "copy": COPY}})
    return Request(ko, "x86_64", profile, env, name="koctest.ko", run_init=False)


def _both(adapter: Any, ko: bytes, config: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    request = _request(ko, config)
    ours = adapter.load_vector(request, "koctest")
    ref = loader.load(request).to_json()
    return ({k: ref.get(k) for k in CHECKED}, {k: ours.get(k) for k in CHECKED})


CONFIGS = {
    "debian": None,
    "no-strict-rwx": {"CONFIG_STRICT_MODULE_RWX": False},
    "no-unload": {"CONFIG_MODULE_UNLOAD": False},
    "no-kallsyms": {"CONFIG_KALLSYMS": False, "CONFIG_KALLSYMS_ALL": False},
    "kallsyms-text-only": {"CONFIG_KALLSYMS_ALL": False},
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("make", [_every_type, _odd_names])
def test_loaded_modules_match_the_reference(adapter: Any, make: Any, config: str) -> None:
    ref, ours = _both(adapter, build(make()).ko(), CONFIGS[config])
    assert ref["status"] == "loaded", ref
    assert ours == ref


def test_names_are_keyed_as_the_contract_says(adapter: Any) -> None:
    ours = adapter.load_vector(_request(build(_odd_names()).ko()), "koctest")
    dup = sorted(k for k in ours["layout"] if k.startswith(".text.dup"))
    assert dup == [".text.dup#1", ".text.dup#2"]
    # The name's UTF-8 bytes, one code point per byte (Latin-1), as the reference reads them.
    assert ".rodata.\u00c3\u00a9t\u00c3\u00a9" in ours["sections"]


@pytest.mark.parametrize(("kind", "phase", "errno"), [
    ("unknown-symbol", "resolve", "ENOENT"), ("common", "resolve", "ENOEXEC"),
    ("bad-section-index", "resolve", "ENOEXEC"), ("overflow-32", "relocate", "ENOEXEC"),
    ("nonzero-target", "relocate", "ENOEXEC"), ("unknown-type", "relocate", "ENOEXEC"),
    ("wx", "layout", "ENOEXEC"),
])
def test_rejections_match_the_reference(adapter: Any, kind: str, phase: str, errno: str) -> None:
    ref, ours = _both(adapter, build(_rejected_by(kind)).ko())
    assert (ref["status"], ref["phase"], ref["errno"]) == ("rejected", phase, errno)
    assert ours == ref


def test_a_write_outside_module_memory_is_a_fault(adapter: Any) -> None:
    ref, ours = _both(adapter, build(_rejected_by("outside-memory")).ko())
    assert (ref["status"], ref["phase"]) == ("faulted", "relocate")
    assert (ours["status"], ours["phase"]) == ("faulted", "relocate")


def test_stop_after_an_earlier_phase(adapter: Any) -> None:
    """A request that stops after layout gets the layout and unrelocated bytes (the loader's own rule)."""
    import base64

    from koconform.conformance.protocol import _line
    ko = build(_every_type()).ko()
    request = _request(ko)
    full = adapter.load_vector(request, "full")
    proc = adapter._ensure()
    eid, _, base = adapter._base(request)
    line = _line({"cmd": "load", "id": "early", "arch": "x86_64", "ko_path": adapter._ko_path(ko),
                  "ko_base64": base64.b64encode(ko).decode(),
                  "environment": {"base": eid, "symbols": adapter.environment_delta(request.environment, base),
                                  "regions": {"core": hex(CORE), "init": hex(INIT), "copy": hex(COPY)}},
                  "profile": request.profile.to_json(), "stop_after": "layout"})
    answer = adapter._exchange(line, "load-response", "early", "load")["result"]
    assert proc is adapter._proc
    assert answer["status"] == "loaded" and answer["layout"] == full["layout"] and "symbols" not in answer
    assert answer["sections"][".text"] == "00" * 0x40 != full["sections"][".text"]
