"""The runner: a pytest plugin that collects vectors/**/*.yaml and runs each through an adapter.

    pytest vectors                          # every vector, against the reference
    pytest vectors --adapter NAME           # against another installed adapter
    pytest vectors -k pc32 -n 2             # a selection, on two workers (pytest-xdist)

A failure reads: the vector, the first difference (section, offset, relocation that
writes there, expected and actual bytes, disassembly), and the command that reruns it.
A broken vector file is reported as BUG IN VECTOR, apart from implementation failures.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import adapter as adapters
from .compare import compare
from .explain import explainer
from .vectors import Vector, VectorBug, load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("koconform")
    group.addoption("--adapter", default="reference",
                    help="implementation to run the vectors through (entry point in koconform.adapters)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vector: a koconform conformance vector")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".yaml" and not file_path.name.endswith(".family.yaml") \
            and "vectors" in file_path.parts and file_path.parent.name != "vectors":
        return VectorFile.from_parent(parent, path=file_path)
    return None


class VectorFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            vec = load(self.path)
            name = vec.id
        except VectorBug as bug:
            vec, name = None, self.path.stem
            yield VectorItem.from_parent(self, name=name, vector=None, bug=bug)
            return
        yield VectorItem.from_parent(self, name=name, vector=vec, bug=None)


class VectorFailure(Exception):
    pass


_ADAPTERS: dict[str, adapters.Adapter] = {}


def _adapter(name: str) -> adapters.Adapter:
    if name not in _ADAPTERS:
        _ADAPTERS[name] = adapters.get(name)
    return _ADAPTERS[name]


class VectorItem(pytest.Item):
    def __init__(self, *, vector: Vector | None, bug: VectorBug | None, **kw: Any):
        super().__init__(**kw)
        self.vector, self.bug = vector, bug
        self.add_marker("vector")

    def runtest(self) -> None:
        if self.bug is not None:
            raise self.bug
        vec = self.vector
        assert vec is not None
        name = self.config.getoption("adapter")
        impl = _adapter(name)
        if vec.arch not in impl.arches:
            pytest.skip(f"adapter {name} does not handle {vec.arch}")
        request = vec.request()
        ko = request.ko
        try:
            actual = adapters.result_json(impl.load(request))
        except Exception:  # the implementation under test broke: this vector fails, the run goes on
            raise VectorFailure(f"adapter {name} raised:\n{traceback.format_exc(limit=6)}") from None
        result = compare(vec.expect, actual, impl.produces, explainer(ko, vec.arch, vec.expect))
        if not result.ok:
            raise VectorFailure("\n".join(result.differences) + _context(vec.expect, actual, result.not_checked))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        rerun = f"rerun: koconform run --adapter {self.config.getoption('adapter')} {self.path}"
        if isinstance(excinfo.value, VectorBug):
            return f"{excinfo.value}\n{rerun}"
        if isinstance(excinfo.value, VectorFailure):
            vec = self.vector
            head = f"{vec.id}: {vec.doc['description']}" if vec else str(self.path)
            return f"{head}\n{excinfo.value}\n{rerun}"
        return f"{super().repr_failure(excinfo)}\n{rerun}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"vector {self.name}"


def _context(expect: dict[str, Any], actual: dict[str, Any], not_checked: list[str]) -> str:
    lines = []
    if actual.get("status") != expect.get("status") or actual.get("errno") != expect.get("errno"):
        lines.append(f"actual: status={actual.get('status')} errno={actual.get('errno')} phase={actual.get('phase')}")
        log = actual.get("log") or []
        if log:
            lines.append("actual log:")
            lines += [f"  {e.get('source')} <{e.get('level')}>{e.get('text')}" for e in log[:12]]
    if not_checked:
        lines.append(f"not checked (adapter does not produce): {', '.join(not_checked)}")
    return ("\n" + "\n".join(lines)) if lines else ""
