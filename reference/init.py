"""do_init_module and delete_module (Linux 6.1, spec §6.2 and §6.3), running the module's
constructors, init and exit in the emulator.

What is observable and reproduced:
* constructors (CONFIG_CONSTRUCTORS: `.ctors`, else `.init_array`) run before init;
* init NULL returns 0; a negative return fails the load with that errno, silently, and
  exit is not called; a positive one gets do_init_module's two-line warning and the
  load succeeds;
* after a successful init, ro_after_init data turns read-only and the init region is
  freed; then delete_module runs exit, whose records are the exit log.
What is not: the dump_stack() after the positive-return warning (addresses and a
backtrace no emulator can reproduce), an oops report after a fault (the fault itself is
the result), WARN()s of kernel functions (see kernel_functions).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from koconform.conformance.model import Fault, Result, errno_name

from .elf import SHF_ALLOC, SHF_EXECINSTR, SHF_RO_AFTER_INIT, SHF_WRITE
from .emulator import Area, Emulator, emu_arch
from .kernel_functions import EmuFault

if TYPE_CHECKING:
    from .loader import Load

# layout_sections' groups, in order: text, rodata, ro_after_init, data, the rest.
GROUPS = ((SHF_EXECINSTR | SHF_ALLOC, 0), (SHF_ALLOC, SHF_WRITE),
          (SHF_RO_AFTER_INIT | SHF_ALLOC, 0), (SHF_WRITE | SHF_ALLOC, 0), (SHF_ALLOC, 0))


def run_init_and_exit(ld: Load, result: Result, budget: int = 1_000_000) -> Result:
    """Run a loaded module as insmod then rmmod would, filling `result` in place.

    Sets result.init_return, appends the module's records (and the kernel's) to
    result.log, sets result.exit_log to exit's records or None when exit did not run.
    A negative init return: status "rejected", errno its name, phase "init". A fault in
    code the module runs (its own or a kernel function it calls): status "faulted",
    phase "init" or "exit", result.fault. The unload's own outcome has no field yet:
    when delete_module refuses (-EBUSY: init without exit; -ENOSYS: no
    CONFIG_MODULE_UNLOAD) or finds no exit to run, result.detail says so and exit_log
    stays None. `budget` bounds the instructions of each call (a constructor, init, exit).
    """
    arch = emu_arch(ld.arch.name)
    if arch is None:
        result.detail = _join(result.detail, f"init and exit not run: no emulator for {ld.arch.name}")
        return result
    symbols = {name: sym.address for name, sym in ld.env.symbols.items()}
    emu = Emulator(arch, ld.profile.page_size, module_areas(ld), symbols, budget)
    init, exit_ = ld.entry_points()
    if not do_init_module(ld, emu, init, result):
        return result
    # Success: ro_after_init turns read-only and the init region is freed.
    emu.enter_phase("exit", [ld.regions["init"]] if "init" in ld.regions else [])
    delete_module(ld, emu, init, exit_, result)
    return result


def module_areas(ld: Load) -> list[Area]:
    """The module's regions as complete_formation leaves them (the file copy is freed)."""
    areas = []
    for region, (base, _) in ld.regions.items():
        area = ld.memory.area(region)
        used = np.flatnonzero(area.data) if area is not None else np.zeros(0)
        data = area.data[:int(used[-1]) + 1].tobytes() if area is not None and len(used) else b""
        areas.append(Area(base, region_kinds(ld, region, ld.profile.page_size), data))
    return areas


