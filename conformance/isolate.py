"""Run an adapter out of process, with a time limit per vector and a memory limit.

The implementation under test may crash the interpreter (a C extension's segfault), hang,
exhaust memory or answer garbage. None of that may end the run: each call goes to a forked
worker process that holds the adapter; the runner waits at most `timeout` seconds for its
answer; the worker may map `memory` bytes more than it inherited (RLIMIT_AS); its stderr goes to a file whose
tail is quoted in the failure. A worker that died or timed out is killed and replaced for
the next vector. The reference and every Python adapter go through it unless the run says
`--no-isolate` (for a debugger); adapters that are themselves out of process (a subprocess
protocol client) declare `isolated = True` and are called directly.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import tempfile
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .adapter import Adapter, result_json
from .model import Request, Result

DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY = 32 << 30    # address space, not RSS: unicorn engines reserve GiBs they never touch
# A worker is replaced after this many vectors, so what an implementation leaks (a unicorn engine per
# load that nothing frees: qiling) cannot add up to the memory limit over a whole run.
CALLS_PER_WORKER = 25
STDERR_TAIL = 4000


class AdapterFailure(Exception):
    """The implementation broke on this vector (crash, hang, exception, garbage): its failure alone."""


def _pack(request: Request) -> tuple[Request, tuple[str, str, dict[str, Any], list[str]] | None]:
    """The request with its symbol table sent as a difference from the default environment.

    The default table (10,000 exports) is the same object in every request built from a profile
    (conformance/profiles.py caches it; the worker, forked, has it too), so only what a vector
    overrides crosses the pipe: pickling the whole table per vector would cost more than loading.
    """
    from . import profiles
    try:
        base = profiles.default_environment(request.profile.name, request.arch).symbols
    except (KeyError, OSError):
        return request, None
    symbols = request.environment.symbols
    changed = {k: v for k, v in symbols.items() if base.get(k) is not v}
    removed = [k for k in base if k not in symbols]
    env = replace(request.environment, symbols={})
    return replace(request, environment=env), (request.profile.name, request.arch, changed, removed)


def _unpack(request: Request, diff: tuple[str, str, dict[str, Any], list[str]] | None) -> Request:
    if diff is None:
        return request
    from . import profiles
    name, arch, changed, removed = diff
    symbols = dict(profiles.default_environment(name, arch).symbols)
    for k in removed:
        symbols.pop(k, None)
    symbols.update(changed)
    request.environment.symbols = symbols
    return request


def _serve(adapter: Adapter, conn: Connection, memory: int, stderr_path: str) -> None:
    """The worker: answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # ^C is for the runner; it kills us
    if memory:      # on top of what the fork inherited (the runner's own mappings count towards RLIMIT_AS)
        limit = _address_space() + memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    while True:
        try:
            request, diff, kos = conn.recv()
        except EOFError:
            return
        request = _unpack(request, diff)
        if kos is None:
            conn.send(_answer(adapter, request))
        else:                                        # a sweep: the same request with each of these files
            conn.send(("ok", [_answer(adapter, replace(request, ko=ko)) for ko in kos]))


def _answer(adapter: Adapter, request: Request) -> tuple[str, Any]:
    try:
        answer = adapter.load(request)
        return ("ok", result_json(answer) if isinstance(answer, (dict, Result)) else answer)
    except BaseException:  # noqa: BLE001 - reported to the runner as this vector's failure
        return ("raised", traceback.format_exc(limit=8))


def _address_space() -> int:
    """This process's virtual size in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class Isolated:
    """One adapter behind a worker process; `load` returns the result JSON or raises AdapterFailure."""

    def __init__(self, adapter: Adapter, timeout: float = DEFAULT_TIMEOUT, memory: int = DEFAULT_MEMORY):
        self.adapter, self.timeout, self.memory = adapter, timeout, memory
        self._ctx = multiprocessing.get_context("fork")
        self._proc: Any = None
        self._calls = 0
        self._conn: Connection | None = None
        self._stderr = Path(tempfile.mkstemp(prefix=f"koconform-{adapter.name}-", suffix=".stderr")[1])

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._stderr.write_bytes(b"")
        self._proc = self._ctx.Process(target=_serve, args=(self.adapter, child, self.memory, str(self._stderr)),
                                       daemon=True, name=f"koconform-{self.adapter.name}")
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def stderr_tail(self) -> str:
        try:
            text = self._stderr.read_text(errors="replace")
        except OSError:
            return ""
        return text[-STDERR_TAIL:].strip()

    def load(self, request: Request) -> dict[str, Any]:
        return self._check(self._call(request, None))

    def load_many(self, request: Request, kos: list[bytes]) -> list[dict[str, Any] | str]:
        """The request with each file in turn, in one round trip (a sweep); a failure is its message."""
        answers = self._call(request, kos)
        if not isinstance(answers, list) or len(answers) != len(kos):
            raise AdapterFailure(self._report(f"answered garbage to a sweep: {str(answers)[:200]!r}"))
        out: list[dict[str, Any] | str] = []
        for kind, payload in answers:
            if kind == "raised":
                out.append(f"adapter {self.adapter.name} raised:\n{payload}")
            elif not isinstance(payload, dict):
                out.append(f"adapter {self.adapter.name} answered garbage: {str(payload)[:200]!r}")
            else:
                out.append(payload)
        return out

    def _check(self, answer: tuple[str, Any]) -> dict[str, Any]:
        kind, payload = answer
        if kind == "raised":
            raise AdapterFailure(self._report(f"raised:\n{payload}"))
        if not isinstance(payload, dict):
            raise AdapterFailure(self._report(f"answered garbage: {str(payload)[:200]!r}"))
        return payload

    def _call(self, request: Request, kos: list[bytes] | None) -> Any:
        if self._proc is not None and self._calls >= CALLS_PER_WORKER:
            self._kill()
        if self._proc is None or not self._proc.is_alive():
            self._start()
            self._calls = 0
        self._calls += 1
        assert self._conn is not None and self._proc is not None
        try:
            packed, diff = _pack(request)
            self._conn.send((packed, diff, kos))
            if not self._conn.poll(self.timeout):
                self._kill()
                raise AdapterFailure(self._report(f"no answer within {self.timeout:g} s (killed)"))
            kind, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            if self._proc is not None:
                self._proc.join(5)
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            raise AdapterFailure(self._report(_death(code))) from None
        return payload if kos is not None else (kind, payload)

    def _report(self, what: str) -> str:
        tail = self.stderr_tail()
        return f"adapter {self.adapter.name} {what}" + (f"\nits stderr (tail):\n{tail}" if tail else "")

    def close(self) -> None:
        self._kill()
        self._stderr.unlink(missing_ok=True)


def _death(code: int | None) -> str:
    if code is None:
        return "died"
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with status {code}"
