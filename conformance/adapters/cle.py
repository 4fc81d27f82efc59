"""angr's CLE as an implementation under test: an ELF loader that places relocatable objects.

CLE (PyPI `cle`, 9.2.213 the newest release installable on Python 3.11) loads an ET_REL file
as a main object at a base address, lays its sections out itself, resolves undefined
symbols against an extern object and applies the relocations. That is what it is measured
on here, as it is:

- the module is loaded with `base_addr` = the vector's core region;
- the kernel's exports are given to CLE the only way it takes them: each undefined symbol's
  extern entry is set to the kernel's address, and the relocations are applied again (CLE
  has no exported-symbol table of its own; a symbol the kernel does not export keeps CLE's
  extern address, as CLE would leave it);
- CLE raising on a module is reported as `rejected` (CLE has no errno; `errno` and `phase`
  are not produced, so only the status is compared).

It produces status, layout (CLE's placement, all in the `core` region: CLE has no init
allocation), regions, symbols and sections. Install with `tox -e cle` (its own env).
"""
from __future__ import annotations

import io
import logging
from typing import Any

from ..adapter import Adapter
from ..model import Request

ARCH_NAMES = {"x86_64": "AMD64", "i386": "X86", "arm64": "AARCH64", "arm": "ARMEL", "riscv64": "RISCV64"}


class CleAdapter(Adapter):
    name = "cle"
    description = "angr's CLE (PyPI cle 9.2.213): ET_REL placement, extern resolution, relocation"
    arches = frozenset(ARCH_NAMES)
    produces = frozenset({"status", "regions", "layout", "symbols", "sections"})

    def load(self, request: Request) -> dict[str, Any]:
        import cle
        logging.getLogger("cle").setLevel(logging.CRITICAL)
        logging.getLogger("pyvex").setLevel(logging.CRITICAL)
        base = request.environment.regions.get("core", 0)
        try:
            ld = cle.Loader(io.BytesIO(request.ko), auto_load_libs=False,
                            main_opts={"base_addr": base, "arch": ARCH_NAMES[request.arch]})
        except Exception as e:  # noqa: BLE001 - CLE refusing the file is its answer
            return {"status": "rejected", "detail": f"{type(e).__name__}: {e}"}
        main = ld.main_object
        resolved = _resolve_against_kernel(ld, request)
        layout, sections = {}, {}
        counts: dict[str, int] = {}
        for s in main.sections:
            counts[s.name] = counts.get(s.name, 0) + 1
        end = base
        for index, s in enumerate(main.sections):
            if not s.occupies_memory or not s.name:
                continue
            key = s.name if counts[s.name] == 1 else f"{s.name}#{index}"
            layout[key] = {"region": "core", "offset": hex(s.vaddr - base), "address": hex(s.vaddr)}
            end = max(end, s.vaddr + s.memsize)
            if s.memsize and not s.only_contains_uninitialized_data:
                try:
                    sections[key] = bytes(ld.memory.load(s.vaddr, s.memsize)).hex()
                except KeyError:        # CLE placed the section but mapped no bytes for it
                    continue
        return {"status": "loaded", "regions": {"core": {"address": hex(base), "size": hex(end - base)}},
                "layout": layout, "symbols": {k: hex(v) for k, v in sorted(resolved.items())},
                "sections": sections}


def _resolve_against_kernel(ld: Any, request: Request) -> dict[str, int]:
    """Point CLE's extern entries at the kernel's exports and re-apply the relocations."""
    ext = ld.extern_object
    exports = request.environment.symbols
    resolved: dict[str, int] = {}
    if ext is not None:
        for sym in ext.symbols:
            if sym.name in exports:
                sym.relative_addr = exports[sym.name].address - ext.mapped_base
            if sym.name:
                resolved[sym.name] = sym.rebased_addr
    for reloc in ld.main_object.relocs:
        try:
            reloc.relocate()
        except Exception:  # noqa: BLE001,S112 - a relocation CLE cannot apply stays as CLE left it
            continue
    return resolved
