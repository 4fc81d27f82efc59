"""The kernel functions a module's code may call, emulated in Python (Linux 6.1 semantics).

One registry: every entry names the exported symbol and declares its C parameters; the
emulator reads that many arguments from the argument registers (then the stack), calls
the implementation with a `Machine` (memory, registers, log) and either sets the return
register and returns to the caller, or, for a `Jump`, continues at another address.
An implementation returns an int (the return value), None (return, registers untouched)
or a Jump. A bad access raises `EmuFault`, which becomes the load's fault, as an oops
inside the kernel function would end the load.

Arch-specific entry points (x86 return and indirect-branch thunks, `__fentry__`) are built
here too, and each arch record picks the ones its kernel exports.
Written from the kernel's behaviour; no kernel code or comments are carried over.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from . import printk

GFP_ZERO = 0x100                       # ___GFP_ZERO (include/linux/gfp_types.h, 6.1)
ZERO_SIZE_PTR = 16                     # what kmalloc(0) returns
KMALLOC_MAX_CACHE_SIZE = 8192          # SLUB: 1 << (PAGE_SHIFT + 1); larger: page allocator
KMALLOC_MAX_SIZE = 4 << 20             # 1 << (MAX_ORDER + PAGE_SHIFT - 1) with MAX_ORDER 11
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
NR_KMALLOC_TYPES = 4                   # NORMAL, CGROUP, RECLAIM, DMA (ZONE_DMA, MEMCG_KMEM)
KMALLOC_SHIFT_HIGH = 13                # SLUB, 4 KiB pages
FAKE_CACHE_BASE = 0xFFFF888003000000   # stand-in struct kmem_cache pointers (never mapped)
INT_MAX = (1 << 31) - 1
PAGE = 4096


class EmuFault(Exception):
    """An access or event that ends the module's code (the kernel would oops or hang)."""

    def __init__(self, kind: str, address: int | None, detail: str) -> None:
        super().__init__(f"{kind} at {address if address is None else hex(address)}: {detail}")
        self.kind, self.address, self.detail = kind, address, detail


@dataclass(frozen=True)
class Jump:
    """Continue at `target` without returning (an indirect-branch thunk)."""
    target: int


Outcome = int | None | Jump


class Memory(Protocol):
    """Virtual memory as the module sees it; a bad access raises EmuFault."""
    def read(self, address: int, size: int) -> bytes: ...
    def write(self, address: int, data: bytes) -> None: ...
    def accessible(self, address: int, size: int, write: bool) -> int: ...   # bytes usable from address
    def chunks(self, address: int) -> Iterator[bytes]: ...                   # to each page's end


class Machine(Protocol):
    """What a kernel function sees of the emulated machine."""
    word: int
    heap: Heap
    pair_align: bool                    # 64-bit arguments start at an even slot (arm AAPCS)

    @property
    def memory(self) -> Memory: ...
    def arg(self, index: int) -> int: ...               # the index-th integer argument
    def register(self, name: str) -> int: ...
    def printk(self, formatted: printk.Formatted) -> int: ...


Impl = Callable[[Machine, list[int]], Outcome]


@dataclass(frozen=True)
class KernelFunction:
    name: str
    params: tuple[str, ...]            # C declarations of the named parameters
    impl: Impl
    variadic: bool = False


REGISTRY: dict[str, KernelFunction] = {}


def kernel_function(name: str, *params: str, variadic: bool = False) -> Callable[[Impl], Impl]:
    def register(impl: Impl) -> Impl:
        REGISTRY[name] = KernelFunction(name, params, impl, variadic)
        return impl
    return register


# ---- strings and memory ----------------------------------------------------------------
def cstring(memory: Memory, address: int, limit: int | None = None) -> bytes:
    """Bytes up to the NUL; faults only on a byte it must read, as a byte loop would."""
    out = bytearray()
    for chunk in memory.chunks(address):
        nul = chunk.find(0)
        out += chunk if nul < 0 else chunk[:nul]
        if nul >= 0 or (limit is not None and len(out) >= limit):
            break
    return bytes(out if limit is None else out[:limit])


def copy(m: Memory, dst: int, src: int, n: int) -> None:
    """A forward copy: it stops at the first byte it cannot read or write (a read first)."""
    readable, writable = m.accessible(src, n, False), m.accessible(dst, n, True)
    done = min(readable, writable)
    m.write(dst, m.read(src, done))
    if done < n:
        if readable <= writable:
            raise EmuFault("read-fault", src + readable, f"copy of {n:#x} bytes from {src:#x}")
        raise EmuFault("write-fault", dst + writable, f"copy of {n:#x} bytes to {dst:#x}")


