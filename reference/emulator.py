"""Run module code in unicorn at the addresses the kernel gives it (the machine; the
kernel's side, which memory exists with which protection and when, is reference/init.py).

Memory: unicorn reaches addresses like 0xffffffffc0000000 only in its virtual-TLB mode. A
TLB-fill hook translates each virtual page through `AddressSpace` (virtual page ->
physical page and kind). Every page of the kernel image range maps, for fetches only, to
one trap page; a code hook there runs the registry's Python implementation of the kernel
function at that address and returns to the caller.
Exact fault addresses (the TLB hook sees only pages): a read or write of an unmapped page
goes to a "poison" physical page whose memory hook knows the virtual address and stops;
pages that are ever read-only live in one physical range whose write hook decides per
phase; a fetch without execute permission is refused in the TLB hook and faults at the PC.
Per-arch facts: one `EmuArch` record per arch, in reference/arch/<arch>_emu.py.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from unicorn import Uc, UcError
from unicorn import unicorn_const as const

from koconform.conformance.model import LogRecord

from . import printk
from .kernel_functions import (REGISTRY, EmuFault, Heap, Jump, KernelFunction, kernel_data_pages,
                               printk_text_len)

# Physical layout (any free physical addresses do).
TRAP_PHYS = 0x1000
POISON_PHYS, POISON_PAGES = 0x100000, 16
PROTECTED_PHYS = 0x10000000          # pages that are ever read-only
RW_PHYS = 0x100000000                # pages that are always writable
STACK_SLACK = 0x100                  # zeroed room above the first frame (callers' frames)
PROTECTED = frozenset({"text", "rodata", "ro_after_init"})
EXECUTABLE = frozenset({"text", "rwx"})


@dataclass(frozen=True)
class EmuArch:
    """What the emulator must know of an arch: adding an arch is adding one of these."""
    name: str
    uc_arch: int
    uc_mode: int
    word: int                           # bytes in a register and a stack slot
    pc: int
    sp: int
    ret: int                            # return-value register
    args: tuple[int, ...]               # integer argument registers, in order
    link: int | None                    # return-address register; None: `call` pushes it
    registers: dict[str, int]           # by name, for kernel functions that read one
    kernel_text: tuple[int, int]        # inclusive range a call into the kernel lands in
    return_trap: int                    # in kernel_text, no symbol there: init/exit return here
    stack_top: int
    stack_size: int
    heap_base: int
    heap_size: int
    trap_fill: bytes                    # trap-page filler (never executed)
    initial: dict[int, int] = field(default_factory=dict)      # other registers at each call
    exceptions: dict[int, str] = field(default_factory=dict)   # interrupt number -> name
    functions: dict[str, KernelFunction] = field(default_factory=dict)  # arch entry points
    # Integer argument registers of a variadic kernel function (None: `args`). i386: none, all
    # on the stack (the kernel's -mregparm=3 does not apply to variadic functions; _printk is
    # asmlinkage as well).
    variadic_args: tuple[int, ...] | None = None
    # A 64-bit argument wider than a slot starts at an even argument slot (AAPCS: an even/odd
    # register pair, an 8-byte aligned stack slot); False: the next slot (i386).
    pair_align: bool = False


def emu_arch(name: str) -> EmuArch | None:
    """The record in reference/arch/<name>_emu.py, or None when the arch has none."""
    module_name = f"{__package__}.arch.{name}_emu"
    try:
        record: EmuArch = importlib.import_module(module_name).EMU
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return None
    return record


@dataclass
class Outcome:
    value: int | None                   # the return register, None after a fault
    fault: EmuFault | None


@dataclass
class Area:
    """Memory to map: pages from `base`, one kind each, initial bytes (zero past `data`)."""
    base: int
    kinds: list[str]
    data: bytes = b""


class AddressSpace:
    """Virtual pages -> (physical page, kind); the phase decides what is writable. Kinds:
    text, rodata, ro_after_init (writable in the init phase only), data, rwx."""

    def __init__(self, uc: Uc, page: int, bits: int) -> None:
        self.uc, self.page, self.mask = uc, page, (1 << bits) - 1
        self.pages: dict[int, tuple[int, str]] = {}
        self.owner: dict[int, int] = {}      # physical page -> virtual page
        self.phase = "init"
        self.next_phys = {True: PROTECTED_PHYS, False: RW_PHYS}

    def writable(self, kind: str) -> bool:
        return kind not in PROTECTED or (kind == "ro_after_init" and self.phase == "init")

    def map(self, vbase: int, kinds: list[str], data: bytes) -> None:
        """Map pages of the given kinds at vbase, one physical run per pool."""
        first = 0
        for protected, run in groupby(kinds, key=lambda kind: kind in PROTECTED):
            count = len(list(run))
            pbase = self.next_phys[protected]
            self.next_phys[protected] += count * self.page
            self.uc.mem_map(pbase, count * self.page)
            if data[first * self.page:(first + count) * self.page]:
                self.uc.mem_write(pbase, bytes(data[first * self.page:(first + count) * self.page]))
            for n in range(count):
                vpage, ppage = vbase + (first + n) * self.page, pbase + n * self.page
                self.pages[vpage], self.owner[ppage] = (ppage, kinds[first + n]), vpage
            first += count

    def unmap(self, vbase: int, size: int) -> None:
        for v in range(vbase, vbase + size, self.page):
            entry = self.pages.pop(v, None)
            if entry is not None:
                self.owner.pop(entry[0], None)

    def virtual(self, paddr: int) -> tuple[int, str] | None:
        """The virtual address now mapping a physical one, and its page kind."""
        ppage = paddr & -self.page
        vpage = self.owner.get(ppage)
        return None if vpage is None else (vpage + paddr - ppage, self.pages[vpage][1])

    def run(self, address: int, write: bool) -> tuple[int, int]:
        """(physical address, bytes to the end of its page), or EmuFault."""
        address &= self.mask
        entry = self.pages.get(address & -self.page)
        if entry is None or (write and not self.writable(entry[1])):
            raise EmuFault("write-fault" if write else "read-fault", address,
                           "not mapped" if entry is None else f"{entry[1]} page is read-only")
        offset = address & (self.page - 1)
        return entry[0] + offset, self.page - offset

    def accessible(self, address: int, size: int, write: bool) -> int:
        done = 0
        while done < size:
            try:
                _, room = self.run(address + done, write)
            except EmuFault:
                return done
            done += room
        return size

    def read(self, address: int, size: int) -> bytes:
        out = b""
        for chunk in self.chunks(address) if size else ():
            out += chunk[:size - len(out)]
            if len(out) == size:
                break
        return out

    def write(self, address: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            paddr, room = self.run(address + done, True)
            self.uc.mem_write(paddr, data[done:done + room])
            done += room

    def chunks(self, address: int) -> Iterator[bytes]:
        while True:
            paddr, room = self.run(address, False)
            yield bytes(self.uc.mem_read(paddr, room))
            address = (address + room) & self.mask


class Emulator:
    """One module's machine: its memory, the kernel functions it may call, its log."""

    def __init__(self, arch: EmuArch, page: int, areas: list[Area], symbols: dict[str, int],
                 budget: int) -> None:
        self.arch, self.page, self.budget, self.word = arch, page, budget, arch.word
        self.uc = Uc(arch.uc_arch, arch.uc_mode)
        try:        # unicorn's arm pages are 1 KiB unless set first: the TLB hook works in `page`s
            self.uc.ctl_set_page_size(page)                 # type: ignore[attr-defined]
        except UcError:
            pass    # fixed where it cannot be set (x86: 4 KiB)
        self.uc.ctl_set_tlb_mode(const.UC_TLB_VIRTUAL)     # type: ignore[attr-defined]
        self.memory = AddressSpace(self.uc, page, arch.word * 8)
        self.heap = Heap(arch.heap_base, arch.heap_size)
        self.functions = {**REGISTRY, **arch.functions}
        self.call_args = arch.args          # the argument registers of the kernel function called
        self.pair_align = arch.pair_align
        self.symbols = symbols
        self.by_address: dict[int, list[str]] = {}      # exports at a kernel text address, found on demand
        self.logbuf = printk.LogBuffer()
        self.poisoned: dict[int, int] = {}
        self.fault: EmuFault | None = None
        self.fetch_miss: int | None = None
        self.done = False
        self._map(areas)
        self._hook()

    # ---- setup ---------------------------------------------------------------------------
    def _map(self, areas: list[Area]) -> None:
        a = self.arch
        areas = [*areas, Area(a.stack_top - a.stack_size, ["data"] * (a.stack_size // self.page)),
                 Area(a.heap_base, ["data"] * (a.heap_size // self.page))]
        for area in areas:
            self.memory.map(area.base, area.kinds, area.data)
        for vpage, content in kernel_data_pages(self.symbols, self.word, self.page).items():
            if vpage not in self.memory.pages:
                self.memory.map(vpage, ["rodata"], content)
        self.uc.mem_map(TRAP_PHYS, self.page)
        self.uc.mem_write(TRAP_PHYS, a.trap_fill * (self.page // len(a.trap_fill)))
        self.uc.mem_map(POISON_PHYS, POISON_PAGES * self.page)

    def _hook(self) -> None:
        uc = self.uc
        uc.hook_add(const.UC_HOOK_TLB_FILL, self._fill)
        uc.hook_add(const.UC_HOOK_MEM_READ | const.UC_HOOK_MEM_WRITE, self._poison, None,
                    POISON_PHYS, POISON_PHYS + POISON_PAGES * self.page - 1)
        uc.hook_add(const.UC_HOOK_MEM_WRITE, self._protected_write, None, PROTECTED_PHYS, RW_PHYS - 1)
        uc.hook_add(const.UC_HOOK_CODE, self._trap, None, *self.arch.kernel_text)
        uc.hook_add(const.UC_HOOK_INTR, self._interrupt)

    # ---- hooks ---------------------------------------------------------------------------
    def _fill(self, uc: Uc, vaddr: int, access: int, entry: Any, _: object) -> bool:
        mapped = self.memory.pages.get(vaddr)
        fetch = access == const.UC_MEM_FETCH
        if mapped is not None and (not fetch or mapped[1] in EXECUTABLE):
            entry.paddr = mapped[0]
            exec_ = const.UC_PROT_EXEC if mapped[1] in EXECUTABLE else 0
            entry.perms = const.UC_PROT_READ | const.UC_PROT_WRITE | exec_
            return True
        lo, hi = self.arch.kernel_text
        if fetch and lo <= vaddr <= hi:
            entry.paddr, entry.perms = TRAP_PHYS, const.UC_PROT_EXEC
            return True
        if fetch:
            self.fetch_miss = vaddr
            return False
        ppage = POISON_PHYS + (len(self.poisoned) % POISON_PAGES) * self.page
        self.poisoned[ppage] = vaddr
        entry.paddr, entry.perms = ppage, const.UC_PROT_READ | const.UC_PROT_WRITE
        return True

    def _poison(self, uc: Uc, access: int, paddr: int, size: int, value: int, _: object) -> None:
        ppage = paddr & -self.page
        vaddr = self.poisoned.get(ppage, 0) + paddr - ppage
        kind = "write-fault" if access == const.UC_MEM_WRITE else "read-fault"
        self._stop(EmuFault(kind, vaddr, f"{size}-byte {kind[:-6]} of an unmapped address"))

    def _protected_write(self, uc: Uc, access: int, paddr: int, size: int, value: int, _: object) -> None:
        where = self.memory.virtual(paddr)
        if where is not None and not self.memory.writable(where[1]):
            self._stop(EmuFault("write-fault", where[0], f"{size}-byte write to a read-only {where[1]} page"))

    def _trap(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self.fault is not None or self.done:
            return
        if address == self.arch.return_trap:
            self.done = True
            uc.emu_stop()
            return
        try:
            uc.reg_write(self.arch.pc, self._kernel_call(address))
        except EmuFault as f:
            self._stop(f)
        except Exception as e:  # noqa: BLE001 - an emulator bug is still a result, never a crash
            self._stop(EmuFault("emulator-error", address, f"{type(e).__name__}: {e}"))

    def _interrupt(self, uc: Uc, intno: int, _: object) -> None:
        name = self.arch.exceptions.get(intno, f"exception vector {intno}")
        self._stop(EmuFault("cpu-exception", self.uc.reg_read(self.arch.pc), name))

    def _stop(self, fault: EmuFault) -> None:
        if self.fault is None:
            self.fault = fault
        self.uc.emu_stop()

    # ---- kernel functions ------------------------------------------------------------------
    def names_at(self, address: int) -> list[str]:
        """The exported names at a kernel text address, in name order (looked up once per address:
        most modules call few kernel functions, so no map of all 10,000 exports is built)."""
        names = self.by_address.get(address)
        if names is None:
            lo, hi = self.arch.kernel_text
            names = sorted(n for n, a in self.symbols.items() if a == address) if lo <= address <= hi else []
            self.by_address[address] = names
        return names

    def _kernel_call(self, address: int) -> int:
        names = self.names_at(address)
        if not names:
            raise EmuFault("fetch-fault", address, "jump into kernel text where no exported function starts")
        fn = next((self.functions[n] for n in names if n in self.functions), None)
        if fn is None:
            raise EmuFault("unimplemented-kernel-function", address,
                           f"{' = '.join(names)} is exported but not emulated")
        variadic = self.arch.variadic_args
        self.call_args = variadic if fn.variadic and variadic is not None else self.arch.args
        outcome = fn.impl(self, [self.arg(i) for i in range(len(fn.params))])
        if isinstance(outcome, Jump):
            return outcome.target
        if outcome is not None:
            self.uc.reg_write(self.arch.ret, outcome & ((1 << self.word * 8) - 1))
        return self._pop_return()

    def arg(self, index: int) -> int:
        """The index-th integer argument at a function's first instruction."""
        if index < len(self.call_args):
            return int(self.uc.reg_read(self.call_args[index]))
        slot = index - len(self.call_args) + (1 if self.arch.link is None else 0)
        sp = self.uc.reg_read(self.arch.sp)
        return int.from_bytes(self.memory.read(sp + slot * self.word, self.word), "little")

    def _pop_return(self) -> int:
        if self.arch.link is not None:
            return int(self.uc.reg_read(self.arch.link))
        sp = self.uc.reg_read(self.arch.sp)
        self.uc.reg_write(self.arch.sp, sp + self.word)
        return int.from_bytes(self.memory.read(sp, self.word), "little")

    # ---- the Machine protocol (kernel_functions) ------------------------------------------
    def register(self, name: str) -> int:
        return int(self.uc.reg_read(self.arch.registers[name]))

    def printk(self, formatted: printk.Formatted) -> int:
        self.logbuf.emit_formatted(formatted, "module")
        return printk_text_len(formatted.text)

    # ---- running -------------------------------------------------------------------------
    def call(self, entry: int) -> Outcome:
        """Call a `void (*)(void)` / `int (*)(void)` at entry; returns at the return trap."""
        self.fault, self.fetch_miss, self.done = None, None, False
        for reg in self.arch.registers.values():
            self.uc.reg_write(reg, 0)
        for reg, value in self.arch.initial.items():
            self.uc.reg_write(reg, value)
        sp = (self.arch.stack_top - STACK_SLACK) & -16
        if self.arch.link is None:
            sp -= self.word
            self.memory.write(sp, self.arch.return_trap.to_bytes(self.word, "little"))
        else:
            self.uc.reg_write(self.arch.link, self.arch.return_trap)
        self.uc.reg_write(self.arch.sp, sp)
        try:
            self.uc.emu_start(entry, 0, count=max(self.budget, 1))   # 0 = no limit
        except UcError as e:
            self._stop_on_error(e)
        if self.fault is not None:
            return Outcome(None, self.fault)
        if not self.done:
            pc = int(self.uc.reg_read(self.arch.pc))
            return Outcome(None, EmuFault("budget-exhausted", pc, f"{self.budget} instructions run"))
        return Outcome(int(self.uc.reg_read(self.arch.ret)), None)

    def _stop_on_error(self, e: UcError) -> None:
        if self.fault is not None:
            return
        pc = int(self.uc.reg_read(self.arch.pc))
        if e.errno == const.UC_ERR_INSN_INVALID:
            self.fault = EmuFault("invalid-instruction", pc, "undefined or invalid instruction")
        elif e.errno == const.UC_ERR_EXCEPTION and self.fetch_miss is not None:
            address = max(pc, self.fetch_miss)
            where = self.memory.pages.get(address & -self.page)
            self.fault = EmuFault("fetch-fault", address, "not mapped" if where is None
                                  else f"{where[1]} page is not executable")
        else:
            self.fault = EmuFault("cpu-exception", pc, str(e))

    def enter_phase(self, phase: str, freed: list[tuple[int, int]]) -> None:
        """From now on: `phase`'s permissions (ro_after_init is writable in "init" only),
        and the (base, size) ranges in `freed` are gone."""
        self.memory.phase = phase
        for base, size in freed:
            self.memory.unmap(base, size)
        self.uc.ctl(const.UC_CTL_TLB_FLUSH, const.UC_CTL_IO_WRITE)

    def take_log(self) -> list[LogRecord]:
        """The module's records since the last call (an open record counts as finished)."""
        records = [LogRecord(int(str(r["level"])), "module", str(r["text"]),
                             None if r["pattern"] is None else str(r["pattern"]))
                   for r in self.logbuf.records()]
        self.logbuf = printk.LogBuffer()
        return records
