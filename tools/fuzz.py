"""Fuzz the reference loader with mutants of the vectors' real modules.

The contract checked on every mutant: `loader.load` returns a result (loaded; rejected with an
errno and a phase; faulted with a fault) and never raises, and it returns within its budget
(the emulator has an instruction budget; the loader's memory accesses go through its own
memory model, so an out-of-bounds access is a `faulted` result, not a Python error).

Mutations, each applied to one seed `.ko` (every vector's module, on every arch):
  - byte-level: flip bits, write boundary values (0, 0xff, 0x7f, 0x80) over 1/2/4/8 bytes,
    at random offsets or, more often, inside the ELF and section headers;
  - field-level: set one ELF header, section header, symbol or relocation field to a
    boundary value (0, 1, all ones, the file size, just past it, a power of two, ...);
  - structural (lief 1.0.0): parse, change a section's type/flags/alignment/size or a
    symbol's value/section, add or remove a section, rebuild;
  - truncation at a random length, or appended bytes.

    koconform fuzz --minutes 60              # a long run; prints mutants tried, outcomes, crashes
    koconform fuzz --count 200 --seed 7      # a fixed-seed run (what the tests do)

A crash (traceback or a run over budget) is written as FILE.ko + FILE.json (seed, arch,
vector, mutation, traceback) into --crashes (default fuzz-crashes/); each one found is to
become a vector.
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import time
import traceback
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from koconform.conformance.model import Request, Result
from koconform.conformance.vectors import Vector, VectorBug, load, vector_files
from koconform.reference import loader
from koconform.reference.arch import ARCHES

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
            0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF)
BUDGET_SECONDS = 20.0               # far above any real load; a mutant over it is a hang
# lief, asked to rebuild a file whose section lies at a huge offset, writes gigabytes; the loader
# copies its input as the kernel does, so such a mutant measures memcpy, not the loader.
MAX_MUTANT = 64 << 20
EMULATION_BUDGET = 200_000          # instructions per init/exit run of a mutant


@dataclass(frozen=True)
class Seed:
    vector: str
    arch: str
    ko: bytes
    request: Request


@dataclass
class Outcome:
    key: str                         # "loaded", "rejected ENOEXEC check", "faulted relocate", "CRASH ..."
    crash: str | None = None         # traceback or reason, when the contract broke
    seconds: float = 0.0


def seeds(root: Path = ROOT / "vectors", arches: set[str] | None = None) -> list[Seed]:
    """Every vector's module with its request (a vector whose arch or profile is not there is left out)."""
    out = []
    for path in vector_files(root):
        try:
            vec: Vector = load(path)
            if vec.arch not in ARCHES or (arches and vec.arch not in arches):
                continue
            req = vec.request()
        except (VectorBug, KeyError, OSError):
            continue
        out.append(Seed(vec.id, vec.arch, req.ko, req))
    return out


# ---- mutations ----------------------------------------------------------------------
def _headers(ko: bytes, is64: bool) -> tuple[int, int, int]:
    """(e_shoff, e_shentsize, e_shnum), 0s when unreadable."""
    try:
        if is64:
            return (struct.unpack_from("<Q", ko, 0x28)[0], *struct.unpack_from("<HH", ko, 0x3A))
        return (struct.unpack_from("<I", ko, 0x20)[0], *struct.unpack_from("<HH", ko, 0x2E))
    except struct.error:
        return 0, 0, 0


