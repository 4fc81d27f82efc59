"""The kernel's view of memory during a load: the temporary file copy and the module regions.

Sections' `sh_addr` point into these areas, as in the kernel (rewrite_section_headers
points them into the copy, move_module into the regions), and every read or write the
loader makes goes through here, so an access outside them is a clean fault, never a
Python error. Areas are numpy arrays: zero-filled regions cost nothing until written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Where the temporary copy of the file lives (the x86_64 vmalloc area; any address
# outside the module regions would do: no observable depends on it).
COPY_BASE = 0xFFFFC90000000000


class MemoryFault(Exception):
    def __init__(self, address: int, size: int, access: str):
        super().__init__(f"{access} of {size} bytes at {address:#x} is outside every mapped area")
        self.address = address
        self.size = size
        self.access = access


class KernelBug(MemoryFault):
    """A BUG_ON the kernel hits while loading: it oopses in the middle of load_module (no errno, no
    return). Arch code raises it where 6.1 would; the result is `faulted` with kind `kernel-bug`."""
    kind = "kernel-bug"

    def __init__(self, address: int, detail: str) -> None:
        super().__init__(address, 0, "bug")
        self.args = (detail,)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


@dataclass
class Area:
    name: str
    base: int
    data: np.ndarray   # uint8

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def contains(self, address: int, size: int) -> bool:
        return self.base <= address and address + size <= self.end


class Memory:
    def __init__(self) -> None:
        self.areas: list[Area] = []

    def map(self, name: str, base: int, data: np.ndarray) -> Area:
        area = Area(name, base, data)
        self.areas.append(area)
        return area

    def area(self, name: str) -> Area | None:
        for a in self.areas:
            if a.name == name:
                return a
        return None

    def locate(self, address: int, size: int, access: str = "read") -> tuple[Area, int]:
        for a in self.areas:
            if a.contains(address, size):
                return a, address - a.base
        raise MemoryFault(address, size, access)

    def read(self, address: int, size: int) -> bytes:
        if size == 0:
            return b""
        a, off = self.locate(address, size)
        return a.data[off:off + size].tobytes()

    def read_u(self, address: int, size: int) -> int:
        return int.from_bytes(self.read(address, size), "little")

    def write(self, address: int, data: bytes) -> None:
        if not data:
            return
        a, off = self.locate(address, len(data), "write")
        a.data[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def table(self, address: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` records at `address` as a copy (bulk read of a whole table)."""
        size = count * dtype.itemsize
        if size == 0:
            return np.zeros(0, dtype=dtype)
        a, off = self.locate(address, size)
        return a.data[off:off + size].copy().view(dtype)

    def cstring(self, address: int, limit: int = 4096) -> bytes:
        """NUL-terminated bytes at address, stopping at the end of its area or at `limit`."""
        a, off = self.locate(address, 1)
        chunk = a.data[off:off + limit].tobytes()
        nul = chunk.find(b"\0")
        return chunk if nul < 0 else chunk[:nul]
