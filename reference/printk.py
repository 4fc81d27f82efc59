"""Linux 6.1 vsprintf (lib/vsprintf.c) and printk record assembly (kernel/printk/printk.c).

`vsprintf` formats the way the kernel does, quirks included: number() prints a zero even
at precision 0, `%#x` of zero is `0x0`, `%08.3d` zero-pads to the width, a negative `*`
precision is 0, `%.s` means no precision, an unknown conversion (or `%n`) ends the output,
`%p` hashes. A hashed pointer is what a kernel run cannot reproduce, so `Formatted` carries,
next to the text, a regular expression every conforming output matches.
`LogBuffer` turns successive printk calls into log records as 6.1's vprintk_store does.
Written from the kernel's behaviour; no kernel code or comments are carried over.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Protocol

KERN_SOH = b"\x01"
DEFAULT_MESSAGE_LOGLEVEL = 4          # CONFIG_MESSAGE_LOGLEVEL_DEFAULT
LOG_LINE_MAX = 1024 - 32              # CONSOLE_LOG_MAX - PREFIX_MAX
PAGE_SIZE = 4096
MAX_ERRNO = 4095
FIELD_WIDTH_MAX = (1 << 23) - 1       # printf_spec.field_width is a 24-bit bitfield
PRECISION_MAX = (1 << 15) - 1         # printf_spec.precision is a 16-bit bitfield
HEX_DUMP_MAX = 64                     # %*ph prints at most 64 bytes
STRING_SCAN_LIMIT = 1 << 16           # emulator bound on an unbounded %s read
LEVEL_SNIFF = 7                       # vprintk_store finds level/cont in an 8-byte buffer

SIGN, LEFT, PLUS, SPACE, ZEROPAD, SMALL, SPECIAL = 1, 2, 4, 8, 16, 32, 64
_FLAGS = {"-": LEFT, "+": PLUS, " ": SPACE, "#": SPECIAL, "0": ZEROPAD}
_DIGITS = "0123456789"
_MASK64 = (1 << 64) - 1
HEX_ATOM = "[0-9a-f]"
OPEN_ATOM = r"[\s\S]"                 # a regex atom starting with this is open-ended
WILD = OPEN_ATOM + "*"

# lib/errname.c on x86 (asm-generic numbering); "-" is a gap: 41 and 58 are the
# EWOULDBLOCK/EDEADLOCK aliases, 520 is unassigned.
_ERRNO_LOW = """EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES
EFAULT ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG
ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY ELOOP -
ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE EBADR EXFULL ENOANO
EBADRQC EBADSLT - EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE ENOLINK EADV ESRMNT ECOMM
EPROTO EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX
ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT
EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL
ENETDOWN ENETUNREACH ENETRESET ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN
ETOOMANYREFS ETIMEDOUT ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN
ENOTNAM ENAVAIL EISNAM EREMOTEIO EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED
EKEYREVOKED EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"""
_ERRNO_HIGH = """ERESTARTSYS ERESTARTNOINTR ERESTARTNOHAND ENOIOCTLCMD ERESTART_RESTARTBLOCK
EPROBE_DEFER EOPENSTALE ENOPARAM - EBADHANDLE ENOTSYNC EBADCOOKIE ENOTSUPP ETOOSMALL
ESERVERFAULT EBADTYPE EJUKEBOX EIOCBQUEUED ERECALLCONFLICT"""
ERRNO_NAMES: dict[int, str] = {
    number: name for base, names in ((1, _ERRNO_LOW), (512, _ERRNO_HIGH))
    for number, name in enumerate(names.split(), base) if name != "-"}

# %p extensions 6.1 implements by reading kernel objects this module cannot see: their
# output is left open (text "(%pX)", pattern WILD).
OPAQUE_POINTER_EXTENSIONS = "RrbMmIiEUVN4adtCDgGOf"

SymbolHit = tuple[str, int, int, str | None]     # name, offset, size, module
SymbolLookup = Callable[[int], SymbolHit | None]


class ArgSource(Protocol):
    def next_int(self, size: int, signed: bool) -> int: ...
    def read_cstring(self, address: int, limit: int) -> bytes | None: ...
    def read_bytes(self, address: int, n: int) -> bytes | None: ...


class PyArgs:
    """ArgSource over a list: ints; None is NULL; a str (latin-1) or bytes value is placed in
    a private memory and passed as its address. `strings` maps addresses to the bytes
    readable there (the end of a region ends a string)."""

    def __init__(self, values: Sequence[object], strings: Mapping[int, bytes] | None = None,
                 pointer_bits: int = 64) -> None:
        self._values, self._pos = list(values), 0
        self._memory: dict[int, bytes] = dict(strings or {})
        start = 0x10000 if pointer_bits == 32 else 0x100000000     # above PAGE_SIZE
        self._free = (max([start, *(a + len(b) for a, b in self._memory.items())]) + 15) & ~15

    def next_int(self, size: int, signed: bool) -> int:
        if self._pos >= len(self._values):
            raise IndexError("the format consumes more arguments than were given")
        value, self._pos = self._values[self._pos], self._pos + 1
        if isinstance(value, (str, bytes)):
            value = self._place(value.encode("latin-1") if isinstance(value, str) else value)
        value = 0 if value is None else value
        if not isinstance(value, int):
            raise TypeError(f"unsupported argument {value!r}")
        return _wrap(value, size * 8) if signed else value & ((1 << size * 8) - 1)

    def _place(self, data: bytes) -> int:
        address, self._free = self._free, (self._free + len(data) + 16) & ~15
        self._memory[address] = data + b"\0"
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
    """A run of output: literal (no layouts), or non-reproducible, with the per-character
    regex atoms of every shape it can take."""
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

    def part(self, start: int, stop: int | None = None) -> Piece:
        cut = slice(start, stop)
        return Piece(self.text[cut], tuple(dict.fromkeys(lay[cut] for lay in self.layouts)))


def _join_atoms(atoms: Sequence[str]) -> str:
    runs = ((atom, len(list(group))) for atom, group in groupby(atoms))
    return "".join(a if n == 1 or a.startswith(OPEN_ATOM) else f"{a}{{{n}}}" for a, n in runs)


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
    """Two's-complement truncation: a store into a `bits`-wide signed field."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _isalnum(c: str) -> bool:
    """lib/ctype.c isalnum: ASCII letters and digits, and Latin-1 0xC0-0xFF but 0xD7/0xF7."""
    return c.isascii() and c.isalnum() or ("\xc0" <= c <= "\xff" and c not in "\xd7\xf7")