def _write(buf: bytearray, at: int, size: int, value: int) -> None:
    if 0 <= at and at + size <= len(buf):
        buf[at:at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def mutate_bytes(rng: random.Random, ko: bytes, is64: bool) -> tuple[bytes, str]:
    if not ko:                                      # an earlier step truncated it to nothing
        return mutate_length(rng, ko, is64)
    buf = bytearray(ko)
    shoff, shentsize, shnum = _headers(ko, is64)
    where = rng.random()
    if where < 0.3:
        at = rng.randrange(0, min(len(buf), 0x40 if is64 else 0x34))
    elif where < 0.7 and shnum and shoff < len(buf):
        at = shoff + rng.randrange(0, max(1, min(shnum * shentsize, len(buf) - shoff)))
    else:
        at = rng.randrange(0, len(buf))
    if rng.random() < 0.4:
        bit = rng.randrange(8)
        if at < len(buf):
            buf[at] ^= 1 << bit
        return bytes(buf), f"flip bit {bit} at {at:#x}"
    size = rng.choice((1, 2, 4, 8))
    value = rng.choice(BOUNDARY + (len(ko), len(ko) + 1, len(ko) - 1))
    _write(buf, at, size, value)
    return bytes(buf), f"write {value:#x} ({size} bytes) at {at:#x}"


SHDR64 = {"sh_name": (0, 4), "sh_type": (4, 4), "sh_flags": (8, 8), "sh_addr": (16, 8), "sh_offset": (24, 8),
          "sh_size": (32, 8), "sh_link": (40, 4), "sh_info": (44, 4), "sh_addralign": (48, 8), "sh_entsize": (56, 8)}
SHDR32 = {"sh_name": (0, 4), "sh_type": (4, 4), "sh_flags": (8, 4), "sh_addr": (12, 4), "sh_offset": (16, 4),
          "sh_size": (20, 4), "sh_link": (24, 4), "sh_info": (28, 4), "sh_addralign": (32, 4), "sh_entsize": (36, 4)}
EHDR64 = {"e_type": (16, 2), "e_machine": (18, 2), "e_version": (20, 4), "e_shoff": (40, 8), "e_flags": (48, 4),
          "e_ehsize": (52, 2), "e_shentsize": (58, 2), "e_shnum": (60, 2), "e_shstrndx": (62, 2)}
EHDR32 = {"e_type": (16, 2), "e_machine": (18, 2), "e_version": (20, 4), "e_shoff": (32, 4), "e_flags": (36, 4),
          "e_ehsize": (40, 2), "e_shentsize": (46, 2), "e_shnum": (48, 2), "e_shstrndx": (50, 2)}


def mutate_field(rng: random.Random, ko: bytes, is64: bool) -> tuple[bytes, str]:
    buf = bytearray(ko)
    shoff, shentsize, shnum = _headers(ko, is64)
    value = rng.choice(BOUNDARY + (len(ko), len(ko) + 1, shnum, shnum + 1, shoff))
    if rng.random() < 0.25 or not shnum:
        name, (off, size) = rng.choice(list((EHDR64 if is64 else EHDR32).items()))
        _write(buf, off, size, value)
        return bytes(buf), f"header.{name} = {value:#x}"
    i = rng.randrange(shnum)
    fields = SHDR64 if is64 else SHDR32
    name, (off, size) = rng.choice(list(fields.items()))
    if rng.random() < 0.3:          # small nudges find off-by-one checks
        old = int.from_bytes(buf[shoff + i * shentsize + off:shoff + i * shentsize + off + size], "little") \
            if shoff + i * shentsize + off + size <= len(buf) else 0
        value = old + rng.choice((-1, 1, 8, -8, 0x1000))
    _write(buf, shoff + i * shentsize + off, size, value)
    return bytes(buf), f"section[#{i}].{name} = {value & ((1 << (8 * size)) - 1):#x}"


def mutate_structure(rng: random.Random, ko: bytes, is64: bool) -> tuple[bytes, str]:
    """A lief edit, in a forked child: lief 1.0.0 itself can crash (SIGSEGV) rebuilding odd files."""
    import os
    import pickle
    child_seed = rng.randrange(1 << 30)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child: never returns
        os.close(read)
        import faulthandler
        faulthandler.disable()                      # its crash is expected, and handled: no report
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        try:
            data = pickle.dumps(_lief_edit(random.Random(child_seed), ko))
            with os.fdopen(write, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        out, what = mutate_bytes(rng, ko, is64)
        return out, what + " (lief crashed on its edit)"
    result: tuple[bytes, str] | None = pickle.loads(data)
    if result is not None and len(result[0]) > MAX_MUTANT:     # lief wrote data at a huge sh_offset
        result = None
    return result if result is not None else mutate_bytes(rng, ko, is64)


def _lief_edit(rng: random.Random, ko: bytes) -> tuple[bytes, str] | None:
    """Parse, change one structural attribute, rebuild (lief rewrites the layout); None if lief refuses."""
    import lief
    lief.logging.disable()
    binary = lief.ELF.parse(list(ko))
    if binary is None or not len(binary.sections):
        return None
    sections = [s for s in binary.sections if s.name]
    choice = rng.randrange(6)
    what = ""
    if choice == 0 and sections:
        s = rng.choice(sections)
        s.alignment = rng.choice((0, 1, 3, 0x1000, 0x100000, 1 << 31))
        what = f"lief: {_text(s.name)}.alignment = {s.alignment:#x}"
    elif choice == 1 and sections:
        s = rng.choice(sections)
        s.flags = rng.choice((0, 2, 3, 6, 7, 0xFFFFFFFF))
        what = f"lief: {_text(s.name)}.flags = {s.flags:#x}"
    elif choice == 2 and sections:
        s = rng.choice(sections)
        s.type = lief.ELF.Section.TYPE(rng.choice((0, 1, 2, 3, 4, 8, 9, 11)))
        what = f"lief: {_text(s.name)}.type = {s.type}"
    elif choice == 3 and len(binary.symtab_symbols):
        sym = rng.choice(list(binary.symtab_symbols))
        sym.shndx = rng.choice((0, 0xFFF1, 0xFFF2, 0xFF00, 0xFFFF, len(sections) + 3))
        what = f"lief: symbol {_text(sym.name)}.shndx = {sym.shndx:#x}"
    elif choice == 4 and len(binary.symtab_symbols):
        sym = rng.choice(list(binary.symtab_symbols))
        sym.value = rng.choice(BOUNDARY)
        what = f"lief: symbol {_text(sym.name)}.value = {sym.value:#x}"
    elif sections:
        s = rng.choice(sections)
        binary.remove(s, clear=False)
        what = f"lief: remove section {_text(s.name)}"
    try:
        out = bytes(binary.write_to_bytes()) if hasattr(binary, "write_to_bytes") else _lief_bytes(binary)
    except Exception:  # noqa: BLE001 - lief refusing to rebuild is not the loader's problem
        return None
    return out, what or "lief: rebuilt unchanged"


def _text(name: Any) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else str(name)


def _lief_bytes(binary: Any) -> bytes:
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".ko") as f:
        binary.write(f.name)
        return Path(f.name).read_bytes()


def mutate_length(rng: random.Random, ko: bytes, is64: bool) -> tuple[bytes, str]:
    if ko and rng.random() < 0.7:
        n = rng.randrange(0, len(ko))
        return ko[:n], f"truncate to {n:#x}"
    extra = bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 64, 4096))))
    return ko + extra, f"append {len(extra)} bytes"


