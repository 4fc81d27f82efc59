"""The subprocess adapter protocol (conformance/PROTOCOL.md): any program, in any language, as an adapter.

    koconform run --adapter cmd:COMMAND [PATHS]          # COMMAND speaks PROTOCOL.md
    python -m koconform.conformance.protocol serve-reference   # the reference behind the protocol
    python -m koconform.conformance.protocol validate KIND < lines.jsonl
    python -m koconform.conformance.protocol bench [PATHS]      # in-process vs. protocol, per vector

`ProtocolAdapter` runs the command once per session (and again after a crash), declares the
environments once per session and sends one `load` per vector. A crash, a hang or a line that
is not a valid response is that vector's failure (ProtocolError, with the implementation's
last lines of stderr); the next vector starts a new process.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import collections
import functools
import hashlib
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jsonschema

from .adapter import Adapter
from .model import Environment, KernelSymbol, Profile, Request, hexaddr, parse_int

VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "protocol.schema.json"
KINDS = ("start", "environment", "load", "stop", "start-response", "environment-response", "load-response")
# Phases an implementation may stop after, in load order; "init" covers init and exit.
LAST_PHASES = ("check", "layout", "resolve", "relocate", "init")
_PHASE_ORDER = {"check": 0, "layout": 1, "resolve": 2, "relocate": 3, "init": 4, "exit": 4}
DEFAULT_TIMEOUT = 30.0
STDERR_LINES = 20


class ProtocolError(Exception):
    """The implementation crashed, hung or wrote something that is not a response."""


class Skipped(Exception):
    """The implementation declined the vector ({"skipped": reason})."""


class Errored(Exception):
    """The implementation reported its own failure on the vector ({"errored": message})."""


# ---- schema ---------------------------------------------------------------------------
@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())  # type: ignore[no-any-return]


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    """The schema of one message kind with its references inlined (a third faster to check)."""
    if kind not in KINDS:
        raise KeyError(f"no message kind {kind!r}; kinds: {', '.join(KINDS)}")
    defs = schema()["$defs"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node
    return jsonschema.Draft202012Validator(inline(defs[kind]))


def validate(kind: str, message: Any) -> list[str]:
    """Every way `message` breaks the schema of `kind`, as 'path: message' lines (empty: valid)."""
    if _validator(kind).is_valid(message):
        return []
    errors = sorted(_validator(kind).iter_errors(message), key=lambda e: list(e.absolute_path))
    best = jsonschema.exceptions.best_match(errors)         # the most telling one first
    assert best is not None
    if best not in errors:                                  # the deepest error under a oneOf
        errors.insert(0, best)
    else:
        errors.insert(0, errors.pop(errors.index(best)))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {_short(e.message)}" for e in errors]


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# ---- messages -------------------------------------------------------------------------
def symbol_json(s: KernelSymbol) -> dict[str, Any]:
    return {"address": hexaddr(s.address), "crc": None if s.crc is None else f"0x{s.crc:08x}",
            "gpl_only": s.gpl_only, "namespace": s.namespace}


def symbol_from_json(name: str, doc: dict[str, Any]) -> KernelSymbol:
    crc = doc.get("crc")
    return KernelSymbol(name, parse_int(doc["address"]), None if crc is None else parse_int(crc),
                        bool(doc.get("gpl_only")), str(doc.get("namespace") or ""))


def profile_from_json(doc: dict[str, Any]) -> Profile:
    return Profile(name=doc["name"], arch=doc["arch"], config=dict(doc["config"]), page_size=int(doc["page_size"]),
                   vermagic=doc["vermagic"], module_struct={k: int(v) for k, v in doc["module_struct"].items()},
                   facts=dict(doc.get("facts") or {}), build=dict(doc.get("build") or {}))


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass(frozen=True)
class Capabilities:
    name: str
    version: str
    homepage: str
    arches: frozenset[str]
    produces: frozenset[str]
    last_phase: str = "relocate"
    relocations: dict[str, frozenset[str]] | None = None
    log_sources: frozenset[str] = frozenset({"kernel", "module"})

    @classmethod
    def from_start(cls, doc: dict[str, Any]) -> Capabilities:
        impl, caps = doc["implementation"], doc["capabilities"]
        relocs = caps.get("relocations")
        return cls(name=impl["name"], version=impl["version"], homepage=impl["homepage"],
                   arches=frozenset(caps["arches"]), produces=frozenset(caps["produces"]),
                   last_phase=caps.get("last_phase", "relocate"),
                   relocations=None if relocs is None else {a: frozenset(v) for a, v in relocs.items()},
                   log_sources=frozenset(caps.get("log_sources", ("kernel", "module"))))


# ---- the implementation's process -----------------------------------------------------
class _Process:
    """One run of the command: a writer (stdin), and reader threads for stdout lines and stderr."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", "replace").rstrip("\n")[:2000])

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> bytes | None:
        """The next line (None: stdout closed); queue.Empty after `timeout` seconds."""
        return self.lines.get(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """End the process and every process it started (its own session and group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.reap()

    def reap(self, timeout: float = 5.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._err.join(1.0)

    def stop(self) -> None:
        try:
            self.send(_line({"cmd": "stop"}))
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def stderr_tail(self, lines: int = STDERR_LINES) -> str:
        self._err.join(0.5)
        tail = list(self.stderr)[-lines:]
        return "\n".join(f"  | {t}" for t in tail) if tail else "  (nothing on stderr)"

    def exit_text(self) -> str:
        try:
            code = self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            return "closed its standard output"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"


# ---- the adapter ----------------------------------------------------------------------
class ProtocolAdapter(Adapter):
    """An implementation outside this process, reached through PROTOCOL.md (`--adapter cmd:COMMAND`)."""
    name = "cmd"
    description = "a program speaking conformance/PROTOCOL.md"
    kind = "implementation"
    isolated = True          # already out of process: the runner calls it directly (conformance/isolate.py)

    def __init__(self, command: str | list[str], timeout: float = DEFAULT_TIMEOUT, resend_environment: bool = False):
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("cmd: needs a command")
        self.command = command if isinstance(command, str) else shlex.join(command)
        self.timeout = timeout
        # Measurement only: send the whole environment again before every load.
        self.resend_environment = resend_environment
        self.caps: Capabilities | None = None
        self._proc: _Process | None = None
        self._sent: set[str] = set()
        self._bases: dict[tuple[str, str], tuple[str, bytes, dict[str, KernelSymbol]]] = {}
        self._start_failures = 0
        self._start_error = ""
        self._last_id: str | None = None
        self._tmp: str | None = None
        atexit.register(self.close)

    # -- capabilities (the start exchange happens on first use) --
    def capabilities(self) -> Capabilities:
        if self.caps is None:
            self._ensure()
        assert self.caps is not None
        return self.caps

    @property  # type: ignore[override]
    def arches(self) -> frozenset[str]:  # type: ignore[override]
        return self.capabilities().arches

    @property  # type: ignore[override]
    def produces(self) -> frozenset[str]:  # type: ignore[override]
        return self.capabilities().produces

    @property  # type: ignore[override]
    def log_sources(self) -> frozenset[str]:  # type: ignore[override]
        return self.capabilities().log_sources

    @property
    def implementation(self) -> str:
        c = self.capabilities()
        return f"{c.name} {c.version}"

    def not_applicable(self, expect: dict[str, Any], request: Request) -> str | None:
        c = self.capabilities()
        status, phase = expect.get("status"), expect.get("phase")
        if status in ("rejected", "faulted") and phase in _PHASE_ORDER \
                and _PHASE_ORDER[phase] > _PHASE_ORDER[c.last_phase]:
            return f"the kernel decides this vector in {phase}; {c.name} stops after {c.last_phase}"
        reaches = status in ("loaded", "undefined") or _PHASE_ORDER.get(phase or "", 0) >= _PHASE_ORDER["relocate"]
        declared = (c.relocations or {}).get(request.arch)
        if declared is not None and reaches and _PHASE_ORDER[c.last_phase] >= _PHASE_ORDER["relocate"]:
            missing = relocation_types(request.ko, request.arch) - declared
            if missing:
                return f"the module applies {', '.join(sorted(missing))}, which {c.name} does not declare"
        return None

    # -- process --
    def _ensure(self) -> _Process:
        if self._proc is not None and self._proc.alive():
            return self._proc
        if self._proc is not None:
            self._proc.reap()
            self._proc = None
        if self._start_failures >= 2:
            raise ProtocolError(self._start_error)
        try:
            self._proc = _Process(self.argv)
        except OSError as e:
            self._start_failures = 2
            self._start_error = f"cannot start {self.command!r}: {e}"
            raise ProtocolError(self._start_error) from None
        self._sent = set()
        self._last_id = None
        try:
            doc = self._exchange(_line({"cmd": "start", "protocol": VERSION}), "start-response", None, "start")
        except ProtocolError as e:
            self._start_failures += 1
            self._start_error = f"{self.command!r} did not start: {e}"
            raise ProtocolError(self._start_error) from None
        self._start_failures = 0
        self.caps = Capabilities.from_start(doc)
        return self._proc

    def _fail(self, proc: _Process, what: str, kill: bool = True) -> ProtocolError:
        if kill:
            proc.kill()
        else:
            proc.reap()
        self._proc = None
        return ProtocolError(f"{self.command}: {what}\nstderr (last lines):\n{proc.stderr_tail()}")

    def _exchange(self, line: bytes, kind: str, expect_id: str | None, what: str) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None
        try:
            extra = proc.lines.get_nowait()
        except queue.Empty:
            extra = b""
        if extra:       # more than one line for the previous request: the lockstep is lost
            raise self._fail(proc, f"wrote a line after its previous response, before the {what} request: "
                                   f"{_short(extra.decode('utf-8', 'replace').rstrip())!r}")
        try:
            proc.send(line)
        except (OSError, ValueError):
            raise self._fail(proc, f"{proc.exit_text()} before reading the {what} request", kill=False) from None
        try:
            answer = proc.receive(self.timeout)
        except queue.Empty:
            raise self._fail(proc, f"no response to the {what} request within {self.timeout:g} s "
                                   f"(--adapter-timeout); killed") from None
        if answer is None:
            raise self._fail(proc, f"{proc.exit_text()} without answering the {what} request", kill=False)
        shown = answer.decode("utf-8", "replace").rstrip("\n")
        try:
            doc = json.loads(answer)
        except ValueError as e:
            raise self._fail(proc, f"answered the {what} request with a line that is not JSON ({e}): "
                                   f"{_short(shown)!r}") from None
        errors = validate(kind, doc)
        if errors:
            raise self._fail(proc, f"answered the {what} request with a line that is not a valid {kind} "
                                   f"(PROTOCOL.md, schema/protocol.schema.json): {errors[0]}\n  line: "
                                   f"{_short(shown)}")
        if expect_id is not None and doc.get("id") != expect_id:
            hint = " (the previous request's: two lines for it?)" if doc.get("id") == self._last_id else ""
            raise self._fail(proc, f"answered the {what} request with id {doc.get('id')!r}{hint}")
        self._last_id = expect_id
        return doc  # type: ignore[no-any-return]

    # -- environments --
    def _base(self, request: Request) -> tuple[str, bytes, dict[str, KernelSymbol]]:
        """The base symbol table of the request (its profile's default environment), declared
        once per session; the request then carries only its differences from it."""
        from . import profiles
        key = (request.profile.name, request.arch)
        if key in self._bases:
            return self._bases[key]
        try:
            symbols = profiles.default_environment(*key).symbols
        except (KeyError, OSError):         # no default: the request's own table is the base
            symbols = dict(request.environment.symbols)
            key = ("", "")
        table = {name: symbol_json(s) for name, s in sorted(symbols.items())}
        digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:12]
        eid = f"{request.profile.name}/{request.arch}@{digest}"
        base = (eid, _line({"cmd": "environment", "id": eid, "arch": request.arch, "symbols": table}), symbols)
        if key != ("", ""):
            self._bases[key] = base
        return base

    @staticmethod
    def environment_delta(env: Environment, base: dict[str, KernelSymbol]) -> dict[str, Any]:
        """The exports that differ from the base (records) or are not in the request (None)."""
        symbols = env.symbols
        if symbols is base:
            return {}
        # Built from the profile's cached default table, unchanged exports are the same objects.
        delta: dict[str, Any] = {name: symbol_json(s) for name, s in symbols.items()
                                 if base.get(name) is not s and base.get(name) != s}
        if len(symbols) - sum(1 for name in delta if name not in base) != len(base):
            for name in base.keys() - symbols.keys():
                delta[name] = None
        return dict(sorted(delta.items()))

    def _ko_path(self, ko: bytes) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="koconform-proto-")
        path = os.path.join(self._tmp, hashlib.sha256(ko).hexdigest() + ".ko")
        if not os.path.exists(path):
            with open(path + ".part", "wb") as f:
                f.write(ko)
            os.replace(path + ".part", path)
        return path

    # -- loads --
    def load(self, request: Request) -> dict[str, Any]:
        return self.load_vector(request, "load")

    def load_vector(self, request: Request, vector_id: str) -> dict[str, Any]:
        self._ensure()
        caps = self.capabilities()
        eid, env_line, base = self._base(request)
        if eid not in self._sent or self.resend_environment:
            answer = self._exchange(env_line, "environment-response", eid, "environment")
            if "errored" in answer:
                raise Errored(f"environment {eid}: {answer['errored']}")
            self._sent.add(eid)
        stop_after = caps.last_phase
        if stop_after == "init" and not request.run_init:
            stop_after = "relocate"
        message = {
            "cmd": "load", "id": vector_id, "arch": request.arch,
            "ko_path": self._ko_path(request.ko), "ko_base64": base64.b64encode(request.ko).decode(),
            "environment": {"base": eid, "symbols": self.environment_delta(request.environment, base),
                            "regions": {k: hexaddr(v) for k, v in request.environment.regions.items()}},
            "profile": request.profile.to_json(), "stop_after": stop_after,
        }
        answer = self._exchange(_line(message), "load-response", vector_id, f"load {vector_id!r}")
        if "skipped" in answer:
            raise Skipped(answer["skipped"])
        if "errored" in answer:
            raise Errored(answer["errored"])
        return answer["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def relocation_types(ko: bytes, arch_name: str) -> set[str]:
    """Names of the relocation types the kernel knows for the arch that the .ko applies
    (relocation sections whose target is SHF_ALLOC in the file); empty if it cannot be read."""
    import numpy as np
    from koconform.reference import arch as arches
    from koconform.reference.elf import (
        SHF_ALLOC,
        SHT_REL,
        SHT_RELA,
        read_ehdr,
        read_table,
    )
    try:
        arch = arches.get(arch_name)
        cls = arch.elf
        eh = read_ehdr(ko, cls)
        sh = read_table(ko, int(eh["e_shoff"]), int(eh["e_shnum"]), cls.shdr)
        found: set[int] = set()
        for s in sh:
            kind = int(s["sh_type"])
            info = int(s["sh_info"])
            if kind not in (SHT_REL, SHT_RELA) or info >= len(sh) or not int(sh[info]["sh_flags"]) & SHF_ALLOC:
                continue
            dtype = cls.rela if kind == SHT_RELA else cls.rel
            table = read_table(ko, int(s["sh_offset"]), int(s["sh_size"]) // dtype.itemsize, dtype)
            found |= {int(t) for t in np.unique(cls.r_type(table["r_info"].astype(np.uint64)))}
    except Exception:  # noqa: BLE001 - an unreadable .ko uses no type: the load decides what it is
        return set()
    return {arch.relocations[t].name for t in found if t in arch.relocations}


# ---- the reference behind the protocol --------------------------------------------------
def reference_declaration() -> dict[str, Any]:
    from koconform.reference.adapter import ReferenceAdapter
    return {"protocol": VERSION,
            "implementation": {"name": "koconform-reference", "version": _version(), "language": "Python",
                               "homepage": "", "description": ReferenceAdapter.description},
            "capabilities": {"arches": sorted(ReferenceAdapter.arches),
                             "produces": sorted(ReferenceAdapter.produces), "last_phase": "init",
                             "log_sources": ["kernel", "module"]}}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("koconform")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0"


class ReferenceServer:
    """The protocol's implementation side around the reference loader: one answer per request."""

    def __init__(self, declaration: dict[str, Any] | None = None):
        self.declaration = declaration or reference_declaration()
        self.environments: dict[str, dict[str, KernelSymbol]] = {}

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The response to one request (None for stop)."""
        cmd = msg.get("cmd")
        if cmd == "start":
            return self.declaration
        if cmd == "environment":
            self.environments[msg["id"]] = {name: symbol_from_json(name, s) for name, s in msg["symbols"].items()}
            return {"id": msg["id"], "ok": True}
        if cmd == "load":
            try:
                return {"id": msg["id"], "result": self.load(msg)}
            except Exception as e:  # noqa: BLE001 - the reference's own bug: this vector errors, the server goes on
                return {"id": msg["id"], "errored": f"{type(e).__name__}: {e}"}
        return None

    def request(self, msg: dict[str, Any]) -> Request:
        env = msg["environment"]
        symbols = dict(self.environments[env["base"]])
        for name, s in env["symbols"].items():
            if s is None:
                symbols.pop(name, None)
            else:
                symbols[name] = symbol_from_json(name, s)
        return Request(base64.b64decode(msg["ko_base64"]), msg["arch"], profile_from_json(msg["profile"]),
                       Environment(symbols, {k: parse_int(v) for k, v in env["regions"].items()}),
                       name=os.path.basename(msg["ko_path"]), run_init=msg["stop_after"] == "init")

    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        from koconform.reference import loader
        result = loader.load(self.request(msg))
        out = result.to_json()
        if result.detail:
            out["detail"] = result.detail
        return out

    def serve(self, stdin: IO[bytes], stdout: IO[bytes]) -> int:
        for raw in stdin:
            answer = self.handle(json.loads(raw))
            if answer is None:
                return 0
            stdout.write(_line(answer))
            stdout.flush()
        return 0


# ---- measurement ----------------------------------------------------------------------
def bench(paths: Iterable[Path], repeat: int = 1) -> str:
    """Reference in process vs. behind the protocol (environment once per session, and resent per load)."""
    from koconform.reference.adapter import ReferenceAdapter

    from .vectors import load as load_vector
    from .vectors import vector_files
    files = [f for p in paths for f in ([p] if p.is_file() else vector_files(p))]
    vecs = [load_vector(f) for f in files]
    requests = [(v.id, v.request()) for v in vecs]
    ref = ReferenceAdapter()
    command = [sys.executable, "-m", "koconform.conformance.protocol", "serve-reference"]
    lines = []

    def timed(label: str, fn: Any) -> list[dict[str, Any]]:
        best, out = float("inf"), []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = [fn(vid, req) for vid, req in requests]
            best = min(best, time.perf_counter() - t0)
        lines.append(f"{label:<44} {best:8.3f} s  {1000 * best / len(requests):7.2f} ms/vector")
        return out

    inproc = timed("reference in process", lambda vid, req: ref.load(req).to_json())
    for label, resend in (("reference behind the protocol", False),
                          ("  ... environment resent with every load", True)):
        adapter = ProtocolAdapter(command, resend_environment=resend)
        t0 = time.perf_counter()
        adapter.capabilities()
        started = time.perf_counter() - t0
        out = timed(label, lambda vid, req, a=adapter: a.load_vector(req, vid))
        adapter.close()
        same = sum(1 for a, b in zip(inproc, out) if a == {k: v for k, v in b.items() if k != "detail"})
        lines.append(f"{'':<44} start exchange {started:.2f} s; {same}/{len(out)} results identical")
    return f"{len(requests)} vectors, best of {repeat}\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m koconform.conformance.protocol", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve-reference", help="speak the protocol on stdin/stdout with the reference loader")
    p = sub.add_parser("validate", help="check JSON lines from stdin against one message kind of the schema")
    p.add_argument("kind", choices=KINDS)
    p = sub.add_parser("bench", help="time the reference in process and behind the protocol")
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    if args.command == "serve-reference":
        return ReferenceServer().serve(sys.stdin.buffer, sys.stdout.buffer)
    if args.command == "validate":
        bad = 0
        for n, raw in enumerate(sys.stdin.buffer, 1):
            try:
                errors = validate(args.kind, json.loads(raw))
            except ValueError as problem:
                errors = [f"not JSON: {problem}"]
            for error in errors:
                print(f"line {n}: {error}")
            bad += bool(errors)
        return 1 if bad else 0
    root = Path(__file__).resolve().parents[1] / "vectors" / "x86_64"
    print(bench(args.paths or [root], args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
