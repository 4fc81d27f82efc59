"""Every message the reference logs is a format string the real kernel holds.

The reference's kernel messages are collected from its source (every `klog`/`warn_once`
call and every arch message table) and looked up, with their level, in the strings
extracted from Debian's 6.1.0-56 vmlinux (conformance/environments/linux-6.1/), which
share no code with the reference.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from koconform.reference import arch as arches

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "conformance" / "environments" / "linux-6.1"
STRINGS = ENV / "x86_64.kernel-strings.txt"


def _escape(fmt: str) -> str:
    return fmt.replace("\\", "\\\\").replace("\n", "\\n")


# Messages of code paths that Debian's configuration compiles out, so its vmlinux lacks them.
ONLY_IN_OTHER_CONFIGS = {
    "%s: module is marked as livepatch module, but livepatch support is disabled",  # LIVEPATCH=n
    # arm: THM_CALL/THM_JUMP24 are handled only with CONFIG_THUMB2_KERNEL (armmp: n)
    "%s: section %u reloc %u sym '%s': unsupported interworking call (Thumb -> ARM)\n",
}


@functools.cache
def kernel_strings(arch: str = "x86_64") -> set[str]:
    path = ENV / f"{arch}.kernel-strings.txt"
    return {line for line in path.read_text().splitlines() if not line.startswith("#")}


def arch_of(where: str) -> str:
    """The arch whose vmlinux must hold a message: an arch table's or reference/arch/<arch>*.py's
    messages are that arch's; the generic loader's are looked up in x86_64's strings."""
    if where.startswith("arch "):
        return where.split()[1]
    stem = where.split(":")[0].removesuffix(".py")
    for name in sorted(arches.ARCHES, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_"):
            return name
    return "x86_64"


def reference_messages() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / "reference").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            args = node.args[1:] if node.func.attr == "warn_once" else node.args
            if node.func.attr not in ("klog", "warn_once") or len(args) < 2:
                continue
            level, fmt = args[0], args[1]
            if isinstance(level, ast.Constant) and isinstance(fmt, ast.Constant):
                found.append((f"{path.name}:{node.lineno}", level.value, fmt.value))
    for arch in arches.ARCHES.values():
        for key, (level, fmt) in arch.messages.items():
            found.append((f"arch {arch.name} {key}", level, fmt))
    return found


def test_the_reference_logs_messages() -> None:
    assert len(reference_messages()) >= 25


@pytest.mark.parametrize("where,level,fmt", reference_messages())
def test_message_is_the_kernels(where: str, level: int, fmt: str) -> None:
    strings = kernel_strings(arch_of(where))
    if fmt in ONLY_IN_OTHER_CONFIGS:
        assert f"<{level}>{_escape(fmt)}" not in strings
        return
    assert f"<{level}>{_escape(fmt)}" in strings, f"{where}: not a 6.1 format string of {arch_of(where)}"
