"""The subprocess protocol (conformance/PROTOCOL.md) tested from the runner's side.

Fake implementations are small Python programs written into the test's directory and run
as subprocesses through `--adapter cmd:...`: the reference behind the protocol, perturbed
per vector (a wrong byte, `skipped`, `errored`, a crash, a hang, garbage, a response that
breaks the schema, another id). Each case must end as the right pytest outcome for that
vector alone while the run goes on; every message either side writes must match the schema.
"""
from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported here once: each in-process pytester run would import it again)
import jsonschema
import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from koconform.conformance import protocol
from koconform.conformance.protocol import ProtocolAdapter, validate
from koconform.conformance.vectors import load as load_vector

pytest_plugins = ["pytester"]
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "x86_64"
SERVE = [sys.executable, "-m", "koconform.conformance.protocol", "serve-reference"]

# The fake: the reference behind the protocol, with per-vector misbehaviour from a JSON config.
FAKE = r'''
import json, sys, time
from koconform.conformance.protocol import ReferenceServer, reference_declaration

cfg = json.load(open(sys.argv[1]))
declaration = reference_declaration()
declaration["implementation"]["name"] = "fake"
declaration["capabilities"].update(cfg.get("capabilities", {}))
server = ReferenceServer(cfg.get("declaration", declaration))

def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

for raw in sys.stdin:
    if cfg.get("record"):
        with open(cfg["record"], "a") as f:
            f.write(raw)
    msg = json.loads(raw)
    act = cfg.get("on", {}).get(msg.get("id", "").rsplit("/", 1)[-1]) if msg["cmd"] == "load" else None
    if msg["cmd"] == "start" and cfg.get("start"):
        act = cfg["start"]
    if act:
        print(f"fake: {act} on {msg.get('id', msg['cmd'])}", file=sys.stderr, flush=True)
    if act == "crash":
        sys.exit(3)
    if act == "hang":
        time.sleep(600)
    if act == "garbage":
        say("Segmentation fault? no: just text")
        continue
    if act == "skip":
        say(json.dumps({"id": msg["id"], "skipped": "this fake does not do that"}))
        continue
    if act == "error":
        say(json.dumps({"id": msg["id"], "errored": "the fake lost its way"}))
        continue
    answer = server.handle(msg)
    if answer is None:
        break
    if act == "wrong-byte":
        sections = answer["result"]["sections"]
        name = next(n for n, v in sections.items() if v)
        sections[name] = format(int(sections[name][:2], 16) ^ 0xFF, "02x") + sections[name][2:]
    elif act == "bad-schema":
        answer["result"]["status"] = "fine"
    elif act == "wrong-id":
        answer["id"] = "x86_64/some/other"
    elif act == "two-lines":
        say(json.dumps(answer))
    elif act == "module-log-only":
        answer["result"]["log"] = [r for r in answer["result"]["log"] if r["source"] == "module"]
    say(json.dumps(answer))
'''


def _fake(tmp: Path, **cfg: Any) -> str:
    """`--adapter=cmd:...` for a fake with this configuration."""
    script, config = tmp / "fake.py", tmp / f"fake-{len(list(tmp.glob('fake-*.json')))}.json"
    script.write_text(FAKE)
    config.write_text(json.dumps(cfg))
    return "--adapter=cmd:" + shlex.join([sys.executable, str(script), str(config)])


def _tree(pytester: pytest.Pytester, *names: str) -> Path:
    root = pytester.path / "vectors" / "x86_64"
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".yaml", ".ko"):
            shutil.copy(next(VECTORS.rglob(name + suffix)), root / (name + suffix))
    return root


THREE = ("hello", "unknown-symbol", "r-x86-64-pc32")


# ---- good and wrong answers -----------------------------------------------------------
def test_reference_behind_the_protocol_passes(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE, "init-returns-negative", "nonzero-target")
    result = pytester.runpytest("vectors", "--adapter=cmd:" + shlex.join(SERVE))
    result.assert_outcomes(passed=5)


