"""A crashing, hanging, memory-hungry or babbling implementation fails its vectors, and the run goes on.

Each fake adapter misbehaves on the hello vector only and answers the reference's result elsewhere;
the run must end with that one vector failed (with the reason and the adapter's stderr), the others
passed, and the session intact.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

import pytest
from test_runner import _tree

from koconform.conformance.adapter import Adapter
from koconform.conformance.model import Request
from koconform.reference.adapter import ReferenceAdapter

pytest_plugins = ["pytester"]


class _Misbehaves(Adapter):
    arches = frozenset({"x86_64"})

    def load(self, request: Request) -> Any:
        if b"Hi module!" in request.ko:
            return self.misbehave()
        return ReferenceAdapter().load(request).to_json()

    def misbehave(self) -> Any:
        raise NotImplementedError


class Segfaults(_Misbehaves):
    name = "segfaults"

    def misbehave(self) -> Any:
        print("about to dereference NULL", file=sys.stderr, flush=True)
        return ctypes.string_at(0)


class Hangs(_Misbehaves):
    name = "hangs"

    def misbehave(self) -> Any:
        time.sleep(3600)


class Exits(_Misbehaves):
    name = "exits"

    def misbehave(self) -> Any:
        os._exit(3)


class EatsMemory(_Misbehaves):
    name = "eats-memory"

    def misbehave(self) -> Any:
        return bytearray(64 << 30)          # 64 GiB: over the worker's limit


class Babbles(_Misbehaves):
    name = "babbles"

    def misbehave(self) -> Any:
        return "the module is fine, trust me"


@pytest.mark.parametrize("cls, said", [
    (Segfaults, "died of SIGSEGV"),
    (Hangs, "no answer within 2 s (killed)"),
    (Exits, "exited with status 3"),
    (EatsMemory, "MemoryError"),
    (Babbles, "answered garbage"),
])
def test_a_broken_adapter_fails_one_vector_and_the_run_goes_on(pytester: pytest.Pytester, cls: type, said: str) -> None:
    _tree(pytester, "hello", "unknown-symbol", "r-x86-64-pc32")
    result = pytester.runpytest("vectors", f"--adapter={__name__}:{cls.__name__}", "--timeout=2",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert said in out
    assert "x86_64/init/hello" in out
    if cls is Segfaults:
        assert "about to dereference NULL" in out        # the adapter's stderr is quoted


def test_no_isolate_calls_in_process(pytester: pytest.Pytester) -> None:
    _tree(pytester, "hello")
    result = pytester.runpytest("vectors", f"--adapter={__name__}:Babbles", "--no-isolate")
    result.assert_outcomes(failed=1)
    assert "answered garbage" in result.stdout.str()