def region_kinds(ld: Load, region: str, page: int) -> list[str]:
    """Each page's kind from the layout's group ends (6.1's text_size, ro_size and
    ro_after_init_size, page-aligned under STRICT_MODULE_RWX; in init, ro_after_init data
    stays with the writable data). Without STRICT_MODULE_RWX only text is executable
    (module_enable_x) and nothing is read-only."""
    size = ld.regions[region][1]
    ends = [0] * len(GROUPS)
    kallsyms = {ld.index["sym"], ld.index["str"]}    # placed by layout_symtab, after the groups
    for i, (where, offset) in ld.placed.items():
        if where != region or i in kallsyms:
            continue
        flags = int(ld.sechdrs[i]["sh_flags"])
        group = next(g for g, (req, forbid) in enumerate(GROUPS) if flags & req == req and not flags & forbid)
        ends[group] = max(ends[group], offset + int(ld.sechdrs[i]["sh_size"]))
    pages = [-(-end // page) for end in ends]       # each group's end, in pages
    text = pages[0]
    if not ld.profile.enabled("CONFIG_STRICT_MODULE_RWX"):
        return ["rwx" if p < text else "data" for p in range(-(-size // page))]
    ro = max(text, pages[1])
    ro_after_init = max(ro, pages[2]) if region == "core" else ro
    return ["text" if p < text else "rodata" if p < ro else "ro_after_init" if p < ro_after_init
            else "data" for p in range(-(-size // page))]


def do_init_module(ld: Load, emu: Emulator, init: int, result: Result) -> bool:
    """Constructors, then init; False when the load ends here (rejected or faulted)."""
    for ctor in constructors(ld):
        outcome = emu.call(ctor)
        if outcome.fault is not None:
            return _faulted(result, "init", outcome.fault, emu, log=True)
    ret = 0
    if init:
        outcome = emu.call(init)
        if outcome.fault is not None:
            return _faulted(result, "init", outcome.fault, emu, log=True)
        ret = _int(outcome.value or 0)
    result.init_return = ret
    result.log.extend(emu.take_log())
    if ret < 0:
        result.status, result.errno, result.phase = "rejected", errno_name(-ret), "init"
        result.detail = _join(result.detail, f"init returned {ret}: the load fails, exit is not called")
        return False
    if ret > 0:
        start = len(ld.log)
        ld.klog(4, "%s: '%s'->init suspiciously returned %d, it should follow 0/-E convention\n"
                "%s: loading module anyway...\n", "do_init_module", ld.modname, ret, "do_init_module")
        _move_kernel_records(ld, result, start)
        # The kernel follows this warning with dump_stack(): not reproducible, left out.
    return True


def delete_module(ld: Load, emu: Emulator, init: int, exit_: int, result: Result) -> None:
    """The unload a test harness does right after the load (nobody holds a reference)."""
    if not ld.profile.enabled("CONFIG_MODULE_UNLOAD"):
        result.detail = _join(result.detail, "delete_module: -ENOSYS (no CONFIG_MODULE_UNLOAD)")
        return
    if init and not exit_:
        result.detail = _join(result.detail, "delete_module: -EBUSY (the module has init but no exit)")
        return
    if not exit_:
        result.detail = _join(result.detail, "delete_module: removed; the module has no exit function")
        return
    outcome = emu.call(exit_)
    result.exit_log = emu.take_log()
    if outcome.fault is not None:
        _faulted(result, "exit", outcome.fault, emu, log=False)


def constructors(ld: Load) -> list[int]:
    """do_mod_ctors: the pointers in `.ctors`, else in `.init_array` (section_objs)."""
    if not ld.profile.enabled("CONFIG_CONSTRUCTORS"):
        return []
    index = ld.find_sec(".ctors") or ld.find_sec(".init_array")
    if not index:
        return []
    word = ld.cls.bits // 8
    count = int(ld.sechdrs[index]["sh_size"]) // word
    base = int(ld.sechdrs[index]["sh_addr"])
    return [ld.memory.read_u(base + k * word, word) for k in range(count)]


def _faulted(result: Result, phase: str, fault: EmuFault, emu: Emulator, log: bool) -> bool:
    if log:
        result.log.extend(emu.take_log())
    result.status, result.phase = "faulted", phase
    result.fault = Fault(phase, fault.kind, fault.address, fault.detail)
    result.detail = _join(result.detail, f"{phase}: {fault}")
    return False


def _move_kernel_records(ld: Load, result: Result, start: int) -> None:
    """Kernel records ld.klog appended since `start` belong in result.log (if it is not ld.log)."""
    if result.log is not ld.log:
        result.log.extend(ld.log[start:])
        del ld.log[start:]


def _int(value: int) -> int:
    """The low 32 bits as a C int."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def _join(detail: str, more: str) -> str:
    return f"{detail}; {more}" if detail else more
