"""The kernel's reasons for refusing a module, as one exception family.

Each carries the errno the syscall returns, the phase it fails in, and a detail line
written for a loader author (never compared: vectors pin errno and phase only).
"""
from __future__ import annotations


class LoadError(Exception):
    errno = "ENOEXEC"
    phase = "check"

    def __init__(self, detail: str, *, errno: str | None = None, phase: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if errno is not None:
            self.errno = errno
        if phase is not None:
            self.phase = phase


class ElfCheckError(LoadError):
    """copy_and_check: the ELF or the module structure is not acceptable."""
    phase = "check"


class ModinfoError(LoadError):
    """vermagic, modversions, licence: checked where 6.1 checks them."""


class LayoutError(LoadError):
    phase = "layout"


class SymbolError(LoadError):
    phase = "resolve"


class RelocationError(LoadError):
    phase = "relocate"

    def __init__(self, detail: str, *, section: str = "", offset: int = 0, rtype: str = "",
                 value: int | None = None, allowed: str = "", errno: str | None = None):
        super().__init__(detail, errno=errno)
        self.section = section
        self.offset = offset
        self.rtype = rtype
        self.value = value
        self.allowed = allowed


class InitError(LoadError):
    """init returned a negative errno: the load fails with it."""
    phase = "init"
