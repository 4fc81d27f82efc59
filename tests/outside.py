"""What the "hello built outside the repo" tests share: the module's source and the two commands.

Each arch's test (tests/test_outside_hello*.py) compiles this source and its own hand-written
`.mod.c` with `zig cc` and links them with `ld.lld -r`, as kbuild would, without the project's
builder, then loads the result with `koconform load`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HELLO = r"""
int _printk(const char *fmt, ...);
static int __attribute__((section(".init.text"))) hello_init(void) { _printk("\0016Hi module!\n"); return 0; }
static void __attribute__((section(".exit.text"))) hello_exit(void) { _printk("\0016Bye module!\n"); }
int init_module(void) __attribute__((alias("hello_init")));
void cleanup_module(void) __attribute__((alias("hello_exit")));
"""


def zig(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "ziglang", *args], cwd=cwd, check=True, capture_output=True)


def koconform_load(arch: str, *args: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "load", "hello.ko", "--arch", arch,
                           *args], cwd=cwd, check=True, capture_output=True, text=True).stdout