MUTATORS = ((mutate_bytes, 4), (mutate_field, 4), (mutate_structure, 1), (mutate_length, 1))


def mutant(rng: random.Random, seed: Seed) -> tuple[bytes, str]:
    is64 = ARCHES[seed.arch].elf.bits == 64
    ko, steps = seed.ko, []
    for step in range(rng.choice((1, 1, 1, 2, 3))):
        fn = rng.choices([m for m, _ in MUTATORS], weights=[w for _, w in MUTATORS])[0]
        if fn is mutate_structure and step:         # lief parses the real module, not a broken one
            fn = mutate_field
        ko, what = fn(rng, ko, is64)
        steps.append(what)
    return ko, "; ".join(steps)


# ---- the contract -------------------------------------------------------------------
def check(request: Request) -> Outcome:
    start = time.monotonic()
    try:
        result = loader.load(request)
    except Exception:  # noqa: BLE001 - any exception is the finding
        return Outcome("CRASH traceback", traceback.format_exc(limit=12), time.monotonic() - start)
    seconds = time.monotonic() - start
    if seconds > BUDGET_SECONDS:
        return Outcome("CRASH over budget", f"took {seconds:.1f} s", seconds)
    problem = _contract(result)
    if problem:
        return Outcome("CRASH bad result", problem, seconds)
    key = result.status
    if result.status == "rejected":
        key += f" {result.errno} {result.phase}"
    elif result.status == "faulted":
        key += f" {result.phase} {result.fault.kind if result.fault else '?'}"
    return Outcome(key, None, seconds)


