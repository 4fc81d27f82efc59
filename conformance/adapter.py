"""The adapter API: how an implementation plugs into the runner.

An adapter is a class registered under the entry-point group ``koconform.adapters``
(``pip install`` a package that declares one and ``koconform run --adapter NAME``
finds it). It says which architectures it handles and which result fields it
produces; the runner compares only those and reports the rest as not checked.
Rejecting a module is a normal result; an exception from `load` is the adapter's
own failure, reported as such for that vector alone.

    class MyLoader(Adapter):
        name = "myloader"
        arches = frozenset({"x86_64"})
        produces = frozenset({"status", "errno", "phase", "sections"})
        def load(self, request: Request) -> Result | dict: ...
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, ClassVar

from .model import RESULT_FIELDS, Request, Result

GROUP = "koconform.adapters"


class Adapter:
    name: ClassVar[str] = "unnamed"
    description: ClassVar[str] = ""
    arches: ClassVar[frozenset[str]] = frozenset()
    produces: ClassVar[frozenset[str]] = frozenset(RESULT_FIELDS)

    # Sources of the log records it produces ("kernel", "module"); only those are compared.
    log_sources: ClassVar[frozenset[str]] = frozenset({"kernel", "module"})

    def load(self, request: Request) -> Result | dict[str, Any]:
        raise NotImplementedError

    def not_applicable(self, expect: dict[str, Any], request: Request) -> str | None:
        """Why a vector of a handled arch is outside what this implementation does (None: applicable)."""
        return None


def available() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get(name: str) -> Adapter:
    """An installed adapter by entry-point name, any class by import path `module:Class`, or a
    program speaking the subprocess protocol (conformance/PROTOCOL.md) as `cmd:COMMAND`."""
    if name.startswith("cmd:"):
        from .protocol import ProtocolAdapter
        return ProtocolAdapter(name[len("cmd:"):])
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)()  # type: ignore[no-any-return]
    eps = available()
    if name not in eps:
        raise KeyError(f"no adapter {name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    cls = eps[name].load()
    return cls()


def result_json(value: Result | dict[str, Any]) -> dict[str, Any]:
    return value.to_json() if isinstance(value, Result) else dict(value)
