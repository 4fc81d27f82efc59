"""The conformance matrix: which implementation does what Linux does, per arch and category.

    koconform matrix --adapter reference --adapter cle [--xfail-file cle=FILE] [-n 2]

runs each adapter over the vectors (one pytest session each, with JUnit XML), and writes
CONFORMANCE.md and CONFORMANCE.json: per implementation and arch, vectors passed / failed /
not applicable, by category (check, layout, resolve, relocate per relocation type, init/exit),
every failure linked to its vector. Expected failures (an adapter's --xfail-file) count as
failed, marked as known.
"""
from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from koconform.reference import arch as arches

from . import coverage

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors"


@dataclass
class Outcome:
    vector: str
    path: str
    outcome: str           # passed, failed, known-failure, not-applicable
    message: str


def junit_outcomes(xml_path: Path) -> list[Outcome]:
    """Vector outcomes from a pytest JUnit XML report of a vector run."""
    out = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        path = case.get("file") or case.get("classname") or ""
        name = case.get("name") or ""
        if not path.endswith(".yaml") and "vectors" not in (case.get("classname") or ""):
            continue
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "").splitlines()[0][:300] if child.get(
                    "message") else ""
            elif child.tag == "skipped":
                kind = child.get("type", "")
                msg = child.get("message") or ""
                if "xfail" in kind or msg.startswith("xfail"):
                    outcome, message = "known-failure", msg.removeprefix("xfail").strip(" :")[:300]
                else:
                    outcome, message = "not-applicable", msg[:300]
        out.append(Outcome(name, path, outcome, message))
    return out


def categories(vector_path: Path) -> list[str]:
    """check / layout / resolve / init from the id; relocate per relocation type the .ko holds."""
    doc = yaml.safe_load(vector_path.read_text())
    stage = doc["id"].split("/")[1]
    if stage != "relocate":
        return [stage]
    arch = arches.ARCHES.get(doc["arch"])
    types: set[str] = {c["type"] for c in doc.get("covers") or []}
    if arch is not None and not types:
        ko = vector_path.with_name(doc["ko"])
        if ko.is_file():
            types = {arch.relocations[t].name for t in coverage.types_in(ko.read_bytes(), arch) if t in arch.relocations}
    return [f"relocate {t}" for t in sorted(types)] or ["relocate"]


def vector_paths(root: Path = VECTORS) -> dict[str, str]:
    """Vector id -> its file (JUnit XML of the xunit2 family names no files)."""
    out = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name.endswith(".family.yaml"):
            continue
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "id" in doc:
            out[str(doc["id"])] = str(path)
    return out


def table(results: dict[str, list[Outcome]]) -> dict[str, Any]:
    """implementation -> arch -> category -> counts and failures."""
    data: dict[str, Any] = {}
    cache: dict[str, list[str]] = {}
    paths = vector_paths()
    for impl, outcomes in results.items():
        per: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(
            lambda: {"passed": 0, "failed": 0, "known-failure": 0, "not-applicable": 0, "failures": []}))
        for o in outcomes:
            arch = o.vector.split("/")[0]
            path = paths.get(o.vector) or _vector_path(o)
            if path not in cache:
                cache[path] = categories(Path(path)) if Path(path).is_file() else ["?"]
            for cat in cache[path]:
                cell = per[arch][cat]
                cell[o.outcome] += 1
                if o.outcome in ("failed", "known-failure"):
                    cell["failures"].append({"vector": o.vector, "path": _rel(path), "message": o.message})
        data[impl] = {a: dict(c) for a, c in per.items()}
    return data


def _vector_path(o: Outcome) -> str:
    p = Path(o.path)
    if not p.is_absolute():
        p = ROOT / p
    return str(p)


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def markdown(data: dict[str, Any], about: dict[str, str]) -> str:
    lines = ["# Conformance matrix", "",
             "Written by `koconform matrix`; do not edit. Each implementation ran every vector; a cell is",
             "passed / failed (known failures, listed in the implementation's expected-failure file, in",
             "brackets) / not applicable (an arch or a field it does not handle). Failures link to their vectors.", ""]
    for impl, desc in about.items():
        lines.append(f"- **{impl}**: {desc}")
    lines.append("")
    impls = list(data)
    arch_names = sorted({a for d in data.values() for a in d})
    for arch in arch_names:
        cats = sorted({c for d in data.values() for c in d.get(arch, {})},
                      key=lambda c: (["check", "layout", "resolve", "relocate", "init"].index(c.split()[0])
                                     if c.split()[0] in ("check", "layout", "resolve", "relocate", "init") else 9, c))
        lines += [f"## {arch}", "", "| category | " + " | ".join(impls) + " |",
                  "|---|" + "---|" * len(impls)]
        for cat in cats:
            row = [cat]
            for impl in impls:
                c = data[impl].get(arch, {}).get(cat)
                if not c:
                    row.append("")
                    continue
                known = f" [{c['known-failure']}]" if c["known-failure"] else ""
                row.append(f"{c['passed']} / {c['failed'] + c['known-failure']}{known} / {c['not-applicable']}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Failures", ""]
    for impl in impls:
        fails = {(f["vector"], f["path"], f["message"]) for a in data[impl].values() for c in a.values()
                 for f in c["failures"]}
        lines.append(f"### {impl}: {len(fails)}")
        lines.append("")
        for vector, path, message in sorted(fails)[:400]:
            lines.append(f"- [{vector}]({path}): {message}")
        if len(fails) > 400:
            lines.append(f"- ... and {len(fails) - 400} more (CONFORMANCE.json has them all)")
        lines.append("")
    return "\n".join(lines)


def label(adapter: str) -> str:
    """How an implementation is named in the report (a cmd: program by its file name)."""
    if adapter.startswith("cmd:"):
        return "cmd:" + Path(adapter[4:].split()[0]).name
    return adapter


def write(results: dict[str, list[Outcome]], about: dict[str, str], out_dir: Path) -> None:
    data = table(results)
    (out_dir / "CONFORMANCE.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    (out_dir / "CONFORMANCE.md").write_text(markdown(data, about))
    print(f"wrote {out_dir / 'CONFORMANCE.md'} and CONFORMANCE.json")


def from_junit(junit_dir: Path, out_dir: Path) -> int:
    """Re-render the report from a run's JUnit files (junit-<implementation>.xml) without running."""
    results = {f.stem.removeprefix("junit-"): junit_outcomes(f) for f in sorted(junit_dir.glob("junit-*.xml"))}
    write(results, {name: name for name in results}, out_dir)
    return 0


def run(adapters: list[str], xfail: dict[str, str], paths: list[str], workers: int, out_dir: Path) -> int:
    import pytest

    from . import adapter as adapter_api
    results: dict[str, list[Outcome]] = {}
    about: dict[str, str] = {}
    junit_dir = out_dir / "conformance-junit"
    junit_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in adapters:
            xml = Path(tmp) / f"{label(name).replace(':', '_')}.xml"
            args = [*paths, "--adapter", name, f"--junitxml={xml}", "-q", "-p", "no:cacheprovider",
                    "-o", "junit_family=xunit2"]
            if name in xfail:
                args += ["--xfail-file", xfail[name]]
            if workers > 1:
                args += ["-n", str(workers)]
            pytest.main(args)
            if xml.exists():
                results[label(name)] = junit_outcomes(xml)
                (junit_dir / f"junit-{xml.name}").write_bytes(xml.read_bytes())
            try:
                about[label(name)] = adapter_api.get(name).description or name
            except Exception:  # noqa: BLE001 - a description is decoration
                about[label(name)] = name
    write(results, about, out_dir)
    return 0
