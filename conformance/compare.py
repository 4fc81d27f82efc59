"""Compare an implementation's result with a vector's expectation, in a loader author's terms.

Only fields that the vector pins *and* the adapter declares it produces are compared;
the others are listed as not checked. The first difference in relocated bytes is
explained: section and offset, expected and actual bytes, the relocation entries of
the .ko that write there, and the disassembly of both sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COMPARED = ("status", "errno", "phase", "regions", "layout", "symbols", "sections", "log",
            "init_return", "exit_log", "fault")
CLEAN_STATUSES = ("loaded", "rejected", "faulted")


@dataclass
class Comparison:
    differences: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def render_log(entries: list[dict[str, Any]] | None) -> list[str]:
    return [f"{e.get('source', '?')} <{e.get('level')}>{e.get('text')}" for e in entries or []]


def _log_matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    source = "kernel" if "kernel" in expected else "module"
    if actual.get("source") != source:
        return False
    line = f"<{actual.get('level')}>{actual.get('text')}"
    want = expected[source]
    if expected.get("pattern"):
        return re.fullmatch(want, line, flags=re.S) is not None
    return bool(line == want)


def compare_log(name: str, expected: list[dict[str, Any]], actual: Any) -> list[str]:
    if not isinstance(actual, list):
        return [f"{name}: expected {len(expected)} records, got {actual!r}"]
    for k, want in enumerate(expected):
        if k >= len(actual):
            return [f"{name}[{k}]: missing; expected {_show(want)}"]
        if not isinstance(actual[k], dict) or not _log_matches(want, actual[k]):
            return [f"{name}[{k}]: expected {_show(want)}\n{' ' * (len(name) + 6)}got      "
                    f"{render_log([actual[k]] if isinstance(actual[k], dict) else [])}"]
    if len(actual) > len(expected):
        return [f"{name}[{len(expected)}]: unexpected extra record {render_log(actual[len(expected):len(expected) + 1])}"]
    return []


def _show(entry: dict[str, Any]) -> str:
    source = "kernel" if "kernel" in entry else "module"
    return f"{source} {entry[source]}" + (" (regex)" if entry.get("pattern") else "")


def compare(expect: dict[str, Any], actual: dict[str, Any], produces: frozenset[str],
            explain_bytes: Any = None) -> Comparison:
    c = Comparison()
    if expect["status"] == "undefined":
        if actual.get("status") not in CLEAN_STATUSES:
            c.differences.append(f"status: the kernel's answer is undefined here ({expect.get('why', '')}), "
                                 f"but any answer must be a clean result; got {actual.get('status')!r}")
        return c
    for key in COMPARED:
        if key not in expect:
            continue
        if key not in produces:
            c.not_checked.append(key)
            continue
        want, got = expect[key], actual.get(key)
        if key in ("log", "exit_log") and want is not None:
            c.differences += compare_log(key, want, got)
        elif key == "sections" and want is not None:
            c.differences += compare_sections(want, got, explain_bytes)
        elif key in ("layout", "regions", "symbols") and want is not None and isinstance(got, dict):
            c.differences += compare_mapping(key, want, got)
        elif want != got:
            c.differences.append(f"{key}: expected {want!r}, got {got!r}")
        if key == "status" and want != got:
            break               # nothing else is comparable once the outcome differs
    return c


def compare_mapping(name: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out = []
    for k in want:
        if k not in got:
            out.append(f"{name}[{k}]: missing; expected {want[k]!r}")
        elif got[k] != want[k]:
            out.append(f"{name}[{k}]: expected {want[k]!r}, got {got[k]!r}")
    for k in got:
        if k not in want:
            out.append(f"{name}[{k}]: not expected, got {got[k]!r}")
    return out[:10]


def compare_sections(want: dict[str, str], got: Any, explain: Any) -> list[str]:
    if not isinstance(got, dict):
        return [f"sections: expected {len(want)} sections, got {got!r}"]
    out = []
    for name, hexdata in want.items():
        if name not in got:
            out.append(f"sections[{name}]: missing")
            continue
        try:
            theirs = bytes.fromhex(got[name])
        except (TypeError, ValueError):
            out.append(f"sections[{name}]: not hex: {str(got[name])[:40]!r}")
            continue
        ours = bytes.fromhex(hexdata)
        if ours == theirs:
            continue
        a = np.frombuffer(ours, dtype=np.uint8)
        b = np.frombuffer(theirs, dtype=np.uint8)
        n = min(len(a), len(b))
        diff = np.flatnonzero(a[:n] != b[:n])
        first = int(diff[0]) if len(diff) else n
        line = (f"sections[{name}]+{first:#x}: expected {ours[first:first + 8].hex(' ')} "
                f"got {theirs[first:first + 8].hex(' ')}"
                + (f" (size: expected {len(ours):#x}, got {len(theirs):#x})" if len(ours) != len(theirs) else "")
                + (f"; {len(diff)} bytes differ" if len(diff) > 1 else ""))
        if explain is not None:
            line += explain(name, first, ours, theirs)
        out.append(line)
    for name in got:
        if name not in want:
            out.append(f"sections[{name}]: not expected")
    return out
