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
from .memory import Area, Memory, MemoryFault

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
    if not _bulk(ctx, [(relsec, target, e)]):
        _one_by_one(ctx, e, relsec, target)


def apply_sections(ctx: RelocContext, sections: list[tuple[int, int, int, int]]) -> None:
    """apply_section over consecutive relocation sections (relsec, rel_addr, rel_size, target), in
    that order, as one bulk pass when no section can see what another writes: their written places
    pairwise disjoint and clear of the symbol table and of the relocation tables that later sections
    read. Then only the first failure depends on the order, and one pass that writes every entry
    before the first failing one (in section order) is what the kernel's section-by-section loop
    does. Otherwise each section goes through apply_section in turn."""
    read: list[tuple[int, int, Entries]] = []
    tables: list[tuple[int, int]] = []
    for k, (relsec, rel_addr, rel_size, target) in enumerate(sections):
        try:
            e = read_entries(ctx, rel_addr, rel_size)
        except MemoryFault:
            apply_sections(ctx, sections[:k])       # the kernel reads this table after applying those
            raise
        if len(e.offset):
            read.append((relsec, target, e))
            dtype = ctx.arch.elf.rela if ctx.arch.rela else ctx.arch.elf.rel
            tables.append((rel_addr, len(e.offset) * dtype.itemsize))
    if len(read) > 1 and _bulk(ctx, read, tables):
        return
    for relsec, rel_addr, rel_size, target in sections:
        apply_section(ctx, relsec, rel_addr, rel_size, target)


# ---- bulk ---------------------------------------------------------------------------
def _kinds(arch: Arch, rtype: np.ndarray) -> tuple[list[RelocType], np.ndarray, np.ndarray]:
    """(the arch's types in table order, each entry's index in it or -1, each entry's size or 0)."""
    table = list(arch.relocations.values())
    sizes_of = np.array([r.size for r in table] + [0], dtype=np.int64)
    small = 1 << 12
    if len(rtype) and all(r.number < small for r in table) and int(rtype.max()) < small:
        lut = np.full(small, -1, dtype=np.int64)    # type number -> table index (the later entry wins)
        for k, r in enumerate(table):
            lut[r.number] = k
        kinds = lut[rtype.astype(np.int64)]
        return table, kinds, sizes_of[kinds]
    numbers = np.array([r.number for r in table], dtype=np.uint64)
    order = np.argsort(numbers, kind="stable")
    known = numbers[order]          # a number listed twice: the later entry wins, as it always has
    at = np.maximum(np.searchsorted(known, rtype, side="right") - 1, 0)
    hit = known[at] == rtype if len(known) else np.zeros(len(rtype), dtype=bool)
    kinds = np.where(hit, order[at] if len(known) else 0, -1).astype(np.int64)
    return table, kinds, sizes_of[kinds]        # kinds -1: the 0 at the end


