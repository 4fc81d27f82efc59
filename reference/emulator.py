"""Run a loaded module's code in unicorn, at the addresses the kernel gives it.

Memory. Unicorn reaches addresses like 0xffffffffc0000000 only in its virtual-TLB mode:
a TLB-fill hook translates each virtual page through `AddressSpace`, a table of pages
(physical page, kind) built from the load: module regions with the STRICT_MODULE_RWX
protections of their layout, a stack, a kmalloc heap and the kernel data objects the
registry provides. Every page of the kernel image range maps, for instruction fetches
only, to one trap page; a code hook on that range runs the Python implementation of the
kernel function the PC points at (kernel_functions.REGISTRY) and returns to the caller.

Exact fault addresses. The TLB hook only sees page addresses, so: a read or write of an
unmapped page is pointed at a "poison" physical page whose memory hook knows the exact
virtual address and stops; pages that are ever read-only (text, rodata, ro_after_init)
live in one physical range whose write hook decides per phase; a fetch from a page
without execute permission is refused in the TLB hook and faults at the PC.

Per-arch facts live in one `EmuArch` record per arch, in reference/arch/<arch>_emu.py.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unicorn import (UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_EXCEPTION, UC_ERR_INSN_INVALID,
                     UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE,
                     UC_HOOK_TLB_FILL, UC_MEM_FETCH, UC_MEM_WRITE, UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE,
                     UC_TLB_VIRTUAL, Uc, UcError)

from koconform.conformance.model import LogRecord

from . import printk
from .elf import SHF_ALLOC, SHF_EXECINSTR, SHF_RO_AFTER_INIT, SHF_WRITE
from .kernel_functions import (KERNEL_DATA, REGISTRY, EmuFault, Heap, Jump, KernelFunction, cstring,
                               printk_text_len)

if TYPE_CHECKING:
    from .loader import Load

# Physical layout (any free physical addresses do).
TRAP_PHYS = 0x1000
POISON_PHYS, POISON_PAGES = 0x100000, 16
PROTECTED_PHYS = 0x10000000          # pages that are ever read-only
RW_PHYS = 0x100000000                # pages that are always writable
STACK_SLACK = 0x100                  # zeroed room above the first frame (callers' frames)
# layout_sections' groups, in order: text, rodata, ro_after_init, data, the rest.
GROUPS = ((SHF_EXECINSTR | SHF_ALLOC, 0), (SHF_ALLOC, SHF_WRITE),
          (SHF_RO_AFTER_INIT | SHF_ALLOC, 0), (SHF_WRITE | SHF_ALLOC, 0), (SHF_ALLOC, 0))
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
    exceptions: dict[int, str] = field(default_factory=dict)   # interrupt number -> name
    functions: dict[str, KernelFunction] = field(default_factory=dict)  # arch entry points


def emu_arch(name: str) -> EmuArch | None:
    """The record in reference/arch/<name>_emu.py, or None when the arch has none."""
    module_name = f"{__package__}.arch.{name}_emu"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return None
    record: EmuArch = module.EMU
    return record


@dataclass
class Outcome:
    value: int | None                   # the return register, None after a fault
    fault: EmuFault | None


def region_kinds(ld: Load, region: str, page: int) -> list[str]:
    """The kind of each page of a region, from the layout's group boundaries (6.1's
    text_size, ro_size, ro_after_init_size, each page-aligned under STRICT_MODULE_RWX)."""
    base, size = ld.regions[region]
    pages = (size + page - 1) // page
    ends = [0] * len(GROUPS)
    kallsyms = {ld.index["sym"], ld.index["str"]}
    for i, (where, offset) in ld.placed.items():
        if where != region or i in kallsyms:
            continue
        flags = int(ld.sechdrs[i]["sh_flags"])
        group = next(g for g, (req, forbid) in enumerate(GROUPS) if flags & req == req and not flags & forbid)
        ends[group] = max(ends[group], offset + int(ld.sechdrs[i]["sh_size"]))
    def up(n: int) -> int:
        return (n + page - 1) // page
    text = up(ends[0])
    if not ld.profile.enabled("CONFIG_STRICT_MODULE_RWX"):
        return ["rwx" if p < text else "data" for p in range(pages)]
    ro = max(text, up(ends[1]))
    ro_after_init = max(ro, up(ends[2])) if region == "core" else ro
    return ["text" if p < text else "rodata" if p < ro else "ro_after_init" if p < ro_after_init
            else "data" for p in range(pages)]


class AddressSpace:
    """Virtual pages -> (physical page, kind); the phase decides what is writable."""

    def __init__(self, uc: Uc, page: int) -> None:
        self.uc, self.page = uc, page
        self.pages: dict[int, tuple[int, str]] = {}
        self.owner: dict[int, int] = {}      # physical page -> virtual page
        self.phase = "init"
        self.next_phys = {True: PROTECTED_PHYS, False: RW_PHYS}

    def writable(self, kind: str) -> bool:
        return kind not in PROTECTED or (kind == "ro_after_init" and self.phase == "init")

    def map(self, vbase: int, kinds: list[str], data: bytes) -> None:
        """Map pages of the given kinds at vbase, one physical run per pool."""
        k = 0
        while k < len(kinds):
            protected = kinds[k] in PROTECTED
            j = k
            while j < len(kinds) and (kinds[j] in PROTECTED) == protected:
                j += 1
            pbase = self.next_phys[protected]
            self.next_phys[protected] += (j - k) * self.page
            self.uc.mem_map(pbase, (j - k) * self.page)
            chunk = data[k * self.page:j * self.page]
            if chunk:
                self.uc.mem_write(pbase, bytes(chunk))
            for n in range(k, j):
                self.pages[vbase + n * self.page] = (pbase + (n - k) * self.page, kinds[n])
                self.owner[pbase + (n - k) * self.page] = vbase + n * self.page
            k = j

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
                _, room = self.run((address + done) & (2**64 - 1), write)
            except EmuFault:
                return done
            done += room
        return size

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            paddr, room = self.run(address + len(out), False)
            out += self.uc.mem_read(paddr, min(room, size - len(out)))
        return bytes(out)

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
            address += room


class VarArgs:
    """printk.ArgSource over a variadic call's arguments: registers, then the stack."""

    def __init__(self, emu: Emulator, first: int) -> None:
        self.emu, self.index = emu, first

    def next_int(self, size: int, signed: bool) -> int:
        value = self.emu.arg(self.index) & ((1 << size * 8) - 1)
        self.index += 1
        return value - (1 << size * 8) if signed and value >> (size * 8 - 1) else value

    def read_cstring(self, address: int, limit: int) -> bytes | None:
        return cstring(self.emu, address, limit)    # a bad %s oopses the kernel: a fault here

    def read_bytes(self, address: int, n: int) -> bytes | None:
        return self.emu.read(address, n)


