"""The reference loader's speed, side by side with ld.lld on the same inputs in the same run (issue 8).

    python bench/bench.py all                 # the four benchmarks, then the README text block
    python bench/bench.py amdgpu              # (a) amdgpu.ko end to end          goal: ratio <= 2.0
    python bench/bench.py corpus              # (b) every amd64 module            goal: ratio <= 1.0
    python bench/bench.py vectors             # (c) the vector suite, per vector  goal: ratio <= 1.0
    python bench/bench.py xdist               # (d) the suite, 1 vs 2 workers     goal: speed-up >= 1.7

Ratio = the reference's wall time / ld.lld's wall time (lower is better for the reference).

- The reference: `reference.loader.load` from the module's bytes in memory (ELF checks, layout,
  symbol resolution, relocation; init is not run for corpus modules), timed around that call only.
- ld.lld: ziglang's ld.lld, run as conformance/peers.py runs it (`link()`: the module's sections
  renamed, placed at the reference's addresses by a linker script, undefined symbols given with
  --defsym), timed around the linker process (`subprocess.run`), one process per module or
  vector. Two changes to the linker's input make its bytes comparable on real modules (a check that
  runs in the same pass): SHF_MERGE/SHF_STRINGS cleared in the section headers (else ld.lld merges
  the string sections and the references into them move) and `.data..percpu` placed at the
  per-cpu base the reference's symbols in it resolve to. Every module's relocated sections are
  compared with ld.lld's; the count that agree byte for byte is printed.
- The corpus is the profile's Debian package (conformance/corpus.py fetches and unpacks it once
  into ~/.cache/koconform); modules load in dependency order, each seeing the exports of the
  modules before it, as `koconform corpus` runs them.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
from koconform.conformance import corpus, peers, profiles
from koconform.conformance.model import Request, Result
from koconform.reference import loader
from koconform.reference.elf import ELF32, ELF64, read_ehdr, read_table

ROOT = Path(__file__).resolve().parents[1]
SHF_MERGE_STRINGS = 0x30
GOALS = {"amdgpu": ("<=", 2.0), "corpus": ("<=", 1.0), "vectors": ("<=", 1.0), "xdist": (">=", 1.7)}


# ---- measuring ----------------------------------------------------------------------------------
@dataclass
class Clock:
    """Wall and CPU seconds of this process (the reference) or of its children (ld.lld)."""
    wall: float = 0.0
    cpu: float = 0.0
    count: int = 0

    def add(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu
        self.count += 1


def timed_reference(clock: Clock, load: Callable[[Request], Result] = loader.load) -> Callable[[Request], Result]:
    def run(request: Request) -> Result:
        w, c = time.perf_counter(), time.process_time()
        result = load(request)
        clock.add(time.perf_counter() - w, time.process_time() - c)
        return result
    return run


class LinkerClock:
    """Times every linker process peers.link() starts (its subprocess.run), wall and child CPU."""

    def __init__(self) -> None:
        self.clock = Clock()
        self._run = peers.subprocess.run

    def __enter__(self) -> Self:
        def run(*args: Any, **kw: Any) -> Any:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            w = time.perf_counter()
            proc = self._run(*args, **kw)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.clock.add(time.perf_counter() - w, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            return proc
        peers.subprocess.run = run      # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        peers.subprocess.run = self._run   # type: ignore[assignment]


def unmerged(ko: bytes, arch: str) -> bytes:
    """The module with SHF_MERGE and SHF_STRINGS cleared in every section header (the kernel
    ignores both; a linker would merge those sections' strings and move what points into them)."""
    cls = ELF64 if arch in peers.ELF64_ARCHES else ELF32
    hdr = read_ehdr(ko, cls)
    shoff, shnum = int(hdr["e_shoff"]), int(hdr["e_shnum"])
    sh = read_table(ko, shoff, shnum, cls.shdr)
    sh["sh_flags"] &= ~np.array(SHF_MERGE_STRINGS).astype(sh["sh_flags"].dtype)
    out = bytearray(ko)
    out[shoff:shoff + sh.nbytes] = sh.tobytes()
    return bytes(out)


def given(result: Result, request: Request) -> peers.Given:
    """The reference's layout and symbol values, as a peer is given a vector's."""
    assert result.layout is not None and result.symbols is not None
    layout = {k: p.address for k, p in result.layout.items()}
    layout.setdefault(".data..percpu", request.environment.regions.get("percpu", 0))
    return peers.Given(layout, dict(result.symbols), request.environment.regions.get("copy"))


def lld_link(request: Request, result: Result) -> peers.Linked:
    return peers.link(peers.LldPeer().command(request.arch), request.arch, unmerged(request.ko, request.arch),
                      given(result, request))


def agrees(result: Result, linked: peers.Linked) -> list[str]:
    assert result.sections is not None
    return peers.differences({k: v for k, v in result.sections.items() if k in linked.sections}, linked.sections)


# ---- the corpus, module by module ---------------------------------------------------------------
@dataclass
class Step:
    module: corpus.Module
    request: Request
    result: Result


def corpus_steps(arch: str = "x86_64", only: set[str] | None = None, clock: Clock | None = None) -> Iterator[Step]:
    """Every module of the profile's package in load order, each loaded once by the reference (timed
    into `clock`), with the environment the corpus run gives it."""
    cache = corpus.cache_dir()
    pkg = corpus.Package.of_profile(arch)
    image, headers = corpus.fetch(pkg, (pkg.name, pkg.headers), cache, lambda m: print(m, file=sys.stderr))
    root = corpus.unpack(image, headers, cache / "corpus" / f"{pkg.name}_{pkg.version}_{pkg.deb_arch}",
                         lambda m: print(m, file=sys.stderr))
    the_arch = corpus.arches.get(arch)
    mods = corpus.discover(root / "lib" / "modules" / pkg.release, the_arch)
    order, _ = corpus.load_order(mods)
    if only:
        keep, todo = set(), [m.name for m in mods if m.name in only]
        by_name = {m.name: m for m in mods}
        while todo:
            name = todo.pop()
            if name not in keep and name in by_name:
                keep.add(name)
                todo += by_name[name].depends
        order = [m for m in order if m.name in keep]
    prof = profiles.load_profile(corpus.PROFILE, arch)
    env = profiles.default_environment(corpus.PROFILE, arch)
    last: list[tuple[Request, Result]] = []
    timed = timed_reference(clock or Clock())

    def load(request: Request) -> Result:
        result = timed(request)
        last.append((request, result))
        return result
    run = corpus.Run(arch, prof, env.symbols, env.regions, load=load,
                     largest=max((m.path.stat().st_size for m in order), default=0))
    for mod in order:
        last.clear()
        run.one(mod, mod.path.read_bytes())
        if last:
            request, result = last[-1]
            if only:    # the run's symbol table grows with each module: keep it as this one saw it
                request = replace(request, environment=replace(request.environment,
                                                               symbols=dict(request.environment.symbols)))
            yield Step(mod, request, result)


# ---- (a) amdgpu.ko ------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    what: str
    reference: float
    lld: float
    extra: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.reference / self.lld if self.lld else float("inf")

    def met(self) -> bool:
        op, goal = GOALS[self.name]
        return self.ratio <= goal if op == "<=" else speedup(self) >= goal


def bench_amdgpu(repeat: int = 5) -> Outcome:
    step = None
    for s in corpus_steps(only={"amdgpu"}):
        step = s
    assert step is not None and step.module.name == "amdgpu" and step.result.status == "loaded"
    ref, lld = [], []
    linked = None
    for _ in range(repeat):
        w = time.perf_counter()
        result = loader.load(step.request)
        ref.append(time.perf_counter() - w)
        with LinkerClock() as lc:
            linked = lld_link(step.request, result)
        lld.append(lc.clock.wall)
    assert linked is not None
    diff = agrees(step.result, linked)
    relocs, _ = corpus.relocation_types(step.request.ko, corpus.arches.get("x86_64"))
    return Outcome("amdgpu", f"(a) amdgpu.ko end to end ({relocs:,} relocations), median of {repeat}",
                   statistics.median(ref), statistics.median(lld),
                   [f"reference runs {', '.join(f'{t:.3f}' for t in ref)} s; ld.lld {', '.join(f'{t:.3f}' for t in lld)} s",
                    (f"relocated bytes: {'identical to ld.lld' if not diff else 'DIFFER: ' + '; '.join(diff[:3])} "
                     f"({len(linked.sections)} sections compared)")])


# ---- (b) the whole amd64 corpus -----------------------------------------------------------------
def bench_corpus(limit: int | None = None) -> Outcome:
    ref = Clock()
    lld = LinkerClock()
    same = differ = failed = modules = relocs = 0
    first_diffs: list[str] = []
    for step in corpus_steps(clock=ref):
        modules += 1
        relocs += corpus.relocation_types(step.request.ko, corpus.arches.get("x86_64"))[0]
        if step.result.status != "loaded":
            continue
        with lld:
            linked = lld_link(step.request, step.result)
        if not linked.ok:
            failed += 1
            continue
        diff = agrees(step.result, linked)
        if diff:
            differ += 1
            first_diffs += [f"{step.module.rel}: {d}" for d in diff[:1]]
        else:
            same += 1
        if limit and modules >= limit:
            break
    return Outcome("corpus", f"(b) the amd64 corpus: {modules:,} modules, {relocs:,} relocations, "
                   "one ld.lld process per module", ref.wall, lld.clock.wall,
                   [(f"reference {ref.wall:.1f} s wall / {ref.cpu:.1f} s CPU ({ref.wall / max(modules, 1) * 1000:.1f} ms "
                     f"per module, {relocs / ref.wall:,.0f} relocations/s); ld.lld {lld.clock.wall:.1f} s wall / "
                     f"{lld.clock.cpu:.1f} s CPU ({lld.clock.wall / max(lld.clock.count, 1) * 1000:.1f} ms per process)"),
                    f"relocated bytes identical to ld.lld: {same} modules; differ: {differ}; ld.lld failed: {failed}",
                    *first_diffs[:5]])


# ---- (c) the vector suite -----------------------------------------------------------------------
def bench_vectors() -> Outcome:
    from koconform.conformance import sweep
    from koconform.conformance.vectors import VectorBug, load, vector_files
    ref, lld = Clock(), LinkerClock()
    per_arch: dict[str, int] = {}
    skipped: list[str] = []
    linked_ref = Clock()
    for path in vector_files(ROOT / "vectors"):
        try:
            vec = load(path)
            request = vec.request()
        except (VectorBug, KeyError, ImportError, ValueError) as e:
            skipped.append(f"{path.relative_to(ROOT)}: {str(e)[:80]}")
            continue
        if vec.arch not in corpus.arches.ARCHES:
            skipped.append(f"{path.relative_to(ROOT)}: no reference arch")
            continue
        per_arch[vec.arch] = per_arch.get(vec.arch, 0) + 1
        cases = [c for _, c in sweep.inputs(vec.doc, request.ko)] if "sweep" in vec.doc else [request.ko]
        w, c = time.perf_counter(), time.process_time()
        for ko in cases:
            loader.load(replace(request, ko=ko))
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        ref.add(wall, cpu)
        if vec.expect["status"] == "loaded" and "sweep" not in vec.doc:
            request.given = peers.Given.from_vector(vec.doc)
            with lld:
                peers.LldPeer().load(request)
            linked_ref.add(wall, cpu)
    n, m = ref.count, lld.clock.count
    return Outcome("vectors", f"(c) the vector suite: {n} vectors ({', '.join(f'{a} {k}' for a, k in sorted(per_arch.items()))}), "
                   "reference per vector vs one ld.lld process per loaded vector",
                   ref.wall / max(n, 1), lld.clock.wall / max(m, 1),
                   [(f"reference {ref.wall / max(n, 1) * 1000:.1f} ms per vector (init/exit emulated where the vector "
                     f"has them; a sweep counts all its inputs), {linked_ref.wall / max(m, 1) * 1000:.1f} ms over the "
                     f"{m} loaded vectors ld.lld links; ld.lld {lld.clock.wall / max(m, 1) * 1000:.1f} ms per process"),
                    *([f"not run: {len(skipped)} vector files, e.g. {skipped[0]}"] if skipped else [])])


# ---- (d) the suite with 1 and 2 pytest-xdist workers --------------------------------------------
def bench_xdist(paths: list[str] | None = None) -> Outcome:
    paths = paths or ["vectors"]
    times = {}
    codes = {}
    cpu = {}
    for workers in (1, 2):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
                               "-p", "no:randomly", "-n", str(workers)], cwd=ROOT, capture_output=True, text=True,
                              check=False)
        times[workers] = time.perf_counter() - w
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu[workers] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        codes[workers] = (proc.returncode, (proc.stdout.strip().splitlines() or [""])[-1])
    w = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", "--collect-only"],
                   cwd=ROOT, capture_output=True, check=False)
    collect = time.perf_counter() - w
    out = Outcome("xdist", f"(d) `pytest {' '.join(paths)} -n N` (worker start-up included)", times[2], times[1],
                  [f"-n 1: {times[1]:.1f} s wall, {cpu[1]:.1f} s CPU ({codes[1][1]}); -n 2: {times[2]:.1f} s wall, "
                   f"{cpu[2]:.1f} s CPU ({codes[2][1]}); collecting alone (`--collect-only`, which every worker "
                   f"does in full): {collect:.1f} s"])
    return out


