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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import adapter as adapters
from .compare import compare
from .explain import explainer
from .isolate import DEFAULT_MEMORY, DEFAULT_TIMEOUT, AdapterFailure, Isolated
from .model import Result
from .vectors import Vector, VectorBug, load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("koconform")
    group.addoption("--adapter", default="reference",
                    help="implementation to run the vectors through (entry point in koconform.adapters)")
    group.addoption("--no-isolate", action="store_true",
                    help="call the adapter in the runner's own process (for a debugger); by default each "
                         "call goes to a worker process with a time and memory limit, so a crash or hang "
                         "fails that vector alone")
    group.addoption("--timeout", type=float, default=None, metavar="SECONDS",
                    help="per-vector time limit for an isolated adapter (default 120)")
    group.addoption("--memory-limit", type=int, default=None, metavar="MIB",
                    help="address-space limit of the isolated adapter's worker, in MiB (default 8192)")
    group.addoption("--peers-report", default=None, metavar="FILE",
                    help="with a peer adapter (lld, gnu-ld): write each vector's outcome (agree, differs "
                         "with reason, cannot express) to FILE as JSON, for `koconform peers`")


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
        try:
            _ADAPTERS[name] = adapters.get(name)
        except (KeyError, ImportError, AttributeError) as e:
            raise pytest.UsageError(f"--adapter {name}: {e}") from None
    return _ADAPTERS[name]


_ISOLATED: dict[str, Isolated] = {}


def _isolated(config: pytest.Config, name: str, impl: adapters.Adapter) -> Isolated:
    if name not in _ISOLATED:
        timeout = config.getoption("timeout") or DEFAULT_TIMEOUT
        memory = config.getoption("memory_limit")
        _ISOLATED[name] = Isolated(impl, timeout, (memory << 20) if memory else DEFAULT_MEMORY)
    return _ISOLATED[name]


def pytest_unconfigure(config: pytest.Config) -> None:
    for worker in _ISOLATED.values():
        worker.close()
    _ISOLATED.clear()


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
        if getattr(impl, "kind", "implementation") == "peer":
            self.run_peer(impl, vec, request)
            return
        try:
            if self.config.getoption("no_isolate") or getattr(impl, "isolated", False):
                answer = impl.load(request)
                actual = adapters.result_json(answer) if isinstance(answer, (dict, Result)) else answer
            else:
                actual = _isolated(self.config, name, impl).load(request)
        except AdapterFailure as e:   # crashed, hung, raised or answered garbage: this vector fails alone
            raise VectorFailure(str(e)) from None
        except Exception:  # noqa: BLE001 - the implementation under test broke: this vector fails, the run goes on
            raise VectorFailure(f"adapter {name} raised:\n{traceback.format_exc(limit=6)}") from None
        if not isinstance(actual, dict):
            raise VectorFailure(f"adapter {name} answered garbage: {str(actual)[:200]!r}")
        result = compare(vec.expect, actual, impl.produces, explainer(ko, vec.arch, vec.expect))
        if not result.ok:
            raise VectorFailure("\n".join(result.differences) + _context(vec.expect, actual, result.not_checked))

    def run_peer(self, impl: adapters.Adapter, vec: Vector, request: Any) -> None:
        """A static linker given the vector's layout: its bytes agree, or the vector says why not."""
        from .peers import Given
        key = impl.vector_key  # type: ignore[attr-defined]
        declared = ((vec.doc.get("peers") or {}).get(key) or {})
        reason = declared.get("differs")

        def record(outcome: str, why: str = "") -> None:
            self.user_properties.append(("peer", {"vector": vec.id, "arch": vec.arch, "peer": impl.name,
                                                  "outcome": outcome, "reason": reason or "", "why": why}))
        if vec.expect["status"] != "loaded":
            record("cannot-express", f"the kernel {vec.expect['status']} this module; a linker only relocates")
            pytest.skip(f"{impl.name} cannot express a {vec.expect['status']} outcome")
        request.given = Given.from_vector(vec.doc)
        try:
            actual = adapters.result_json(impl.load(request))
        except Exception:
            raise VectorFailure(f"peer {impl.name} raised:\n{traceback.format_exc(limit=6)}") from None
        if actual.get("status") != "loaded":
            if reason == "linker-rejects-input":
                record("cannot-express", str(actual.get("detail", ""))[:200])
                pytest.skip(f"{impl.name} rejects this input, as the vector declares")
            raise VectorFailure(f"{impl.name} could not link the module and the vector declares no reason:\n"
                                f"{actual.get('detail', '')}")
        unexpressed = set(actual.get("unexpressed") or ())
        expect = {"status": "loaded", "sections": {k: v for k, v in (vec.expect.get("sections") or {}).items()
                                                   if k not in unexpressed}}
        result = compare(expect, actual, impl.produces, explainer(request.ko, vec.arch, vec.expect))
        if result.ok and reason:
            if actual.get("detail"):
                record("agree-with-diagnostics", str(actual["detail"]).splitlines()[0][:200])
                return
            raise VectorFailure(f"the vector declares {key} differs ({reason}) but {impl.name} writes the "
                                f"same bytes without a word: remove the declaration")
        if result.ok:
            record("agree")
            return
        if reason == "linker-rejects-input":         # it wrote a file, but not the module's sections
            record("cannot-express", str(actual.get("detail", "")).splitlines()[0][:200] if actual.get("detail") else "")
            pytest.skip(f"{impl.name} rejects this input, as the vector declares")
        if reason:
            record("differs", result.differences[0].splitlines()[0])
            return
        raise VectorFailure(f"{impl.name} relocates differently and the vector names no reason under "
                            f"peers.{key}:\n" + "\n".join(result.differences)
                            + (f"\n{impl.name} said: {actual.get('detail')}" if actual.get("detail") else ""))

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


# ---- peer outcomes, collected on the controlling process (also under pytest-xdist) -------
_PEER_OUTCOMES: list[dict[str, Any]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _PEER_OUTCOMES.clear()          # several sessions may run in one process (koconform peers)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        return
    for name, value in report.user_properties:
        if name == "peer" and value not in _PEER_OUTCOMES:
            _PEER_OUTCOMES.append(value)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("peers_report", None)
    if path and not hasattr(session.config, "workerinput"):
        import json
        Path(path).write_text(json.dumps(sorted(_PEER_OUTCOMES, key=lambda o: (o["vector"], o["peer"])), indent=1))
