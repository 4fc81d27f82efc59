"""Linux 6.1 vsprintf (lib/vsprintf.c) and printk record assembly (kernel/printk/printk.c).

`vsprintf` formats a C format string the way the kernel does, quirks included: `number()`
prints a zero even at precision 0, `%#x` of zero is `0x0`, a negative `*` precision is 0,
`%hhd` casts the int argument, an unknown conversion (or `%n`) ends the output, and `%p`
hashes. A hashed pointer is the one thing a kernel run cannot reproduce, so `Formatted`
carries, next to the text, a regular expression every conforming output matches.

`LogBuffer` turns successive printk calls into log records as 6.1's vprintk_store does:
level prefixes, KERN_CONT continuation, and the LOG_LINE_MAX truncation.
Written from the kernel's behaviour; no kernel code or comments are carried over.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Protocol, Sequence

KERN_SOH = b"\x01"
DEFAULT_MESSAGE_LOGLEVEL = 4          # CONFIG_MESSAGE_LOGLEVEL_DEFAULT
LOG_LINE_MAX = 1024 - 32              # CONSOLE_LOG_MAX - PREFIX_MAX
PAGE_SIZE = 4096
MAX_ERRNO = 4095
FIELD_WIDTH_MAX = (1 << 23) - 1       # printf_spec.field_width is a 24-bit bitfield
PRECISION_MAX = (1 << 15) - 1         # printf_spec.precision is a 16-bit bitfield
HEX_DUMP_MAX = 64                     # %*ph prints at most 64 bytes
STRING_SCAN_LIMIT = 1 << 16           # emulator bound on an unbounded %s read
_PREFIX_BUF = 8                       # vprintk_store sniffs the level from 8 bytes (7 + NUL)

SIGN, LEFT, PLUS, SPACE, ZEROPAD, SMALL, SPECIAL = 1, 2, 4, 8, 16, 32, 64
_FLAGS = {"-": LEFT, "+": PLUS, " ": SPACE, "#": SPECIAL, "0": ZEROPAD}
_DIGITS = "0123456789"
_MASK64 = (1 << 64) - 1
HEX_ATOM = "[0-9a-f]"
OPEN_ATOM = r"[\s\S]"                 # atoms starting with this are open-ended
WILD = OPEN_ATOM + "*"

# errno names as lib/errname.c knows them on x86 (asm-generic numbering); "-" marks a gap
# (41 and 58 are the EWOULDBLOCK/EDEADLOCK aliases, 520 is unassigned).
_ERRNO_LOW = """EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM
EACCES EFAULT ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY
ETXTBSY EFBIG ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS
ENOTEMPTY ELOOP - ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT
EBADE EBADR EXFULL ENOANO EBADRQC EBADSLT - EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG
EREMOTE ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD
EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK
EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP
EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ENETRESET
ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN ETOOMANYREFS ETIMEDOUT
ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL
EISNAM EREMOTEIO EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED
EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"""
_ERRNO_HIGH = """ERESTARTSYS ERESTARTNOINTR ERESTARTNOHAND ENOIOCTLCMD ERESTART_RESTARTBLOCK
EPROBE_DEFER EOPENSTALE ENOPARAM - EBADHANDLE ENOTSYNC EBADCOOKIE ENOTSUPP ETOOSMALL
ESERVERFAULT EBADTYPE EJUKEBOX EIOCBQUEUED ERECALLCONFLICT"""
ERRNO_NAMES: dict[int, str] = {
    number: name
    for base, names in ((1, _ERRNO_LOW), (512, _ERRNO_HIGH))
    for number, name in enumerate(names.split(), base) if name != "-"}

# %p extensions 6.1 implements by dereferencing kernel objects this module cannot see:
# their output is left open (pattern WILD).
_OPAQUE_POINTER_EXTENSIONS = "RrbMmIiEUVN4dtCDgGOf"

SymbolHit = tuple[str, int, int, str | None]     # name, offset, size, module
SymbolLookup = Callable[[int], SymbolHit | None]


class ArgSource(Protocol):
    def next_int(self, size: int, signed: bool) -> int: ...
    def read_cstring(self, address: int, limit: int) -> bytes | None: ...
    def read_bytes(self, address: int, n: int) -> bytes | None: ...


class PyArgs:
    """ArgSource over a Python list. A str/bytes value is placed in a private memory and
    passed as its address (str is encoded latin-1); None is NULL. `strings` maps addresses
    to the bytes readable there (the end of a region terminates a string)."""

    def __init__(self, values: Sequence[object], strings: Mapping[int, bytes] | None = None,
                 pointer_bits: int = 64) -> None:
        self._values = list(values)
        self._pos = 0
        self._memory: dict[int, bytes] = dict(strings or {})
        ends = [a + len(b) for a, b in self._memory.items()]
        self._free = (max([0x100000, *ends]) + 15) & ~15
        self._limit = 1 << pointer_bits

    def next_int(self, size: int, signed: bool) -> int:
        if self._pos >= len(self._values):
            raise IndexError("the format consumes more arguments than were given")
        value = self._values[self._pos]
        self._pos += 1
        if value is None:
            value = 0
        elif isinstance(value, (str, bytes)):
            value = self._place(value.encode("latin-1") if isinstance(value, str) else value)
        if not isinstance(value, int):
            raise TypeError(f"unsupported argument {value!r}")
        return _wrap(value, size * 8) if signed else value & ((1 << size * 8) - 1)

    def _place(self, data: bytes) -> int:
        address = self._free
        self._memory[address] = data + b"\0"
        self._free = (address + len(data) + 16) & ~15
        if self._free >= self._limit:
            raise OverflowError("no room left for string arguments")
        return address

    def _tail(self, address: int) -> bytes | None:
        for base, data in self._memory.items():
            if base <= address < base + len(data):
                return data[address - base:]
        return None

    def read_cstring(self, address: int, limit: int) -> bytes | None:
        tail = self._tail(address)
        return None if tail is None else tail[:limit].split(b"\0", 1)[0]

    def read_bytes(self, address: int, n: int) -> bytes | None:
        tail = self._tail(address)
        return None if tail is None or len(tail) < n else tail[:n]


@dataclass(frozen=True)
class Piece:
    """A run of output: literal (no layouts), or non-reproducible with the per-character
    regex atoms of each shape it can take (an atom starting with [\\s\\S] is open-ended)."""
    text: str
    layouts: tuple[tuple[str, ...], ...] = ()

    @property
    def fixed(self) -> bool:
        return all(len(lay) == len(self.text) and not any(a.startswith(OPEN_ATOM) for a in lay)
                   for lay in self.layouts)

    def regex(self) -> str:
        if not self.layouts:
            return re.escape(self.text)
        shapes = list(dict.fromkeys(_join_atoms(lay) for lay in self.layouts))
        return shapes[0] if len(shapes) == 1 else "(?:" + "|".join(shapes) + ")"

    def head(self, k: int) -> Piece:
        return Piece(self.text[:k], tuple(dict.fromkeys(lay[:k] for lay in self.layouts)))

    def tail(self, k: int) -> Piece:
        return Piece(self.text[k:], tuple(dict.fromkeys(lay[k:] for lay in self.layouts)))


def _join_atoms(atoms: Sequence[str]) -> str:
    out, i = [], 0
    while i < len(atoms):
        j = i
        while j < len(atoms) and atoms[j] == atoms[i]:
            j += 1
        run = j - i
        out.append(atoms[i] if run == 1 or atoms[i].startswith(OPEN_ATOM) else f"{atoms[i]}{{{run}}}")
        i = j
    return "".join(out)


def _pattern(pieces: Sequence[Piece]) -> str | None:
    if all(not p.layouts for p in pieces):
        return None
    return "".join(p.regex() for p in pieces)


@dataclass(frozen=True)
class Formatted:
    text: str
    pattern: str | None
    pieces: tuple[Piece, ...] = field(default=(), compare=False, repr=False)


@dataclass
class _Spec:
    flags: int = 0
    width: int = -1
    precision: int = -1
    base: int = 10


def _wrap(value: int, bits: int) -> int:
    """Two's-complement truncation, as a store into a `bits`-wide signed field."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _isalnum(c: str) -> bool:
    """lib/ctype.c: ASCII letters and digits, and the Latin-1 letters 0xC0-0xFF but x and /."""
    return c.isascii() and c.isalnum() or ("\xc0" <= c <= "\xff" and c not in "\xd7\xf7")


