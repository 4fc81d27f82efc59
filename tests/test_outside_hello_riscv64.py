"""A hello module built for the stated riscv64 6.1 kernel outside the project's builder loads, runs,
and ld.lld agrees with its bytes.

The module is compiled here by hand as kbuild compiles it for that kernel (zig cc with the flags
of arch/riscv/Makefile: lp64, rv64imac, medany, -mno-relax for modules; a hand-written .mod.c as
modpost writes it without MODVERSIONS; `ld.lld -r` with the three empty sections of
arch/riscv/include/asm/module.lds.h), run through `koconform load --arch riscv64` as a user would,
both as text and as JSON, and linked by ld.lld at the layout the result reports: the relocated
bytes of the code and of struct module must be the same. The auipc/jalr pair of the call in init
is then decoded by hand: it must reach _printk.
"""
from __future__ import annotations

import json
from pathlib import Path

from koconform.conformance import peers
from outside import HELLO, koconform_load, zig

# What modpost writes for this module on the stated kernel (conformance/profiles/linux-6.1/riscv64.yaml):
# struct module 0x380 bytes, name at 0x18, init at 0x138, exit at 0x350; no __versions (MODVERSIONS=n).
MOD_C = r"""
static const char a[] __attribute__((section(".modinfo"), used, aligned(1))) = "license=GPL";
static const char b[] __attribute__((section(".modinfo"), used, aligned(1))) = "vermagic=6.1.0 SMP mod_unload riscv";
static const char c[] __attribute__((section(".modinfo"), used, aligned(1))) = "name=hello";
extern int init_module(void);
extern void cleanup_module(void);
struct module { char p0[0x18]; char name[56]; char p1[0x138 - 0x18 - 56]; int (*init)(void);
    char p2[0x350 - 0x140]; void (*exit)(void); char p3[0x380 - 0x358]; } __attribute__((aligned(64)));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
    .name = "hello", .init = init_module, .exit = cleanup_module };
"""
# arch/riscv/include/asm/module.lds.h (6.1, CONFIG_MODULE_SECTIONS).
MODULE_LDS = "SECTIONS {\n\t.plt : { BYTE(0) }\n\t.got : { BYTE(0) }\n\t.got.plt : { BYTE(0) }\n}\n"
FLAGS = ["-target", "riscv64-freestanding", "-mabi=lp64", "-mcpu=generic_rv64+m+a+c+zicsr+zifencei",
         "-mcmodel=medany", "-mno-relax", "-mno-save-restore", "-fno-pic", "-g0", "-O2",
         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-addrsig", "-c"]
PRINTK = 0xFFFFFFFF80CC767C        # the environment's _printk (conformance/environments/linux-6.1/riscv64.tsv)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def test_outside_hello_riscv64(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "hello.mod.c").write_text(MOD_C)
    (tmp_path / "module.lds").write_text(MODULE_LDS)
    zig("cc", *FLAGS, "hello.c", "-o", "hello.o", cwd=tmp_path)
    zig("cc", *FLAGS, "hello.mod.c", "-o", "hello.mod.o", cwd=tmp_path)
    zig("ld.lld", "-r", "-m", "elf64lriscv", "-T", "module.lds", "-o", "hello.ko", "hello.o", "hello.mod.o",
        cwd=tmp_path)

    lines = koconform_load("riscv64", cwd=tmp_path).splitlines()
    assert lines[0] == "hello.ko: loaded"
    assert "  module <6>Hi module!" in lines
    assert lines[-1] == "  module <6>Bye module!"

    result = json.loads(koconform_load("riscv64", "--json", cwd=tmp_path))
    assert result["status"] == "loaded", result
    assert result["symbols"] == {"_printk": f"{PRINTK:#x}"}
    assert result["layout"][".init.text"]["region"] == "init"
    assert result["layout"][".exit.text"]["region"] == "core"      # MODULE_UNLOAD=y
    assert result["init_return"] == 0
    assert [e["text"] for e in result["log"] if e["source"] == "module"] == ["Hi module!"]
    assert [e["text"] for e in result["exit_log"]] == ["Bye module!"]
    # module_frob_arch_sections: one CALL_PLT in each of .rela.init.text and .rela.exit.text (two
    # counted), no GOT_HI20: .plt 3*12 bytes, .got 8, .got.plt 3*8, none used (_printk is in reach).
    assert result["sections"][".plt"] == "00" * 36
    assert result["sections"][".got"] == "00" * 8 and result["sections"][".got.plt"] == "00" * 24

    # ld.lld, given the same layout and _printk's address, writes the same bytes.
    ko = (tmp_path / "hello.ko").read_bytes()
    given = peers.Given({k: int(v["address"], 16) for k, v in result["layout"].items()}, {"_printk": PRINTK})
    linked = peers.link(peers.LldPeer().command("riscv64"), "riscv64", ko, given)
    assert linked.ok, linked.diagnostics
    for name in (".init.text", ".exit.text", ".gnu.linkonce.this_module"):
        assert linked.sections[name].hex() == result["sections"][name], name

    # struct module's init and exit now hold the addresses of the two functions.
    this = bytes.fromhex(result["sections"][".gnu.linkonce.this_module"])
    assert int.from_bytes(this[0x138:0x140], "little") == int(result["layout"][".init.text"]["address"], 16)
    assert int.from_bytes(this[0x350:0x358], "little") == int(result["layout"][".exit.text"]["address"], 16)

    # The call in init: find `auipc ra` (opcode 0x17, rd 1) followed by `jalr ra, imm(ra)`, and add
    # up P + (auipc imm << 12) + sign-extended jalr imm: that is _printk.
    init_address = int(result["layout"][".init.text"]["address"], 16)
    code = bytes.fromhex(result["sections"][".init.text"])
    targets = []
    for at in range(0, len(code) - 7, 2):
        auipc = int.from_bytes(code[at:at + 4], "little")
        jalr = int.from_bytes(code[at + 4:at + 8], "little")
        if auipc & 0xFFF == 0x097 and jalr & 0xFFFFF == 0x080E7:
            targets.append((init_address + at + _signed(auipc & 0xFFFFF000, 32) + _signed(jalr >> 20, 12))
                           & (2**64 - 1))
    assert targets == [PRINTK]
