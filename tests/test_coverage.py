"""The coverage report (koconform coverage): types come from the .ko files, claims are checked."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from elfbuild import R_X86_64_32S, R_X86_64_PC32, SHF_ALLOC, SHF_EXECINSTR, Module, Rela, Section, Symbol, build

from koconform.conformance import coverage
from koconform.reference.arch import ARCHES

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def test_types_are_read_from_relocated_sections_only() -> None:
    ko = build(Module(
        sections=[Section(".text", SHF_ALLOC | SHF_EXECINSTR, bytes(16)), Section(".koc_note", 0, bytes(8))],
        symbols=[Symbol("ext", None)],
        relocs={".text": [Rela(0, "ext", R_X86_64_PC32, -4)], ".koc_note": [Rela(0, "ext", R_X86_64_32S)]}))
    assert coverage.types_in(bytes(ko.data), ARCHES["x86_64"]) == {R_X86_64_PC32}


def _copy(name: str, dest: Path) -> Path:
    src = VECTORS / "x86_64" / "relocate" / f"{name}.yaml"
    (dest / "x86_64").mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest / "x86_64" / src.name)
    shutil.copy(src.with_name(yaml.safe_load(src.read_text())["ko"]), dest / "x86_64")
    return dest / "x86_64" / src.name


def test_an_edge_claim_must_agree_with_the_expectation(tmp_path: Path) -> None:
    good = _copy("r-x86-64-edges-32-first-overflow", tmp_path)
    report = coverage.build(tmp_path)
    row = next(r for r in report.rows["x86_64"] if r.rtype.name == "R_X86_64_32")
    assert row.edges["first-overflow"] == {"x86_64/relocate/r-x86-64-32-first-overflow"}
    assert "x86_64 R_X86_64_32: no last-fit vector" in report.gaps()
    doc = yaml.safe_load(good.read_text())
    doc["covers"] = [{"type": "R_X86_64_32", "edge": "last-fit"}]      # it is rejected: a false claim
    good.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = coverage.build(tmp_path)
    assert any("claims last-fit but its module is rejected" in p for p in report.gaps())


def test_a_claim_on_a_type_the_arch_lacks_is_a_gap(tmp_path: Path) -> None:
    path = _copy("r-x86-64-64", tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["covers"] = [{"type": "R_X86_64_GOTPCREL"}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert any("covers R_X86_64_GOTPCREL, which x86_64 does not have" in p for p in coverage.build(tmp_path).gaps())