def default_pointer_hash(address: int) -> int:
    """Stand-in for the kernel's keyed siphash: any 32-bit function conforms."""
    raw = (address & _MASK64).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest(), "big")


def _number(num: int, spec: _Spec) -> tuple[str, str, str]:
    """lib/vsprintf.c number(): returns (everything before the digits, digits, trailer)."""
    num &= _MASK64
    flags = spec.flags & ~ZEROPAD if spec.flags & LEFT else spec.flags
    sign = ""
    if flags & SIGN:
        if num >> 63:
            sign, num = "-", -num & _MASK64
        elif flags & PLUS:
            sign = "+"
        elif flags & SPACE:
            sign = " "
    prefix = ""
    if flags & SPECIAL and spec.base == 16:
        prefix = "0x" if flags & SMALL else "0X"
    elif flags & SPECIAL and spec.base == 8 and num:
        prefix = "0"
    digits = {8: "o", 10: "d", 16: "x" if flags & SMALL else "X"}[spec.base]
    digits = format(num, digits)
    precision = max(spec.precision, len(digits))
    pad = max(spec.width - len(sign) - len(prefix) - precision, 0)
    zeros = "0" * (precision - len(digits))
    if flags & LEFT:
        return sign + prefix + zeros, digits, " " * pad
    if flags & ZEROPAD:
        return sign + prefix + "0" * pad + zeros, digits, ""
    return " " * pad + sign + prefix + zeros, digits, ""


