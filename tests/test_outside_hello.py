"""A hello module built outside the project's builder loads, and ld.lld agrees with its bytes.

The module is compiled here by hand (zig cc, a hand-written .mod.c, ld.lld -r), run
through `koconform load --json` as a user would, and linked by ld.lld at the layout the
result reports: the relocated bytes must be the same.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from koconform.tools import lld_check
from outside import HELLO, zig

# What modpost would write for this module on Debian's 6.1.0-56-amd64 (struct module: 0x380
# bytes, name at 0x18, init at 0x138, exit at 0x350; CRCs from that kernel's Module.symvers).
MOD_C = r"""
static const char a[] __attribute__((section(".modinfo"), used, aligned(1))) = "license=GPL";
static const char b[] __attribute__((section(".modinfo"), used, aligned(1))) =
    "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ";
static const char c[] __attribute__((section(".modinfo"), used, aligned(1))) = "name=hello";
static const char d[] __attribute__((section(".modinfo"), used, aligned(1))) = "retpoline=Y";
struct modversion_info { unsigned long crc; char name[56]; };
static const struct modversion_info v[] __attribute__((section("__versions"), used)) = {
    { 0x92997ed8, "_printk" }, { 0x9060323f, "module_layout" } };
extern int init_module(void);
extern void cleanup_module(void);
struct module { char p0[0x18]; char name[56]; char p1[0x138 - 0x18 - 56]; int (*init)(void);
    char p2[0x350 - 0x140]; void (*exit)(void); char p3[0x380 - 0x358]; } __attribute__((aligned(64)));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
    .name = "hello", .init = init_module, .exit = cleanup_module };
"""
FLAGS = ["-target", "x86_64-freestanding", "-mcmodel=kernel", "-mno-red-zone", "-fno-pic", "-g0", "-O2",
         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-addrsig", "-c"]


def test_outside_hello_matches_lld(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "hello.mod.c").write_text(MOD_C)
    zig("cc", *FLAGS, "hello.c", "-o", "hello.o", cwd=tmp_path)
    zig("cc", *FLAGS, "hello.mod.c", "-o", "hello.mod.o", cwd=tmp_path)
    zig("ld.lld", "-r", "-o", "hello.ko", "hello.o", "hello.mod.o", cwd=tmp_path)
    out = subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "load", "hello.ko", "--arch", "x86_64",
                          "--json"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["status"] == "loaded", result
    # The address System.map gives _printk on that kernel (nokaslr).
    assert result["symbols"] == {"_printk": "0xffffffff81a07e3d"}
    assert result["layout"][".init.text"]["region"] == "init"
    assert result["layout"][".exit.text"]["region"] == "core"     # MODULE_UNLOAD=y
    ko = (tmp_path / "hello.ko").read_bytes()
    peer = lld_check.link(ko, "x86_64", result, {"_printk": 0xffffffff81a07e3d})
    assert lld_check.differences(result, peer) == []
    assert {".init.text", ".exit.text", ".gnu.linkonce.this_module"} <= set(peer.sections)
    # struct module's init and exit now hold the addresses of the functions.
    this = bytes.fromhex(result["sections"][".gnu.linkonce.this_module"])
    init = int.from_bytes(this[0x138:0x140], "little")
    exit_ = int.from_bytes(this[0x350:0x358], "little")
    assert init == int(result["layout"][".init.text"]["address"], 16)
    assert exit_ == int(result["layout"][".exit.text"]["address"], 16)
