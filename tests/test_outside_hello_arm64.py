"""An arm64 hello module built outside the project's builder loads, says hello, and ld.lld agrees.

Compiled here by hand (zig cc for aarch64, a hand-written .mod.c, ld.lld -r with the arm64
module linker script, which adds the one-byte .plt/.init.plt/.text.ftrace_trampoline that
6.1's module_frob_arch_sections requires), then run through `koconform load --arch arm64 --json`
as a user would: init prints "Hi module!", exit "Bye module!".
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from koconform.tools import lld_check
from outside import HELLO, zig

# What modpost would write for this module on Debian's 6.1.0-56-arm64 (struct module: 0x380 bytes,
# name at 0x18, init at 0x138, exit at 0x340; CRCs from that kernel's Module.symvers).
MOD_C = r"""
static const char a[] __attribute__((section(".modinfo"), used, aligned(1))) = "license=GPL";
static const char b[] __attribute__((section(".modinfo"), used, aligned(1))) =
    "vermagic=6.1.0-56-arm64 SMP mod_unload modversions aarch64";
static const char c[] __attribute__((section(".modinfo"), used, aligned(1))) = "name=hello";
struct modversion_info { unsigned long crc; char name[56]; };
static const struct modversion_info v[] __attribute__((section("__versions"), used)) = {
    { 0x92997ed8, "_printk" }, { 0xd568a14a, "module_layout" } };
extern int init_module(void);
extern void cleanup_module(void);
struct module { char p0[0x18]; char name[56]; char p1[0x138 - 0x18 - 56]; int (*init)(void);
    char p2[0x340 - 0x140]; void (*exit)(void); char p3[0x380 - 0x348]; } __attribute__((aligned(64)));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
    .name = "hello", .init = init_module, .exit = cleanup_module };
"""
# arch/arm64/include/asm/module.lds.h (6.1, CONFIG_ARM64_MODULE_PLTS).
MODULE_LDS = """SECTIONS {
\t.plt 0 : { BYTE(0) }
\t.init.plt 0 : { BYTE(0) }
\t.text.ftrace_trampoline 0 : { BYTE(0) }
}
"""
FLAGS = ["-target", "aarch64-freestanding", "-mgeneral-regs-only", "-fno-pic", "-g0", "-O2",
         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-addrsig", "-c"]
PRINTK = 0xFFFF800008CC767C          # System.map of linux-image-6.1.0-56-arm64-dbg


def test_outside_hello_arm64(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "hello.mod.c").write_text(MOD_C)
    (tmp_path / "module.lds").write_text(MODULE_LDS)
    zig("cc", *FLAGS, "hello.c", "-o", "hello.o", cwd=tmp_path)
    zig("cc", *FLAGS, "hello.mod.c", "-o", "hello.mod.o", cwd=tmp_path)
    zig("ld.lld", "-r", "-m", "aarch64linux", "-T", "module.lds", "-o", "hello.ko", "hello.o", "hello.mod.o",
        cwd=tmp_path)
    out = subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "load", "hello.ko", "--arch", "arm64",
                          "--json"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["status"] == "loaded", result
    assert result["symbols"] == {"_printk": hex(PRINTK)}
    module = [(e["level"], e["text"]) for e in result["log"] if e["source"] == "module"]
    assert module == [(6, "Hi module!")]
    assert [(e["level"], e["text"]) for e in result["exit_log"]] == [(6, "Bye module!")]
    assert result["init_return"] == 0
    # The placeholders became PLT areas: (1 counted bl + 1) * 12 bytes each, 64-aligned.
    assert len(result["sections"][".plt"]) // 2 == 24 and len(result["sections"][".init.plt"]) // 2 == 24
    assert int(result["layout"][".plt"]["address"], 16) % 64 == 0
    ko = (tmp_path / "hello.ko").read_bytes()
    peer = lld_check.link(ko, "arm64", result, {"_printk": PRINTK})
    assert lld_check.differences(result, peer) == []
    assert {".init.text", ".exit.text", ".gnu.linkonce.this_module"} <= set(peer.sections)
    this = bytes.fromhex(result["sections"][".gnu.linkonce.this_module"])
    assert int.from_bytes(this[0x138:0x140], "little") == int(result["layout"][".init.text"]["address"], 16)
    assert int.from_bytes(this[0x340:0x348], "little") == int(result["layout"][".exit.text"]["address"], 16)