def _bulk(ctx: RelocContext, items: list[tuple[int, int, Entries]],
          tables: list[tuple[int, int]] | None = None) -> bool:
    """items: (relsec, target, entries) of one section, or of consecutive sections with `tables`,
    the (address, bytes) their entries were read from. False: the slow path decides."""
    arch, mem = ctx.arch, ctx.memory
    mask = np.uint64(arch.elf.addr_mask)
    sym_addr, nsym = ctx.symtab()
    if max(int(e.rsym.max()) for _, _, e in items) >= nsym:
        return False
    sym_size = arch.elf.sym.itemsize
    try:                            # the whole symbol table in one area, as a table read needs
        sym_area, sym_off = mem.locate(sym_addr, nsym * sym_size)
    except MemoryFault:
        return False
    one = len(items) == 1
    entries = [e for _, _, e in items]
    bounds = np.cumsum([0] + [len(e.offset) for e in entries])
    rtype = entries[0].rtype if one else np.concatenate([e.rtype for e in entries])
    table, kinds, sizes = _kinds(arch, rtype)
    n = len(kinds)
    nums = np.diff(bounds)
    bases = [ctx.section_addr(target) for _, target, _ in items]
    offsets = entries[0].offset if one else np.concatenate([e.offset for e in entries])
    p = (np.repeat(np.array(bases, dtype=np.uint64), nums) + offsets) & mask
    # The place of every written entry must lie in the area where its target starts, and
    # written places must not overlap each other or the symbol table (nor, across sections,
    # a relocation table a later section reads): otherwise order matters and the slow path decides.
    written = sizes > 0
    item = np.repeat(np.arange(len(items)), nums)              # each entry's section
    areas: list[Area] = []
    area_of_item = np.full(len(items) + 1, -1, dtype=np.int64)
    for j in np.flatnonzero(np.bincount(item[written], minlength=len(items))).tolist():
        try:
            area, _ = mem.locate(bases[j], 1)
        except MemoryFault:
            return False
        a = next((k for k, known in enumerate(areas) if known is area), len(areas))
        if a == len(areas):
            areas.append(area)
        area_of_item[j] = a
    area_of = area_of_item[item]
    where = np.where(written, area_of, -1)          # index in `areas` of each written entry
    off = np.zeros(n, dtype=np.int64)
    if areas:
        abase = np.array([a.base for a in areas] + [0], dtype=np.uint64)[area_of]
        alen = np.array([len(a.data) for a in areas] + [0], dtype=np.uint64)[area_of]
        delta = p - abase
        inside = (p >= abase) & (delta <= alen)
        every = bool(written.all())         # (usually: no R_*_NONE, no unknown type)
        if not (inside.all() if every else inside[written].all()):
            return False
        if every:                           # every place inside its area: the offsets are small
            off = delta.view(np.int64)
            w_off, w_end, w_area, w_item, w_alen = off, off + sizes, where, item, alen
        else:
            off = np.where(inside & (area_of >= 0), delta, 0).astype(np.int64)
            w = np.flatnonzero(written)
            w_off, w_end, w_area, w_item, w_alen = off[w], off[w] + sizes[w], where[w], item[w], alen[w]
        if (w_end.view(np.uint64) > w_alen).any():       # (w_end >= 0: a uint64 view is its value)
            return False
        if _overlap(w_off, w_end, w_area, w_item):
            return False
        for a, area in enumerate(areas):
            sym_lo = sym_addr - area.base
            sym_hi = sym_lo + nsym * sym_size
            if sym_hi <= 0 or sym_lo >= len(area.data):
                continue            # the symbol table is not where this area's places are
            lo_c, hi_c = max(min(sym_lo, 1 << 62), -1), max(min(sym_hi, 1 << 62), -1)
            if ((w_area == a) & (w_off < hi_c) & (w_end > lo_c)).any():
                return False
        for j, (address, size) in enumerate(tables or []):
            if j == 0 or size == 0:
                continue
            try:
                t_area, t_lo = mem.locate(address, size)
            except MemoryFault:
                return False
            a = next((k for k, known in enumerate(areas) if known is t_area), -1)
            if a >= 0 and ((w_area == a) & (w_item < j) & (w_off < t_lo + size) & (w_end > t_lo)).any():
                return False
    # Every entry's symbol, type, area: one stable sort by (type, area) makes each type's entries
    # one block (its values and failures computed on slices) split into one block per area
    # (its places read and written through one view). Unknown types (-1) come first.
    rsym = entries[0].rsym if one else np.concatenate([e.rsym for e in entries])
    present = np.flatnonzero(np.bincount(kinds + 1, minlength=len(table) + 1)[1:])
    widths = tuple(sorted({table[k].size for k in present} & {1, 2, 4, 8}))
    rows = len(areas) + 1
    key = (kinds + 1) * rows + np.where(np.isin(sizes, widths), where + 1, 0)
    counts = np.bincount(key, minlength=(len(table) + 1) * rows)
    buckets = np.flatnonzero(counts).tolist()
    cum = np.concatenate(([0], np.cumsum(counts)))
    perm = None if len(buckets) == 1 else \
        np.argsort(key.astype(np.int16) if len(counts) < 1 << 15 else key, kind="stable")   # (a radix sort)

    def kept(x: np.ndarray) -> np.ndarray:
        return x if perm is None else x[perm]
    symtab = sym_area.data[sym_off:sym_off + nsym * sym_size].view(arch.elf.sym)
    ks = symtab["st_value"][kept(rsym).astype(np.int64)].astype(np.uint64)
    kp, koff = kept(p), kept(off)
    kold = np.zeros(n, dtype=np.uint64)
    blocks: list[tuple[int, int, np.ndarray, int]] = []         # (lo, hi, area data, width)
    for b in buckets:
        kind, a = b // rows - 1, b % rows - 1
        if a >= 0:
            lo, hi, width = int(cum[b]), int(cum[b + 1]), table[kind].size
            data = areas[a].data
            blocks.append((lo, hi, data, width))
            window = _window(data, width)
            kold[lo:hi] = window[koff[lo:hi]] if window is not None else \
                _gather(data, koff[lo:hi], np.full(hi - lo, width), (width,))
    if not arch.rela:               # REL: the addend is the value already at the place
        old = kold.copy() if perm is None else np.empty(n, dtype=np.uint64)
        if perm is not None:
            old[perm] = kold
        for j, e in enumerate(entries):
            e.addend = old[bounds[j]:bounds[j + 1]].copy()
        ka = kold
    else:
        ka = kept(entries[0].addend if one else np.concatenate([e.addend for e in entries]))
    ksa = ks + ka
    kval = np.zeros(n, dtype=np.uint64)
    kfail = np.zeros(n, dtype=np.int64)
    kfail[:int(cum[rows])] = UNKNOWN
    for k in present.tolist():      # the types present, in table order
        r = table[k]
        lo, hi = int(cum[(k + 1) * rows]), int(cum[(k + 2) * rows])
        v = kval[lo:hi] = r.compute(ks[lo:hi], ka[lo:hi], kp[lo:hi]) & mask
        f = kfail[lo:hi]
        if r.zero_target:
            f[(kold[lo:hi] != 0) & (f == OK)] = NONZERO
        if r.check is not None:
            f[~r.check.fits(v) & (f == OK)] = OVERFLOW
    # The first failure in the kernel's order; every entry before it (and an overflowing one) written.
    first, at = n, n
    if kfail.any():
        if perm is None:
            first = at = int(np.flatnonzero(kfail)[0])
        else:
            fail = np.empty(n, dtype=np.int64)
            fail[perm] = kfail
            first = int(np.flatnonzero(fail)[0])
            at = int(np.flatnonzero(perm == first)[0])
    upto = first + 1 if first < n and kfail[at] == OVERFLOW else first
    for lo, hi, data, width in blocks:
        sel = slice(lo, hi) if upto == n else np.flatnonzero(kept(np.arange(n))[lo:hi] < upto) + lo
        window = _window(data, width)
        if window is not None:
            window[koff[sel]] = kval[sel].astype(f"<u{width}")
        else:
            _scatter(data, koff[sel], np.full(len(kval[sel]), width), kval[sel], (width,))
    if first < n:
        j = int(np.searchsorted(bounds, first, side="right")) - 1
        relsec, target, e = items[j]
        failed = table[kinds[first]] if kinds[first] >= 0 else None
        _fail(ctx, e, first - int(bounds[j]), int(kfail[at]), failed, int(p[first]), int(ksa[at] & mask),
              int(kval[at]), relsec, target)
    return True


