"""Hostile input: the reference answers every mutant of a real module, never raising, never hanging.

A fixed-seed run of the fuzzer (tools/fuzz.py; `koconform fuzz --minutes 60` is the long run).
Hypothesis draws the mutation seed, derandomized, so the same mutants run every time; a failure
shrinks to the smallest seed and prints the mutation.
"""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koconform.tools import fuzz

SEEDS = fuzz.seeds()


def test_there_are_seeds_on_every_registered_arch() -> None:
    assert {s.arch for s in SEEDS} >= {"x86_64"}
    assert len(SEEDS) >= 50


@settings(max_examples=250, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.booleans())
def test_every_mutant_gets_a_clean_answer(n: int, emulate: bool) -> None:
    rng = random.Random(n)
    seed = rng.choice(SEEDS)
    ko, what = fuzz.mutant(rng, seed)
    out = fuzz.check(replace(seed.request, ko=ko, run_init=emulate))
    assert out.crash is None, f"{seed.vector} [{what}]: {out.key}\n{out.crash}"


@pytest.mark.parametrize("n", range(0, 4096, 97))
def test_every_truncation_of_a_module_is_rejected_cleanly(n: int) -> None:
    """Cut the hello module at many lengths up to its end: each is a clean rejection (or, whole, a load)."""
    seed = next(s for s in SEEDS if s.vector == "x86_64/init/hello")
    ko = seed.ko[:n]
    out = fuzz.check(replace(seed.request, ko=ko, run_init=False))
    assert out.crash is None, out.crash
    assert out.key.startswith("rejected") or n >= len(seed.ko)


def test_the_contract_catches_a_broken_result() -> None:
    from koconform.conformance.model import Result
    assert fuzz._contract(Result("rejected", errno=None, phase="check")) is not None
    assert fuzz._contract(Result("faulted", phase="init")) is not None
    assert fuzz._contract(Result("weird")) is not None
    assert fuzz._contract(Result("loaded")) is None


def test_mutators_survive_an_empty_file() -> None:
    """A chain of mutations can truncate a module to nothing; the next mutation must still work
    (an unbounded run once died here, on randrange over an empty file)."""
    rng = random.Random(0)
    for _ in range(200):
        for mutate in (fuzz.mutate_bytes, fuzz.mutate_field, fuzz.mutate_length):
            out, what = mutate(rng, b"", True)
            assert isinstance(out, bytes) and what
