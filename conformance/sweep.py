"""Sweep vectors: one recipe, many inputs (the module cut at every length in a range).

A sweep pins the outcome (status, errno, phase) of each input, stored as ranges of lengths
with the same outcome. Log lines are not pinned: the kernel's "Invalid ELF header len %lu"
names the length, so every input would need its own line, and the errno and phase already
say which check refused it.
"""
from __future__ import annotations

import struct
from typing import Any

from koconform.reference.arch import ARCHES

Outcome = tuple[str, str | None, str | None]


def end_of_section_headers(ko: bytes, arch: str) -> int:
    """e_shoff + e_shnum * e_shentsize, read as the kernel reads the header (the arch's class)."""
    if ARCHES[arch].elf.bits == 64:
        shoff, = struct.unpack_from("<Q", ko, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", ko, 0x3A)
    else:
        shoff, = struct.unpack_from("<I", ko, 0x20)
        shentsize, shnum = struct.unpack_from("<HH", ko, 0x2E)
    return int(shoff + shnum * shentsize)


def lengths(doc: dict[str, Any], ko: bytes) -> range:
    spec = doc["sweep"]["truncate"]
    to = spec["to"]
    if to == "end-of-section-headers":
        to = end_of_section_headers(ko, doc["arch"])
    return range(int(spec["from"]), min(int(to), len(ko) + 1))


def inputs(doc: dict[str, Any], ko: bytes) -> list[tuple[int, bytes]]:
    return [(n, ko[:n]) for n in lengths(doc, ko)]


def outcome(result: dict[str, Any]) -> Outcome:
    return (str(result.get("status")), result.get("errno"), result.get("phase"))


def compress(pairs: list[tuple[int, Outcome]]) -> list[dict[str, Any]]:
    """[(length, outcome)] in length order -> ranges of equal outcomes."""
    out: list[dict[str, Any]] = []
    for n, (status, errno, phase) in pairs:
        last = out[-1] if out else None
        if last and (last["status"], last["errno"], last["phase"]) == (status, errno, phase) \
                and last["lengths"][1] == n - 1:
            last["lengths"][1] = n
        else:
            out.append({"lengths": [n, n], "status": status, "errno": errno, "phase": phase})
    return out


def expected(outcomes: list[dict[str, Any]]) -> dict[int, Outcome]:
    table: dict[int, Outcome] = {}
    for o in outcomes:
        for n in range(o["lengths"][0], o["lengths"][1] + 1):
            table[n] = (o["status"], o["errno"], o["phase"])
    return table


def show(o: Outcome) -> str:
    status, errno, phase = o
    return status + (f" {errno} in {phase}" if errno else (f" in {phase}" if phase else ""))
