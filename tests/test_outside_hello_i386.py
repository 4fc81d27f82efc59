"""A hello module built for Debian's 686 kernel outside the project's builder loads, runs, and
ld.lld agrees with its bytes.

The module is compiled here by hand as kbuild compiles it for that kernel (zig cc with
arch/x86/Makefile's 32-bit flags, a hand-written .mod.c, ld.lld -r -m elf_i386), run through
`koconform load --arch i386` as a user would, both as text (the module's lines) and as JSON,
and linked by ld.lld at the layout the result reports: the relocated bytes must be the same.
"""
from __future__ import annotations

import json
from pathlib import Path

import capstone
from koconform.conformance import peers
from outside import HELLO, koconform_load, zig

# What modpost would write for this module on Debian's 6.1.0-50-686 (struct module: 0x240 bytes,
# name at 0xc (MODULE_NAME_LEN 60), init at 0xcc, exit at 0x20c; 64-byte modversion_info entries
# with a 4-byte CRC; CRCs from that kernel's Module.symvers).
MOD_C = r"""
static const char a[] __attribute__((section(".modinfo"), used, aligned(1))) = "license=GPL";
static const char b[] __attribute__((section(".modinfo"), used, aligned(1))) =
    "vermagic=6.1.0-50-686 SMP preempt mod_unload modversions GEODE ";
static const char c[] __attribute__((section(".modinfo"), used, aligned(1))) = "name=hello";
static const char d[] __attribute__((section(".modinfo"), used, aligned(1))) = "retpoline=Y";
struct modversion_info { unsigned long crc; char name[60]; };
static const struct modversion_info v[] __attribute__((section("__versions"), used)) = {
    { 0x070f7896, "_printk" }, { 0x89f6e291, "module_layout" } };
extern int init_module(void);
extern void cleanup_module(void);
struct module { char p0[0xc]; char name[60]; char p1[0xcc - 0xc - 60]; int (*init)(void);
    char p2[0x20c - 0xd0]; void (*exit)(void); char p3[0x240 - 0x210]; } __attribute__((aligned(64)));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
    .name = "hello", .init = init_module, .exit = cleanup_module };
"""
# arch/x86/Makefile for CONFIG_X86_32 with CONFIG_MGEODE_LX, clang's spelling of the stack alignment.
FLAGS = ["-target", "x86-freestanding", "-march=geode", "-msoft-float", "-mregparm=3", "-freg-struct-return",
         "-mstack-alignment=4", "-mno-sse", "-mno-mmx", "-fno-pic", "-ffreestanding", "-g0", "-O2",
         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-addrsig", "-c"]
PRINTK = 0xC18D8B9B          # System.map of 6.1.0-50-686 (nokaslr)


def test_outside_hello_i386(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "hello.mod.c").write_text(MOD_C)
    zig("cc", *FLAGS, "hello.c", "-o", "hello.o", cwd=tmp_path)
    zig("cc", *FLAGS, "hello.mod.c", "-o", "hello.mod.o", cwd=tmp_path)
    zig("ld.lld", "-r", "-m", "elf_i386", "-o", "hello.ko", "hello.o", "hello.mod.o", cwd=tmp_path)

    text = koconform_load("i386", cwd=tmp_path)
    assert text.splitlines()[0] == "hello.ko: loaded"
    assert "  module <6>Hi module!" in text.splitlines()
    assert text.splitlines()[-1] == "  module <6>Bye module!"

    result = json.loads(koconform_load("i386", "--json", cwd=tmp_path))
    assert result["status"] == "loaded", result
    assert result["symbols"] == {"_printk": f"{PRINTK:#x}"}
    assert result["layout"][".init.text"]["region"] == "init"
    assert result["layout"][".exit.text"]["region"] == "core"      # MODULE_UNLOAD=y
    assert result["init_return"] == 0
    assert [e["text"] for e in result["log"] if e["source"] == "module"] == ["Hi module!"]
    assert [e["text"] for e in result["exit_log"]] == ["Bye module!"]

    # ld.lld, given the same layout and _printk's address, writes the same bytes.
    ko = (tmp_path / "hello.ko").read_bytes()
    given = peers.Given({k: int(v["address"], 16) for k, v in result["layout"].items()}, {"_printk": PRINTK})
    linked = peers.link(peers.LldPeer().command("i386"), "i386", ko, given)
    assert linked.ok, linked.diagnostics
    for name in (".init.text", ".exit.text", ".gnu.linkonce.this_module"):
        assert linked.sections[name].hex() == result["sections"][name], name

    # struct module's init and exit now hold the addresses of the two functions (32-bit words).
    this = bytes.fromhex(result["sections"][".gnu.linkonce.this_module"])
    assert int.from_bytes(this[0xCC:0xD0], "little") == int(result["layout"][".init.text"]["address"], 16)
    assert int.from_bytes(this[0x20C:0x210], "little") == int(result["layout"][".exit.text"]["address"], 16)
    # The call in init, disassembled at its address, reaches _printk (e8 with S - 4 - P, the REL
    # addend -4 being in the place).
    init_address = int(result["layout"][".init.text"]["address"], 16)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    calls = [i for i in md.disasm(bytes.fromhex(result["sections"][".init.text"]), init_address)
             if i.mnemonic == "call"]
    assert [c.op_str for c in calls] == [f"{PRINTK:#x}"]