def _number_text(num: int, spec: _Spec) -> str:
    return "".join(_number(num, spec))


def _widen(s: str, spec: _Spec) -> str:
    pad = spec.width - len(s)
    if pad <= 0:
        return s
    return s + " " * pad if spec.flags & LEFT else " " * pad + s


def _cut_string(s: str, spec: _Spec) -> str:
    """string_nocheck(): precision bounds the length (-1: unbounded), then widen."""
    return _widen(s if spec.precision < 0 else s[:spec.precision], spec)


class _Printer:
    def __init__(self, args: ArgSource, pointer_bits: int, hash_pointer: Callable[[int], int],
                 lookup_symbol: SymbolLookup | None, kptr_restrict: int) -> None:
        self.args = args
        self.bits = pointer_bits
        self.hash = hash_pointer
        self.lookup = lookup_symbol
        self.kptr_restrict = kptr_restrict
        self.pieces: list[Piece] = []

    # ---- the format walk ---------------------------------------------------------------
    def run(self, fmt: str) -> None:
        i = 0
        while i < len(fmt):
            j = fmt.find("%", i)
            if j < 0:
                j = len(fmt)
            self.emit(fmt[i:j])
            if j == len(fmt):
                return
            i = self.conversion(fmt, j)
            if i < 0:          # FORMAT_TYPE_INVALID: the rest of the format is dropped
                return

    def emit(self, text: str) -> None:
        if text:
            self.pieces.append(Piece(text))

    def conversion(self, fmt: str, i: int) -> int:
        def at(k: int) -> str:
            return fmt[k] if k < len(fmt) else ""
        spec, i = _Spec(), i + 1
        while at(i) in _FLAGS:
            spec.flags |= _FLAGS[fmt[i]]
            i += 1
        if at(i) and at(i) in _DIGITS:
            value, i = _atoi(fmt, i)
            spec.width = _wrap(value, 24)
        elif at(i) == "*":
            spec.width, i = self.star_width(spec), i + 1
        if at(i) == ".":
            i += 1
            if at(i) and at(i) in _DIGITS:
                value, i = _atoi(fmt, i)
                spec.precision = max(_wrap(value, 16), 0)
            elif at(i) == "*":
                spec.precision, i = self.star_precision(), i + 1
        qualifier = at(i) if at(i) and at(i) in "hlLzt" else ""
        if qualifier:
            i += 1
            if qualifier in "hl" and at(i) == qualifier:
                qualifier, i = qualifier.upper(), i + 1     # hh -> H, ll -> L
        return self.dispatch(fmt, i, at(i), qualifier, spec)

    def dispatch(self, fmt: str, i: int, conv: str, qualifier: str, spec: _Spec) -> int:
        if conv == "%":
            self.emit("%")
        elif conv == "c":
            self.emit(_widen(chr(self.args.next_int(4, False) & 0xFF), spec))   # never zero-padded
        elif conv == "s":
            self.emit(self.string(self.args.next_int(self.bits // 8, False), spec))
        elif conv == "p":
            ptr = self.args.next_int(self.bits // 8, False)
            self.pointer(fmt[i + 1:i + 2], fmt[i + 2:i + 3], ptr, spec)
            while i + 1 < len(fmt) and _isalnum(fmt[i + 1]):
                i += 1
        elif conv and conv in "oxXdiu":
            spec.base = {"o": 8, "x": 16, "X": 16}.get(conv, 10)
            spec.flags |= SMALL if conv == "x" else SIGN if conv in "di" else 0
            self.emit(_number_text(self.integer(qualifier, bool(spec.flags & SIGN)), spec))
        else:
            return -1
        return i + 1

    def star_width(self, spec: _Spec) -> int:
        width = self.args.next_int(4, True)
        if _wrap(width, 24) != width:
            width = min(max(width, -FIELD_WIDTH_MAX), FIELD_WIDTH_MAX)
        if width < 0:
            spec.flags |= LEFT
        return abs(width)

    def star_precision(self) -> int:
        precision = self.args.next_int(4, True)
        if _wrap(precision, 16) != precision:
            precision = min(max(precision, 0), PRECISION_MAX)
        return max(precision, 0)

    def integer(self, qualifier: str, signed: bool) -> int:
        """The va_arg of each FORMAT_TYPE_*, widened to the kernel's unsigned long long."""
        long_size = self.bits // 8
        size, signed = {"L": (8, True), "l": (long_size, signed), "z": (long_size, signed),
                        "t": (long_size, True), "H": (1, signed), "h": (2, signed)
                        }.get(qualifier, (4, signed))
        return self.args.next_int(size, signed) & _MASK64

    # ---- strings -------------------------------------------------------------------------
    def bad_pointer(self, ptr: int) -> str | None:
        if ptr == 0:
            return "(null)"
        if ptr < PAGE_SIZE or self.is_err(ptr):
            return "(efault)"
        return None

    def is_err(self, ptr: int) -> bool:
        return ptr >= (1 << self.bits) - MAX_ERRNO

    def error_string(self, message: str, spec: _Spec) -> str:
        precision = self.bits // 4 if spec.precision == -1 else spec.precision
        return _cut_string(message, replace(spec, precision=precision))

    def string(self, ptr: int, spec: _Spec) -> str:
        problem = self.bad_pointer(ptr)
        if problem:
            return self.error_string(problem, spec)
        if spec.precision == 0:        # the kernel reads nothing, so cannot fault
            return _widen("", spec)
        limit = STRING_SCAN_LIMIT if spec.precision < 0 else spec.precision
        data = self.args.read_cstring(ptr, limit)
        if data is None:               # 6.1 would oops here; an emulator reports it instead
            return self.error_string("(efault)", spec)
        return _cut_string(data.decode("latin-1"), spec)

    # ---- pointers ------------------------------------------------------------------------
    def pointer(self, ext: str, ext2: str, ptr: int, spec: _Spec) -> None:
        if ext and ext in "SsB":
            self.emit(self.symbol(ext, ptr, spec))
        elif ext == "x":
            self.emit(self.pointer_string(ptr, spec))
        elif ext == "K" and self.kptr_restrict:
            self.emit(self.pointer_string(0, spec))    # 2 (and 1 without CAP_SYSLOG): zeros
        elif ext == "e" and self.is_err(ptr):
            self.emit(self.err_ptr(_wrap(ptr, self.bits), spec))
        elif ext == "h":
            self.emit(self.hex_string(ext2, ptr, spec))
        elif ext and ext in "uk":
            self.emit(self.string(ptr, spec) if ext2 == "s" else self.error_string("(einval)", spec))
        elif ext == "a":
            self.emit(self.address_val(ext2, ptr, spec))
        elif ext and ext in _OPAQUE_POINTER_EXTENSIONS:
            self.pieces.append(Piece(f"(%p{ext})", ((WILD,),)))
        else:
            self.default_pointer(ptr, spec)

    def pointer_string(self, value: int, spec: _Spec) -> str:
        return "".join(_number(value, self.pointer_spec(spec)))

    def pointer_spec(self, spec: _Spec) -> _Spec:
        spec = replace(spec, base=16, flags=spec.flags | SMALL)
        if spec.width == -1:
            spec.width, spec.flags = self.bits // 4, spec.flags | ZEROPAD
        return spec

    def default_pointer(self, ptr: int, spec: _Spec) -> None:
        """ptr_to_id(): since 5.7 ("don't obfuscate NULL and error pointers") NULL and
        ERR_PTR values print raw through pointer_string, so %p of NULL is 16 zeros on
        64-bit and %p of ERR_PTR(-22) is ffffffffffffffea; everything else hashes to 32 bits."""
        if ptr == 0 or self.is_err(ptr):
            self.emit(self.pointer_string(ptr, spec))
            return
        text = self.pointer_string(self.hash(ptr) & 0xFFFFFFFF, spec)
        self.pieces.append(Piece(text, self.hash_layouts(spec)))

    def hash_layouts(self, spec: _Spec) -> tuple[tuple[str, ...], ...]:
        if spec.width == -1 and spec.precision == -1 and not spec.flags & (LEFT | SPECIAL):
            return ((HEX_ATOM,) * (self.bits // 4),)
        layouts = []
        for ndigits in range(1, 9):               # a 32-bit hash has 1 to 8 hex digits
            lead, _, trail = _number(16 ** (ndigits - 1), self.pointer_spec(spec))
            first = HEX_ATOM if ndigits == 1 else "[1-9a-f]"
            layouts.append(tuple(map(re.escape, lead)) + (first,) + (HEX_ATOM,) * (ndigits - 1)
                           + tuple(map(re.escape, trail)))
        return tuple(layouts)

    def symbol(self, ext: str, ptr: int, spec: _Spec) -> str:
        """%pS/%ps/%pB through kallsyms; %pB looks up ptr-1 and reports offset+1."""
        back = 1 if ext == "B" else 0
        hit = self.lookup((ptr - back) % (1 << self.bits)) if self.lookup else None
        if hit is None:
            return _cut_string(f"0x{ptr:x}", spec)
        name, offset, size, module = hit
        text = name if ext == "s" else f"{name}+{offset + back:#x}/{size:#x}"
        return _cut_string(text + (f" [{module}]" if module else ""), spec)

    def err_ptr(self, err: int, spec: _Spec) -> str:
        name = ERRNO_NAMES.get(-err)
        if name:
            return _cut_string("-" + name, spec)
        return _number_text(err, replace(spec, flags=spec.flags | SIGN, base=10))

    def hex_string(self, ext2: str, ptr: int, spec: _Spec) -> str:
        if spec.width == 0:
            return ""
        problem = self.bad_pointer(ptr)
        if problem:
            return self.error_string(problem, spec)
        count = min(spec.width, HEX_DUMP_MAX) if spec.width > 0 else 1
        data = self.args.read_bytes(ptr, count)
        if data is None:
            return self.error_string("(efault)", spec)
        return {"C": ":", "D": "-", "N": ""}.get(ext2, " ").join(f"{b:02x}" for b in data)

    def address_val(self, ext2: str, ptr: int, spec: _Spec) -> str:
        """%pa[p] / %pad: *(phys_addr_t *) or *(dma_addr_t *), both pointer-sized here."""
        problem = self.bad_pointer(ptr)
        if problem:
            return self.error_string(problem, spec)
        size = self.bits // 8
        data = self.args.read_bytes(ptr, size)
        if data is None:
            return self.error_string("(efault)", spec)
        return _number_text(int.from_bytes(data, "little"),
                            _Spec(SPECIAL | SMALL | ZEROPAD, 2 + 2 * size, -1, 16))


def _atoi(fmt: str, i: int) -> tuple[int, int]:
    value = 0
    while i < len(fmt) and fmt[i] in _DIGITS:
        value = _wrap(value * 10 + ord(fmt[i]) - 48, 32)     # skip_atoi's int wraps
        i += 1
    return value, i


def vsprintf(fmt: bytes, args: ArgSource, *, pointer_bits: int = 64,
             hash_pointer: Callable[[int], int] | None = None,
             lookup_symbol: SymbolLookup | None = None, kptr_restrict: int = 0) -> Formatted:
    """Format as 6.1's vsnprintf with an unbounded buffer. The format ends at its first NUL."""
    printer = _Printer(args, pointer_bits, hash_pointer or default_pointer_hash,
                       lookup_symbol, kptr_restrict)
    printer.run(fmt.split(b"\0", 1)[0].decode("latin-1"))
    pieces = tuple(printer.pieces)
    return Formatted("".join(p.text for p in pieces), _pattern(pieces), pieces)


# ---- printk ----------------------------------------------------------------------------------
def _prefix(text: str) -> tuple[int | None, bool, int]:
    level: int | None = None
    cont, i = False, 0
    while text[i:i + 1] == "\x01" and text[i + 1:i + 2] and text[i + 1] in "01234567c":
        if text[i + 1] == "c":
            cont = True
        elif level is None:
            level = int(text[i + 1])
        i += 2
    return level, cont, i


def parse_prefix(text: bytes) -> tuple[int | None, bool, bytes]:
    """printk_parse_prefix(): strip every leading SOH+[0-7c] pair; the first level wins."""
    level, cont, length = _prefix(text.decode("latin-1"))
    return level, cont, text[length:]


def _cut(pieces: Sequence[Piece], n: int) -> list[Piece]:
    """The first n characters. Past a piece whose length varies with the hash, where the
    cut falls is unknown: the remainder becomes one open piece bounded by the budget."""
    if sum(len(p.text) for p in pieces) <= n:
        return list(pieces)
    out: list[Piece] = []
    pos = 0
    for index, piece in enumerate(pieces):
        room = n - pos
        if room <= 0:
            break
        if not piece.fixed:
            rest = "".join(p.text for p in pieces[index:])[:room]
            out.append(Piece(rest, ((rf"[\s\S]{{0,{room}}}",),)))
            break
        out.append(piece if len(piece.text) <= room else piece.head(room))
        pos += len(piece.text)
    return out


def _drop(pieces: Sequence[Piece], n: int) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if n >= len(piece.text):
            n -= len(piece.text)
            continue
        out.append(piece if n == 0 else piece.tail(n) if piece.fixed
                   else Piece(piece.text[n:], ((WILD,),)))
        n = 0
    return out


def _sprint(pieces: Sequence[Piece], size: int) -> tuple[list[Piece], bool]:
    """printk_sprint(): vscnprintf into `size` bytes (size-1 survive, prefix bytes included),
    then strip one trailing newline (it ends the record), then the level prefix."""
    kept = _cut(pieces, size - 1)
    text = "".join(p.text for p in kept)
    newline = text.endswith("\n")
    if newline:                # the newline is literal text: only the last piece changes
        last = kept.pop()
        if len(last.text) > 1:
            kept.append(last.head(len(last.text) - 1))
        text = text[:-1]
    return _drop(kept, _prefix(text)[2]), newline


@dataclass
class _Record:
    level: int
    source: str
    pieces: list[Piece]
    open: bool

    @property
    def length(self) -> int:
        return sum(len(p.text) for p in self.pieces)


class LogBuffer:
    """The printk ring buffer as records. `source` stands for the caller id (task or CPU)."""

    def __init__(self) -> None:
        self._records: list[_Record] = []

    def emit(self, fmt_text: bytes, source: str) -> None:
        self._store([Piece(fmt_text.decode("latin-1"))], source)

    def emit_formatted(self, formatted: Formatted, source: str) -> None:
        pieces = list(formatted.pieces)
        if not pieces and formatted.text:
            layouts = () if formatted.pattern is None else ((f"(?:{formatted.pattern})",),)
            pieces = [Piece(formatted.text, layouts)]
        self._store(pieces, source)

    def printk(self, fmt: bytes, args: ArgSource, source: str, *, pointer_bits: int = 64,
               hash_pointer: Callable[[int], int] | None = None,
               lookup_symbol: SymbolLookup | None = None) -> None:
        """_printk(fmt, ...): vsprintf, then store."""
        self.emit_formatted(vsprintf(fmt, args, pointer_bits=pointer_bits, hash_pointer=hash_pointer,
                                     lookup_symbol=lookup_symbol), source)

    def _store(self, pieces: list[Piece], source: str) -> None:
        """vprintk_store(): the reserve is the formatted length + 1, capped at LOG_LINE_MAX;
        level and KERN_CONT come from the first 7 formatted bytes only."""
        text = "".join(p.text for p in pieces)
        reserve = min(len(text) + 1, LOG_LINE_MAX)
        level, cont, _ = _prefix(text[:_PREFIX_BUF - 1])
        last = self._records[-1] if self._records else None
        if (cont and last is not None and last.open and last.source == source
                and last.length + reserve <= LOG_LINE_MAX):     # prb_reserve_in_last
            fragment, newline = _sprint(pieces, reserve)
            last.pieces.extend(fragment)
            last.open = not newline
            return
        if last is not None:
            last.open = False          # prb_reserve finalises the previous record
        fragment, newline = _sprint(pieces, reserve)
        level = DEFAULT_MESSAGE_LOGLEVEL if level is None else level
        self._records.append(_Record(level, source, fragment, not newline))

    def records(self) -> list[dict[str, object]]:
        """Every record, an open one included as if finalised (the buffer is not changed)."""
        return [{"level": r.level, "source": r.source, "text": "".join(p.text for p in r.pieces),
                 "pattern": _pattern(r.pieces)} for r in self._records]
