"""generate-vector: build a vector's .ko from its recipe and fill in its expectation.

    koconform generate vectors/x86_64/relocate/foo.yaml     # (re)generate one vector
    koconform generate vectors/x86_64/relocate/bar.family.yaml   # expand a family
    koconform generate --all                                   # every vector and family
    koconform generate --check                                 # regenerate all; fail on any change

A vector file is written by hand up to its recipe (and environment overrides); this
tool builds the .ko as kbuild would, applies the mutations, runs the reference loader,
and writes `sha256`, the concrete region bases and `expect`. Before writing, ld.lld
links the same .ko at the same layout: a vector whose bytes differ from ld.lld's is
refused unless its `peers: {ld.lld|gnu-ld: {differs: REASON}}` says why the kernel differs.

A family (`NAME.family.yaml`) has `family: {cases: {CASE: {PARAM: value}}}`; every
string in it may use ${PARAM} and ${case}; each case becomes `NAME-CASE.yaml`. A case's
`mutations` list is appended to the recipe's mutations as it is.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import string
import sys
from pathlib import Path
from typing import Any

import yaml
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from koconform.conformance import profiles
from koconform.conformance.model import Request
from koconform.conformance.vectors import PEER_REASONS, expectation_from_result, vector_files
from koconform.reference import arch as arches
from koconform.reference import loader

from koconform.conformance import peers, sweep

from . import kbuild, mutate

ROOT = Path(__file__).resolve().parents[1]


class GenerateError(Exception):
    pass


# ---- YAML out -----------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    def analyze_scalar(self, scalar: str) -> yaml.emitter.ScalarAnalysis:
        # PyYAML refuses block style for text with tabs; source code has them, and a
        # literal block keeps them as they are.
        if "\n" in scalar:
            analysis = super().analyze_scalar(scalar.replace("\t", " "))
            analysis.scalar = scalar
            return analysis
        return super().analyze_scalar(scalar)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=False)


# ---- families -----------------------------------------------------------------------
def _substitute(value: Any, params: dict[str, str], flags: dict[str, bool] | None = None) -> Any:
    """${NAME} in every string; a value that is exactly ${NAME} of a boolean parameter becomes that boolean."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{(\w+)\}", value)
        if whole and flags and whole.group(1) in flags:
            return flags[whole.group(1)]
        return string.Template(value).substitute(params)
    if isinstance(value, list):
        return [_substitute(v, params, flags) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, params, flags) for k, v in value.items()}
    return value