def default_pointer_hash(address: int) -> int:
    """Stand-in for the kernel's keyed siphash: any 32-bit function conforms."""
    raw = (address & _MASK64).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest(), "big")


def _number(num: int, spec: _Spec) -> tuple[str, str, str]:
    """number(): (everything before the digits, the digits, the trailing padding)."""
    num &= _MASK64
    flags = spec.flags & ~ZEROPAD if spec.flags & LEFT else spec.flags
    sign = ""
    if flags & SIGN:
        if num >> 63:
            sign, num = "-", -num & _MASK64
        else:
            sign = "+" if flags & PLUS else " " if flags & SPACE else ""
    prefix = ""
    if flags & SPECIAL and spec.base == 16:
        prefix = "0x" if flags & SMALL else "0X"
    elif flags & SPECIAL and spec.base == 8 and num:      # no extra 0 before a zero
        prefix = "0"
    digits = format(num, {8: "o", 10: "d", 16: "x" if flags & SMALL else "X"}[spec.base])
    precision = max(spec.precision, len(digits))           # zero prints "0" even at .0
    pad = max(spec.width - len(sign) - len(prefix) - precision, 0)
    zeros = "0" * (precision - len(digits))
    if flags & LEFT:
        return sign + prefix + zeros, digits, " " * pad
    if flags & ZEROPAD:                                    # even with a precision
        return sign + prefix + "0" * pad + zeros, digits, ""
    return " " * pad + sign + prefix + zeros, digits, ""


def _widen(s: str, spec: _Spec) -> str:
    pad = spec.width - len(s)
    if pad <= 0:
        return s
    return s + " " * pad if spec.flags & LEFT else " " * pad + s


def _bounded(s: str, spec: _Spec) -> str:
    """string_nocheck(): at most `precision` characters (-1: all), then widened."""
    return _widen(s if spec.precision < 0 else s[:spec.precision], spec)


def _atoi(fmt: str, i: int) -> tuple[int, int]:
    value = 0
    while i < len(fmt) and fmt[i] in _DIGITS:
        value = _wrap(value * 10 + ord(fmt[i]) - 48, 32)     # skip_atoi's int wraps
        i += 1
    return value, i


