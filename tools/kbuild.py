"""Build a .ko the way kbuild does for the profile's kernel, with zig cc and ld.lld.

kbuild's steps for an external module, reproduced: compile each source with the
kernel's flags; generate `<mod>.mod.c` as modpost does (.modinfo with vermagic, name,
retpoline; `__versions` with the kernel's CRC for every undefined symbol, module_layout
last; `struct module __this_module` at the profile's layout, its init/exit pointing at
init_module/cleanup_module); compile it; `ld.lld -r` with the module linker script.
Everything runs in a private temporary directory with fixed names, so the output
depends only on the recipe, the profile, the environment and the pinned toolchain.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from koconform.conformance.model import Environment, Profile

# The arch's part (zig target, arch Makefile flags, flags that follow config options, ld
# emulation, arch module linker script) is the profile's `build` block; these are the flags
# kbuild passes everywhere that change the object code.
COMMON_FLAGS = ["-fno-pic", "-g0", "-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                "-fno-addrsig", "-fno-common", "-ffreestanding", "-fno-stack-protector",
                "-ffile-prefix-map=/koconform-build/=", "-Wno-unused-command-line-argument"]

# scripts/module.lds (6.1), the part that applies without LTO.
MODULE_LDS = """SECTIONS {
	/DISCARD/ : { *(.discard) *(.discard.*) }
	__ksymtab 0 : { *(SORT(___ksymtab+*)) }
	__ksymtab_gpl 0 : { *(SORT(___ksymtab_gpl+*)) }
	__kcrctab 0 : { *(SORT(___kcrctab+*)) }
	__kcrctab_gpl 0 : { *(SORT(___kcrctab_gpl+*)) }
	.ctors 0 : ALIGN(8) { *(SORT(.ctors.*)) *(.ctors) }
	.init_array 0 : ALIGN(8) { *(SORT(.init_array.*)) *(.init_array) }
	.altinstructions 0 : ALIGN(8) { KEEP(*(.altinstructions)) }
	__bug_table 0 : ALIGN(8) { KEEP(*(__bug_table)) }
	__jump_table 0 : ALIGN(8) { KEEP(*(__jump_table)) }
}
"""


class BuildError(Exception):
    pass


@dataclass
class Recipe:
    module: str
    sources: list[dict[str, str]]     # {file, text}
    cflags: list[str]
    license: str | None
    modinfo: dict[str, str | None]    # extra entries; None removes a generated one
    versions: str | list[str]         # "auto", "none", or the names to list
    this_module: bool
    ldflags: list[str]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Recipe":
        return cls(module=doc["module"], sources=list(doc["sources"]), cflags=list(doc.get("cflags", [])),
                   license=doc.get("license", "GPL"), modinfo=dict(doc.get("modinfo", {})),
                   versions=doc.get("versions", "auto"), this_module=doc.get("this_module", True),
                   ldflags=list(doc.get("ldflags", [])))


def zig(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ziglang", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"zig {' '.join(args)} failed:\n{proc.stderr.strip()}")


def build_facts(profile: Profile) -> dict[str, Any]:
    if not profile.build:
        raise BuildError(f"profile {profile.name} has no build block for {profile.arch}")
    return profile.build


def compile_flags(profile: Profile, extra: list[str]) -> list[str]:
    b = build_facts(profile)
    flags = ["-target", b["target"], *b.get("cflags", []), *COMMON_FLAGS]
    for option, add in (b.get("config_cflags") or {}).items():
        if profile.enabled(option):
            flags += add
    return flags + extra


def module_lds(profile: Profile) -> str:
    """scripts/module.lds with the arch's asm/module.lds.h after it, as kbuild preprocesses it."""
    return MODULE_LDS + (build_facts(profile).get("module_lds") or "")