def speedup(o: Outcome) -> float:
    return o.lld / o.reference if o.reference else 0.0


# ---- the report ---------------------------------------------------------------------------------
def machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lld = peers.LldPeer().version()
    load1, load5, _ = os.getloadavg()
    return [f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; Linux {platform.release()}",
            f"Python {platform.python_version()}, numpy {np.__version__}, {lld} (ziglang)",
            f"load average at the end of the run: {load1:.2f} (1 min), {load5:.2f} (5 min)"]


def report(outcomes: list[Outcome]) -> str:
    lines = ["| benchmark | reference | ld.lld | ratio | goal | met |", "|---|---:|---:|---:|---:|---|"]
    for o in outcomes:
        op, goal = GOALS[o.name]
        if o.name == "xdist":
            lines.append(f"| {o.what} | -n 2: {o.reference:.1f} s | -n 1: {o.lld:.1f} s | speed-up {speedup(o):.2f}x "
                         f"| {op} {goal} | {'yes' if o.met() else 'no'} |")
        else:
            unit = (lambda t: f"{t * 1000:.1f} ms") if o.reference < 1 else (lambda t: f"{t:.2f} s")
            lines.append(f"| {o.what} | {unit(o.reference)} | {unit(o.lld)} | {o.ratio:.2f} | {op} {goal} "
                         f"| {'yes' if o.met() else 'no'} |")
    lines.append("")
    for o in outcomes:
        lines += [f"- {o.name}: {e}" for e in o.extra]
    lines += ["", "Machine: " + "; ".join(machine())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="*", default=["all"], choices=["all", "amdgpu", "corpus", "vectors", "xdist"])
    ap.add_argument("--repeat", type=int, default=5, help="(a): runs of each side (median)")
    ap.add_argument("--limit", type=int, help="(b): stop after this many modules (a quick look)")
    ap.add_argument("--output", type=Path, help="also write the text block to this file")
    args = ap.parse_args(argv)
    which = ["amdgpu", "corpus", "vectors", "xdist"] if "all" in args.which else args.which
    outcomes = []
    for name in which:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        if name == "amdgpu":
            outcomes.append(bench_amdgpu(args.repeat))
        elif name == "corpus":
            outcomes.append(bench_corpus(args.limit))
        elif name == "vectors":
            outcomes.append(bench_vectors())
        else:
            outcomes.append(bench_xdist())
        print(report(outcomes[-1:]), file=sys.stderr, flush=True)
    text = report(outcomes)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