class _Printer:
    def __init__(self, args: ArgSource, pointer_bits: int, hash_pointer: Callable[[int], int],
                 lookup_symbol: SymbolLookup | None, kptr_restrict: int) -> None:
        self.args, self.bits, self.hash = args, pointer_bits, hash_pointer
        self.lookup, self.kptr_restrict = lookup_symbol, kptr_restrict
        self.pieces: list[Piece] = []

    def run(self, fmt: str) -> None:
        i = 0
        while i < len(fmt):
            j = fmt.find("%", i) % (len(fmt) + 1)      # -1 -> len(fmt)
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
            spec.flags, i = spec.flags | _FLAGS[fmt[i]], i + 1
        if at(i) and at(i) in _DIGITS:
            value, i = _atoi(fmt, i)
            spec.width = _wrap(value, 24)
        elif at(i) == "*":
            spec.width, i = self.star_width(spec), i + 1
        if at(i) == ".":          # "." alone leaves the precision at -1
            i += 1
            if at(i) and at(i) in _DIGITS:
                value, i = _atoi(fmt, i)
                spec.precision = max(_wrap(value, 16), 0)
            elif at(i) == "*":
                spec.precision, i = self.star_precision(), i + 1
        qualifier = at(i) if at(i) and at(i) in "hlLzt" else ""     # no j, Z or q in 6.1
        if qualifier:
            i += 1
            if qualifier in "hl" and at(i) == qualifier:
                qualifier, i = qualifier.upper(), i + 1           # hh -> H, ll -> L
        return self.dispatch(fmt, i, at(i), qualifier, spec)

    def dispatch(self, fmt: str, i: int, conv: str, qualifier: str, spec: _Spec) -> int:
        if conv == "%":
            self.emit("%")
        elif conv == "c":          # space-padded to the width, never zero-padded
            self.emit(_widen(chr(self.args.next_int(4, False) & 0xFF), spec))
        elif conv == "s":
            self.emit(self.string(self.args.next_int(self.bits // 8, False), spec))
        elif conv == "p":
            ptr = self.args.next_int(self.bits // 8, False)
            self.pointer(fmt[i + 1:i + 2], fmt[i + 2:i + 3], ptr, spec)
            while i + 1 < len(fmt) and _isalnum(fmt[i + 1]):     # all of "%pXyz" is used
                i += 1
        elif conv and conv in "oxXdiu":
            spec.base = {"o": 8, "x": 16, "X": 16}.get(conv, 10)
            spec.flags |= SMALL if conv == "x" else SIGN if conv in "di" else 0
            self.emit("".join(_number(self.integer(qualifier, conv in "di"), spec)))
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
        """The va_arg of each FORMAT_TYPE_*, widened to unsigned long long. long long and
        ptrdiff_t are read signed whatever the conversion: %tu of -1 on 32-bit is 2**64-1."""
        word = self.bits // 8
        size, signed = {"L": (8, True), "l": (word, signed), "z": (word, signed),
                        "t": (word, True), "H": (1, signed), "h": (2, signed)
                        }.get(qualifier, (4, signed))
        return self.args.next_int(size, signed) & _MASK64

    # ---- memory behind pointers ---------------------------------------------------------
    def is_err(self, ptr: int) -> bool:
        return ptr >= (1 << self.bits) - MAX_ERRNO

    def error_string(self, message: str, spec: _Spec) -> str:
        precision = self.bits // 4 if spec.precision == -1 else spec.precision
        return _bounded(message, replace(spec, precision=precision))

    def checked(self, ptr: int, spec: _Spec) -> str | None:
        """check_pointer(): the error text for NULL, the first page and ERR_PTR values."""
        if ptr == 0:
            return self.error_string("(null)", spec)
        return self.error_string("(efault)", spec) if ptr < PAGE_SIZE or self.is_err(ptr) else None

    def string(self, ptr: int, spec: _Spec) -> str:
        problem = self.checked(ptr, spec)
        if problem is not None:
            return problem
        if spec.precision == 0:        # nothing is read, so nothing can fault
            return _widen("", spec)
        limit = STRING_SCAN_LIMIT if spec.precision < 0 else spec.precision
        data = self.args.read_cstring(ptr, limit)
        if data is None:               # the kernel would oops; an emulator reports (efault)
            return self.error_string("(efault)", spec)
        return _bounded(data.decode("latin-1"), spec)

    def hex_string(self, ext2: str, ptr: int, spec: _Spec) -> str:
        """%ph: width bytes (default 1, at most 64); C/D/N pick ':' '-' or no separator."""
        if spec.width == 0:
            return ""
        problem = self.checked(ptr, spec)
        if problem is not None:
            return problem
        data = self.args.read_bytes(ptr, min(spec.width, HEX_DUMP_MAX) if spec.width > 0 else 1)
        if data is None:
            return self.error_string("(efault)", spec)
        return {"C": ":", "D": "-", "N": ""}.get(ext2, " ").join(f"{b:02x}" for b in data)

    # ---- pointers ------------------------------------------------------------------------
    def pointer(self, ext: str, ext2: str, ptr: int, spec: _Spec) -> None:
        if ext and ext in "SsB":
            self.emit(self.symbol(ext, ptr, spec))
        elif ext == "x":
            self.emit(self.pointer_string(ptr, spec))
        elif ext == "K" and self.kptr_restrict:    # 2, or 1 without CAP_SYSLOG: zeros
            self.emit(self.pointer_string(0, spec))
        elif ext == "e" and self.is_err(ptr):
            self.emit(self.err_ptr(_wrap(ptr, self.bits), spec))
        elif ext == "h":
            self.emit(self.hex_string(ext2, ptr, spec))
        elif ext and ext in "uk":
            bad = self.error_string("(einval)", spec)      # only %pks / %pus are defined
            self.emit(self.string(ptr, spec) if ext2 == "s" else bad)
        elif ext and ext in OPAQUE_POINTER_EXTENSIONS:
            self.pieces.append(Piece(f"(%p{ext})", ((WILD,),)))
        else:                          # plain %p, %pK at kptr_restrict 0, %pe of a non-error
            self.default_pointer(ptr, spec)

    def pointer_spec(self, spec: _Spec) -> _Spec:
        spec = replace(spec, base=16, flags=spec.flags | SMALL)
        if spec.width == -1:
            spec.width, spec.flags = self.bits // 4, spec.flags | ZEROPAD
        return spec

    def pointer_string(self, value: int, spec: _Spec) -> str:
        return "".join(_number(value, self.pointer_spec(spec)))

    def default_pointer(self, ptr: int, spec: _Spec) -> None:
        """ptr_to_id(). Since 5.7 ("vsprintf: don't obfuscate NULL and error pointers") NULL
        and ERR_PTR values skip the hash and print raw through pointer_string: %p of NULL is
        0000000000000000 on 64-bit, not "(null)"; any other pointer hashes to 32 bits."""
        if ptr == 0 or self.is_err(ptr):
            self.emit(self.pointer_string(ptr, spec))
        else:
            text = self.pointer_string(self.hash(ptr) & 0xFFFFFFFF, spec)
            self.pieces.append(Piece(text, self.hash_layouts(spec)))

    def hash_layouts(self, spec: _Spec) -> tuple[tuple[str, ...], ...]:
        if spec.width == -1 and spec.precision == -1 and not spec.flags & (LEFT | SPECIAL):
            return ((HEX_ATOM,) * (self.bits // 4),)
        layouts = []
        for ndigits in range(1, 9):               # a 32-bit hash has 1 to 8 hex digits
            lead, _, trail = _number(16 ** (ndigits - 1), self.pointer_spec(spec))
            digits = ("[1-9a-f]" if ndigits > 1 else HEX_ATOM,) + (HEX_ATOM,) * (ndigits - 1)
            layouts.append(tuple(map(re.escape, lead)) + digits + tuple(map(re.escape, trail)))
        return tuple(layouts)

    def symbol(self, ext: str, ptr: int, spec: _Spec) -> str:
        """%pS name+0xoff/0xsize [mod]; %ps without the offset; %pB looks up ptr-1 and shows
        offset+1. No lookup, or a miss: 0x<hex> as kallsyms prints an unknown address."""
        back = 1 if ext == "B" else 0
        hit = self.lookup((ptr - back) % (1 << self.bits)) if self.lookup else None
        if hit is None:
            return _bounded(f"0x{ptr:x}", spec)
        name, offset, size, module = hit
        text = name if ext == "s" else f"{name}+{offset + back:#x}/{size:#x}"
        return _bounded(text + (f" [{module}]" if module else ""), spec)

    def err_ptr(self, err: int, spec: _Spec) -> str:
        name = ERRNO_NAMES.get(-err)
        if name:
            return _bounded("-" + name, spec)
        return "".join(_number(err, replace(spec, flags=spec.flags | SIGN, base=10)))


def vsprintf(fmt: bytes, args: ArgSource, *, pointer_bits: int = 64,
             hash_pointer: Callable[[int], int] | None = None,
             lookup_symbol: SymbolLookup | None = None, kptr_restrict: int = 0) -> Formatted:
    """6.1 vsnprintf into an unbounded buffer. The format ends at its first NUL."""
    printer = _Printer(args, pointer_bits, hash_pointer or default_pointer_hash,
                       lookup_symbol, kptr_restrict)
    printer.run(fmt.split(b"\0", 1)[0].decode("latin-1"))
    pieces = tuple(printer.pieces)
    return Formatted("".join(p.text for p in pieces), _pattern(pieces), pieces)


# ---- printk ------------------------------------------------------------------------------
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


def _text(pieces: Sequence[Piece]) -> str:
    return "".join(p.text for p in pieces)


def _cut(pieces: Sequence[Piece], n: int) -> list[Piece]:
    """The first n characters. Past a piece whose length depends on the hash the cut point
    is unknown: from there on the text becomes one open piece of at most the room left."""
    if len(_text(pieces)) <= n:
        return list(pieces)
    out: list[Piece] = []
    for index, piece in enumerate(pieces):
        room = n - len(_text(out))
        if room <= 0:
            break
        if not piece.fixed:
            out.append(Piece(_text(pieces[index:])[:room], ((rf"{OPEN_ATOM}{{0,{room}}}",),)))
            break
        out.append(piece.part(0, room))
    return out


def _drop(pieces: Sequence[Piece], n: int) -> list[Piece]:
    """Without the first n characters (a level prefix: always literal text)."""
    out: list[Piece] = []
    for piece in pieces:
        if n < len(piece.text):
            out.append(piece.part(n) if piece.fixed else Piece(piece.text[n:], ((WILD,),)))
        n = max(n - len(piece.text), 0)
    return out


def _sprint(pieces: Sequence[Piece], size: int) -> tuple[list[Piece], bool]:
    """printk_sprint(): vscnprintf into `size` bytes keeps size-1 of them, prefix included;
    then one trailing newline is stripped (it ends the record), then the level prefix."""
    kept = _cut(pieces, size - 1)
    text = _text(kept)
    newline = text.endswith("\n")
    if newline:                # a literal newline: only the last piece changes
        last = kept.pop().part(0, -1)
        kept += [last] if last.text else []
        text = text[:-1]
    return _drop(kept, _prefix(text)[2]), newline


@dataclass
class _Record:
    level: int
    source: str
    pieces: list[Piece]
    open: bool


class LogBuffer:
    """The printk ring buffer as records; `source` stands for the caller id (task or CPU).

    Truncation, reasoned from vprintk_store: the reserve is min(formatted length + 1,
    LOG_LINE_MAX) and the message is vscnprintf'd into it, so at most LOG_LINE_MAX-1 = 991
    bytes survive *including* the SOH prefix bytes, which are stripped only afterwards. A
    message cut that way loses its newline and so stays open for KERN_CONT. A continuation
    joins the open record of the same caller only while record + its reserve fit in
    LOG_LINE_MAX (prb_reserve_in_last), otherwise it starts a record of its own."""

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

    def _store(self, pieces: list[Piece], source: str) -> None:
        """vprintk_store(). Level and KERN_CONT are sniffed from the first 7 formatted bytes
        only; the whole prefix is stripped from the stored text."""
        text = _text(pieces)
        reserve = min(len(text) + 1, LOG_LINE_MAX)
        level, cont, _ = _prefix(text[:LEVEL_SNIFF])
        last = self._records[-1] if self._records else None
        if (cont and last is not None and last.open and last.source == source
                and len(_text(last.pieces)) + reserve <= LOG_LINE_MAX):
            fragment, newline = _sprint(pieces, reserve)
            last.pieces += fragment
            last.open = not newline
            return
        if last is not None:
            last.open = False          # reserving a new record finalises the previous one
        fragment, newline = _sprint(pieces, reserve)
        level = DEFAULT_MESSAGE_LOGLEVEL if level is None else level
        self._records.append(_Record(level, source, fragment, not newline))

    def records(self) -> list[dict[str, object]]:
        """Every record, an open one included as if finalised (the buffer is unchanged)."""
        return [{"level": r.level, "source": r.source, "text": _text(r.pieces),
                 "pattern": _pattern(r.pieces)} for r in self._records]
