"""Profiles (kernel builds) and default environments (what those kernels export)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from .model import Environment, KernelSymbol, Profile, parse_int

HERE = Path(__file__).resolve().parent


@functools.cache
def _profile_doc(name: str) -> dict[str, Any]:
    """The profile's document; its arches come from profiles/<name>/<arch>.yaml, one file each."""
    path = HERE / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (HERE / "profiles").glob("*.yaml"))
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(known)}")
    doc = yaml.safe_load(path.read_text())
    doc["arches"] = {p.stem: yaml.safe_load(p.read_text())
                     for p in sorted((HERE / "profiles" / name).glob("*.yaml"))}
    return doc


def arch_doc(profile: str, arch: str) -> dict[str, Any]:
    doc = _profile_doc(profile)
    if arch not in doc["arches"]:
        raise KeyError(f"profile {profile} has no arch {arch!r}; it has: {', '.join(doc['arches'])}")
    return doc["arches"][arch]


def load_profile(name: str, arch: str, overrides: dict[str, Any] | None = None,
                 facts: dict[str, Any] | None = None) -> Profile:
    """The profile's build for `arch`, with a vector's config option and fact overrides."""
    a = arch_doc(name, arch)
    config = dict(a["config"])
    config.update(overrides or {})
    return Profile(name=name, arch=arch, config=config, page_size=parse_int(a["page_size"]),
                   vermagic=a["vermagic"],
                   module_struct={k: parse_int(v) for k, v in a["module_struct"].items()},
                   facts={**a.get("facts", {}), **(facts or {})}, build=dict(a.get("build", {})))


@functools.cache
def _symbols(path: Path) -> dict[str, KernelSymbol]:
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, address, crc, gpl, namespace = line.split("\t")
        out[name] = KernelSymbol(name, int(address, 16), int(crc, 16) if crc else None, gpl == "1", namespace)
    return out


def default_environment(profile: str, arch: str) -> Environment:
    a = arch_doc(profile, arch)
    return Environment(symbols=dict(_symbols(HERE / a["environment"])),
                       regions={k: parse_int(v) for k, v in a["regions"].items()})


def environment(profile: str, arch: str, spec: dict[str, Any] | None) -> Environment:
    """The default environment with a vector's overrides applied.

    spec: {symbols: {name: {address, crc, gpl_only, namespace} | null}, regions: {name: addr}}
    (a null symbol removes that export).
    """
    env = default_environment(profile, arch)
    spec = spec or {}
    for name, s in (spec.get("symbols") or {}).items():
        if s is None:
            env.symbols.pop(name, None)
            continue
        old = env.symbols.get(name)
        crc = s.get("crc", old.crc if old else None)
        env.symbols[name] = KernelSymbol(
            name, parse_int(s.get("address", old.address if old else 0)),
            None if crc is None else parse_int(crc),
            bool(s.get("gpl_only", old.gpl_only if old else False)),
            s.get("namespace", old.namespace if old else ""))
    for name, base in (spec.get("regions") or {}).items():
        env.regions[name] = parse_int(base)
    return env