def test_wrong_byte_fails_that_vector_with_the_difference(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", _fake(pytester.path, on={"hello": "wrong-byte"}))
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "x86_64/init/hello" in out and "sections[.init.text]+0x0: expected e8 4b" in out
    assert "rerun: koconform run --adapter 'cmd:" in out


def test_skipped_is_a_skip_with_the_reason(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", "-rs", _fake(pytester.path, on={"unknown-symbol": "skip"}))
    result.assert_outcomes(passed=2, skipped=1)
    assert "skipped it: this fake does not do that" in result.stdout.str()


def test_errored_fails_that_vector_and_the_process_goes_on(pytester: pytest.Pytester, tmp_path: Path) -> None:
    _tree(pytester, *THREE)
    record = tmp_path / "record.jsonl"
    result = pytester.runpytest("vectors", "-p", "no:randomly",
                                _fake(pytester.path, on={"hello": "error"}, record=str(record)))
    result.assert_outcomes(passed=2, failed=1)
    assert "errored: the fake lost its way" in result.stdout.str()
    starts = [m for m in map(json.loads, record.read_text().splitlines()) if m["cmd"] == "start"]
    assert len(starts) == 1                              # no restart after an `errored`


# ---- an implementation that misbehaves -------------------------------------------------
@pytest.mark.parametrize(("act", "says"), [
    ("crash", "exited with status 3 without answering the load"),
    ("garbage", "a line that is not JSON"),
    ("bad-schema", "not a valid load-response"),
    ("wrong-id", "answered the load 'x86_64/init/hello' request with id 'x86_64/some/other'"),
])
def test_misbehaviour_fails_one_vector_then_restarts(pytester: pytest.Pytester, tmp_path: Path,
                                                     act: str, says: str) -> None:
    _tree(pytester, *THREE)
    record = tmp_path / "record.jsonl"
    result = pytester.runpytest("vectors", "-p", "no:randomly",
                                _fake(pytester.path, on={"hello": act}, record=str(record)))
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert says in out, out
    assert f"fake: {act} on x86_64/init/hello" in out            # the implementation's stderr tail
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    kinds = [m["cmd"] for m in sent]
    # hello runs first (files in name order): a new process, a new start, the environment again.
    assert kinds.count("start") == 2 and kinds.count("environment") == 2, kinds
    assert [m["id"] for m in sent if m["cmd"] == "load"] == [
        "x86_64/init/hello", "x86_64/relocate/r-x86-64-pc32", "x86_64/resolve/unknown-symbol"]


def test_an_extra_line_is_caught_at_the_next_request(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", "-p", "no:randomly", _fake(pytester.path, on={"hello": "two-lines"}))
    result.assert_outcomes(passed=2, failed=1)            # the next vector fails; the one after passes
    out = result.stdout.str()
    # Caught before the request if the line has arrived, else by its id: the previous request's.
    assert ("wrote a line after its previous response, before the load 'x86_64/relocate/r-x86-64-pc32'" in out
            or "with id 'x86_64/init/hello' (the previous request's: two lines for it?)" in out), out


def test_hang_times_out_and_the_run_goes_on(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", "--timeout=5", _fake(pytester.path, on={"r-x86-64-pc32": "hang"}))
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "no response to the load 'x86_64/relocate/r-x86-64-pc32' request within 5 s" in out
    assert "fake: hang on x86_64/relocate/r-x86-64-pc32" in out


def test_an_implementation_that_does_not_start_fails_every_vector(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", "--adapter=cmd:/nonexistent/loader --flag")
    result.assert_outcomes(failed=3)
    assert "cannot start '/nonexistent/loader --flag'" in result.stdout.str()


def test_a_bad_start_answer_fails_the_vectors(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    result = pytester.runpytest("vectors", _fake(pytester.path, declaration={"protocol": 1, "capabilities": {}}))
    result.assert_outcomes(failed=1)
    assert "not a valid start-response" in result.stdout.str()
    assert "implementation" in result.stdout.str()


# ---- capabilities ----------------------------------------------------------------------
def test_other_arch_is_not_applicable(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    result = pytester.runpytest("vectors", _fake(pytester.path, capabilities={"arches": ["arm64"]}))
    result.assert_outcomes(skipped=3)


def test_phases_after_last_phase_are_not_applicable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    _tree(pytester, "hello", "init-returns-negative", "unknown-symbol")
    record = tmp_path / "record.jsonl"
    result = pytester.runpytest("vectors", "-rs", _fake(
        pytester.path, record=str(record),
        capabilities={"last_phase": "relocate", "produces": ["status", "errno", "phase", "sections"]}))
    result.assert_outcomes(passed=2, skipped=1)
    assert "the kernel decides this vector in init; fake stops after relocate" in result.stdout.str()
    loads = [m for m in map(json.loads, record.read_text().splitlines()) if m["cmd"] == "load"]
    assert {m["stop_after"] for m in loads} == {"relocate"}


def test_undeclared_relocation_types_are_not_applicable(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    caps = {"relocations": {"x86_64": ["R_X86_64_NONE", "R_X86_64_64", "R_X86_64_PLT32", "R_X86_64_32S"]}}
    result = pytester.runpytest("vectors", "-rs", _fake(pytester.path, capabilities=caps))
    # r-x86-64-pc32 applies R_X86_64_PC32; unknown-symbol is rejected before relocation: applicable.
    result.assert_outcomes(passed=2, skipped=1)
    assert "applies R_X86_64_PC32, which fake does not declare" in result.stdout.str()


def test_fields_not_produced_are_not_checked(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    caps = {"produces": ["status", "errno", "phase"]}
    result = pytester.runpytest("vectors", _fake(pytester.path, capabilities=caps, on={"hello": "wrong-byte"}))
    result.assert_outcomes(passed=1)


def test_log_sources_limit_the_log_comparison(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    only_module = _fake(pytester.path, on={"hello": "module-log-only"})
    pytester.runpytest("vectors", only_module).assert_outcomes(failed=1)
    declared = _fake(pytester.path, on={"hello": "module-log-only"}, capabilities={"log_sources": ["module"]})
    pytester.runpytest("vectors", declared).assert_outcomes(passed=1)


# ---- what the runner sends --------------------------------------------------------------
def test_every_message_follows_the_schema(pytester: pytest.Pytester, tmp_path: Path) -> None:
    _tree(pytester, *THREE)
    record = tmp_path / "record.jsonl"
    pytester.runpytest("vectors", _fake(pytester.path, record=str(record))).assert_outcomes(passed=3)
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert [m["cmd"] for m in sent] == ["start", "environment", "load", "load", "load", "stop"]
    for m in sent:
        assert validate(m["cmd"], m) == [], m["cmd"]
    # One environment per session: the 10,000 exports once, each load only its differences.
    env = sent[1]
    assert len(env["symbols"]) > 10000 and env["symbols"]["_printk"]["address"].startswith("0xffffffff")
    loads = {m["id"]: m for m in sent if m["cmd"] == "load"}
    assert all(m["environment"]["base"] == env["id"] for m in loads.values())
    pc32 = loads["x86_64/relocate/r-x86-64-pc32"]
    doc = load_vector(next(VECTORS.rglob("r-x86-64-pc32.yaml"))).doc
    assert set(pc32["environment"]["symbols"]) == set(doc["environment"]["symbols"]) == {"ext_target"}
    assert loads["x86_64/init/hello"]["environment"]["symbols"] == {}
    # The module: the path and the base64 hold the same bytes, the vector's.
    hello = loads["x86_64/init/hello"]
    assert Path(hello["ko_path"]).name.endswith(".ko")
    assert base64.b64decode(hello["ko_base64"]) == next(VECTORS.rglob("hello.ko")).read_bytes()
    assert hello["stop_after"] == "init" and hello["profile"]["name"] == "linux-6.1"


def test_reference_server_answers_follow_the_schema() -> None:
    adapter = ProtocolAdapter(SERVE)
    try:
        assert adapter.capabilities().name == "koconform-reference"
        for name in ("hello", "nonzero-target", "malformed-bad-magic", "init-null-dereference"):
            vec = load_vector(next(VECTORS.rglob(name + ".yaml")))
            result = adapter.load_vector(vec.request(), vec.id)      # validated on receipt
            assert validate("load-response", {"id": vec.id, "result": result}) == []
            assert result["status"] == vec.expect["status"]
    finally:
        adapter.close()
    assert adapter._proc is None


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(protocol.schema())
    for kind in protocol.KINDS:
        assert kind in protocol.schema()["$defs"]


GOOD_RESULT = {"status": "loaded", "errno": None, "phase": None,
               "regions": {"core": {"address": "0xffffffffc0000000", "size": "0x4000"}},
               "layout": {".text": {"region": "core", "offset": "0x0", "address": "0xffffffffc0000000"}},
               "symbols": {"_printk": "0xffffffff81a07e3d"}, "sections": {".text": "c3", ".bss#7": ""},
               "log": [{"level": 4, "source": "kernel", "text": "koc: hi"}], "init_return": 0, "exit_log": None,
               "fault": None, "detail": "why"}


@pytest.mark.parametrize(("kind", "message"), [
    ("load-response", {"id": "a", "result": GOOD_RESULT}),
    ("load-response", {"id": "a", "result": {"status": "rejected", "errno": "ENOEXEC", "phase": "check"}}),
    ("load-response", {"id": "a", "skipped": "no"}),
    ("load-response", {"id": "a", "errored": "two\nlines"}),
    ("start-response", {"protocol": 1, "implementation": {"name": "x", "version": "1", "homepage": ""},
                        "capabilities": {"arches": ["x86_64"], "produces": ["status"]}}),
    ("environment-response", {"id": "e", "ok": True}),
    ("environment-response", {"id": "e", "errored": "full"}),
    ("stop", {"cmd": "stop"}),
])
def test_schema_accepts(kind: str, message: dict[str, Any]) -> None:
    assert validate(kind, message) == []


@pytest.mark.parametrize(("kind", "message", "where"), [
    ("load-response", {"id": "a"}, "(top level)"),
    ("load-response", {"id": "a", "skipped": "x", "errored": "y"}, "(top level)"),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "status": "fine"}}, "result.status"),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "extra": 1}}, "result"),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "symbols": {"x": "0X10"}}}, "result.symbols.x"),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "symbols": {"x": "0x010"}}}, "result.symbols.x"),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "sections": {".text": "c"}}}, "result.sections.."),
    ("load-response", {"id": "a", "result": {**GOOD_RESULT, "errno": "enoexec"}}, "result.errno"),
    ("load-response", {"id": "a", "skipped": "two\nlines"}, "skipped"),
    ("start-response", {"protocol": 2, "implementation": {"name": "x", "version": "1", "homepage": ""},
                        "capabilities": {"arches": ["x86_64"], "produces": ["status"]}}, "protocol"),
    ("start-response", {"protocol": 1, "implementation": {"name": "x y", "version": "1", "homepage": ""},
                        "capabilities": {"arches": ["x86_64"], "produces": ["status"]}}, "implementation.name"),
    ("start-response", {"protocol": 1, "implementation": {"name": "x", "version": "1", "homepage": ""},
                        "capabilities": {"arches": ["x86_64"], "produces": ["layout"]}}, "capabilities.produces"),
    ("start-response", {"protocol": 1, "implementation": {"name": "x", "version": "1", "homepage": ""},
                        "capabilities": {"arches": ["vax"], "produces": ["status"]}}, "capabilities.arches.0"),
    ("environment-response", {"id": "e"}, "(top level)"),
    ("start", {"cmd": "start"}, "(top level)"),
])
def test_schema_rejects(kind: str, message: dict[str, Any], where: str) -> None:
    errors = validate(kind, message)
    assert errors and errors[0].startswith(where), errors