def c_string(s: str) -> str:
    out = []
    for ch in s.encode("latin-1"):
        out.append(chr(ch) if 32 <= ch < 127 and ch not in (34, 92, 63) else f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def undefined_symbols(obj: Path) -> list[str]:
    with obj.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise BuildError("the compiled object has no .symtab")
        names = {s.name for s in symtab.iter_symbols() if s["st_shndx"] == "SHN_UNDEF" and s.name}
    return sorted(names)


def mod_c(recipe: Recipe, profile: Profile, env: Environment, undefined: list[str]) -> str:
    """modpost's <mod>.mod.c for this module, in C a freestanding compiler accepts."""
    ms = profile.module_struct
    word = 8 if profile.arch in ("x86_64", "arm64", "riscv64") else 4
    entries: dict[str, str | None] = {}
    if recipe.license is not None:
        entries["license"] = recipe.license
    entries["vermagic"] = profile.vermagic
    entries["name"] = recipe.module
    if profile.enabled("CONFIG_RETPOLINE"):
        entries["retpoline"] = "Y"
    entries["depends"] = ""
    entries.update(recipe.modinfo)
    lines = ["/* generated by koconform tools/kbuild.py, as modpost writes <mod>.mod.c */",
             "typedef unsigned long ulong;"]
    for k, (key, value) in enumerate(entries.items()):
        if value is None:
            continue
        text = f"{key}={value}"
        lines.append(f'static const char __modinfo_{k}[] __attribute__((section(".modinfo"), used, '
                     f'aligned(1))) = {c_string(text)};')
    names = {"auto": [n for n in undefined if n in env.symbols and env.symbols[n].crc is not None]
             + ["module_layout"], "none": None}.get(recipe.versions, recipe.versions) \
        if isinstance(recipe.versions, str) else recipe.versions
    if names is not None and profile.enabled("CONFIG_MODVERSIONS"):   # modpost: add_versions only then
        name_len = 64 - word
        lines.append(f"struct modversion_info {{ ulong crc; char name[{name_len}]; }};")
        rows = []
        for n in names:
            crc = env.symbols[n].crc if n in env.symbols and env.symbols[n].crc is not None else 0
            rows.append(f"\t{{ {crc:#010x}, {c_string(n)} }},")
        lines.append('static const struct modversion_info ____versions[] __attribute__((section("__versions"), '
                     'used)) = {')
        lines += rows + ["};"]
    if recipe.this_module:
        lines += this_module_c(recipe, ms, word, "init_module" in recipe_defines(recipe),
                               "cleanup_module" in recipe_defines(recipe) and profile.enabled("CONFIG_MODULE_UNLOAD"))
    return "\n".join(lines) + "\n"


def recipe_defines(recipe: Recipe) -> set[str]:
    text = "\n".join(s["text"] for s in recipe.sources)
    return {n for n in ("init_module", "cleanup_module") if n in text}


def this_module_c(recipe: Recipe, ms: dict[str, int], word: int, has_init: bool, has_exit: bool) -> list[str]:
    size, name, init, exit_ = ms["size"], ms["name"], ms["init"], ms["exit"]
    name_len = 64 - word
    out = []
    if has_init:
        out.append("extern int init_module(void);")
    if has_exit:
        out.append("extern void cleanup_module(void);")
    out += [
        "struct module {",
        f"\tchar __pad0[{name}];",
        f"\tchar name[{name_len}];",
        f"\tchar __pad1[{init - name - name_len}];",
        "\tint (*init)(void);",
        f"\tchar __pad2[{exit_ - init - word}];",
        "\tvoid (*exit)(void);",
        f"\tchar __pad3[{size - exit_ - word}];",
        f"}} __attribute__((aligned({ms['align']})));",
        'struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {',
        f"\t.name = {c_string(recipe.module)},",
    ]
    if has_init:
        out.append("\t.init = init_module,")
    if has_exit:
        out.append("\t.exit = cleanup_module,")
    out.append("};")
    return out


def build(recipe: Recipe, profile: Profile, env: Environment) -> bytes:
    """Compile, generate .mod.c, link: the .ko bytes."""
    emulation = build_facts(profile)["ld_emulation"]
    with tempfile.TemporaryDirectory(prefix="koconform-build-") as tmp:
        work = Path(tmp)
        flags = compile_flags(profile, recipe.cflags)
        objs = []
        for k, src in enumerate(recipe.sources):
            path = work / src["file"]
            path.write_text(src["text"])
            obj = work / f"src{k}.o"
            zig("cc", *flags, "-c", src["file"], "-o", obj.name, cwd=work)
            objs.append(obj)
        if len(objs) > 1:
            zig("ld.lld", "-r", "-m", emulation, "-o", "mod.o", *[o.name for o in objs], cwd=work)
            combined = work / "mod.o"
        else:
            combined = objs[0]
        (work / "mod.mod.c").write_text(mod_c(recipe, profile, env, undefined_symbols(combined)))
        zig("cc", *flags, "-c", "mod.mod.c", "-o", "mod.mod.o", cwd=work)
        (work / "module.lds").write_text(module_lds(profile))
        zig("ld.lld", "-r", "-m", emulation, "-z", "noexecstack", "--build-id=sha1",
            *recipe.ldflags, "-T", "module.lds", "-o", "out.ko", combined.name, "mod.mod.o", cwd=work)
        return (work / "out.ko").read_bytes()