def _contract(result: Result) -> str | None:
    if result.status not in ("loaded", "rejected", "faulted"):
        return f"status {result.status!r}"
    if result.status == "rejected" and (not result.errno or not result.phase):
        return f"rejected without errno/phase: {result.errno!r} {result.phase!r}"
    if result.status == "faulted" and result.fault is None:
        return "faulted without a fault"
    return None


def run(count: int | None, minutes: float | None, seed: int, crashes: Path, emulate: bool,
        progress: bool = True, arches: set[str] | None = None) -> tuple[int, Counter[str], list[dict[str, Any]]]:
    rng = random.Random(seed)
    pool = seeds(arches=arches)
    if not pool:
        raise SystemExit("no seed modules: no vectors found")
    outcomes: Counter[str] = Counter()
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + minutes * 60 if minutes else None
    tried = 0
    last = time.monotonic()
    while (count is None or tried < count) and (deadline is None or time.monotonic() < deadline):
        s = rng.choice(pool)
        ko, what = mutant(rng, s)
        request = replace(s.request, ko=ko, run_init=emulate)
        out = check(request)
        tried += 1
        outcomes[out.key] += 1
        if out.crash is not None:
            crashes.mkdir(parents=True, exist_ok=True)
            name = f"crash-{seed}-{tried}"
            (crashes / f"{name}.ko").write_bytes(ko)
            record = {"seed": seed, "mutant": tried, "vector": s.vector, "arch": s.arch, "mutation": what,
                      "outcome": out.key, "detail": out.crash}
            (crashes / f"{name}.json").write_text(json.dumps(record, indent=1))
            found.append(record)
        if progress and time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  {tried} mutants, {len(outcomes)} distinct outcomes, {len(found)} crashes", flush=True)
    return tried, outcomes, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="koconform fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, help="number of mutants (default: unbounded with --minutes, else 1000)")
    ap.add_argument("--minutes", type=float, help="run for this long")
    ap.add_argument("--seed", type=int, default=0, help="random seed (a run is reproducible from it)")
    ap.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where crash reproducers go")
    ap.add_argument("--no-emulate", action="store_true", help="stop after relocation (do not run init/exit)")
    ap.add_argument("--json", type=Path, help="also write the counts as JSON")
    ap.add_argument("--arch", action="append", help="seed only from this arch's vectors (repeatable)")
    args = ap.parse_args(argv)
    count = args.count if args.count is not None else (None if args.minutes else 1000)
    start = time.monotonic()
    tried, outcomes, found = run(count, args.minutes, args.seed, args.crashes, not args.no_emulate,
                                 arches=set(args.arch) if args.arch else None)
    took = time.monotonic() - start
    print(f"{tried} mutants in {took:.0f} s (seed {args.seed}), {len(outcomes)} distinct outcomes, "
          f"{len(found)} crashes")
    for key, n in outcomes.most_common():
        print(f"  {n:>8}  {key}")
    for rec in found[:20]:
        print(f"CRASH {rec['vector']} [{rec['mutation']}]: {rec['detail'].strip().splitlines()[-1]}")
    if args.json:
        args.json.write_text(json.dumps({"mutants": tried, "seconds": round(took), "seed": args.seed,
                                         "outcomes": dict(outcomes), "crashes": found}, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