def _overlap(starts: np.ndarray, ends: np.ndarray, area: np.ndarray, item: np.ndarray) -> bool:
    """Whether two written places [start, end) in the same area overlap (entries in item order).
    Usually each section's places come in order and the sections' spans are apart: that is seen
    in a few passes; otherwise all places are sorted."""
    if len(starts) < 2:
        return False
    same = item[1:] == item[:-1]
    if not ((same & (starts[1:] < ends[:-1])).any()):      # in order within each section, apart
        first = np.flatnonzero(np.concatenate(([True], ~same)))
        lo, hi = starts[first], np.maximum.reduceat(ends, first)
        spans = np.lexsort((lo, area[first]))
        lo, hi, a = lo[spans], hi[spans], area[first][spans]
        if not ((a[1:] == a[:-1]) & (lo[1:] < hi[:-1])).any():
            return False
    order = np.lexsort((starts, area))
    so, se, sa = starts[order], ends[order], area[order]
    return bool(((sa[1:] == sa[:-1]) & (so[1:] < se[:-1])).any())


def _gather(data: np.ndarray, off: np.ndarray, sizes: np.ndarray,
            widths: tuple[int, ...] = (1, 2, 4, 8)) -> np.ndarray:
    """Little-endian value of `sizes[i]` bytes at `off[i]` (0 where size is 0); `widths`: the
    sizes that occur among 1, 2, 4 and 8 (others are neither read nor written)."""
    out = np.zeros(len(off), dtype=np.uint64)
    for size in widths:
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            window = _window(data, size)
            if window is not None:
                out[sel] = window[off[sel]]
                continue
            idx = off[sel][:, None] + np.arange(size)
            out[sel] = data[idx].copy().view(f"<u{size}").reshape(-1).astype(np.uint64)
    return out


def _window(data: np.ndarray, size: int) -> np.ndarray | None:
    """data as overlapping little-endian `size`-byte words, one starting at every byte (a view:
    reading or writing word i is reading or writing data[i:i + size])."""
    if not data.flags.c_contiguous or data.dtype != np.uint8 or len(data) < size:
        return None
    return np.ndarray(shape=(len(data) - size + 1,), dtype=f"<u{size}", buffer=data, strides=(1,))


def _scatter(data: np.ndarray, off: np.ndarray, sizes: np.ndarray, val: np.ndarray,
             widths: tuple[int, ...] = (1, 2, 4, 8)) -> None:
    for size in widths:
        sel = np.flatnonzero(sizes == size)
        if len(sel):
            window = _window(data, size)
            if window is not None:
                window[off[sel]] = val[sel].astype(f"<u{size}")
                continue
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


