"""The coverage report: every relocation type Linux 6.1 knows, per arch, and the vectors that pin it.

Rows come from the reference's arch tables (reference/arch/<arch>.py: one `RelocType` per type
the kernel's apply_relocate(_add) has a case for, including those a configuration compiles
out). A vector exercises a type when its `.ko` holds a relocation of that type in a section
the kernel relocates (target SHF_ALLOC): read from the file, not from what the vector says.
Edges come from the vector's `covers` claims, and each claim is checked against the
vector's own expectation (a *-fit edge loads; an overflow edge is rejected in phase
relocate; a compiled-out or unknown type is rejected).

    koconform coverage            # print the report (markdown)
    koconform coverage --write    # also write vectors/COVERAGE.md
    koconform coverage --check    # fail on a type without a vector, a missing edge, a false claim
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from koconform.reference import arch as arches
from koconform.reference.arch import Arch, RelocType
from koconform.reference.elf import SHF_ALLOC, SHT_REL, SHT_RELA, read_ehdr, read_table

from . import profiles

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "vectors"
LOADS = ("last-fit", "lowest-fit", "past-unchecked", "plt", "plt-shared", "init-plt", "got",
         "partner-before", "partner-after", "option-enabled")
REJECTED_IN_RELOCATE = ("first-overflow", "below-lowest", "partner-missing", "unknown-type")


@dataclass
class Row:
    rtype: RelocType
    accepted: str                              # how linux-6.1 treats it on this arch
    vectors: set[str] = field(default_factory=set)
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @property
    def needs_edges(self) -> tuple[str, ...]:
        if self.rtype.check is not None and not self.accepted.startswith("compiled out"):
            return ("last-fit", "first-overflow")
        return ()


def rejection_key(doc: dict[str, Any]) -> tuple[str, str, str] | None:
    """(phase, errno, the kernel's last line before refusing, with the module's name, numbers and
    quoted names replaced by placeholders) for a rejected vector; None for others."""
    e = doc["expect"]
    if e.get("status") != "rejected":
        return None
    lines = [entry["kernel"] for entry in e.get("log") or [] if "kernel" in entry]
    last = lines[-1] if lines else "(no line)"
    name = (doc.get("recipe") or {}).get("module", "")
    if name:
        last = last.replace(f"{name}: ", "MOD: ").replace(f"module {name}:", "module MOD:")
    last = re.sub(r"'[^']*'", "'…'", last)
    last = re.sub(r"\b(0x)?[0-9a-f]{6,}\b|\b\d+\b", "N", last)
    last = re.sub(r"(Unknown symbol|symbol|version of symbol|for|symbol \() [A-Za-z_][\w.]*", r"\1 SYM", last)
    return (str(e.get("phase")), str(e.get("errno")), last)


@dataclass
class Report:
    rows: dict[str, list[Row]]                 # arch -> rows in type-number order
    missing_arches: list[str]
    problems: list[str]
    # arch -> type name -> vectors pinning that 6.1 rejects a type it does not know (edge unknown-type)
    unknown: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    # arch -> (phase, errno, kernel line) -> vectors rejected that way
    rejections: dict[str, dict[tuple[str, str, str], set[str]]] = field(default_factory=dict)

    def gaps(self) -> list[str]:
        out = [f"{a}: no reference arch table (reference/arch/{a}.py)" for a in self.missing_arches]
        for arch, rows in self.rows.items():
            for r in rows:
                if not r.vectors:
                    out.append(f"{arch} {r.rtype.name}: no vector")
                for edge in r.needs_edges:
                    if not r.edges.get(edge):
                        out.append(f"{arch} {r.rtype.name}: no {edge} vector")
        return out + self.problems


def types_in(ko: bytes, arch: Arch) -> set[int]:
    """Relocation types in the sections of `ko` that the kernel relocates (target SHF_ALLOC)."""
    cls = arch.elf
    try:
        eh = read_ehdr(ko, cls)
        sh = read_table(ko, int(eh["e_shoff"]), int(eh["e_shnum"]), cls.shdr)
    except (ValueError, IndexError):
        return set()
    found: set[int] = set()
    for s in sh:
        kind, info = int(s["sh_type"]), int(s["sh_info"])
        if kind not in (SHT_REL, SHT_RELA) or info >= len(sh) or not int(sh[info]["sh_flags"]) & SHF_ALLOC:
            continue
        dtype = cls.rela if kind == SHT_RELA else cls.rel
        try:
            rows = read_table(ko, int(s["sh_offset"]), int(s["sh_size"]) // dtype.itemsize, dtype)
        except (ValueError, IndexError):
            continue
        found |= {int(t) for t in np.unique(cls.r_type(rows["r_info"].astype(np.uint64)))}
    return found


def accepted(rtype: RelocType, arch: str) -> str:
    if rtype.requires is None:
        return "yes"
    config = profiles.load_profile("linux-6.1", arch).config
    on = config.get(rtype.requires) in (True, "y", "m")
    return f"yes ({rtype.requires}=y)" if on else f"compiled out ({rtype.requires}=n); accepted with it =y"


def _claim_problem(vid: str, edge: str, expect: dict[str, Any]) -> str | None:
    status, phase = expect.get("status"), expect.get("phase")
    if edge in LOADS and status != "loaded":
        return f"{vid}: claims {edge} but its module is {status}"
    if edge in REJECTED_IN_RELOCATE and (status != "rejected" or phase != "relocate"):
        return f"{vid}: claims {edge} but is {status} in phase {phase}, not rejected in relocate"
    if edge == "compiled-out" and status != "rejected":
        return f"{vid}: claims compiled-out but its module is {status}"
    return None


def build(vectors: Path = VECTORS) -> Report:
    rows = {a.name: [Row(r, accepted(r, a.name)) for _, r in sorted(a.relocations.items())]
            for a in arches.ARCHES.values()}
    problems: list[str] = []
    unknown: dict[str, dict[str, set[str]]] = {}
    rejections: dict[str, dict[tuple[str, str, str], set[str]]] = {}
    for path in sorted(vectors.rglob("*.yaml")):
        if path.name.endswith(".family.yaml"):
            continue
        doc = yaml.safe_load(path.read_text())
        arch = arches.ARCHES.get(doc.get("arch", ""))
        if arch is None:
            continue
        key = rejection_key(doc)
        if key is not None:
            rejections.setdefault(arch.name, {}).setdefault(key, set()).add(doc["id"])
        by_number = {r.rtype.number: r for r in rows[arch.name]}
        by_name = {r.rtype.name: r for r in rows[arch.name]}
        ko = path.with_name(doc["ko"])
        if ko.is_file():
            for t in types_in(ko.read_bytes(), arch):
                if t in by_number:
                    by_number[t].vectors.add(doc["id"])
        for claim in doc.get("covers") or []:
            row = by_name.get(claim["type"])
            if row is None and claim.get("edge") == "unknown-type":
                problem = _claim_problem(doc["id"], "unknown-type", doc["expect"])
                if problem:
                    problems.append(problem)
                else:
                    unknown.setdefault(arch.name, {}).setdefault(claim["type"], set()).add(doc["id"])
                continue
            if row is None:
                problems.append(f"{doc['id']}: covers {claim['type']}, which {arch.name} does not have")
                continue
            row.vectors.add(doc["id"])
            if "edge" in claim:
                problem = _claim_problem(doc["id"], claim["edge"], doc["expect"])
                if problem:
                    problems.append(problem)
                else:
                    row.edges[claim["edge"]].add(doc["id"])
    missing = [a for a in arches.NAMES if a not in arches.ARCHES]
    return Report(rows, missing, problems, unknown, rejections)


def markdown(report: Report) -> str:
    lines = ["# Coverage: relocation types of Linux 6.1, per arch", "",
             "Written by `koconform coverage --write`; do not edit. Rows: every type the reference's arch",
             "table has (reference/arch/<arch>.py), which is every type 6.1's apply_relocate(_add) handles",
             "on that arch, including types a configuration compiles out. *Vectors*: vectors whose `.ko`",
             "holds that type in a section the kernel relocates, or that claim it under `covers`.",
             "*Edges*: claims checked against each vector's expectation.", ""]
    for arch in arches.NAMES:
        if arch not in report.rows:
            lines += [f"## {arch}", "", "No reference arch table yet.", ""]
            continue
        rows = report.rows[arch]
        covered = sum(1 for r in rows if r.vectors)
        lines += [f"## {arch}", "", f"{covered} of {len(rows)} types have a vector.", "",
                  "| # | type | linux-6.1 accepts | range check | vectors | edges |", "|---:|---|---|---|---:|---|"]
        for r in rows:
            t = r.rtype
            check = t.check.describe() if t.check else ("none (field " + t.unchecked_range.describe() + ")"
                                                        if t.unchecked_range else "none")
            edges = "; ".join(f"{e}: {', '.join(sorted(v))}" for e, v in sorted(r.edges.items()))
            missing = [e for e in r.needs_edges if not r.edges.get(e)]
            if missing:
                edges += ("; " if edges else "") + "**missing: " + ", ".join(missing) + "**"
            count = str(len(r.vectors)) if r.vectors else "**0**"
            lines.append(f"| {t.number} | {t.name} | {r.accepted} | {check} | {count} | {edges} |")
        lines.append("")
        unknown = report.unknown.get(arch, {})
        if unknown:
            lines += ["Types 6.1 has no case for on this arch (later kernels or other arches do), pinned as rejected:", "",
                      "| type | vectors |", "|---|---|"]
            lines += [f"| {name} | {', '.join(sorted(v))} |" for name, v in sorted(unknown.items())]
            lines.append("")
    lines += ["# Rejection paths", "",
              "Every way a vector's module is refused, per arch: the phase, the errno and the kernel's last line",
              "before it gives up (the module's name, numbers and quoted names replaced by placeholders).", ""]
    for arch in arches.NAMES:
        paths = report.rejections.get(arch, {})
        lines += [f"## {arch}: {len(paths)} rejection paths", "", "| phase | errno | kernel line | vectors |",
                  "|---|---|---|---|"]
        order = ["check", "layout", "resolve", "relocate", "init"]
        for (phase, errno, line), ids in sorted(paths.items(), key=lambda kv: (
                order.index(kv[0][0]) if kv[0][0] in order else 9, kv[0])):
            shown = line.replace("|", "\\|")
            lines.append(f"| {phase} | {errno} | `{shown}` | {', '.join(sorted(ids))} |")
        lines.append("")
    gaps = report.gaps()
    lines += ["## Gaps", ""] + ([f"- {g}" for g in gaps] or ["None."]) + [""]
    return "\n".join(lines)


def main(write: bool, check: bool) -> int:
    report = build()
    text = markdown(report)
    print(text)
    if write:
        (VECTORS / "COVERAGE.md").write_text(text)
    if check:
        gaps = report.gaps()
        if gaps:
            print(f"koconform coverage: {len(gaps)} gaps", flush=True)
            return 1
        if not write and (not (VECTORS / "COVERAGE.md").exists() or (VECTORS / "COVERAGE.md").read_text() != text):
            print("koconform coverage: vectors/COVERAGE.md is stale: run `koconform coverage --write`")
            return 1
    return 0
