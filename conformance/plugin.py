"""The runner: a pytest plugin that collects vectors/**/*.yaml and runs each through an adapter.

    pytest vectors                          # every vector, against the reference
    pytest vectors --adapter NAME           # against another installed adapter
    pytest vectors -k pc32 -n 2             # a selection, on two workers (pytest-xdist)
    pytest vectors --adapter 'cmd:./loader' --xfail-file expected-failures.txt
                                            # a program speaking conformance/PROTOCOL.md

A failure reads: the vector, the first difference (section, offset, relocation that
writes there, expected and actual bytes, disassembly), and the command that reruns it.
A broken vector file is reported as BUG IN VECTOR, apart from implementation failures.
"""
from __future__ import annotations

import re
import shlex
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import adapter as adapters
from . import protocol, xfail
from .compare import compare
from .explain import explainer
from .isolate import DEFAULT_MEMORY, DEFAULT_TIMEOUT, AdapterFailure, Isolated
from .model import Result
from .vectors import Vector, VectorBug, load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("koconform")
    group.addoption("--adapter", default="reference",
                    help="implementation to run the vectors through: an entry point in koconform.adapters, "
                         "module:Class, or cmd:COMMAND (a program speaking conformance/PROTOCOL.md)")
    group.addoption("--xfail-file", default=None, metavar="FILE",
                    help="expected failures: one line per vector id with its reason; a listed vector that "
                         "passes, is not applicable or does not exist fails the run")
    group.addoption("--xfail-write", action="store_true",
                    help="with --xfail-file: rewrite FILE from this run (new failures in, passing vectors out)")
    group.addoption("--no-isolate", action="store_true",
                    help="call the adapter in the runner's own process (for a debugger); by default each "
                         "call goes to a worker process with a time and memory limit, so a crash or hang "
                         "fails that vector alone")
    group.addoption("--timeout", type=float, default=None, metavar="SECONDS",
                    help="per-vector time limit for an isolated adapter (default 120) or a cmd: adapter "
                         "(default 30)")
    group.addoption("--memory-limit", type=int, default=None, metavar="MIB",
                    help="address space the isolated adapter's worker may map beyond what it inherits, in "
                         "MiB (default 32768: unicorn engines reserve GiBs they never touch)")
    group.addoption("--peers-report", default=None, metavar="FILE",
                    help="with a peer adapter (lld, gnu-ld): write each vector's outcome (agree, differs "
                         "with reason, cannot express) to FILE as JSON, for `koconform peers`")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vector: a koconform conformance vector")
    path = config.getoption("xfail_file", None)
    if path:
        try:
            config.stash[_XFAIL] = xfail.read(Path(path))
        except xfail.XFailFileError as e:
            raise pytest.UsageError(str(e)) from None


_XFAIL = pytest.StashKey[xfail.XFailFile]()


def _xfails(config: pytest.Config) -> dict[str, str]:
    return config.stash[_XFAIL].entries if _XFAIL in config.stash else {}


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".yaml" and not file_path.name.endswith(".family.yaml") \
            and "vectors" in file_path.parts and file_path.parent.name != "vectors":
        return VectorFile.from_parent(parent, path=file_path)
    return None


_ID_LINE = re.compile(r"^id:[ \t]*['\"]?([^'\"\s#]+)", re.MULTILINE)


