"""Vector files: read, validate against the closed schema, turn into requests.

Vector files are untrusted input: YAML is loaded safely, every problem (bad YAML, a
field the schema does not allow, a missing .ko, a wrong sha256) is a VectorBug naming
the file and, where it can, the line, kept apart from implementation failures.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import profiles
from .model import Request, Result

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "vector.schema.json"
# Why a vector's bytes may differ from a static linker's (closed list; the schema has it too).
PEER_REASONS = (
    "kernel-module-plt",        # a module PLT/GOT entry where a linker places a thunk or GOT of its own
    "range-checked-by-kernel",  # the kernel refuses a value the linker accepts
    "range-unchecked-by-kernel",  # the kernel writes a value the linker refuses as out of range
    "no-relaxation",            # the linker relaxes an instruction the kernel leaves alone
    "zero-target-refused",      # the kernel refuses a place that is not zero
    "linker-rewrites-section",  # e.g. .eh_frame, merged strings
    "kernel-symtab-values",     # symbols in sections the kernel does not load keep copy addresses
    "linker-rejects-input",     # the linker refuses an object the kernel accepts (e.g. ident bytes)
    "kernel-rewrites-instruction",  # the kernel rewrites an instruction a linker leaves (arm R_ARM_V4BX)
)


class VectorBug(Exception):
    """The vector file is wrong, not the implementation under test."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"BUG IN VECTOR: {where}: {message}")
        self.path, self.line = path, line


@dataclass
class Vector:
    path: Path
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def arch(self) -> str:
        return str(self.doc["arch"])

    @property
    def expect(self) -> dict[str, Any]:
        return dict(self.doc["expect"])

    @property
    def ko_path(self) -> Path:
        return self.path.parent / self.doc["ko"]

    def ko(self) -> bytes:
        if not self.ko_path.is_file():
            raise VectorBug(self.path, f"ko: {self.doc['ko']} does not exist", _line(self.path, "ko"))
        data = self.ko_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.doc["sha256"]:
            raise VectorBug(self.path, f"sha256 does not match {self.doc['ko']}", _line(self.path, "sha256"))
        return data

    def request(self) -> Request:
        env_spec = self.doc.get("environment") or {}
        profile = profiles.load_profile(self.doc["profile"], self.arch, env_spec.get("config"),
                                        env_spec.get("facts"))
        env = profiles.environment(self.doc["profile"], self.arch, env_spec)
        return Request(self.ko(), self.arch, profile, env, name=self.doc["ko"])


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _line(path: Path, key: str) -> int | None:
    try:
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if text.startswith(f"{key}:"):
                return n
    except OSError:
        return None
    return None


def load(path: Path) -> Vector:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise VectorBug(path, f"not valid YAML: {getattr(e, 'problem', e)}", mark.line + 1 if mark else None) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VectorBug(path, f"cannot read: {e}") from None
    if not isinstance(doc, dict):
        raise VectorBug(path, "a vector is a YAML mapping")
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.path) or "(top level)"
        raise VectorBug(path, f"{field}: {first.message}",
                        _line(path, str(first.path[0])) if first.path else None)
    return Vector(path, doc)


def vector_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml") if not p.name.endswith(".family.yaml"))


def log_entry(record: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {record.source: record.pattern if record.pattern else f"<{record.level}>{record.text}"}
    if record.pattern:
        entry[record.source] = f"<{record.level}>{record.pattern}"
        entry["pattern"] = True
    return entry


def expectation_from_result(result: Result) -> dict[str, Any]:
    """A result as a vector's expectation (log lines as {source: "<level>text"})."""
    j = result.to_json()
    out: dict[str, Any] = {"status": j["status"], "errno": j["errno"], "phase": j["phase"]}
    for key in ("regions", "layout", "symbols", "sections"):
        if j[key] is not None:
            out[key] = j[key]
    out["log"] = [log_entry(r) for r in result.log]
    out["init_return"] = j["init_return"]
    out["exit_log"] = None if result.exit_log is None else [log_entry(r) for r in result.exit_log]
    if result.fault is not None:
        out["fault"] = j["fault"]
    return out
