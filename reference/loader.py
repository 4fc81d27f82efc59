"""The reference loader: Linux 6.1's load_module, stage by stage, under the kernel's names.

Hold this file next to kernel/module/main.c (6.1.y): copy_and_check covers
module_sig_check, elf_validity_check, setup_load_info, rewrite_section_headers and
check_modstruct_version; layout_and_allocate starts with check_modinfo as 6.1 does;
simplify_symbols and apply_relocations follow; do_init_module and delete_module run
the module's code through an emulator when one is available for the arch.

Every rejection is a LoadError (errno, phase); every access outside the file or the
module's memory is a MemoryFault; both become a Result, never a Python exception.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from koconform.conformance.model import Fault, LogRecord, Placement, Request, Result

from . import arch as arches
from . import printk
from .elf import (ELFMAG, ET_REL, SHF_ALLOC, SHF_EXECINSTR, SHF_RELA_LIVEPATCH,
                  SHF_RO_AFTER_INIT, SHF_WRITE, SHN_ABS, SHN_COMMON, SHN_LIVEPATCH,
                  SHN_UNDEF, SHT_NOBITS, SHT_NULL, SHT_REL, SHT_RELA, SHT_SYMTAB, STB_WEAK,
                  cstring, read_ehdr, read_table)
from .errors import (ElfCheckError, LayoutError, LoadError, ModinfoError, RelocationError,
                     SymbolError)
from .memory import COPY_BASE, Memory, MemoryFault
from .relocate import apply_sections

MODULE_SIG_STRING = b"~Module signature appended~\n"
NO_NAME = "(missing .modinfo section or name field)"
GPL_COMPATIBLE = frozenset({"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL",
                            "Dual MIT/GPL", "Dual MPL/GPL"})   # include/linux/license.h
# layout_sections' masks: (required flags, forbidden flags); ARCH_SHF_SMALL is 0.
MASKS = ((SHF_EXECINSTR | SHF_ALLOC, 0), (SHF_ALLOC, SHF_WRITE),
         (SHF_RO_AFTER_INIT | SHF_ALLOC, 0), (SHF_WRITE | SHF_ALLOC, 0), (SHF_ALLOC, 0))
UNPLACED = None


def align_u32(x: int, a: int) -> int:
    """The kernel's ALIGN(x, a) when x is an unsigned int: the mask is cast to x's type, so an
    alignment of 2**32 or more keeps only its low 32 bits (include/uapi/linux/const.h)."""
    mask = (a - 1) & 0xFFFFFFFF
    return ((x + mask) & ~mask) & 0xFFFFFFFF


@dataclass
class Taints:
    """Kernel-wide taint state: each vector is a fresh boot, so this starts empty."""
    flags: set[str] = field(default_factory=set)
    debug_locks: bool = True
    once: set[str] = field(default_factory=set)


class Load:
    """One module's way through load_module (the kernel's struct load_info and more)."""
    names: list[str]                            # section names, once elf_validity_check has read them
    versions_held: dict[bytes, int] | None      # __versions, while simplify_symbols resolves

    def __init__(self, request: Request):
        self.req = request
        self.arch = arches.get(request.arch)
        self.profile = request.profile
        self.env = request.environment
        self.cls = self.arch.elf
        self.buf = request.ko
        self.len = len(self.buf)
        self.log: list[LogRecord] = []
        self.taints = Taints()
        self.memory = Memory()
        self.modname = ""
        self.name = NO_NAME          # info->name
        self.index: dict[str, int] = {"info": 0, "sym": 0, "str": 0, "mod": 0, "vers": 0, "pcpu": 0}
        self.placed: dict[int, tuple[str, int]] = {}   # section -> (region, offset)
        self.regions: dict[str, tuple[int, int]] = {}
        self.undefined: dict[str, int] = {}
        self.sig_ok = False

    # ---- logging -------------------------------------------------------------------
    def klog(self, level: int, fmt: str, *args: object) -> None:
        f = printk.vsprintf(fmt.encode("latin-1"), printk.PyArgs(list(args), pointer_bits=self.cls.bits),
                            pointer_bits=self.cls.bits)
        text = f.text[:-1] if f.text.endswith("\n") else f.text
        pattern = None
        if f.pattern is not None:
            pattern = f.pattern[:-2] if f.pattern.endswith("\\\n") else f.pattern
            pattern = pattern[:-1] if pattern.endswith("\n") else pattern
        self.log.append(LogRecord(level, "kernel", text, pattern))

    def warn_once(self, key: str, level: int, fmt: str, *args: object) -> None:
        if key not in self.taints.once:
            self.taints.once.add(key)
            self.klog(level, fmt, *args)

    def add_taint(self, flag: str, lockdep_unreliable: bool) -> None:
        """kernel/panic.c add_taint: the first lockdep-breaking taint switches lock debugging off."""
        if lockdep_unreliable and self.taints.debug_locks:
            self.taints.debug_locks = False
            self.klog(4, "Disabling lock debugging due to kernel taint\n")
        self.taints.flags.add(flag)

    # ---- small readers -------------------------------------------------------------
    def secname(self, i: int) -> str:
        names = self.__dict__.get("names")
        if names is not None:               # decoded once, when the headers were checked
            return names[i]
        shstr = self.sechdrs[self.ehdr_shstrndx]
        off = int(shstr["sh_offset"]) + int(self.sechdrs[i]["sh_name"])
        return cstring(self.buf, off).decode("latin-1")

    def section_key(self, i: int) -> str:
        name = self.secname(i)
        return f"{name}#{i}" if self.name_counts.get(name, 0) > 1 else name

    def find_sec(self, name: str) -> int:
        """First SHF_ALLOC section with that name, as find_sec (0: none)."""
        alloc = np.flatnonzero(self.sechdrs["sh_flags"][1:self.shnum] & SHF_ALLOC) + 1
        return next((int(i) for i in alloc if self.secname(int(i)) == name), 0)

    def get_modinfo(self, tag: str) -> str | None:
        """get_modinfo: the value of `tag=` in .modinfo, read from the file (sh_offset)."""
        info = self.sechdrs[self.index["info"]]
        start, size = int(info["sh_offset"]), int(info["sh_size"])
        data = self.buf[start:start + size] if self.index["info"] else b""
        for entry in data.split(b"\0"):
            key, eq, value = entry.partition(b"=")
            if eq and key == tag.encode():
                return value.decode("latin-1")
        return None

    def section_addr(self, i: int) -> int:
        return int(self.sechdrs[i]["sh_addr"])

    def section_name(self, i: int) -> str:
        return self.section_key(i) if 0 <= i < self.shnum else f"<section {i}>"

    def symtab(self) -> tuple[int, int]:
        s = self.sechdrs[self.index["sym"]]
        return int(s["sh_addr"]), int(s["sh_size"]) // self.cls.sym.itemsize

    # ---- copy_and_check ------------------------------------------------------------
    def copy_and_check(self) -> None:
        self.module_sig_check()
        self.elf_validity_check()
        self.setup_load_info()
        self.rewrite_section_headers()
        self.check_modstruct_version()

    def module_sig_check(self) -> None:
        """Strip an appended signature; the environment's keyring holds no module key."""
        marker = len(MODULE_SIG_STRING)
        if self.len > marker and self.buf[self.len - marker:self.len] == MODULE_SIG_STRING:
            self.len -= marker
            if self.len <= 12:
                raise ElfCheckError("signature marker but no room for its trailer", errno="EBADMSG")
            trailer = self.buf[self.len - 12:self.len]
            algo, hash_, id_type, signer_len, key_id_len = trailer[0:5]
            sig_len = int.from_bytes(trailer[8:12], "big")
            if sig_len >= self.len - 12:
                raise ElfCheckError("signature length exceeds the module", errno="EBADMSG")
            if id_type != 2:        # PKEY_ID_PKCS7
                self.klog(3, "%s: not signed with expected PKCS#7 message\n", "module")
                # -ENOPKG: not enforced, the load goes on with only the marker removed.
                self.buf = self.buf[:self.len]
                return
            if algo or hash_ or signer_len or key_id_len or any(trailer[5:8]):
                self.klog(3, "%s: PKCS#7 signature info has unexpected non-zero params\n", "module")
                raise ElfCheckError("PKCS#7 signature with non-zero params", errno="EBADMSG")
            self.len -= sig_len + 12
            # verify_pkcs7_signature against an empty keyring: -ENOKEY, not enforced.
        self.buf = self.buf[:self.len]

    def elf_validity_check(self) -> None:
        cls, buf = self.cls, self.buf
        if self.len < cls.ehdr.itemsize:
            self.klog(3, "Invalid ELF header len %lu\n", self.len)
            raise ElfCheckError(f"file is {self.len} bytes, shorter than an ELF header")
        hdr = read_ehdr(buf, cls)
        if bytes(buf[:4]) != ELFMAG:
            self.klog(3, "Invalid ELF header magic: != %s\n", "\x7fELF")
            raise ElfCheckError("bad ELF magic")
        if int(hdr["e_type"]) != ET_REL:
            self.klog(3, "Invalid ELF header type: %u != %u\n", int(hdr["e_type"]), ET_REL)
            raise ElfCheckError(f"e_type {int(hdr['e_type'])} is not ET_REL")
        if (int(hdr["e_machine"]) != self.arch.e_machine and int(hdr["e_machine"]) not in self.arch.also_machines) \
                or (self.arch.ei_class is not None and int(hdr["e_ident"][4]) != self.arch.ei_class):
            self.klog(3, "Invalid architecture in ELF header: %u\n", int(hdr["e_machine"]))
            raise ElfCheckError(f"e_machine {int(hdr['e_machine'])} is not {self.arch.e_machine}")
        if int(hdr["e_shentsize"]) != cls.shdr.itemsize:
            self.klog(3, "Invalid ELF section header size\n")
            raise ElfCheckError(f"e_shentsize {int(hdr['e_shentsize'])} is not {cls.shdr.itemsize}")
        shoff, shnum = int(hdr["e_shoff"]), int(hdr["e_shnum"])
        if shoff >= self.len or shnum * cls.shdr.itemsize > self.len - shoff:
            self.klog(3, "Invalid ELF section header overflow\n")
            raise ElfCheckError(f"section headers [{shoff:#x}, +{shnum}×{cls.shdr.itemsize}) "
                                f"run past the file ({self.len:#x} bytes)")
        self.shnum = shnum
        self.sechdrs = read_table(buf, shoff, shnum, cls.shdr)
        shstrndx = int(hdr["e_shstrndx"])
        if shstrndx == SHN_UNDEF or shstrndx >= shnum:
            self.klog(3, "Invalid ELF section name index: %d || e_shstrndx (%d) >= e_shnum (%d)\n",
                      shstrndx, shstrndx, shnum)
            raise ElfCheckError(f"e_shstrndx {shstrndx} out of range (e_shnum {shnum})")
        self.ehdr_shstrndx = shstrndx
        strhdr = self.sechdrs[shstrndx]
        if not self.section_in_file(strhdr):
            self.klog(3, "Invalid ELF section hdr(type %u)\n", int(strhdr["sh_type"]))
            raise ElfCheckError("section name table runs past the file")
        if int(strhdr["sh_size"]) == 0:
            self.klog(3, "empty section name table\n")
            raise ElfCheckError("empty section name table")
        if buf[int(strhdr["sh_offset"]) + int(strhdr["sh_size"]) - 1] != 0:
            self.klog(3, "ELF Spec violation: section name table isn't null terminated\n")
            raise ElfCheckError("section name table is not NUL-terminated")
        s0 = self.sechdrs[0]
        if int(s0["sh_type"]) != SHT_NULL or int(s0["sh_size"]) or int(s0["sh_addr"]):
            self.klog(3, "ELF Spec violation: section 0 type(%d)!=SH_NULL or non-zero len or addr\n",
                      int(s0["sh_type"]))
            raise ElfCheckError("section 0 is not an empty SHT_NULL")
        for i in range(1, shnum):
            self.check_section(i)
        names = [self.secname(i) for i in range(shnum)]
        self.name_counts = dict(Counter(names))
        # Nothing writes a section's sh_name or the file's name table after this check.
        self.names: list[str] = names

    def section_in_file(self, shdr: np.void) -> bool:
        """validate_section_offset: sh_offset + sh_size neither wraps nor passes the end."""
        end = int(shdr["sh_offset"]) + int(shdr["sh_size"])
        return end <= self.cls.addr_mask and end <= self.len

    def check_section(self, i: int) -> None:
        shdr = self.sechdrs[i]
        sh_type = int(shdr["sh_type"])
        if sh_type in (SHT_NULL, SHT_NOBITS):
            return
        if sh_type == SHT_SYMTAB:
            link = int(shdr["sh_link"])
            if link == SHN_UNDEF or link >= self.shnum:
                self.klog(3, "Invalid ELF sh_link!=SHN_UNDEF(%d) or (sh_link(%d) >= hdr->e_shnum(%d)\n",
                          link, link, self.shnum)
                raise ElfCheckError(f"symbol table (section {i}) sh_link {link} out of range")
        if not self.section_in_file(shdr):
            self.klog(3, "Invalid ELF section in module (section %u type %u)\n", i, sh_type)
            raise ElfCheckError(f"section {i} [{int(shdr['sh_offset']):#x}, +{int(shdr['sh_size']):#x}) "
                                f"runs past the file ({self.len:#x} bytes)")
        strsize = int(self.sechdrs[self.ehdr_shstrndx]["sh_size"])
        if int(shdr["sh_flags"]) & SHF_ALLOC and int(shdr["sh_name"]) >= strsize:
            self.klog(3, "Invalid ELF section name in module (section %u type %u)\n", i, sh_type)
            raise ElfCheckError(f"section {i} sh_name {int(shdr['sh_name'])} past the name table")

    def setup_load_info(self) -> None:
        idx = self.index
        idx["info"] = self.find_sec(".modinfo")
        if idx["info"]:
            self.name = self.get_modinfo("name") or NO_NAME
        for i in range(1, self.shnum):
            if int(self.sechdrs[i]["sh_type"]) == SHT_SYMTAB:
                idx["sym"], idx["str"] = i, int(self.sechdrs[i]["sh_link"])
                break
        if not idx["sym"]:
            self.klog(4, "%s: module has no symbols (stripped?)\n", self.name)
            raise ElfCheckError("no SHT_SYMTAB section")
        idx["mod"] = self.find_sec(".gnu.linkonce.this_module")
        if not idx["mod"]:
            self.klog(4, "%s: No module found in object\n", self.name)
            raise ElfCheckError("no SHF_ALLOC .gnu.linkonce.this_module section")
        # The name field of the file's struct module (info->mod->name).
        name_off = int(self.sechdrs[idx["mod"]]["sh_offset"]) + self.profile.module_struct["name"]
        self.modname = cstring(self.buf, name_off, self.module_name_len).decode("latin-1")
        if self.name == NO_NAME:
            self.name = self.modname
        idx["vers"] = self.find_sec("__versions")
        idx["pcpu"] = self.find_sec(".data..percpu") if self.profile.enabled("CONFIG_SMP") else 0
        self.strtab_off = int(self.sechdrs[idx["str"]]["sh_offset"])

    @property
    def module_name_len(self) -> int:
        return 64 - self.cls.bits // 8      # MODULE_NAME_LEN

    def rewrite_section_headers(self) -> None:
        self.copy_base = self.env.regions.get("copy", COPY_BASE)
        self.memory.map("copy", self.copy_base, np.frombuffer(bytearray(self.buf), dtype=np.uint8))
        self.sechdrs["sh_addr"][0] = 0
        self.sechdrs["sh_addr"][1:] = (np.uint64(self.copy_base) + self.sechdrs["sh_offset"][1:].astype(np.uint64)
                                       ) & np.uint64(self.cls.addr_mask)
        for key in ("vers", "info"):
            self.sechdrs["sh_flags"][self.index[key]] &= ~np.array(SHF_ALLOC).astype(self.sechdrs["sh_flags"].dtype)

    def check_modstruct_version(self) -> None:
        layout = self.env.symbols.get("module_layout")
        if layout is not None and not self.check_version("module_layout", layout.crc):
            raise ElfCheckError("module_layout: __versions missing or CRC mismatch")

    def check_version(self, symname: str, crc: int | None) -> bool:
        """kernel/module/version.c check_version (CONFIG_MODVERSIONS)."""
        if not self.profile.enabled("CONFIG_MODVERSIONS") or crc is None:
            return True
        if not self.index["vers"]:
            return self.try_to_force_load(symname)
        found = self.modversions().get(symname.encode())
        if found is None:
            self.warn_once("no-symbol-version", 4, "%s: no symbol version for %s\n", self.name, symname)
            return True
        if found == crc:
            return True
        self.klog(4, "%s: disagrees about version of symbol %s\n", self.name, symname)
        return False

    def modversions(self) -> dict[bytes, int]:
        """__versions as name -> crc of the first entry with that name (check_version's loop stops
        at the first match). Read from memory on every call, except while simplify_symbols
        resolves: it writes nothing until every symbol is resolved, so the table is read once."""
        held = self.__dict__.get("versions_held")
        if held is not None:
            return held
        vers = self.sechdrs[self.index["vers"]]
        entry = 64                                    # sizeof(struct modversion_info)
        data = self.memory.read(int(vers["sh_addr"]), int(vers["sh_size"]) // entry * entry)
        word = self.cls.bits // 8
        table: dict[bytes, int] = {}
        for k in range(len(data) // entry):
            rec = data[k * entry:(k + 1) * entry]
            table.setdefault(cstring(rec, word), int.from_bytes(rec[:word], "little"))
        if "versions_held" in self.__dict__:
            self.versions_held = table
        return table

    def try_to_force_load(self, reason: str) -> bool:
        if not self.profile.enabled("CONFIG_MODULE_FORCE_LOAD"):
            return False
        if "F" not in self.taints.flags:
            self.klog(4, "%s: %s: kernel tainted.\n", self.modname, reason)
        self.add_taint("F", lockdep_unreliable=True)
        return True

    # ---- layout_and_allocate -------------------------------------------------------
    def layout_and_allocate(self) -> None:
        self.check_modinfo()
        if self.arch.frob_arch_sections is not None:
            self.arch.frob_arch_sections(self)
        self.module_enforce_rwx_sections()
        flags = self.sechdrs["sh_flags"]
        flags[self.index["pcpu"]] &= ~np.array(SHF_ALLOC).astype(flags.dtype)
        for name in (".data..ro_after_init", "__jump_table"):
            ndx = self.find_sec(name)
            if ndx:
                flags[ndx] |= np.array(SHF_RO_AFTER_INIT).astype(flags.dtype)
        sizes = self.layout_sections()
        self.layout_symtab(sizes)
        self.move_module(sizes)

    def check_modinfo(self) -> None:
        modmagic = self.get_modinfo("vermagic")
        if modmagic is None:
            if not self.try_to_force_load("bad vermagic"):
                raise ModinfoError("no vermagic", phase="layout")
        elif not self.same_magic(modmagic, self.profile.vermagic,
                                 bool(self.index["vers"]) and self.profile.enabled("CONFIG_MODVERSIONS")):
            self.klog(3, "%s: version magic '%s' should be '%s'\n", self.name, modmagic, self.profile.vermagic)
            raise ModinfoError(f"vermagic {modmagic!r} is not {self.profile.vermagic!r}", phase="layout")
        if self.get_modinfo("intree") is None:
            if "O" not in self.taints.flags:
                self.klog(4, "%s: loading out-of-tree module taints kernel.\n", self.modname)
            self.add_taint("O", lockdep_unreliable=False)
        if self.profile.enabled("CONFIG_RETPOLINE") and self.get_modinfo("retpoline") is None \
                and self.profile.facts.get("spectre_v2_mitigation", True):
            self.klog(3, "Spectre V2 : System may be vulnerable to spectre v2\n")
            self.klog(4, "%s: loading module not compiled with retpoline compiler.\n", self.modname)
        if self.get_modinfo("staging") is not None:
            self.add_taint("C", lockdep_unreliable=False)
            self.klog(4, "%s: module is from the staging directory, the quality is unknown, "
                         "you have been warned.\n", self.modname)
        if self.get_modinfo("livepatch") is not None:
            if not self.profile.enabled("CONFIG_LIVEPATCH"):
                self.klog(3, "%s: module is marked as livepatch module, but livepatch support is disabled",
                          self.modname)
                raise ModinfoError("livepatch module without CONFIG_LIVEPATCH", phase="layout")
            self.add_taint("K", lockdep_unreliable=False)
            self.warn_once("livepatch", 5, "%s: tainting kernel with TAINT_LIVEPATCH\n", self.modname)
        license = self.get_modinfo("license") or "unspecified"
        self.gpl_ok = license in GPL_COMPATIBLE
        if not self.gpl_ok:
            if "P" not in self.taints.flags:
                self.klog(4, "%s: module license '%s' taints kernel.\n", self.modname, license)
            self.add_taint("P", lockdep_unreliable=True)
        if self.get_modinfo("test") is not None:
            if "N" not in self.taints.flags:
                self.klog(4, "%s: loading test module taints kernel.\n", self.modname)
            self.add_taint("N", lockdep_unreliable=False)

    @staticmethod
    def same_magic(a: str, b: str, has_crcs: bool) -> bool:
        if has_crcs:
            a, b = a[a.find(" ") if " " in a else len(a):], b[b.find(" ") if " " in b else len(b):]
        return a == b

    def module_enforce_rwx_sections(self) -> None:
        if not self.profile.enabled("CONFIG_STRICT_MODULE_RWX"):
            return
        wx = SHF_WRITE | SHF_EXECINSTR
        for i in range(self.shnum):
            if int(self.sechdrs[i]["sh_flags"]) & wx == wx:
                self.klog(3, "%s: section %s (index %d) has invalid WRITE|EXEC flags\n",
                          self.modname, self.secname(i), i)
                raise LayoutError(f"section {i} ({self.secname(i)}) is both writable and executable")

    def strict_align(self, size: int) -> int:
        if not self.profile.enabled("CONFIG_STRICT_MODULE_RWX"):
            return size
        page = self.profile.page_size
        return ((size + page - 1) & ~(page - 1)) & 0xFFFFFFFF

    def is_init_section(self, name: str) -> bool:
        """module_init_layout_section: .init*, and .exit* when modules cannot unload."""
        if name.startswith(self.arch.init_prefixes):
            return True
        return not self.profile.enabled("CONFIG_MODULE_UNLOAD") and name.startswith(self.arch.exit_prefixes)

    def get_offset(self, size: int, i: int) -> tuple[int, int]:
        """module_get_offset: (offset, new size); layout sizes are 32-bit (unsigned int)."""
        offset = align_u32(size, int(self.sechdrs[i]["sh_addralign"]) or 1)
        return offset, (offset + int(self.sechdrs[i]["sh_size"])) & 0xFFFFFFFF

    def layout_sections(self) -> dict[str, int]:
        flags = [int(f) for f in self.sechdrs["sh_flags"]]
        names = [self.secname(i) for i in range(self.shnum)]
        sizes = {"core": 0, "init": 0}
        for region, is_init in (("core", False), ("init", True)):
            for m, (req, forbid) in enumerate(MASKS):
                for i in range(self.shnum):
                    if (flags[i] & req) != req or flags[i] & forbid or i in self.placed \
                            or self.is_init_section(names[i]) != is_init:
                        continue
                    offset, sizes[region] = self.get_offset(sizes[region], i)
                    self.placed[i] = (region, offset)
                if m in (0, 1, 4) or (m == 2 and not is_init):
                    sizes[region] = self.strict_align(sizes[region])
        return sizes

    def layout_symtab(self, sizes: dict[str, int]) -> None:
        """kernel/module/kallsyms.c layout_symtab (CONFIG_KALLSYMS)."""
        if not self.profile.enabled("CONFIG_KALLSYMS"):
            return
        sym_i, str_i = self.index["sym"], self.index["str"]
        flags = self.sechdrs["sh_flags"]
        flags[sym_i] |= np.array(SHF_ALLOC).astype(flags.dtype)
        self.placed[sym_i] = ("init", 0)
        offset, sizes["init"] = self.get_offset(sizes["init"], sym_i)
        self.placed[sym_i] = ("init", offset)
        symsec = self.sechdrs[sym_i]
        syms = read_table(self.buf, int(symsec["sh_offset"]), int(symsec["sh_size"]) // self.cls.sym.itemsize,
                          self.cls.sym)
        core = self.core_symbols(syms)
        strtab_size = int(self.symname_lengths(syms["st_name"][core]).sum()) + int(core.sum())
        ndst = int(core.sum())
        symoffs = align_u32(sizes["core"], int(symsec["sh_addralign"]) or 1)
        size = symoffs + ndst * self.cls.sym.itemsize + strtab_size + ndst
        sizes["core"] = self.strict_align(size & 0xFFFFFFFF)
        flags[str_i] |= np.array(SHF_ALLOC).astype(flags.dtype)
        offset, sizes["init"] = self.get_offset(sizes["init"], str_i)
        self.placed[str_i] = ("init", offset)
        word = self.cls.bits // 8
        init = (sizes["init"] + word - 1) & ~(word - 1)        # __alignof__(struct mod_kallsyms)
        init += 4 * word                                       # sizeof(struct mod_kallsyms)
        init += len(syms)                                      # one type byte per symbol
        sizes["init"] = self.strict_align(init & 0xFFFFFFFF)

    def core_symbols(self, syms: np.ndarray) -> np.ndarray:
        """is_core_symbol for every symbol at once (index 0 always kept)."""
        shndx = syms["st_shndx"].astype(np.int64)
        keep = (shndx != SHN_UNDEF) & (shndx < self.shnum) & (syms["st_name"] != 0)
        valid = np.where(keep, shndx, 0)
        sflags = self.sechdrs["sh_flags"].astype(np.uint64)[valid]
        init_sections = np.zeros(self.shnum, dtype=bool)
        init_sections[[i for i, (region, _) in self.placed.items() if region == "init"]] = True
        in_init = init_sections[valid]
        sec_ok = ((sflags & np.uint64(SHF_ALLOC)) != 0) & ~in_init
        if not self.profile.enabled("CONFIG_KALLSYMS_ALL"):
            sec_ok &= (sflags & np.uint64(SHF_EXECINSTR)) != 0
        pcpu = self.index["pcpu"]
        if self.profile.enabled("CONFIG_KALLSYMS_ALL") and pcpu:
            sec_ok |= shndx == pcpu
        core = keep & sec_ok
        if len(core):
            core[0] = True
        return core

    def symname(self, st_name: int) -> bytes:
        return cstring(self.buf, self.strtab_off + st_name)

    def symname_lengths(self, st_names: np.ndarray) -> np.ndarray:
        """len(symname(n)) for every n at once: the distance to the next NUL of the string table;
        a name that runs past the table's end (or starts outside it) is measured one by one."""
        strsec = self.sechdrs[self.index["str"]]
        start = self.strtab_off
        end = min(start + int(strsec["sh_size"]), len(self.buf))
        table = np.frombuffer(self.buf, dtype=np.uint8, count=max(end - start, 0), offset=start) \
            if end > start else np.zeros(0, dtype=np.uint8)
        nuls = np.flatnonzero(table == 0)
        offs = st_names.astype(np.int64)
        nxt = np.searchsorted(nuls, offs)
        inside = (offs < len(table)) & (nxt < len(nuls))
        lengths = np.zeros(len(offs), dtype=np.int64)
        lengths[inside] = nuls[nxt[inside]] - offs[inside]
        for k in np.flatnonzero(~inside):
            lengths[k] = len(self.symname(int(offs[k])))
        return lengths

    def move_module(self, sizes: dict[str, int]) -> None:
        page = self.profile.page_size
        room = self.arch.modules_end - self.arch.modules_vaddr
        fallback = self.arch.module_alloc_fallback
        if fallback is not None and self.profile.enabled(fallback[0]):
            room = max(room, fallback[1])
        for region in ("core", "init"):
            size = sizes[region]
            if region == "init" and size == 0:
                continue
            # module_alloc: nothing for an empty request or one larger than the module area.
            if size == 0 or (size + page - 1) // page * page > room:
                raise LayoutError(f"module_alloc({size:#x}) for {region} fails", errno="ENOMEM")
            base = self.region_base(region)
            self.memory.map(region, base, np.zeros(size, dtype=np.uint8))
            self.regions[region] = (base, size)

        for i, (region, offset) in sorted(self.placed.items()):
            shdr = self.sechdrs[i]
            dest = (self.regions[region][0] + offset) & self.cls.addr_mask
            if int(shdr["sh_type"]) != SHT_NOBITS and int(shdr["sh_size"]):
                self.memory.write(dest, self.memory.read(int(shdr["sh_addr"]), int(shdr["sh_size"])))
            self.sechdrs["sh_addr"][i] = dest & self.cls.addr_mask

    def region_base(self, region: str) -> int:
        """The environment's base; by default init follows core after a guard page."""
        base = self.env.regions.get(region)
        if base is not None:
            return base
        if region == "init":
            core_base, core_size = self.regions["core"]
            page = self.profile.page_size
            return core_base + (core_size + page - 1) // page * page + page
        raise LayoutError(f"the environment gives no base address for region {region}", errno="ENOMEM")

    # ---- simplify_symbols ----------------------------------------------------------
    def after_layout(self) -> None:
        """What 6.1 does between move_module and simplify_symbols that a vector can see."""
        if self.profile.enabled("CONFIG_MODULE_SIG") and not self.sig_ok:
            self.warn_once("unsigned", 5, "%s: module verification failed: signature and/or required key "
                           "missing - tainting kernel\n", self.modname)
            self.add_taint("E", lockdep_unreliable=False)

    def simplify_symbols(self) -> None:
        addr, count = self.symtab()
        syms = self.memory.table(addr, count, self.cls.sym)
        values = syms["st_value"].astype(np.uint64)
        shndx = syms["st_shndx"].astype(np.int64)
        # Defined symbols in real sections: one vector add over the whole table.
        bases = np.zeros(count, dtype=np.uint64)
        ordinary = ~np.isin(shndx, (SHN_UNDEF, SHN_COMMON, SHN_ABS, SHN_LIVEPATCH)) & (shndx < self.shnum)
        ordinary[:1] = False
        bases[ordinary] = self.sechdrs["sh_addr"].astype(np.uint64)[shndx[ordinary]]
        pcpu = self.index["pcpu"]
        if pcpu:      # symbols in the per-cpu section point into the per-cpu allocation
            bases[ordinary & (shndx == pcpu)] = np.uint64(self.env.regions.get("percpu", 0))
        values = (values + bases) & np.uint64(self.cls.addr_mask)
        special = np.flatnonzero(~ordinary)
        self.versions_held = None           # __versions is read once for the whole loop
        try:
            err = self.resolve_special(syms, values, shndx, special[special > 0].tolist())
        finally:
            del self.versions_held
        out = syms.copy()
        out["st_value"] = values.astype(out["st_value"].dtype)
        self.memory.write(addr, out.tobytes())
        if err is not None:
            raise err

    def resolve_special(self, syms: np.ndarray, values: np.ndarray, shndx: np.ndarray,
                        special: list[int]) -> LoadError | None:
        """simplify_symbols' switch for the symbols not in an ordinary section (the last error wins)."""
        err: LoadError | None = None
        for k in special:
            sh = int(shndx[k])
            name = self.symname(int(syms["st_name"][k])).decode("latin-1")
            if sh == SHN_COMMON:
                if name.startswith("__gnu_lto"):
                    continue
                self.klog(4, "%s: please compile with -fno-common\n", self.modname)
                err = SymbolError(f"{name} is a common symbol (SHN_COMMON)")
            elif sh in (SHN_ABS, SHN_LIVEPATCH):
                continue
            elif sh == SHN_UNDEF:
                resolved = self.resolve_symbol(name, int(syms["st_info"][k]) >> 4 == STB_WEAK)
                if isinstance(resolved, LoadError):
                    err = resolved
                elif resolved is not None:
                    values[k] = resolved
                    self.undefined[name] = resolved
                else:
                    self.undefined[name] = int(values[k])
            else:
                self.klog(3, "%s: Symbol %s has an invalid section index %u (max %u)\n",
                          self.modname, name, sh, self.shnum - 1)
                err = SymbolError(f"{name}: st_shndx {sh:#x} is not a section (e_shnum {self.shnum})")
        return err

    def resolve_symbol(self, name: str, weak: bool) -> int | LoadError | None:
        ksym = self.env.symbols.get(name)
        if ksym is not None and ksym.gpl_only and not self.gpl_ok:
            ksym = None                         # GPL-only exports are invisible to it
        if ksym is not None:
            if not self.check_version(name, ksym.crc):
                self.klog(4, "%s: Unknown symbol %s (err %d)\n", self.modname, name, -22)
                return SymbolError(f"{name}: modversions CRC check failed", errno="EINVAL")
            if ksym.namespace and ksym.namespace not in self.imported_namespaces():
                self.klog(3, "%s: module uses symbol (%s) from namespace %s, but does not import it.\n",
                          self.modname, name, ksym.namespace)
                self.klog(4, "%s: Unknown symbol %s (err %d)\n", self.modname, name, -22)
                return SymbolError(f"{name}: namespace {ksym.namespace} not imported", errno="EINVAL")
            return ksym.address
        if weak or name in self.arch.ignore_undefined:
            return None
        self.klog(4, "%s: Unknown symbol %s (err %d)\n", self.modname, name, -2)
        return SymbolError(f"undefined symbol {name} is not exported by the kernel", errno="ENOENT")

    def imported_namespaces(self) -> set[str]:
        info = self.sechdrs[self.index["info"]]
        data = self.buf[int(info["sh_offset"]):int(info["sh_offset"]) + int(info["sh_size"])] \
            if self.index["info"] else b""
        return {e[len(b"import_ns="):].decode("latin-1") for e in data.split(b"\0") if e.startswith(b"import_ns=")}

    # ---- apply_relocations ---------------------------------------------------------
    def apply_relocations(self) -> None:
        # The generic path's sections are applied together (apply_sections: as if one by one), up
        # to the next section an arch hook applies or the loop rejects; headers are read as lists,
        # again after each hook (which may change them).
        batch: list[tuple[int, int, int, int]] = []
        cols: list[list[int]] | None = None
        for i in range(1, self.shnum):
            if cols is None:
                cols = [self.sechdrs[f].tolist() for f in ("sh_info", "sh_flags", "sh_type", "sh_addr", "sh_size")]
            info, flags, types, addrs, sizes = cols
            infosec = info[i]
            if infosec >= self.shnum or not flags[infosec] & SHF_ALLOC:
                continue
            sh_type = types[i]
            if flags[i] & SHF_RELA_LIVEPATCH:
                continue            # klp_apply_section_relocs: livepatch modules only
            if sh_type not in (SHT_REL, SHT_RELA):
                continue
            if (sh_type == SHT_RELA) != self.arch.rela:
                apply_sections(self, batch)
                self.klog(3, "module %s: REL relocation unsupported\n", self.modname)
                raise RelocationError(f"section {i}: {'RELA' if sh_type == SHT_RELA else 'REL'} "
                                      f"relocations are not supported on {self.arch.name}")
            if self.arch.apply is not None:
                apply_sections(self, batch)
                batch = []
                self.arch.apply(self, i, infosec)
                cols = None
            else:
                batch.append((i, addrs[i], sizes[i], infosec))
        apply_sections(self, batch)

    # ---- results -------------------------------------------------------------------
    def layout_result(self) -> dict[str, Placement]:
        return {self.section_key(i): Placement(region, offset, self.regions[region][0] + offset)
                for i, (region, offset) in sorted(self.placed.items())}

    def sections_result(self) -> dict[str, bytes]:
        out = {}
        for i in sorted(self.placed):
            shdr = self.sechdrs[i]
            if int(shdr["sh_type"]) == SHT_NOBITS and self.secname(i) not in self.arch.written_sections:
                continue
            out[self.section_key(i)] = self.memory.read(int(shdr["sh_addr"]), int(shdr["sh_size"]))
        return out

    def entry_points(self) -> tuple[int, int]:
        """init and exit as the relocated struct module holds them."""
        mod = self.section_addr(self.index["mod"])
        word = self.cls.bits // 8
        ms = self.profile.module_struct
        size = int(self.sechdrs[self.index["mod"]]["sh_size"])
        def field(off: int) -> int:
            return self.memory.read_u(mod + off, word) if off + word <= size else 0
        return field(ms["init"]), field(ms["exit"])


STAGES = ("copy_and_check", "layout_and_allocate", "simplify_symbols", "apply_relocations")


def load(request: Request) -> Result:
    """Run a module through load_module and return what the kernel would make of it."""
    ld = Load(request)
    phase = "check"
    try:
        ld.copy_and_check()
        phase = "layout"
        ld.layout_and_allocate()
        ld.after_layout()
        phase = "resolve"
        ld.simplify_symbols()
        phase = "relocate"
        ld.apply_relocations()
    except LoadError as e:
        return Result("rejected", errno=e.errno, phase=e.phase, log=ld.log, detail=e.detail)
    except MemoryFault as f:
        return Result("faulted", phase=phase, log=ld.log,
                      fault=Fault(phase, getattr(f, "kind", f"{f.access}-outside-memory"), f.address, str(f)),
                      detail=str(f))
    result = Result("loaded", layout=ld.layout_result(), regions=dict(ld.regions),
                    symbols=dict(sorted(ld.undefined.items())), sections=ld.sections_result(), log=ld.log)
    if request.run_init:
        from .init import run_init_and_exit
        run_init_and_exit(ld, result)
    return result