class Emulator:
    """One module's machine: memory mapped from the load, kernel functions, the log."""

    def __init__(self, ld: Load, arch: EmuArch, budget: int) -> None:
        self.ld, self.arch, self.budget, self.word = ld, arch, budget, arch.word
        self.uc = Uc(arch.uc_arch, arch.uc_mode)
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self.page = ld.profile.page_size
        self.space = AddressSpace(self.uc, self.page)
        self.heap = Heap(arch.heap_base, arch.heap_size)
        self.functions = {**REGISTRY, **arch.functions}
        self.by_address: dict[int, list[str]] = {}
        lo, hi = arch.kernel_text
        for name, sym in sorted(ld.env.symbols.items()):
            if lo <= sym.address <= hi:
                self.by_address.setdefault(sym.address, []).append(name)
        self.logbuf = printk.LogBuffer()
        self.poisoned: dict[int, int] = {}
        self.fault: EmuFault | None = None
        self.fetch_miss: int | None = None
        self.done = False
        self._map()
        self._hook()

    # ---- setup ---------------------------------------------------------------------------
    def _map(self) -> None:
        for region, (base, size) in self.ld.regions.items():
            area = self.ld.memory.area(region)
            data = area.data.tobytes() if area is not None else b""
            self.space.map(base, region_kinds(self.ld, region, self.page), data)
        a = self.arch
        self.space.map(a.stack_top - a.stack_size, ["data"] * (a.stack_size // self.page), b"")
        self.space.map(a.heap_base, ["data"] * (a.heap_size // self.page), b"")
        self._map_kernel_data()
        self.uc.mem_map(TRAP_PHYS, self.page)
        self.uc.mem_write(TRAP_PHYS, a.trap_fill * (self.page // len(a.trap_fill)))
        self.uc.mem_map(POISON_PHYS, POISON_PAGES * self.page)

    def _map_kernel_data(self) -> None:
        pages: dict[int, bytearray] = {}
        for name, build in KERNEL_DATA.items():
            sym = self.ld.env.symbols.get(name)
            if sym is None:
                continue
            data = build(self.word)
            for k in range(len(data)):
                vpage = (sym.address + k) & -self.page
                pages.setdefault(vpage, bytearray(self.page))[(sym.address + k) - vpage] = data[k]
        for vpage, content in sorted(pages.items()):
            if vpage not in self.space.pages:
                self.space.map(vpage, ["rodata"], bytes(content))

    def _hook(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_TLB_FILL, self._fill)
        uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._poison, None,
                    POISON_PHYS, POISON_PHYS + POISON_PAGES * self.page - 1)
        uc.hook_add(UC_HOOK_MEM_WRITE, self._protected_write, None, PROTECTED_PHYS, RW_PHYS - 1)
        uc.hook_add(UC_HOOK_CODE, self._trap, None, *self.arch.kernel_text)
        uc.hook_add(UC_HOOK_INTR, self._interrupt)

    # ---- hooks ---------------------------------------------------------------------------
    def _fill(self, uc: Uc, vaddr: int, access: int, entry: Any, _: object) -> bool:
        mapped = self.space.pages.get(vaddr)
        fetch = access == UC_MEM_FETCH
        if mapped is not None and (not fetch or mapped[1] in EXECUTABLE):
            entry.paddr = mapped[0]
            entry.perms = UC_PROT_READ | UC_PROT_WRITE | (UC_PROT_EXEC if mapped[1] in EXECUTABLE else 0)
            return True
        lo, hi = self.arch.kernel_text
        if fetch and lo <= vaddr <= hi:
            entry.paddr, entry.perms = TRAP_PHYS, UC_PROT_EXEC
            return True
        if fetch:
            self.fetch_miss = vaddr
            return False
        ppage = POISON_PHYS + (len(self.poisoned) % POISON_PAGES) * self.page
        self.poisoned[ppage] = vaddr
        entry.paddr, entry.perms = ppage, UC_PROT_READ | UC_PROT_WRITE
        return True

    def _poison(self, uc: Uc, access: int, paddr: int, size: int, value: int, _: object) -> None:
        ppage = paddr & -self.page
        vaddr = self.poisoned.get(ppage, 0) + paddr - ppage
        kind = "write-fault" if access == UC_MEM_WRITE else "read-fault"
        self._stop(EmuFault(kind, vaddr, f"{size}-byte {kind[:-6]} of an unmapped address"))

    def _protected_write(self, uc: Uc, access: int, paddr: int, size: int, value: int, _: object) -> None:
        where = self.space.virtual(paddr)
        if where is not None and not self.space.writable(where[1]):
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
        except Exception as e:        # an emulator bug is still a result, never a crash
            self._stop(EmuFault("emulator-error", address, f"{type(e).__name__}: {e}"))

    def _interrupt(self, uc: Uc, intno: int, _: object) -> None:
        name = self.arch.exceptions.get(intno, f"exception vector {intno}")
        self._stop(EmuFault("cpu-exception", self.uc.reg_read(self.arch.pc), name))

    def _stop(self, fault: EmuFault) -> None:
        if self.fault is None:
            self.fault = fault
        self.uc.emu_stop()

    # ---- kernel functions ------------------------------------------------------------------
    def _kernel_call(self, address: int) -> int:
        names = self.by_address.get(address)
        if not names:
            raise EmuFault("fetch-fault", address, "jump into kernel text where no exported function starts")
        fn = next((self.functions[n] for n in names if n in self.functions), None)
        if fn is None:
            raise EmuFault("unimplemented-kernel-function", address,
                           f"{' = '.join(names)} is exported but not emulated")
        outcome = fn.impl(self, [self.arg(i) for i in range(len(fn.params))])
        if isinstance(outcome, Jump):
            return outcome.target
        if outcome is not None:
            self.uc.reg_write(self.arch.ret, outcome & ((1 << self.word * 8) - 1))
        return self._pop_return()

    def arg(self, index: int) -> int:
        """The index-th integer argument at a function's first instruction."""
        if index < len(self.arch.args):
            return int(self.uc.reg_read(self.arch.args[index]))
        slot = index - len(self.arch.args) + (1 if self.arch.link is None else 0)
        return int.from_bytes(self.read(self.uc.reg_read(self.arch.sp) + slot * self.word, self.word), "little")

    def _pop_return(self) -> int:
        if self.arch.link is not None:
            return int(self.uc.reg_read(self.arch.link))
        sp = self.uc.reg_read(self.arch.sp)
        self.uc.reg_write(self.arch.sp, sp + self.word)
        return int.from_bytes(self.read(sp, self.word), "little")

    # ---- the Machine protocol ------------------------------------------------------------
    def register(self, name: str) -> int:
        return int(self.uc.reg_read(self.arch.registers[name]))

    def varargs(self, first: int) -> printk.ArgSource:
        return VarArgs(self, first)

    def read(self, address: int, size: int) -> bytes:
        return self.space.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        self.space.write(address, data)

    def accessible(self, address: int, size: int, write: bool) -> int:
        return self.space.accessible(address, size, write)

    def chunks(self, address: int) -> Iterator[bytes]:
        return self.space.chunks(address)

    def printk(self, formatted: printk.Formatted) -> int:
        self.logbuf.emit_formatted(formatted, "module")
        return printk_text_len(formatted.text)

    # ---- running -------------------------------------------------------------------------
    def call(self, entry: int) -> Outcome:
        """Call a `void (*)(void)` / `int (*)(void)` at entry; returns at the return trap."""
        self.fault, self.fetch_miss, self.done = None, None, False
        for reg in self.arch.registers.values():
            self.uc.reg_write(reg, 0)
        sp = (self.arch.stack_top - STACK_SLACK) & -16
        if self.arch.link is None:
            sp -= self.word
            self.write(sp, self.arch.return_trap.to_bytes(self.word, "little"))
        else:
            self.uc.reg_write(self.arch.link, self.arch.return_trap)
        self.uc.reg_write(self.arch.sp, sp)
        try:
            self.uc.emu_start(entry, 0, count=self.budget)
        except UcError as e:
            self._stop_on_error(e)
        if self.fault is not None:
            return Outcome(None, self.fault)
        if not self.done:
            pc = int(self.uc.reg_read(self.arch.pc))
            return Outcome(None, EmuFault("budget-exhausted", pc, f"still running after {self.budget} instructions"))
        return Outcome(int(self.uc.reg_read(self.arch.ret)), None)

    def _stop_on_error(self, e: UcError) -> None:
        if self.fault is not None:
            return
        pc = int(self.uc.reg_read(self.arch.pc))
        if e.errno == UC_ERR_INSN_INVALID:
            self.fault = EmuFault("invalid-instruction", pc, "undefined or invalid instruction")
        elif e.errno == UC_ERR_EXCEPTION and self.fetch_miss is not None:
            address = max(pc, self.fetch_miss)
            where = self.space.pages.get(address & -self.page)
            self.fault = EmuFault("fetch-fault", address, "not mapped" if where is None
                                  else f"{where[1]} page is not executable")
        else:
            self.fault = EmuFault("cpu-exception", pc, str(e))

    def end_init(self) -> None:
        """do_init_module's success path: ro_after_init becomes read-only, init is freed."""
        self.space.phase = "exit"
        if "init" in self.ld.regions:
            self.space.unmap(*self.ld.regions["init"])
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def take_log(self) -> list[LogRecord]:
        """The module's records since the last call (an open record counts as finished)."""
        records = [LogRecord(int(str(r["level"])), "module", str(r["text"]),
                             None if r["pattern"] is None else str(r["pattern"]))
                   for r in self.logbuf.records()]
        self.logbuf = printk.LogBuffer()
        return records