class VectorFile(pytest.File):
    """One vector file: collected by its `id:` line alone; parsed and validated when it runs.

    Parsing and schema-checking every file at collection would be repeated by every xdist
    worker; done in runtest, each worker pays only for the vectors it runs.
    """

    def collect(self) -> Iterator[pytest.Item]:
        try:
            found = _ID_LINE.search(self.path.read_text(errors="replace"))
        except OSError:
            found = None
        yield VectorItem.from_parent(self, name=found.group(1) if found else self.path.stem, vector=None, bug=None)


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
        if self.vector is None and self.bug is None:
            try:
                self.vector = load(self.path)
            except VectorBug as bug:
                self.bug = bug
        if self.bug is not None:
            raise self.bug
        vec = self.vector
        assert vec is not None
        listed = _xfails(self.config).get(vec.id)
        where = f"listed in {self.config.getoption('xfail_file')} as an expected failure ({listed})"
        try:
            self.run_vector(vec)
        except pytest.skip.Exception:
            self.user_properties.append(("koconform-vector", (vec.id, "skipped", "")))
            if listed is not None:
                raise VectorFailure(f"{where}, but not applicable: remove the entry") from None
            raise
        except VectorFailure as failure:
            self.user_properties.append(("koconform-vector", (vec.id, "failed", str(failure).split("\n")[0])))
            if listed is not None:
                pytest.xfail(listed)
            raise
        self.user_properties.append(("koconform-vector", (vec.id, "passed", "")))
        if listed is not None:
            raise VectorFailure(f"{where}, but it passes: remove the entry")

    def run_vector(self, vec: Vector) -> None:
        name = self.config.getoption("adapter")
        impl = _adapter(name)
        if isinstance(impl, protocol.ProtocolAdapter):
            impl.timeout = self.config.getoption("timeout") or protocol.DEFAULT_TIMEOUT
        try:
            handled = vec.arch in impl.arches
        except Exception as e:  # noqa: BLE001 - a cmd: implementation that does not start
            raise VectorFailure(_raised(name, e)) from None
        if not handled:
            pytest.skip(f"adapter {name} does not handle {vec.arch}")
        request = vec.request()
        ko = request.ko
        if getattr(impl, "kind", "implementation") == "peer":
            self.run_peer(impl, vec, request)
            return
        if "sweep" in vec.doc:
            self.run_sweep(impl, name, vec, request)
            return
        why = impl.not_applicable(vec.expect, request)
        if why:
            pytest.skip(f"not applicable: {why}")
        try:
            if isinstance(impl, protocol.ProtocolAdapter):
                actual = impl.load_vector(request, vec.id)
            elif self.config.getoption("no_isolate") or getattr(impl, "isolated", False):
                answer = impl.load(request)
                actual = adapters.result_json(answer) if isinstance(answer, (dict, Result)) else answer
            else:
                actual = _isolated(self.config, name, impl).load(request)
        except AdapterFailure as e:   # crashed, hung, raised or answered garbage: this vector fails alone
            raise VectorFailure(str(e)) from None
        except protocol.Skipped as s:
            pytest.skip(f"{name} skipped it: {s}")
        except (protocol.ProtocolError, protocol.Errored) as e:
            raise VectorFailure(_raised(name, e)) from None
        except Exception:  # noqa: BLE001 - the implementation under test broke: this vector fails, the run goes on
            raise VectorFailure(f"adapter {name} raised:\n{traceback.format_exc(limit=6)}") from None
        if not isinstance(actual, dict):
            raise VectorFailure(f"adapter {name} answered garbage: {str(actual)[:200]!r}")
        expect = vec.expect
        if impl.log_sources != {"kernel", "module"}:
            expect, actual = _only_sources(expect, impl.log_sources), _only_sources(actual, impl.log_sources)
        result = compare(expect, actual, impl.produces, explainer(ko, vec.arch, vec.expect))
        if not result.ok:
            raise VectorFailure("\n".join(result.differences) + _context(expect, actual, result.not_checked))

    def run_sweep(self, impl: adapters.Adapter, name: str, vec: Vector, request: Any) -> None:
        """Every input of a sweep vector through the adapter; the first lengths whose outcome differs."""
        from dataclasses import replace

        from . import sweep
        cases = sweep.inputs(vec.doc, request.ko)
        want = sweep.expected(vec.expect.get("outcomes") or [])
        try:
            if self.config.getoption("no_isolate") or getattr(impl, "isolated", False):
                answers: list[Any] = []
                for _, ko in cases:
                    try:
                        answers.append(adapters.result_json(impl.load(replace(request, ko=ko))))
                    except Exception:  # noqa: BLE001 - that input's failure
                        answers.append(f"adapter {name} raised:\n{traceback.format_exc(limit=6)}")
            else:
                answers = _isolated(self.config, name, impl).load_many(request, [ko for _, ko in cases])
        except AdapterFailure as e:
            raise VectorFailure(f"the sweep over {len(cases)} inputs broke the adapter: {e}") from None
        wrong = []
        compared = [k for k, f in enumerate(("status", "errno", "phase")) if f in impl.produces]
        for (n, _), got in zip(cases, answers):
            if isinstance(got, str):
                wrong.append(f"length {n}: {got}")
                continue
            expected, actual = want.get(n), sweep.outcome(got)
            if expected is None or [expected[k] for k in compared] != [actual[k] for k in compared]:
                exp = sweep.show(expected) if expected else "(no expectation)"
                wrong.append(f"length {n}: expected {exp}, got {sweep.show(actual)}")
        if wrong:
            raise VectorFailure(f"{len(wrong)} of {len(cases)} truncations differ; first ones:\n  "
                                + "\n  ".join(wrong[:8]))

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
        rerun = f"rerun: koconform run --adapter {shlex.quote(self.config.getoption('adapter'))} {self.path}"
        if isinstance(excinfo.value, VectorBug):
            return f"{excinfo.value}\n{rerun}"
        if isinstance(excinfo.value, VectorFailure):
            vec = self.vector
            head = f"{vec.id}: {vec.doc['description']}" if vec else str(self.path)
            return f"{head}\n{excinfo.value}\n{rerun}"
        return f"{super().repr_failure(excinfo)}\n{rerun}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"vector {self.name}"


