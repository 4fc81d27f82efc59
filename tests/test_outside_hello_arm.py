"""A 32-bit arm hello module built outside the project's builder loads, says hello, and ld.lld agrees.

Compiled here by hand (zig cc for a soft-float EABI ARMv7-A target in ARM state, a hand-written
.mod.c, ld.lld -r with the arm module linker script, which adds the one-byte .plt/.init.plt that
6.1's module_frob_arch_sections requires under CONFIG_ARM_MODULE_PLTS), then run through
`koconform load --arch arm --json` as a user would: init prints "Hi module!", exit "Bye module!".
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from koconform.tools import lld_check
from outside import HELLO, zig

# What modpost would write for this module on Debian's 6.1.0-50-armmp (struct module: 0x240 bytes,
# name at 0xc, init at 0xcc, exit at 0x230; CRCs from that kernel's Module.symvers).
MOD_C = r"""
static const char a[] __attribute__((section(".modinfo"), used, aligned(1))) = "license=GPL";
static const char b[] __attribute__((section(".modinfo"), used, aligned(1))) =
    "vermagic=6.1.0-50-armmp SMP mod_unload modversions ARMv7 p2v8 ";
static const char c[] __attribute__((section(".modinfo"), used, aligned(1))) = "name=hello";
struct modversion_info { unsigned long crc; char name[60]; };
static const struct modversion_info v[] __attribute__((section("__versions"), used)) = {
    { 0x92997ed8, "_printk" }, { 0x8c1823f3, "module_layout" } };
extern int init_module(void);
extern void cleanup_module(void);
struct module { char p0[0xc]; char name[60]; char p1[0xcc - 0xc - 60]; int (*init)(void);
    char p2[0x230 - 0xd0]; void (*exit)(void); char p3[0x240 - 0x234]; } __attribute__((aligned(64)));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
    .name = "hello", .init = init_module, .exit = cleanup_module };
"""
# arch/arm/include/asm/module.lds.h (6.1, CONFIG_ARM_MODULE_PLTS).
MODULE_LDS = """SECTIONS {
\t.plt 0 : { BYTE(0) }
\t.init.plt 0 : { BYTE(0) }
}
"""
FLAGS = ["-target", "arm-freestanding-eabi", "-mcpu=generic+v7a", "-marm", "-fno-pic", "-g0", "-O2",
         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-addrsig", "-c"]
PRINTK = 0xC0D227C4           # System.map of linux-image-6.1.0-50-armmp-dbg


def test_outside_hello_arm(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "hello.mod.c").write_text(MOD_C)
    (tmp_path / "module.lds").write_text(MODULE_LDS)
    zig("cc", *FLAGS, "hello.c", "-o", "hello.o", cwd=tmp_path)
    zig("cc", *FLAGS, "hello.mod.c", "-o", "hello.mod.o", cwd=tmp_path)
    zig("ld.lld", "-r", "-m", "armelf_linux_eabi", "-T", "module.lds", "-o", "hello.ko", "hello.o", "hello.mod.o",
        cwd=tmp_path)
    out = subprocess.run([sys.executable, "-m", "koconform.conformance.cli", "load", "hello.ko", "--arch", "arm",
                          "--json"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["status"] == "loaded", result
    assert result["symbols"] == {"_printk": hex(PRINTK)}
    module = [(e["level"], e["text"]) for e in result["log"] if e["source"] == "module"]
    assert module == [(6, "Hi module!")]
    assert [(e["level"], e["text"]) for e in result["exit_log"]] == [(6, "Bye module!")]
    assert result["init_return"] == 0
    # Modules at MODULES_VADDR 0xbf000000: init and exit are within bl range of _printk, so the PLT
    # areas frob made (2 ftrace slots + 1 counted bl each, round_up(24, 128)) stay empty.
    assert result["sections"][".plt"] == "00" * 128 and result["sections"][".init.plt"] == "00" * 128
    assert int(result["layout"][".plt"]["address"], 16) % 64 == 0
    assert result["layout"][".init.text"]["region"] == "init"
    assert result["layout"][".exit.text"]["region"] == "core"          # MODULE_UNLOAD=y
    # -fno-unwind-tables still gives EXIDX_CANTUNWIND entries: .ARM.exidx.init.text goes with init
    assert result["layout"][".ARM.exidx.init.text"]["region"] == "init"
    ko = (tmp_path / "hello.ko").read_bytes()
    peer = lld_check.link(ko, "arm", result, {"_printk": PRINTK})
    assert lld_check.differences(result, peer) == []
    assert {".init.text", ".exit.text", ".gnu.linkonce.this_module"} <= set(peer.sections)
    this = bytes.fromhex(result["sections"][".gnu.linkonce.this_module"])
    assert int.from_bytes(this[0xCC:0xD0], "little") == int(result["layout"][".init.text"]["address"], 16)
    assert int.from_bytes(this[0x230:0x234], "little") == int(result["layout"][".exit.text"]["address"], 16)
