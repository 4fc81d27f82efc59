"""apply_relocate(_add) for one relocation section, in bulk over the whole table.

The kernel applies entries one by one and stops at the first failure, after having
written every earlier entry (and, for a check made after the write, the failing one).
The bulk path reproduces exactly that: it computes every entry's value and failure
at once, finds the first failure, and writes the entries before it. When entries
overlap each other or the symbol table (so that order changes what later entries
see), or read symbols or places outside the known tables, it falls back to the
entry-by-entry path, which goes through the memory model for every access.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .arch import Arch, RelocType
from .errors import RelocationError
from .memory import Memory, MemoryFault

OK, UNKNOWN, NONZERO, OVERFLOW = 0, 1, 2, 3


class RelocContext(Protocol):
    memory: Memory
    arch: Arch
    modname: str

    def section_addr(self, index: int) -> int: ...
    def section_name(self, index: int) -> str: ...
    def symtab(self) -> tuple[int, int]: ...          # (address, count)
    def klog(self, level: int, fmt: str, *args: object) -> None: ...


@dataclass
class Entries:
    offset: np.ndarray     # r_offset (uint64)
    rtype: np.ndarray      # uint64
    rsym: np.ndarray       # uint64
    addend: np.ndarray     # uint64 (two's complement of r_addend)


def read_entries(ctx: RelocContext, rel_addr: int, rel_size: int) -> Entries:
    dtype = ctx.arch.elf.rela if ctx.arch.rela else ctx.arch.elf.rel
    table = ctx.memory.table(rel_addr, rel_size // dtype.itemsize, dtype)
    info = table["r_info"].astype(np.uint64)
    addend = (table["r_addend"].astype(np.int64).view(np.uint64) if ctx.arch.rela
              else np.zeros(len(table), dtype=np.uint64))
    return Entries(table["r_offset"].astype(np.uint64), ctx.arch.elf.r_type(info),
                   ctx.arch.elf.r_sym(info), addend)


def apply_section(ctx: RelocContext, relsec: int, rel_addr: int, rel_size: int, target: int) -> None:
    e = read_entries(ctx, rel_addr, rel_size)
    if len(e.offset) == 0:
        return
    if not _bulk(ctx, e, relsec, target):
        _one_by_one(ctx, e, relsec, target)


# ---- bulk ---------------------------------------------------------------------------
def _bulk(ctx: RelocContext, e: Entries, relsec: int, target: int) -> bool:
    arch, mem = ctx.arch, ctx.memory
    mask = np.uint64(arch.elf.addr_mask)
    sym_addr, nsym = ctx.symtab()
    if int(e.rsym.max()) >= nsym:
        return False
    try:
        symtab = mem.table(sym_addr, nsym, arch.elf.sym)
    except MemoryFault:
        return False
    base = ctx.section_addr(target)
    p = (np.uint64(base) + e.offset) & mask
    sizes = np.zeros(len(p), dtype=np.int64)
    kinds = np.full(len(p), -1, dtype=np.int64)
    table = list(arch.relocations.values())
    for k, r in enumerate(table):
        sel = e.rtype == np.uint64(r.number)
        kinds[sel] = k
        sizes[sel] = r.size
    # The place of every written entry must lie in one area, and entries must not overlap
    # each other or the symbol table: otherwise order matters and the slow path decides.
    written = sizes > 0
    off = np.zeros(len(p), dtype=np.int64)
    data = np.zeros(0, dtype=np.uint8)
    if written.any():
        try:
            area, _ = mem.locate(base, 1)
        except MemoryFault:
            return False
        data = area.data
        inside = (p >= np.uint64(area.base)) & (p - np.uint64(area.base) <= np.uint64(len(data)))
        if not inside[written].all():
            return False
        off = np.where(inside, p - np.uint64(area.base), 0).astype(np.int64)
        w_off, w_size = off[written], sizes[written]
        if (w_off + w_size > len(data)).any():
            return False
        order = np.argsort(w_off, kind="stable")
        starts, ends = w_off[order], w_off[order] + w_size[order]
        if len(starts) > 1 and (starts[1:] < ends[:-1]).any():
            return False
        sym_lo = sym_addr - area.base
        sym_hi = sym_lo + nsym * arch.elf.sym.itemsize
        if ((starts < sym_hi) & (ends > sym_lo)).any():
            return False
    s = symtab["st_value"].astype(np.uint64)[e.rsym.astype(np.int64)]
    val = np.zeros(len(p), dtype=np.uint64)
    old = _gather(data, off, sizes)
    if not arch.rela:               # REL: the addend is the value already at the place
        e.addend = old.copy()
    sa = s + e.addend
    fail = np.where(kinds < 0, UNKNOWN, OK)
    for k, r in enumerate(table):
        sel = kinds == k
        if not sel.any():
            continue
        val[sel] = r.compute(s[sel], e.addend[sel], p[sel]) & mask
        if r.zero_target:
            fail[sel & (old != 0) & (fail == OK)] = NONZERO
        if r.check is not None:
            fail[sel & ~r.check.fits(val) & (fail == OK)] = OVERFLOW
    bad = np.flatnonzero(fail)
    first = int(bad[0]) if len(bad) else len(p)
    upto = first + 1 if first < len(p) and fail[first] == OVERFLOW else first
    _scatter(data, off[:upto], sizes[:upto], val[:upto])
    if first < len(p):
        failed = table[kinds[first]] if kinds[first] >= 0 else None
        _fail(ctx, e, first, int(fail[first]), failed, int(p[first]), int(sa[first] & mask), int(val[first]), relsec, target)
    return True


def _gather(data: np.ndarray, off: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Little-endian value of `sizes[i]` bytes at `off[i]` (0 where size is 0)."""
    out = np.zeros(len(off), dtype=np.uint64)
    for size in (1, 2, 4, 8):
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            idx = off[sel][:, None] + np.arange(size)
            out[sel] = data[idx].copy().view(f"<u{size}").reshape(-1).astype(np.uint64)
    return out


