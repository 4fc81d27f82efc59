"""The runner tests itself: fake adapters over real vector files in a temporary tree."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from koconform.conformance.adapter import Adapter
from koconform.conformance.model import Request
from koconform.reference.adapter import ReferenceAdapter

pytest_plugins = ["pytester"]
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "x86_64"


class WrongByte(Adapter):
    """The reference's answer with one relocated byte of .init.text flipped."""
    name = "wrong-byte"
    arches = frozenset({"x86_64"})

    def load(self, request: Request) -> dict[str, Any]:
        r = ReferenceAdapter().load(request).to_json()
        if r.get("sections") and ".init.text" in r["sections"]:
            data = bytearray(bytes.fromhex(r["sections"][".init.text"]))
            data[0x13] ^= 0xFF            # inside the call to _printk's displacement
            r["sections"][".init.text"] = data.hex()
        return r


class Crashes(Adapter):
    name = "crashes"
    arches = frozenset({"x86_64"})

    def load(self, request: Request) -> dict[str, Any]:
        if b"hello" in request.ko:
            raise RuntimeError("boom")
        return ReferenceAdapter().load(request).to_json()


class StatusOnly(Adapter):
    name = "status-only"
    arches = frozenset({"x86_64"})
    produces = frozenset({"status", "errno", "phase"})

    def load(self, request: Request) -> dict[str, Any]:
        r = ReferenceAdapter().load(request).to_json()
        return {"status": r["status"], "errno": r["errno"], "phase": r["phase"], "sections": {"junk": "00"}}


def _tree(pytester: pytest.Pytester, *names: str) -> Path:
    root = pytester.path / "vectors" / "x86_64"
    root.mkdir(parents=True)
    for name in names:
        for suffix in (".yaml", ".ko"):
            src = next(VECTORS.rglob(name + suffix))
            shutil.copy(src, root / (name + suffix))
    return root


def test_reference_passes_real_vectors(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello", "unknown-symbol")
    result = pytester.runpytest("vectors", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_wrong_byte_is_explained(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    result = pytester.runpytest("vectors", f"--adapter={__name__}:WrongByte")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "sections[.init.text]+0x13:" in out
    assert "written by .rela.init.text[" in out and "R_X86_64_PLT32" in out and "_printk" in out
    assert "expected:" in out and "call" in out          # capstone disassembly of both sides
    assert "rerun: koconform run --adapter" in out and "hello.yaml" in out


def test_crashing_adapter_fails_one_vector_only(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello", "unknown-symbol")
    result = pytester.runpytest("vectors", f"--adapter={__name__}:Crashes")
    result.assert_outcomes(passed=1, failed=1)
    assert "raised" in result.stdout.str() and "RuntimeError: boom" in result.stdout.str()


def test_fields_not_produced_are_not_checked(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    result = pytester.runpytest("vectors", f"--adapter={__name__}:StatusOnly")
    result.assert_outcomes(passed=1)


def test_bad_yaml_is_a_vector_bug(pytester: pytest.Pytester) -> None:
    root = _tree(pytester, "hello")
    (root / "hello.yaml").write_text("id: [unclosed\n")
    result = pytester.runpytest("vectors")
    result.assert_outcomes(failed=1)
    assert "BUG IN VECTOR:" in result.stdout.str() and "hello.yaml:" in result.stdout.str()


def test_schema_violation_names_the_field(pytester: pytest.Pytester) -> None:
    root = _tree(pytester, "hello")
    doc = yaml.safe_load((root / "hello.yaml").read_text())
    doc["expect"]["status"] = "fine"
    (root / "hello.yaml").write_text(yaml.safe_dump(doc))
    result = pytester.runpytest("vectors")
    result.assert_outcomes(failed=1)
    assert "BUG IN VECTOR:" in result.stdout.str() and "expect.status" in result.stdout.str()


def test_wrong_sha256_is_a_vector_bug(pytester: pytest.Pytester) -> None:
    root = _tree(pytester, "hello")
    (root / "hello.ko").write_bytes((root / "hello.ko").read_bytes() + b"\0")
    result = pytester.runpytest("vectors")
    result.assert_outcomes(failed=1)
    assert "sha256 does not match" in result.stdout.str()


def test_corrupted_expectation_fails(pytester: pytest.Pytester) -> None:
    root = _tree(pytester, "r-x86-64-pc32")
    doc = yaml.safe_load((root / "r-x86-64-pc32.yaml").read_text())
    text = doc["expect"]["sections"][".text"]
    doc["expect"]["sections"][".text"] = ("ff" if text[:2] != "ff" else "00") + text[2:]
    (root / "r-x86-64-pc32.yaml").write_text(yaml.safe_dump(doc))
    result = pytester.runpytest("vectors")
    result.assert_outcomes(failed=1)
    assert "sections[.text]+0x0:" in result.stdout.str()


def test_every_vector_id_is_unique_and_matches_its_place() -> None:
    """An id is <arch>/<stage>/<name>: the arch and stage of the directory the file is in, never reused."""
    seen: dict[str, Path] = {}
    root = VECTORS.parent
    for path in sorted(root.rglob("*.yaml")):
        if path.name.endswith(".family.yaml"):
            continue
        doc = yaml.safe_load(path.read_text())
        vid = doc["id"]
        assert vid not in seen, f"{vid} is the id of both {seen[vid]} and {path}"
        seen[vid] = path
        arch, stage, _ = vid.split("/")
        assert (arch, stage) == (path.parent.parent.name, path.parent.name), f"{path}: id {vid}"


def test_run_passes_what_follows_the_double_dash_to_pytest() -> None:
    """`koconform run PATH -- ARGS`: ARGS are pytest's, never taken for more vector paths."""
    import subprocess
    import sys
    hello = VECTORS / "init" / "hello.yaml"
    out = subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "run", str(hello), "--",
                          "--collect-only", "-q"], capture_output=True, text=True, check=False).stdout
    assert "1 test collected" in out, out[-500:]
