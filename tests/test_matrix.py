"""The conformance matrix: JUnit outcomes of a run become per-arch, per-category counts with links."""
from __future__ import annotations

from pathlib import Path

from koconform.conformance import matrix

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _junit(tmp: Path) -> Path:
    hello = VECTORS / "x86_64" / "init" / "hello.yaml"
    pc32 = VECTORS / "x86_64" / "relocate" / "r-x86-64-pc32.yaml"
    unknown = VECTORS / "x86_64" / "resolve" / "unknown-symbol.yaml"
    text = f"""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="vectors.x86_64.init.hello.yaml" name="x86_64/init/hello" file="{hello}"/>
<testcase classname="vectors.x86_64.relocate.r-x86-64-pc32.yaml" name="x86_64/relocate/r-x86-64-pc32" file="{pc32}">
  <failure message="sections[.text]+0x0: expected 01 got 02">long text</failure></testcase>
<testcase classname="vectors.x86_64.resolve.unknown-symbol.yaml" name="x86_64/resolve/unknown-symbol" file="{unknown}">
  <skipped type="pytest.xfail" message="does not check symbols"/></testcase>
<testcase classname="tests.test_x" name="test_not_a_vector" file="tests/test_x.py"/>
</testsuite></testsuites>"""
    path = tmp / "r.xml"
    path.write_text(text)
    return path


def test_junit_outcomes_are_read_per_vector(tmp_path: Path) -> None:
    outcomes = {o.vector: o for o in matrix.junit_outcomes(_junit(tmp_path))}
    assert set(outcomes) == {"x86_64/init/hello", "x86_64/relocate/r-x86-64-pc32", "x86_64/resolve/unknown-symbol"}
    assert outcomes["x86_64/init/hello"].outcome == "passed"
    assert outcomes["x86_64/relocate/r-x86-64-pc32"].outcome == "failed"
    assert outcomes["x86_64/relocate/r-x86-64-pc32"].message == "sections[.text]+0x0: expected 01 got 02"
    assert outcomes["x86_64/resolve/unknown-symbol"].outcome == "known-failure"


def test_relocate_vectors_count_per_type_and_failures_link_to_vectors(tmp_path: Path) -> None:
    data = matrix.table({"impl": matrix.junit_outcomes(_junit(tmp_path))})
    x86 = data["impl"]["x86_64"]
    assert x86["init"]["passed"] == 1
    assert x86["relocate R_X86_64_PC32"]["failed"] == 1
    assert x86["resolve"]["known-failure"] == 1
    text = matrix.markdown(data, {"impl": "a test implementation"})
    assert "| relocate R_X86_64_PC32 | 0 / 1 / 0 |" in text
    assert "| resolve | 0 / 1 [1] / 0 |" in text
    assert "[x86_64/relocate/r-x86-64-pc32](vectors/x86_64/relocate/r-x86-64-pc32.yaml)" in text