def _scatter(data: np.ndarray, off: np.ndarray, sizes: np.ndarray, val: np.ndarray) -> None:
    for size in (1, 2, 4, 8):
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            idx = off[sel][:, None] + np.arange(size)
            data[idx] = val[sel].astype(f"<u{size}").view(np.uint8).reshape(-1, size)


# ---- one by one ---------------------------------------------------------------------
def _one_by_one(ctx: RelocContext, e: Entries, relsec: int, target: int) -> None:
    arch, mem = ctx.arch, ctx.memory
    mask = arch.elf.addr_mask
    sym_addr, _ = ctx.symtab()
    sym_size = arch.elf.sym.itemsize
    fields: Any = arch.elf.sym.fields
    value_off = int(fields["st_value"][1])
    base = ctx.section_addr(target)
    for i in range(len(e.offset)):
        p = (base + int(e.offset[i])) & mask
        r: RelocType | None = arch.relocations.get(int(e.rtype[i]))
        s = mem.read_u(sym_addr + int(e.rsym[i]) * sym_size + value_off, arch.elf.bits // 8)
        sa = (s + int(e.addend[i])) & mask
        if r is None:
            _fail(ctx, e, i, UNKNOWN, None, p, sa, 0, relsec, target)
            return
        if r.size == 0:
            continue
        if not arch.rela:           # REL: the addend is the value already at the place
            e.addend[i] = mem.read_u(p, r.size)
            sa = (s + int(e.addend[i])) & mask
        if r.zero_target and mem.read_u(p, r.size) != 0:
            _fail(ctx, e, i, NONZERO, r, p, sa, 0, relsec, target)
        one = lambda x: np.array([x], dtype=np.uint64)  # noqa: E731
        val = int(r.compute(one(s), one(int(e.addend[i])), one(p))[0]) & mask
        mem.write(p, (val & ((1 << (8 * r.size)) - 1)).to_bytes(r.size, "little"))
        if r.check is not None and not bool(r.check.fits(one(val))[0]):
            _fail(ctx, e, i, OVERFLOW, r, p, sa, val, relsec, target)


# ---- failures -----------------------------------------------------------------------
def _fail(ctx: RelocContext, e: Entries, i: int, code: int, r: RelocType | None,
          p: int, sa: int, val: int, relsec: int, target: int) -> None:
    msgs = ctx.arch.messages
    rtype = int(e.rtype[i])
    where = f"{ctx.section_name(target)}+{int(e.offset[i]):#x}"
    if code == UNKNOWN:
        ctx.klog(*msgs["unknown"], ctx.modname, rtype)
        raise RelocationError(f"{where}: unknown relocation type {rtype} (entry {i} of "
                              f"{ctx.section_name(relsec)})", section=ctx.section_name(target),
                              offset=int(e.offset[i]), rtype=str(rtype))
    assert r is not None
    if code == NONZERO:
        ctx.klog(*msgs["nonzero"], rtype, p, sa)
        raise RelocationError(f"{where}: {r.name}: place is not zero", section=ctx.section_name(target),
                              offset=int(e.offset[i]), rtype=r.name)
    assert r.check is not None
    ctx.klog(*msgs["overflow"], rtype, sa)
    ctx.klog(*msgs["overflow_hint"], ctx.modname)
    raise RelocationError(f"{where}: {r.name} out of range: {sa:#x} is not in {r.check.describe()}",
                          section=ctx.section_name(target), offset=int(e.offset[i]), rtype=r.name,
                          value=sa, allowed=r.check.describe())