def expand(path: Path, doc: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """A vector file is itself; a family becomes one vector per case."""
    if not path.name.endswith(".family.yaml"):
        return [(path, doc)]
    stem = path.name[:-len(".family.yaml")]
    out = []
    template = {k: v for k, v in doc.items() if k != "family"}
    for case, params in doc["family"]["cases"].items():
        params = dict(params or {})
        mutations = params.pop("mutations", None)     # structured: not substituted
        case_peers = params.pop("peers", None)        # per-case peer reasons, merged over the family's
        values = {k: str(v) for k, v in params.items()}
        values["case"] = case
        flags = {k: v for k, v in params.items() if isinstance(v, bool)}
        vec = _substitute(copy.deepcopy(template), values, flags)
        if mutations is not None:
            vec["recipe"]["mutations"] = vec["recipe"].get("mutations", []) + mutations
            params["mutations"] = mutations
        if case_peers is not None:
            vec["peers"] = {**(vec.get("peers") or {}), **case_peers}
            params["peers"] = case_peers
        vec = {"id": vec.pop("id"), "description": vec.pop("description"),
               "family": {"source": path.name, "case": case, "parameters": params}, **vec}
        out.append((path.with_name(f"{stem}-{case}.yaml"), vec))
    return out


# ---- one vector ---------------------------------------------------------------------
def build_ko(doc: dict[str, Any]) -> tuple[bytes, Request]:
    arch = arches.get(doc["arch"])
    env_spec = doc.get("environment") or {}
    profile = profiles.load_profile(doc["profile"], doc["arch"], env_spec.get("config"), env_spec.get("facts"))
    env = profiles.environment(doc["profile"], doc["arch"], env_spec)
    recipe = kbuild.Recipe.from_doc(doc["recipe"])
    ko = kbuild.build(recipe, profile, env)
    try:
        with __import__("io").BytesIO(ko) as f:
            ELFFile(f).get_section_by_name(".symtab")
    except ELFError as e:
        raise GenerateError(f"{doc['id']}: the built object does not parse with pyelftools: {e}") from None
    ko = mutate.apply(ko, doc["recipe"].get("mutations", []), arch)
    return ko, Request(ko, doc["arch"], profile, env)


def generate(path: Path, doc: dict[str, Any]) -> tuple[dict[str, Any], bytes, list[str]]:
    """The completed vector, its .ko, and notes (peer disagreements that were explained)."""
    ko, request = build_ko(doc)
    undefined = (doc.get("expect") or {}).get("status") == "undefined"
    result = loader.load(request)
    out = {k: v for k, v in doc.items() if k not in ("ko", "sha256", "expect")}
    out["ko"] = path.with_suffix(".ko").name
    out["sha256"] = hashlib.sha256(ko).hexdigest()
    if result.regions:
        env = dict(out.get("environment") or {})
        env["regions"] = {**(env.get("regions") or {}),
                          **{name: hex(addr) for name, (addr, _) in result.regions.items()},
                          "copy": hex(request.environment.regions["copy"])}
        out["environment"] = env
    order = ("id", "description", "family", "arch", "profile", "recipe", "environment", "sweep", "covers", "peers",
             "ko", "sha256")
    out = {k: out[k] for k in order if k in out}     # canonical order: stable from the first write
    notes = []
    if "sweep" in doc:
        out["expect"] = {"status": "sweep", "outcomes": sweep_outcomes(doc, request)}
    elif undefined:
        out["expect"] = doc["expect"]
    else:
        out["expect"] = expectation_from_result(result)
        notes = peer_gate(doc, out, ko)
    return out, ko, notes


def sweep_outcomes(doc: dict[str, Any], request: Request) -> list[dict[str, Any]]:
    """The reference's outcome for every input of a sweep, as ranges of lengths."""
    from dataclasses import replace
    pairs = [(n, sweep.outcome(loader.load(replace(request, ko=ko, run_init=False)).to_json()))
             for n, ko in sweep.inputs(doc, request.ko)]
    return sweep.compress(pairs)


def peer_gate(doc: dict[str, Any], vector: dict[str, Any], ko: bytes) -> list[str]:
    """Both static linkers relocate the module at the expected layout; a difference needs a reason."""
    expect = vector["expect"]
    if expect["status"] != "loaded":
        return []
    given = peers.Given.from_vector(vector)
    notes = []
    for peer in (peers.LldPeer(), peers.GnuLdPeer()):
        if (why := peer.available()) is not None:
            raise GenerateError(f"{doc['id']}: cannot check against {peer.name}: {why}")
        notes += _one_peer(doc, peer, ko, given, expect)
    return notes


def _one_peer(doc: dict[str, Any], peer: peers.LinkerPeer, ko: bytes, given: peers.Given,
              expect: dict[str, Any]) -> list[str]:
    declared = ((doc.get("peers") or {}).get(peer.vector_key) or {})
    reason = declared.get("differs")
    linked = peers.link(peer.command(doc["arch"]), doc["arch"], ko, given)
    want = {k: bytes.fromhex(v) for k, v in (expect.get("sections") or {}).items() if k not in linked.unexpressed}
    diffs = peers.differences(want, linked.sections)
    first_line = linked.diagnostics.splitlines()[0] if linked.diagnostics else ""
    if diffs and reason == "linker-rejects-input" and (not linked.ok or not linked.sections):
        return [f"{doc['id']}: {peer.vector_key} cannot read it: {first_line}"]
    if diffs and not reason:
        raise GenerateError(f"{doc['id']}: relocated bytes differ from {peer.vector_key} and the vector names no "
                            f"reason under peers.{peer.vector_key}:\n  " + "\n  ".join(diffs)
                            + (f"\n  {peer.vector_key} said: {linked.diagnostics}" if linked.diagnostics else "")
                            + f"\n  (reasons: {', '.join(PEER_REASONS)})")
    if not diffs and reason:
        if not linked.diagnostics:
            raise GenerateError(f"{doc['id']}: declares {peer.vector_key} differs ({reason}) but it agrees")
        return [f"{doc['id']}: {peer.vector_key} writes the same bytes but reports: {first_line}"]
    return [f"{doc['id']}: {peer.vector_key} differs ({reason}): {d}" for d in diffs]


def sources(paths: list[Path]) -> list[Path]:
    """Hand-written inputs: families, and vectors that no family generated."""
    out = []
    for p in paths:
        if p.name.endswith(".family.yaml"):
            out.append(p)
        else:
            doc = yaml.safe_load(p.read_text())
            if not (isinstance(doc, dict) and "family" in doc):
                out.append(p)
    return out


def all_sources() -> list[Path]:
    vec = ROOT / "vectors"
    return sources(sorted(vec.rglob("*.family.yaml")) + vector_files(vec))


def run(paths: list[Path], check: bool) -> int:
    changed, failed = [], []
    for src in paths:
        doc = yaml.safe_load(src.read_text())
        for path, vec in expand(src, doc):
            if path.exists() and path != src:
                old = yaml.safe_load(path.read_text())
                vec = {**vec, **{k: old[k] for k in ("peers",) if k in old and k not in vec}}
            try:
                out, ko, notes = generate(path, vec)
            except (GenerateError, kbuild.BuildError, mutate.MutationError) as e:
                failed.append(str(e))
                print(f"FAIL {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {e}", file=sys.stderr)
                continue
            for n in notes:
                print(f"note {n}")
            text = dump(out)
            ko_path = path.with_suffix(".ko")
            same = path.exists() and path.read_text() == text and ko_path.exists() and ko_path.read_bytes() == ko
            if check:
                if not same:
                    changed.append(str(path))
                    print(f"CHANGED {path}", file=sys.stderr)
                continue
            if not same:
                path.write_text(text)
                ko_path.write_bytes(ko)
            print(f"{'ok  ' if same else 'wrote'} {out['id']}")
    if check:
        print(f"check: {len(changed)} changed, {len(failed)} failed")
    return 1 if failed or changed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="koconform generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="vector or family files")
    ap.add_argument("--all", action="store_true", help="every vector and family under vectors/")
    ap.add_argument("--check", action="store_true",
                    help="regenerate everything in memory and fail if any .ko or expectation would change")
    args = ap.parse_args(argv)
    if (args.check or args.all) and args.paths:     # only what is under the named files and directories
        paths = sources([q for p in args.paths for q in (sorted(p.resolve().rglob("*.family.yaml"))
                         + vector_files(p.resolve()) if p.is_dir() else [p.resolve()])])
    elif args.check or args.all:
        paths = all_sources()
    elif args.paths:                                # files, and what is under the named directories
        paths = sources([q for p in args.paths for q in (sorted(p.resolve().rglob("*.family.yaml"))
                         + vector_files(p.resolve()) if p.is_dir() else [p.resolve()])])
    else:
        ap.error("name vector files, or use --all / --check")
    return run(paths, args.check)


if __name__ == "__main__":
    sys.exit(main())
