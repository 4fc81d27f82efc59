"""The koconform command.

    koconform load FILE.ko --arch x86_64 [--env ENV.yaml] [--json]
        What Linux 6.1 makes of any .ko: accepted or rejected (errno, phase), where each
        section goes, what each undefined symbol resolves to, the relocated bytes, the log.
    koconform run [--adapter NAME] [PATH ...] [-- PYTEST-ARGS]
        Run the vectors (all, or the files/directories named) through an implementation.
    koconform generate [--all | --check | FILE ...]
        Build vectors from their recipes and fill in their expectations (see tools/).
    koconform peers [--check] [-n N]
        Check every expected byte with two independent linkers (ld.lld, GNU ld) and write
        vectors/PEERS.md; fails on a difference no vector explains (--check: also when
        PEERS.md is not what this run writes).
    koconform coverage [--write] [--check]
        Every relocation type Linux 6.1 knows, per arch, and the vectors (and edge vectors)
        that pin it; --write updates vectors/COVERAGE.md, --check fails on a gap.
    koconform fuzz [--minutes M | --count N] [--seed S]
        Mutants of every vector's module through the reference: it must answer every one
        (loaded / rejected with errno and phase / faulted), never raise, never hang.
    koconform matrix --adapter A [--adapter B ...] [--xfail A=FILE]
        Several implementations over the vectors: CONFORMANCE.md (and .json, JUnit XML) per
        implementation, arch and category.
    koconform adapters
        The implementations installed (entry points in the koconform.adapters group).
    koconform corpus ARCH|PACKAGE.deb|DIR ... [--json FILE]
        Every module a Debian kernel package ships (or a folder of .ko files with a System.map)
        through check, layout, resolve and relocate, in dependency order; per module and totals.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from . import adapter as adapters
from . import profiles
from .model import ARCHES, Request

ROOT = Path(__file__).resolve().parents[1]


def _env_spec(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: an environment file is a mapping with symbols, regions, config")
    return doc.get("environment", doc)


def cmd_load(args: argparse.Namespace) -> int:
    spec = _env_spec(args.env)
    profile = profiles.load_profile(args.profile, args.arch, spec.get("config"))
    env = profiles.environment(args.profile, args.arch, spec)
    try:
        ko = args.file.read_bytes()
    except OSError as e:
        print(f"koconform load: {e}", file=sys.stderr)
        return 2
    impl = adapters.get(args.adapter)
    result = adapters.result_json(impl.load(Request(ko, args.arch, profile, env, name=args.file.name)))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(render(args.file.name, result))
    return 0


def render(name: str, r: dict[str, Any]) -> str:
    """The result as a loader author reads it."""
    lines = [f"{name}: {r['status']}" + (f" ({r['errno']} in {r['phase']})" if r.get("errno") else "")]
    if r.get("fault"):
        f = r["fault"]
        lines.append(f"fault: {f['kind']} at {f['address']} during {f['phase']}")
    if r.get("regions"):
        lines.append("regions:")
        lines += [f"  {n:<6} {v['address']} size {v['size']}" for n, v in r["regions"].items()]
    if r.get("layout"):
        lines.append("layout:")
        for n, p in sorted(r["layout"].items(), key=lambda kv: int(kv[1]["address"], 16)):
            size = len(r.get("sections", {}).get(n, "")) // 2 if n in (r.get("sections") or {}) else "nobits"
            lines.append(f"  {p['address']}  {p['region']:<4} +{p['offset']:<8} {n} ({size if isinstance(size, str) else hex(size)})")
    if r.get("symbols"):
        lines.append("undefined symbols:")
        lines += [f"  {n} = {v}" for n, v in r["symbols"].items()]
    lines.append("log:")
    lines += [f"  {e['source']:<6} <{e['level']}>{e['text']}" for e in r.get("log") or []] or ["  (empty)"]
    if r.get("init_return") is not None:
        lines.append(f"init returned {r['init_return']}")
    if r.get("exit_log") is not None:
        lines.append("exit log:")
        lines += [f"  {e['source']:<6} <{e['level']}>{e['text']}" for e in r["exit_log"]] or ["  (empty)"]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    import pytest
    paths = [str(p) for p in args.paths] or [str(ROOT / "vectors")]
    extra = [*(["--xfail-file", str(args.xfail_file)] if args.xfail_file else []),
             *(["--xfail-write"] if args.xfail_write else []),
             *(["--timeout", str(args.timeout)] if args.timeout else [])]
    return int(pytest.main([*paths, "--adapter", args.adapter, "-p", "no:cacheprovider", *extra, *args.pytest_args]))


def cmd_peers(args: argparse.Namespace) -> int:
    """Both peers over the vectors, as pytest sessions; then PEERS.md from their outcomes."""
    import tempfile

    import pytest

    from . import peers
    paths = [str(p) for p in args.paths] or [str(ROOT / "vectors")]
    outcomes: list[dict[str, Any]] = []
    versions, status = {}, 0
    for name, cls in peers.PEERS.items():
        peer = cls()
        if (why := peer.available()) is not None:
            print(f"koconform peers: {why}", file=sys.stderr)
            return 2
        versions[name] = peer.version()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "outcomes.json"
            extra = ["-n", str(args.workers)] if args.workers > 1 else []
            code = int(pytest.main([*paths, "--adapter", name, "--peers-report", str(out), "-q",
                                    "-p", "no:cacheprovider", *extra]))
            if code not in (0, 5):
                status = 1
            if out.exists():
                outcomes += json.loads(out.read_text())
    text = peers.report(outcomes, versions)
    target = args.output or ROOT / "vectors" / "PEERS.md"
    if args.check and (not target.exists() or target.read_text() != text):
        print(f"koconform peers: {target} is not what this run writes: run `koconform peers` and commit it",
              file=sys.stderr)
        status = 1
    elif not args.check:
        target.write_text(text)
        print(f"wrote {target}")
    return status


def cmd_matrix(args: argparse.Namespace) -> int:
    from . import matrix
    xfail = {}
    for spec in args.xfail or []:
        name, _, path = spec.partition("=")
        xfail[name] = path
    out = args.output or ROOT
    out.mkdir(parents=True, exist_ok=True)
    if args.from_junit:
        return matrix.from_junit(args.from_junit, out)
    return matrix.run(args.adapter or ["reference"], xfail, [str(p) for p in args.paths] or [str(ROOT / "vectors")],
                      args.workers, out)


def cmd_coverage(args: argparse.Namespace) -> int:
    from . import coverage
    return coverage.main(write=args.write, check=args.check)


def cmd_adapters(args: argparse.Namespace) -> int:
    for name, ep in sorted(adapters.available().items()):
        cls = ep.load()
        print(f"{name:<12} {cls.description or ep.value}\n{'':<12} arches: {', '.join(sorted(cls.arches))}; "
              f"produces: {', '.join(sorted(cls.produces))}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="koconform", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load", help="load one .ko and print what the kernel makes of it",
                       description="Load FILE.ko as Linux 6.1 would, against the arch's default environment "
                                   "(Debian's kernel booted with nokaslr) unless --env names a YAML file with "
                                   "symbols/regions/config overrides (the `environment` of a vector works too).")
    p.add_argument("file", type=Path)
    p.add_argument("--arch", required=True, choices=ARCHES)
    p.add_argument("--env", type=Path, help="environment overrides (YAML)")
    p.add_argument("--profile", default="linux-6.1")
    p.add_argument("--adapter", default="reference", help="implementation to load with (default: reference)")
    p.add_argument("--json", action="store_true", help="print the result object (the adapter contract's JSON)")
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("run", help="run vectors through an implementation (a pytest session)",
                       description="ADAPTER: an installed adapter's name (koconform adapters), module:Class, or "
                                   "cmd:COMMAND, a program in any language speaking conformance/PROTOCOL.md "
                                   "(JSON lines on stdin/stdout), e.g. --adapter 'cmd:./myloader --flag'.")
    p.add_argument("--adapter", default="reference",
                   help="reference (default), an entry-point name, module:Class, or cmd:COMMAND")
    p.add_argument("--xfail-file", type=Path, help="expected failures (vector id and one line of reason each)")
    p.add_argument("--xfail-write", action="store_true", help="rewrite --xfail-file from this run")
    p.add_argument("--timeout", type=float,
                   help="seconds per vector (default: 30 for cmd: adapters, 120 for isolated Python adapters)")
    p.add_argument("paths", nargs="*", type=Path, help="vector files or directories (default: all)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest (e.g. -n 2, -k pc32)")
    p.set_defaults(func=cmd_run)
    sub.add_parser("generate", help="build vectors from recipes, fill in expectations "
                   "(koconform generate --help)")
    sub.add_parser("corpus", help="run every module of a Debian kernel package (or a .ko folder) through the "
                   "reference (koconform corpus --help)")
    sub.add_parser("fuzz", help="mutate the vectors' modules and check the reference never crashes or hangs "
                   "(koconform fuzz --help)")
    p = sub.add_parser("peers", help="check every expected byte with ld.lld and GNU ld; write vectors/PEERS.md",
                       description="Run every vector through the two peer linkers (adapters lld and gnu-ld, "
                                   "given each vector's layout and symbol values), fail on any difference the "
                                   "vector does not explain, and write the per-arch summary vectors/PEERS.md.")
    p.add_argument("paths", nargs="*", type=Path, help="vector files or directories (default: all)")
    p.add_argument("--check", action="store_true", help="do not write: fail if PEERS.md is out of date")
    p.add_argument("--output", type=Path, help="where to write the report (default: vectors/PEERS.md)")
    p.add_argument("-n", dest="workers", type=int, default=1, help="pytest-xdist workers")
    p.set_defaults(func=cmd_peers)
    p = sub.add_parser("matrix", help="run several implementations; write CONFORMANCE.md/.json and JUnit XML",
                       description="Each --adapter runs over the vectors (one pytest session each, JUnit XML kept "
                                   "beside the report); CONFORMANCE.md tables passed / failed [known] / not "
                                   "applicable per implementation, arch and category (check, layout, resolve, "
                                   "relocate per type, init), every failure linked to its vector.")
    p.add_argument("--adapter", action="append", help="an adapter (repeatable; default: reference)")
    p.add_argument("--xfail", action="append", metavar="ADAPTER=FILE", help="an adapter's expected-failure file")
    p.add_argument("--output", type=Path, help="directory for CONFORMANCE.md/.json and junit-*.xml (default: the "
                   "checkout's root)")
    p.add_argument("-n", dest="workers", type=int, default=1, help="pytest-xdist workers")
    p.add_argument("--from-junit", type=Path, metavar="DIR",
                   help="do not run: re-render the report from a run's DIR/junit-*.xml")
    p.add_argument("paths", nargs="*", type=Path, help="vector files or directories (default: all)")
    p.set_defaults(func=cmd_matrix)
    p = sub.add_parser("coverage", help="relocation types per arch and the vectors that pin them (COVERAGE.md)",
                       description="Rows from the reference's arch tables; a vector counts for a type when its "
                                   ".ko holds that type in a relocated section or it claims it under `covers`; "
                                   "edge claims are checked against the vector's expectation.")
    p.add_argument("--write", action="store_true", help="write vectors/COVERAGE.md")
    p.add_argument("--check", action="store_true",
                   help="exit 1 on a type without a vector, a missing range edge, a false claim or a stale file")
    p.set_defaults(func=cmd_coverage)
    p = sub.add_parser("adapters", help="list installed implementations")
    p.set_defaults(func=cmd_adapters)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:        # its options are generate_vector's own
        from koconform.tools import generate_vector
        return generate_vector.main(argv[1:])
    if argv[:1] == ["fuzz"]:            # and fuzz's are tools/fuzz.py's
        from koconform.tools import fuzz
        return fuzz.main(argv[1:])
    if argv[:1] == ["corpus"]:          # and corpus's are conformance/corpus.py's
        from . import corpus
        return corpus.main(argv[1:])
    rest: list[str] = []
    if "--" in argv:                    # what follows `--` goes to pytest untouched (argparse would
        cut = argv.index("--")          # take it for vector paths)
        argv, rest = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    if hasattr(args, "pytest_args"):
        args.pytest_args = [*(a for a in args.pytest_args if a != "--"), *rest]
    elif rest:
        parser().error(f"{argv[0]} takes no pytest arguments after --")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