def _raised(name: str, e: Exception) -> str:
    if isinstance(e, protocol.ProtocolError):
        return str(e)
    if isinstance(e, protocol.Errored):
        return f"adapter {name} errored: {e}"
    return f"adapter {name} raised:\n{traceback.format_exc(limit=6)}"


def _only_sources(result: dict[str, Any], sources: frozenset[str]) -> dict[str, Any]:
    """The result (or expectation) with only the log records of the given sources."""
    def keep(entry: Any) -> bool:
        if not isinstance(entry, dict):
            return True
        return (entry.get("source") or ("kernel" if "kernel" in entry else "module")) in sources
    out = dict(result)
    for key in ("log", "exit_log"):
        if isinstance(out.get(key), list):
            out[key] = [e for e in out[key] if keep(e)]
    return out


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
# Vector outcomes (id -> (passed|failed|skipped, first line)) for --xfail-write; stale entries.
_OUTCOMES: dict[str, tuple[str, str]] = {}
_STALE: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _PEER_OUTCOMES.clear()          # several sessions may run in one process (koconform peers)
    _OUTCOMES.clear()
    _STALE.clear()
    if _XFAIL in session.config.stash and not hasattr(session.config, "workerinput"):
        known = xfail.known_ids(xfail.vector_roots(session.config.args))
        _STALE.extend(sorted(set(_xfails(session.config)) - known))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        return
    for name, value in report.user_properties:
        if name == "peer" and isinstance(value, dict) and value not in _PEER_OUTCOMES:
            _PEER_OUTCOMES.append(value)
        if name == "koconform-vector" and isinstance(value, tuple):
            vid, outcome, first = (str(v) for v in value)
            _OUTCOMES[vid] = (outcome, first)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _XFAIL not in config.stash or hasattr(config, "workerinput"):
        return
    path = config.getoption("xfail_file")
    if config.getoption("xfail_write"):
        terminalreporter.write_line(f"koconform: rewrote {path} from this run")
    elif _STALE:
        terminalreporter.write_line(f"koconform: {path} lists vectors that do not exist (remove them, or "
                                    f"rewrite the file with --xfail-write): {', '.join(_STALE)}", red=True)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _XFAIL in config.stash and not hasattr(config, "workerinput"):
        xf = config.stash[_XFAIL]
        if config.getoption("xfail_write"):
            known = xfail.known_ids(xfail.vector_roots(config.args))
            xf.path.write_text(xfail.rewrite(xf, _OUTCOMES, known))
        elif _STALE and session.exitstatus in (0, 5):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for impl in _ADAPTERS.values():
        close = getattr(impl, "close", None)
        if close is not None:
            close()
    path = session.config.getoption("peers_report", None)
    if path and not hasattr(session.config, "workerinput"):
        import json
        Path(path).write_text(json.dumps(sorted(_PEER_OUTCOMES, key=lambda o: (o["vector"], o["peer"])), indent=1))