@kernel_function("memset", "void *s", "int c", "size_t count")
def memset(m: Machine, a: list[int]) -> Outcome:
    s, c, n = a
    writable = m.memory.accessible(s, n, True)
    m.memory.write(s, bytes([c & 0xFF]) * writable)
    if writable < n:
        raise EmuFault("write-fault", s + writable, f"memset of {n:#x} bytes at {s:#x}")
    return s


@kernel_function("memcpy", "void *dest", "const void *src", "size_t count")
def memcpy(m: Machine, a: list[int]) -> Outcome:
    copy(m.memory, a[0], a[1], a[2])
    return a[0]


@kernel_function("memmove", "void *dest", "const void *src", "size_t count")
def memmove(m: Machine, a: list[int]) -> Outcome:
    copy(m.memory, a[0], a[1], a[2])      # whole source read before writing: overlap-safe
    return a[0]


@kernel_function("strlen", "const char *s")
def strlen(m: Machine, a: list[int]) -> Outcome:
    return len(cstring(m.memory, a[0]))


def _bytes(m: Machine, address: int) -> Iterator[int]:
    for chunk in m.memory.chunks(address):
        yield from chunk


@kernel_function("strcmp", "const char *cs", "const char *ct")
def strcmp(m: Machine, a: list[int]) -> Outcome:
    """lib/string.c: -1, 0 or 1 (x86_64 has no arch strcmp); reads stop at the first difference."""
    for c1, c2 in zip(_bytes(m, a[0]), _bytes(m, a[1])):
        if c1 != c2:
            return -1 if c1 < c2 else 1
        if not c1:
            return 0
    return 0


