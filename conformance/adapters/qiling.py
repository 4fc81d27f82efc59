"""qiling as an implementation under test: it emulates Linux kernel modules on unicorn.

qiling (PyPI `qiling`, 1.4.6) loads a `.ko` with its own ELF loader (placement, relocation,
imports bound to its kernel-API hooks), runs `init_module` and prints what the module's
printk calls print. It is measured on what it is built for: the module's log lines and init's
return value. The only help it gets: 6.1 modules call `_printk` (printk was renamed in 5.15)
and `__x86_return_thunk`, names qiling does not know, so they are bound to qiling's own
`printk` hook and to a no-op; each printed line is read back from qiling's stdout
("KERN_INFO text") as `<6>text`.

It produces status (loaded, or faulted when the emulation stops on an error), log (module
lines only: qiling prints none of the kernel's) and init_return. Install with `tox -e qiling`.
"""
from __future__ import annotations

import gc
import io
import os
import tempfile
from typing import Any

from ..adapter import Adapter
from ..model import Request

LEVELS = ("KERN_EMERGE", "KERN_ALERT", "KERN_CRIT", "KERN_ERR", "KERN_WARNING", "KERN_NOTICE", "KERN_INFO",
          "KERN_DEBUG", "KERN_DEFAULT", "KERN_CONT")
RETURN_REGISTER = {"x86_64": "rax", "i386": "eax", "arm64": "x0", "arm": "r0"}


class _Capture(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)

    def fileno(self) -> int:
        raise OSError("no file descriptor")


class QilingAdapter(Adapter):
    name = "qiling"
    description = "qiling 1.4.6 (PyPI): its .ko loader and kernel-API hooks, running init on unicorn"
    arches = frozenset(RETURN_REGISTER)
    produces = frozenset({"status", "log", "init_return"})
    log_sources = frozenset({"module"})

    def load(self, request: Request) -> dict[str, Any]:
        from qiling import Qiling
        from qiling.const import QL_INTERCEPT, QL_VERBOSE
        from qiling.os.linux.kernel_api import kernel_api

        with tempfile.TemporaryDirectory(prefix="koconform-qiling-") as tmp:
            path = os.path.join(tmp, "module.ko")
            with open(path, "wb") as f:
                f.write(request.ko)
            try:
                ql = Qiling([path], tmp, verbose=QL_VERBOSE.DISABLED)
            except Exception as e:  # noqa: BLE001 - qiling refusing the file is its answer
                return {"status": "rejected", "log": [], "detail": f"{type(e).__name__}: {e}"}
            out = _Capture()
            ql.os.stdout = out
            ql.os.set_api("_printk", kernel_api.hook_printk, QL_INTERCEPT.CALL)
            ql.os.set_api("__x86_return_thunk", kernel_api.hook___fentry__, QL_INTERCEPT.CALL)
            status, detail = "loaded", ""
            try:
                ql.run(count=1_000_000)
            except Exception as e:  # noqa: BLE001 - the emulation stopping on an error is a fault
                status, detail = "faulted", f"{type(e).__name__}: {e}"
            ret = ql.arch.regs.read(RETURN_REGISTER[request.arch])
            del ql                  # each instance holds a unicorn engine and its maps: free them now
            gc.collect()
        bits = 32
        value = ret & ((1 << bits) - 1)
        init_return = value - (1 << bits) if value >> (bits - 1) else value
        result: dict[str, Any] = {"status": status, "log": _lines(bytes(out.data)), "detail": detail}
        if status == "loaded":
            result["init_return"] = init_return
        return result


def _lines(text: bytes) -> list[dict[str, Any]]:
    """qiling's printk output ("KERN_INFO text\\n"...) as log records."""
    records = []
    for line in text.decode("utf-8", "replace").splitlines():
        name, _, rest = line.partition(" ")
        level = LEVELS.index(name) if name in LEVELS[:8] else 4
        records.append({"level": level, "source": "module", "text": rest})
    return records