def test_validate_command_reads_json_lines() -> None:
    good = json.dumps({"id": "a", "skipped": "no"})
    run = subprocess.run([sys.executable, "-m", "koconform.conformance.protocol", "validate", "load-response"],
                         input=f"{good}\nnot json\n", capture_output=True, text=True, check=False)
    assert run.returncode == 1 and run.stdout.startswith("line 2: not JSON") and run.stdout.count("\n") == 1


# ---- the pieces -------------------------------------------------------------------------
def test_relocation_types_read_the_ko_as_pyelftools_does() -> None:
    ko = next(VECTORS.rglob("hello.ko"))
    names = set()
    with ko.open("rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection) and elf.get_section(sec["sh_info"])["sh_flags"] & 2:
                names |= {_X86_64_NAMES[r["r_info_type"]] for r in sec.iter_relocations()}
    assert protocol.relocation_types(ko.read_bytes(), "x86_64") == names
    assert {"R_X86_64_PLT32", "R_X86_64_64"} <= names
    assert protocol.relocation_types(b"not an elf", "x86_64") == set()


# The ELF ABI's x86_64 numbers (System V AMD64 psABI, table "Relocation Types").
_X86_64_NAMES = {0: "R_X86_64_NONE", 1: "R_X86_64_64", 2: "R_X86_64_PC32", 4: "R_X86_64_PLT32",
                 10: "R_X86_64_32", 11: "R_X86_64_32S", 24: "R_X86_64_PC64"}


def test_environment_delta() -> None:
    from koconform.conformance import profiles
    from koconform.conformance.model import KernelSymbol
    base = profiles.default_environment("linux-6.1", "x86_64").symbols
    env = profiles.environment("linux-6.1", "x86_64", {"symbols": {"_printk": None, "new_one": {"address": 16},
                                                                   "kfree": {"gpl_only": True}}})
    delta = ProtocolAdapter.environment_delta(env, base)
    assert delta["_printk"] is None
    assert delta["new_one"] == {"address": "0x10", "crc": None, "gpl_only": False, "namespace": ""}
    assert delta["kfree"]["gpl_only"] is True and delta["kfree"]["address"] == hex(base["kfree"].address)
    assert len(delta) == 3
    same = profiles.environment("linux-6.1", "x86_64", {})
    assert ProtocolAdapter.environment_delta(same, base) == {}
    rebuilt = dict(base)
    rebuilt["kfree"] = KernelSymbol("kfree", base["kfree"].address, base["kfree"].crc, base["kfree"].gpl_only,
                                    base["kfree"].namespace)        # equal, not the same object
    assert ProtocolAdapter.environment_delta(type(env)(rebuilt, {}), base) == {}


# ---- expected-failure files -------------------------------------------------------------
def _xfail_file(pytester: pytest.Pytester, *lines: str) -> Path:
    path = pytester.path / "expected-failures.txt"
    path.write_text("# the fake's known failures\n" + "".join(line + "\n" for line in lines))
    return path


def test_listed_failure_is_an_expected_failure(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    xf = _xfail_file(pytester, "x86_64/init/hello  flips the first byte it writes")
    fake = _fake(pytester.path, on={"hello": "wrong-byte"})
    result = pytester.runpytest("vectors", "-rx", f"--xfail-file={xf}", fake)
    result.assert_outcomes(passed=2, xfailed=1)
    assert result.ret == 0 and "flips the first byte it writes" in result.stdout.str()


def test_listed_vector_that_passes_fails(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    xf = _xfail_file(pytester, "x86_64/resolve/unknown-symbol  thought broken")
    result = pytester.runpytest("vectors", f"--xfail-file={xf}", _fake(pytester.path))
    result.assert_outcomes(passed=2, failed=1)
    assert "as an expected failure (thought broken), but it passes: remove the entry" in result.stdout.str()


def test_listed_vector_that_is_not_applicable_fails(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    xf = _xfail_file(pytester, "x86_64/resolve/unknown-symbol  thought broken")
    result = pytester.runpytest("vectors", f"--xfail-file={xf}", _fake(pytester.path, on={"unknown-symbol": "skip"}))
    result.assert_outcomes(passed=2, failed=1)
    assert "but not applicable: remove the entry" in result.stdout.str()


def test_entry_naming_no_vector_fails_the_run(pytester: pytest.Pytester) -> None:
    _tree(pytester, *THREE)
    xf = _xfail_file(pytester, "x86_64/resolve/no-such-vector  gone")
    result = pytester.runpytest("vectors", f"--xfail-file={xf}", _fake(pytester.path))
    result.assert_outcomes(passed=3)
    assert result.ret == 1
    assert "lists vectors that do not exist" in result.stdout.str() and "x86_64/resolve/no-such-vector" in \
        result.stdout.str()


def test_entry_without_reason_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    xf = _xfail_file(pytester, "x86_64/init/hello")
    result = pytester.runpytest("vectors", f"--xfail-file={xf}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "x86_64/init/hello: no reason" in result.stderr.str()


def test_xfail_write_rewrites_the_file_from_the_run(pytester: pytest.Pytester) -> None:
    root = _tree(pytester, *THREE, "nonzero-target")
    xf = _xfail_file(pytester, "x86_64/init/hello  flips a byte",
                     "x86_64/resolve/unknown-symbol  passes now",
                     "x86_64/resolve/ghost  no such vector",
                     "x86_64/relocate/nonzero-target  not run this time, kept")
    fake = _fake(pytester.path, on={"hello": "wrong-byte", "r-x86-64-pc32": "wrong-byte"})
    run = [str(root / f"{n}.yaml") for n in THREE]
    pytester.runpytest(*run, f"--xfail-file={xf}", "--xfail-write", fake)
    lines = xf.read_text().splitlines()
    assert lines[0] == "# the fake's known failures"
    entries = [line.split(None, 1) for line in lines[1:]]
    assert [e[0] for e in entries] == ["x86_64/init/hello", "x86_64/relocate/nonzero-target",
                                       "x86_64/relocate/r-x86-64-pc32"]
    assert entries[0][1] == "flips a byte" and entries[1][1] == "not run this time, kept"
    assert entries[2][1].startswith("FIXME (explain, one line): sections[")
    # The file now describes the run exactly: the same run passes with it.
    again = pytester.runpytest(*run, f"--xfail-file={xf}", fake)
    again.assert_outcomes(passed=1, xfailed=2)
    assert again.ret == 0


def test_run_help_names_the_protocol() -> None:
    run = subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "run", "--help"],
                         capture_output=True, text=True, check=True)
    assert "cmd:COMMAND" in run.stdout and "PROTOCOL.md" in run.stdout and "--xfail-file" in run.stdout
