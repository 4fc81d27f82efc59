"""The contract's data types: what a loader is asked (Request) and what it answers (Result).

One shape for every consumer: ``koconform load --json``, the Python adapter API, the
runner's comparison and, later, the subprocess protocol. Addresses travel as
lowercase ``0x…`` strings without padding; errno as the symbolic Linux name.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import Any

ARCHES = ("x86_64", "i386", "arm64", "arm", "riscv64")
PHASES = ("check", "layout", "resolve", "relocate", "init", "exit")
STATUSES = ("loaded", "rejected", "faulted")
# Every field of a result an implementation may declare it produces.
RESULT_FIELDS = ("status", "errno", "phase", "layout", "regions", "symbols", "sections",
                 "log", "init_return", "exit_log", "fault")

# Linux's generic errno numbers (include/uapi/asm-generic/errno-base.h, errno.h).
_LINUX_ERRNO = {
    "EPERM": 1, "ENOENT": 2, "EINTR": 4, "ENOEXEC": 8, "EBADF": 9, "EAGAIN": 11,
    "ENOMEM": 12, "EFAULT": 14, "EBUSY": 16, "EEXIST": 17, "ENODEV": 19, "EINVAL": 22,
    "ERANGE": 34, "ENOSYS": 38, "ENODATA": 61, "ENOPKG": 65, "EBADMSG": 74,
    "EOPNOTSUPP": 95, "ENOKEY": 126, "EKEYREJECTED": 129,
}
_ERRNO_NAMES = {number: name for name, number in _LINUX_ERRNO.items()}


def errno_name(number: int) -> str:
    """Symbolic name of a positive Linux errno, or its decimal string when it has none."""
    number = abs(number)
    if number in _ERRNO_NAMES:
        return _ERRNO_NAMES[number]
    name = _errno.errorcode.get(number)
    return name if name else str(number)


def errno_number(name: str) -> int:
    if name in _LINUX_ERRNO:
        return _LINUX_ERRNO[name]
    if name.isdigit():
        return int(name)
    return int(getattr(_errno, name))


def hexaddr(value: int) -> str:
    return hex(value)


def parse_int(value: int | str) -> int:
    return value if isinstance(value, int) else int(value, 0)


@dataclass(frozen=True)
class KernelSymbol:
    """One export the running kernel offers (vmlinux or an already loaded module)."""
    name: str
    address: int
    crc: int | None = None
    gpl_only: bool = False
    namespace: str = ""


@dataclass
class Environment:
    """What the kernel a module is loaded into looks like: exports and region bases."""
    symbols: dict[str, KernelSymbol]
    regions: dict[str, int]            # region name -> base address ("core", "init")

    def to_json(self) -> dict[str, Any]:
        return {
            "symbols": {name: {"address": hexaddr(s.address),
                               "crc": None if s.crc is None else f"0x{s.crc:08x}",
                               "gpl_only": s.gpl_only, "namespace": s.namespace}
                        for name, s in sorted(self.symbols.items())},
            "regions": {name: hexaddr(base) for name, base in self.regions.items()},
        }


@dataclass
class Profile:
    """A kernel build: its configuration and the facts about it a loader needs."""
    name: str                      # "linux-6.1"
    arch: str
    config: dict[str, Any]         # CONFIG_* options that change loader behaviour
    page_size: int
    vermagic: str
    module_struct: dict[str, int]  # size, align, name, init, exit offsets
    facts: dict[str, Any] = field(default_factory=dict)   # other per-boot facts
    build: dict[str, Any] = field(default_factory=dict)   # how kbuild builds modules for it

    def enabled(self, option: str) -> bool:
        return self.config.get(option) in (True, "y", "m")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "config": dict(self.config),
                "page_size": self.page_size, "vermagic": self.vermagic,
                "module_struct": dict(self.module_struct), "facts": dict(self.facts),
                "build": dict(self.build)}


@dataclass
class Request:
    """One load: the module's bytes and everything about the kernel it meets."""
    ko: bytes
    arch: str
    profile: Profile
    environment: Environment
    name: str = "module.ko"          # for messages only
    run_init: bool = True            # False: stop after relocation (no emulation)
    # Peer adapters only (static linkers, conformance/peers.py): the vector's layout and symbol
    # values, which a static link cannot decide by itself. Never given to an implementation.
    given: Any = None


@dataclass
class LogRecord:
    level: int
    source: str                      # "kernel" or "module"
    text: str
    pattern: str | None = None       # regex for non-reproducible parts (hashed %p)

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "source": self.source, "text": self.text}

    def render(self) -> str:
        return f"<{self.level}>{self.text}"


@dataclass
class Fault:
    phase: str
    kind: str
    address: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "kind": self.kind,
                "address": None if self.address is None else hexaddr(self.address)}


@dataclass
class Placement:
    region: str
    offset: int
    address: int


@dataclass
class Result:
    status: str
    errno: str | None = None
    phase: str | None = None
    layout: dict[str, Placement] | None = None
    regions: dict[str, tuple[int, int]] | None = None    # name -> (address, size)
    symbols: dict[str, int] | None = None
    sections: dict[str, bytes] | None = None
    log: list[LogRecord] = field(default_factory=list)
    init_return: int | None = None
    exit_log: list[LogRecord] | None = None
    fault: Fault | None = None
    detail: str = ""                 # human explanation (lld-style), never compared

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "errno": self.errno,
            "phase": self.phase,
            "layout": None if self.layout is None else {
                name: {"region": p.region, "offset": hexaddr(p.offset), "address": hexaddr(p.address)}
                for name, p in self.layout.items()},
            "regions": None if self.regions is None else {
                name: {"address": hexaddr(a), "size": hexaddr(s)} for name, (a, s) in self.regions.items()},
            "symbols": None if self.symbols is None else {
                name: hexaddr(v) for name, v in self.symbols.items()},
            "sections": None if self.sections is None else {
                name: data.hex() for name, data in self.sections.items()},
            "log": [r.to_json() for r in self.log],
            "init_return": self.init_return,
            "exit_log": None if self.exit_log is None else [r.to_json() for r in self.exit_log],
            "fault": None if self.fault is None else self.fault.to_json(),
        }