# ---- printk and snprintf ---------------------------------------------------------------
class VarArgs:
    """printk.ArgSource over a variadic call's arguments: registers, then the stack. A bad
    %s pointer faults: the kernel's vsprintf would oops on it."""

    def __init__(self, m: Machine, first: int) -> None:
        self.m, self.index = m, first

    def next_int(self, size: int, signed: bool) -> int:
        value = 0
        if size > self.m.word and self.m.pair_align:
            self.index += self.index & 1
        for k in range(max(size // self.m.word, 1)):   # wider than a slot (32-bit long long): low slot first
            value |= (self.m.arg(self.index) & ((1 << self.m.word * 8) - 1)) << (k * self.m.word * 8)
            self.index += 1
        value &= (1 << size * 8) - 1
        return value - (1 << size * 8) if signed and value >> (size * 8 - 1) else value

    def read_cstring(self, address: int, limit: int) -> bytes | None:
        return cstring(self.m.memory, address, limit)

    def read_bytes(self, address: int, n: int) -> bytes | None:
        return self.m.memory.read(address, n)


def format_at(m: Machine, fmt: int, first_vararg: int) -> printk.Formatted:
    return printk.vsprintf(cstring(m.memory, fmt), VarArgs(m, first_vararg), pointer_bits=m.word * 8)


def printk_text_len(text: str) -> int:
    """vprintk_store's return value: the stored text length (cut to the record size, its
    trailing newline and its level/KERN_CONT prefix removed)."""
    kept = text[:min(len(text) + 1, printk.LOG_LINE_MAX) - 1]
    kept = kept.removesuffix("\n")
    return len(printk.parse_prefix(kept.encode("latin-1"))[2])


@kernel_function("_printk", "const char *fmt", variadic=True)
def _printk(m: Machine, a: list[int]) -> Outcome:
    return m.printk(format_at(m, a[0], 1))


@kernel_function("snprintf", "char *buf", "size_t size", "const char *fmt", variadic=True)
def snprintf(m: Machine, a: list[int]) -> Outcome:
    buf, size, fmt = a
    if size > INT_MAX:
        return 0            # vsnprintf's WARN_ON_ONCE (a stack dump, not reproduced), then 0
    text = format_at(m, fmt, 3).text.encode("latin-1")
    if size:
        m.memory.write(buf, text[:size - 1] + b"\0")
    return len(text)


# ---- slab ------------------------------------------------------------------------------
def size_class(size: int) -> int:
    """The object size kmalloc hands out (kmalloc_size_roundup)."""
    for s in KMALLOC_SIZES:
        if size <= s:
            return s
    return PAGE << max((size - 1) // PAGE, 0).bit_length()


class Heap:
    """kmalloc memory: size classes, freed objects reused last-in first-out as SLUB does.
    Fresh memory reads as zero (the kernel's would be whatever was there)."""

    def __init__(self, base: int, size: int) -> None:
        self.base, self.end, self.next = base, base + size, base
        self.live: dict[int, int] = {}
        self.free: dict[int, list[int]] = {}

    def alloc(self, m: Machine, size: int, flags: int) -> int:
        if size == 0:
            return ZERO_SIZE_PTR
        if size > KMALLOC_MAX_SIZE:
            return 0        # the page allocator's WARN (order >= MAX_ORDER) is not reproduced
        rounded = size_class(size)
        address = self.free.get(rounded, []).pop() if self.free.get(rounded) else self._carve(rounded)
        if address:
            self.live[address] = rounded
            if flags & GFP_ZERO:
                m.memory.write(address, bytes(rounded))
        return address

    def _carve(self, rounded: int) -> int:
        align = min(rounded & -rounded, PAGE)
        address = (self.next + align - 1) & -align
        if address + rounded > self.end:
            return 0
        self.next = address + rounded
        return address

    def release(self, address: int) -> None:
        if address <= ZERO_SIZE_PTR:
            return          # ZERO_OR_NULL_PTR
        rounded = self.live.pop(address, None)
        if rounded is None:
            raise EmuFault("invalid-free", address, "kfree of a pointer kmalloc did not return")
        self.free.setdefault(rounded, []).append(address)


@kernel_function("__kmalloc", "size_t size", "gfp_t flags")
def __kmalloc(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[0], a[1] & 0xFFFFFFFF)


@kernel_function("__kmalloc_node", "size_t size", "gfp_t flags", "int node")
def __kmalloc_node(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[0], a[1] & 0xFFFFFFFF)


@kernel_function("kmalloc_large", "size_t size", "gfp_t flags")
def kmalloc_large(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[0], a[1] & 0xFFFFFFFF)


@kernel_function("kmalloc_large_node", "size_t size", "gfp_t flags", "int node")
def kmalloc_large_node(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[0], a[1] & 0xFFFFFFFF)


@kernel_function("kmalloc_trace", "struct kmem_cache *s", "gfp_t flags", "size_t size")
def kmalloc_trace(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[2], a[1] & 0xFFFFFFFF)


@kernel_function("kmalloc_node_trace", "struct kmem_cache *s", "gfp_t gfpflags", "int node", "size_t size")
def kmalloc_node_trace(m: Machine, a: list[int]) -> Outcome:
    return m.heap.alloc(m, a[3], a[1] & 0xFFFFFFFF)


@kernel_function("kfree", "const void *object")
def kfree(m: Machine, a: list[int]) -> Outcome:
    m.heap.release(a[0])
    return None


# ---- kernel data objects a module reads directly -----------------------------------------
def kmalloc_caches(word: int) -> bytes:
    """struct kmem_cache *kmalloc_caches[NR_KMALLOC_TYPES][KMALLOC_SHIFT_HIGH + 1]: the
    inline kmalloc() reads a cache from here and passes it to kmalloc_trace, which only
    needs the size. Index 0 (no cache) is NULL; the others are distinct stand-ins."""
    out = bytearray()
    for kind in range(NR_KMALLOC_TYPES):
        for index in range(KMALLOC_SHIFT_HIGH + 1):
            value = 0 if index == 0 else FAKE_CACHE_BASE + (kind * 16 + index) * 0x100
            out += (value & ((1 << 8 * word) - 1)).to_bytes(word, "little")     # 32-bit: the low word
    return bytes(out)


KERNEL_DATA: dict[str, Callable[[int], bytes]] = {"kmalloc_caches": kmalloc_caches}


def kernel_data_pages(symbols: dict[str, int], word: int, page: int) -> dict[int, bytes]:
    """The pages holding the KERNEL_DATA objects the environment exports (zero elsewhere)."""
    pages: dict[int, bytearray] = {}
    for name, build in KERNEL_DATA.items():
        address = symbols.get(name)
        if address is None:
            continue
        for k, byte in enumerate(build(word)):
            vpage = (address + k) & -page
            pages.setdefault(vpage, bytearray(page))[address + k - vpage] = byte
    return {vpage: bytes(content) for vpage, content in sorted(pages.items())}


# ---- arch entry points -----------------------------------------------------------------
def _return(m: Machine, a: list[int]) -> Outcome:
    return None


def returning(name: str) -> KernelFunction:
    """A function that only returns: `__fentry__` (6.1 turns the calls into NOPs at load
    anyway), `__x86_return_thunk` (reached by jmp; it is the caller's `ret`)."""
    return KernelFunction(name, (), _return)


def indirect_thunk(name: str, register: str) -> KernelFunction:
    """__x86_indirect_thunk_<reg>: reached by call or jmp, continues at the register's value."""
    return KernelFunction(name, (), lambda m, a: Jump(m.register(register)))


def x86_functions(thunk_registers: Iterable[str]) -> dict[str, KernelFunction]:
    fns = [returning("__fentry__"), returning("__x86_return_thunk")]
    fns += [indirect_thunk(f"__x86_indirect_thunk_{r}", r) for r in thunk_registers]
    return {f.name: f for f in fns}
