"""reference/printk.py against Linux 6.1 vsprintf/printk behaviour.

Every expected string was worked out by hand from the C standard and the kernel's rules
(lib/vsprintf.c number()/string()/pointer(), kernel/printk/printk.c vprintk_store), and
the comment next to a surprising value says which rule produces it.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from koconform.reference import printk

M64 = 1 << 64
M32 = 1 << 32


def fmt(f: bytes, *values: object, strings: dict[int, bytes] | None = None,
        **options: Any) -> str:
    return run(f, *values, strings=strings, **options).text


def run(f: bytes, *values: object, strings: dict[int, bytes] | None = None,
        **options: Any) -> printk.Formatted:
    args = printk.PyArgs(list(values), strings, pointer_bits=options.get("pointer_bits", 64))
    return printk.vsprintf(f, args, **options)


def ptr_hash(value: int) -> Callable[[int], int]:
    """A constant hash, so that %p text is reproducible."""
    return lambda address: value


# ---- conversions --------------------------------------------------------------------------
@pytest.mark.parametrize("f, values, expected", [
    (b"%d %i %u", (42, -7, 42), "42 -7 42"),
    (b"%x %X %o", (255, 255, 8), "ff FF 10"),
    (b"%c%c%c", (0x61, 0x142, 0x7A), "aBz"),          # %c keeps the low byte of the int
    (b"100%%", (), "100%"),
    (b"[%5%] [%-%]", (), "[%] [%]"),                   # %% ignores flags and width
    (b"%s!", ("hi",), "hi!"),
    (b"a%cb", (0,), "a\x00b"),                         # a NUL character is output text
    (b"%u %x %o", (-1, -1, -1), "4294967295 ffffffff 37777777777"),
    (b"%d", (0x80000000,), "-2147483648"),
    (b"%d", (0x100000005,), "5"),                      # an int argument is 32 bits
    (b"no conversions", (), "no conversions"),
])
def test_conversions(f: bytes, values: tuple[object, ...], expected: str) -> None:
    assert fmt(f, *values) == expected


def test_reproducible_output_has_no_pattern() -> None:
    formatted = run(b"%d %s %px", 1, "x", 0x1000)
    assert formatted.text == "1 x 0000000000001000"
    assert formatted.pattern is None


# ---- length modifiers ---------------------------------------------------------------------
@pytest.mark.parametrize("f, value, expected", [
    (b"%hhd", 0x1FF, "-1"),
    (b"%hhu", 0x1FF, "255"),
    (b"%hhd", 0x80, "-128"),
    (b"%hhd", 0x17F, "127"),
    (b"%hhx", -1, "ff"),
    (b"%hd", 0x18000, "-32768"),
    (b"%hu", -1, "65535"),
    (b"%hx", 0x12345, "2345"),
    (b"%ld", -1, "-1"),
    (b"%lu", -1, "18446744073709551615"),
    (b"%lx", -1, "ffffffffffffffff"),
    (b"%lld", -1, "-1"),
    (b"%llu", -1, "18446744073709551615"),
    (b"%Lu", -1, "18446744073709551615"),              # L is ll
    (b"%lld", 1 << 63, "-9223372036854775808"),
    (b"%llx", 1 << 63, "8000000000000000"),
    (b"%zu", -1, "18446744073709551615"),
    (b"%zd", -1, "-1"),
    (b"%td", -1, "-1"),
    (b"%tx", -2, "fffffffffffffffe"),
])
def test_length_modifiers_64(f: bytes, value: int, expected: str) -> None:
    assert fmt(f, value) == expected


@pytest.mark.parametrize("f, value, expected", [
    (b"%lu", -1, "4294967295"),
    (b"%lx", 0x1000000FF, "ff"),                       # long is 32 bits
    (b"%ld", 0xFFFFFFFF, "-1"),
    (b"%zu", -1, "4294967295"),
    (b"%zd", 0xFFFFFFFF, "-1"),
    (b"%llu", -1, "18446744073709551615"),
    # ptrdiff_t is always read signed and widened to 64 bits before number()
    (b"%tu", -1, "18446744073709551615"),
    (b"%tx", 0xFFFFFFFF, "ffffffffffffffff"),
])
def test_length_modifiers_32(f: bytes, value: int, expected: str) -> None:
    assert fmt(f, value, pointer_bits=32) == expected


@pytest.mark.parametrize("f", [b"a%jd b", b"a%Zd b", b"a%qd b"])
def test_qualifiers_6_1_does_not_know_stop_formatting(f: bytes) -> None:
    # 6.1 accepts only h hh l ll L z t; j/Z/q are taken as the conversion: invalid
    assert fmt(f, 1) == "a"


# ---- flags, width, precision --------------------------------------------------------------
@pytest.mark.parametrize("f, value, expected", [
    (b"[%5d]", 42, "[   42]"),
    (b"[%-5d]", 42, "[42   ]"),
    (b"[%05d]", -42, "[-0042]"),
    (b"[%-05d]", 42, "[42   ]"),                       # '-' overrides '0'
    (b"[%+d]", 5, "[+5]"),
    (b"[%+d]", -5, "[-5]"),
    (b"[% d]", 5, "[ 5]"),
    (b"[% d]", -5, "[-5]"),
    (b"[%+ d]", 5, "[+5]"),                            # '+' beats ' '
    (b"[%+u]", 5, "[5]"),                              # signs only for d/i
    (b"[%+x]", 5, "[5]"),
    (b"%#x", 255, "0xff"),
    (b"%#X", 255, "0XFF"),
    (b"%#o", 8, "010"),
    (b"%#o", 0, "0"),
    (b"%#x", 0, "0x0"),                                # C says "0"; number() always prefixes
    (b"%#u", 5, "5"),
    (b"[%#08x]", 255, "[0x0000ff]"),
    (b"[%#8x]", 255, "[    0xff]"),
    (b"[%#-8x]", 255, "[0xff    ]"),
    (b"[%2d]", 100, "[100]"),
    (b"[%.3d]", 5, "[005]"),
    (b"[%.0d]", 0, "[0]"),                             # C prints nothing; the kernel "0"
    (b"[%.d]", 0, "[0]"),
    (b"[%8.3d]", -5, "[    -005]"),
    (b"[%08.3d]", 5, "[00000005]"),                    # C: "     005"; ZEROPAD still pads
    (b"[%-8.3x]", 10, "[00a     ]"),
    (b"[%#.3o]", 8, "[0010]"),                         # "0" prefix plus precision zeros
    (b"[%16777218d]", 1, "[ 1]"),                      # literal width wraps at 24 bits
    (b"[%.65539d]", 1, "[001]"),                       # literal precision wraps at 16 bits
    (b"[%.40000d]", 1, "[1]"),                         # ... to negative, then 0
])
def test_flags_width_precision(f: bytes, value: int, expected: str) -> None:
    assert fmt(f, value) == expected


@pytest.mark.parametrize("f, values, expected", [
    (b"[%*d]", (5, 42), "[   42]"),
    (b"[%*d]", (-5, 42), "[42   ]"),                   # negative '*' width: left-justify
    (b"[%-*d]", (-5, 42), "[42   ]"),
    (b"[%.*d]", (4, 7), "[0007]"),
    (b"[%.*d]", (-1, 7), "[7]"),
    (b"[%*.*d]", (6, 3, 7), "[   007]"),
    (b"[%.*s]", (2, "abc"), "[ab]"),
    (b"[%.*s]", (-1, "abc"), "[]"),                    # negative '*' precision becomes 0
    (b"[%*s]", (-4, "ab"), "[ab  ]"),
    (b"[%*c]", (3, 0x78), "[  x]"),
    (b"[%-3c]", (0x78,), "[x  ]"),
    (b"[%03c]", (0x78,), "[  x]"),                     # %c is never zero-padded
    (b"[%.*d]", (-70000, 1), "[1]"),                   # precision clamp(-70000, 0, 32767)
])
def test_star_width_and_precision(f: bytes, values: tuple[object, ...], expected: str) -> None:
    assert fmt(f, *values) == expected


def test_star_width_clamps_to_field_width_max() -> None:
    text = fmt(b"%*d", 1 << 24, 1)
    assert len(text) == (1 << 23) - 1
    assert text[-2:] == " 1" and set(text[:-1]) == {" "}
    text = fmt(b"%*d", -(1 << 24), 1)                  # clamp to -(2**23-1), then left
    assert len(text) == (1 << 23) - 1 and text[0] == "1"


def test_star_precision_clamps_to_precision_max() -> None:
    assert fmt(b"%.*d", 1 << 16, 1) == "0" * 32766 + "1"


# ---- %s -----------------------------------------------------------------------------------
@pytest.mark.parametrize("f, values, expected", [
    (b"[%s]", (None,), "[(null)]"),
    (b"[%s]", (0x10,), "[(efault)]"),                 # below PAGE_SIZE
    (b"[%s]", (0xFFF,), "[(efault)]"),
    (b"[%s]", (0x1000,), "[(efault)]"),                # unreadable
    (b"[%s]", (M64 - 22,), "[(efault)]"),              # ERR_PTR(-EINVAL)
    (b"[%.3s]", (None,), "[(nu]"),
    (b"[%10s]", (None,), "[    (null)]"),
    (b"[%-8s|", ("ab",), "[ab      |"),
    (b"[%.2s]", ("hello",), "[he]"),
    (b"[%5.2s]", ("hello",), "[   he]"),
    (b"[%.s]", ("abc",), "[abc]"),                     # "." alone: no precision
    (b"%s", (b"\xe9t\xe9",), "\xe9t\xe9"),
])
def test_string(f: bytes, values: tuple[object, ...], expected: str) -> None:
    assert fmt(f, *values) == expected


def test_string_from_memory() -> None:
    memory = {0x5000: b"abc\0def", M64 - 4096: b"edge"}
    assert fmt(b"%s|%s", 0x5000, 0x5002, strings=memory) == "abc|c"
    assert fmt(b"%s", M64 - 4096, strings=memory) == "edge"   # -4096 is not an error value
    assert fmt(b"%s", 0xFFFFFFEA, pointer_bits=32) == "(efault)"


# ---- unknown conversions ------------------------------------------------------------------
@pytest.mark.parametrize("f, values, expected", [
    (b"a%yb%d", (1,), "a"),
    (b"x%n y", (0,), "x"),
    (b"end%", (), "end"),
    (b"a%-", (), "a"),
    (b"%d%k%d", (1, 2), "1"),
    (b"ab\0%d", (1,), "ab"),                           # the format is a C string
])
def test_invalid_conversion_drops_the_rest(f: bytes, values: tuple[object, ...],
                                           expected: str) -> None:
    assert fmt(f, *values) == expected


# ---- %p -----------------------------------------------------------------------------------
def test_plain_pointer_is_hashed() -> None:
    formatted = run(b"ptr=%p", 0xFFFF888001234000)
    assert formatted.pattern == "ptr=[0-9a-f]{16}"
    assert re.fullmatch(r"ptr=00000000[0-9a-f]{8}", formatted.text)
    assert re.fullmatch(formatted.pattern, formatted.text)
    assert re.fullmatch(formatted.pattern, "ptr=00000000cafef00d")


@pytest.mark.parametrize("f, options, expected", [
    (b"%p", {}, "00000000deadbeef"),
    (b"%pK", {}, "00000000deadbeef"),                  # kptr_restrict 0 hashes
    (b"%pK", {"kptr_restrict": 2}, "0000000000000000"),
    (b"%p", {"pointer_bits": 32}, "deadbeef"),
    (b"%pZzz9!", {}, "00000000deadbeef!"),             # unknown letter; alnums skipped
    (b"%p\xe9x", {}, "00000000deadbeef"),              # kernel ctype: e-acute is alnum
    (b"%p\xd7x", {}, "00000000deadbeef\xd7x"),         # the multiplication sign is not
])
def test_hashed_pointer_text(f: bytes, options: dict[str, Any], expected: str) -> None:
    assert fmt(f, 0x1234000, hash_pointer=ptr_hash(0xDEADBEEF), **options) == expected


def test_hash_is_masked_to_32_bits() -> None:
    assert fmt(b"%p", 0x1234000, hash_pointer=ptr_hash(0x123456789)) == "0000000023456789"


def test_32_bit_pattern() -> None:
    assert run(b"%p", 0x1234000, pointer_bits=32).pattern == "[0-9a-f]{8}"


@pytest.mark.parametrize("f, hash_value, expected, other", [
    (b"[%12p]", 0xBEEF, "[        beef]", "[    cafef00d]"),
    (b"[%-p]", 0xBEEF, "[beef            ]", "[1               ]"),
    (b"[%#p]", 0xBEEF, "[0x0000000000beef]", "[0x000000cafef00d]"),
])
def test_pointer_with_explicit_format(f: bytes, hash_value: int, expected: str,
                                      other: str) -> None:
    formatted = run(f, 0x1234000, hash_pointer=ptr_hash(hash_value))
    assert formatted.text == expected
    assert formatted.pattern is not None
    assert re.fullmatch(formatted.pattern, expected)
    assert re.fullmatch(formatted.pattern, other)
    assert not re.fullmatch(formatted.pattern, expected.replace("b", "g"))


@pytest.mark.parametrize("value, options, expected", [
    (0, {}, "0000000000000000"),                       # NULL prints raw, not hashed
    (0, {"pointer_bits": 32}, "00000000"),
    (M64 - 22, {}, "ffffffffffffffea"),                # so does ERR_PTR(-EINVAL)
])
def test_null_and_error_pointers_are_not_hashed(value: int, options: dict[str, Any],
                                                expected: str) -> None:
    formatted = run(b"%p", value, **options)
    assert (formatted.text, formatted.pattern) == (expected, None)


@pytest.mark.parametrize("f, value, options, expected", [
    (b"%px", 0xFFFFFFFFC0DE0000, {}, "ffffffffc0de0000"),
    (b"%px", 0x1234, {}, "0000000000001234"),
    (b"%px", 0x1234, {"pointer_bits": 32}, "00001234"),
    (b"[%10px]", 0x1234, {}, "[      1234]"),
])
def test_raw_pointer(f: bytes, value: int, options: dict[str, Any], expected: str) -> None:
    assert fmt(f, value, **options) == expected


@pytest.mark.parametrize("err, expected", [
    (-1, "-EPERM"), (-2, "-ENOENT"), (-11, "-EAGAIN"), (-12, "-ENOMEM"), (-22, "-EINVAL"),
    (-35, "-EDEADLK"), (-95, "-EOPNOTSUPP"), (-122, "-EDQUOT"), (-133, "-EHWPOISON"),
    (-512, "-ERESTARTSYS"), (-517, "-EPROBE_DEFER"), (-524, "-ENOTSUPP"),
    (-530, "-ERECALLCONFLICT"),
    (-41, "-41"), (-58, "-58"), (-520, "-520"), (-531, "-531"), (-4095, "-4095"),
])
def test_error_pointer_names(err: int, expected: str) -> None:
    assert fmt(b"%pe", M64 + err) == expected


def test_error_pointer_formatting() -> None:
    assert fmt(b"[%10pe]", M64 - 12) == "[   -ENOMEM]"
    assert fmt(b"[%6pe]", M64 - 600) == "[  -600]"
    assert fmt(b"%pe", M32 - 22, pointer_bits=32) == "-EINVAL"
    assert fmt(b"%pe", 0) == "0000000000000000"
    formatted = run(b"%pe", 0x1234000)                # not an error: plain %p
    assert formatted.pattern == "[0-9a-f]{16}"


HEX = {0x2000: b"\x00\x01\xab\xff\x10", 0x3000: bytes(range(100))}


@pytest.mark.parametrize("f, values, expected", [
    (b"%ph", (0x2000,), "00"),
    (b"%5ph", (0x2000,), "00 01 ab ff 10"),
    (b"%*ph", (3, 0x2000), "00 01 ab"),
    (b"%*phC", (4, 0x2000), "00:01:ab:ff"),
    (b"%3phD", (0x2000,), "00-01-ab"),
    (b"%5phN", (0x2000,), "0001abff10"),
    (b"[%*ph]", (0, 0x2000), "[]"),
    (b"%*ph", (-2, 0x2000), "00 01"),
    (b"%ph", (None,), "(null)"),
    (b"[%8ph]", (None,), "[  (null)]"),                # the byte count pads the error text
    (b"%4ph", (0x9000,), "(efault)"),
])
def test_hex_dump(f: bytes, values: tuple[object, ...], expected: str) -> None:
    assert fmt(f, *values, strings=HEX) == expected


def test_hex_dump_stops_at_64_bytes() -> None:
    expected = " ".join(f"{i:02x}" for i in range(64))
    assert fmt(b"%*ph", 100, 0x3000, strings=HEX) == expected


def _lookup(address: int) -> tuple[str, int, int, str | None] | None:
    table = {0xFFFFFFFFA0001010: ("my_func", 0x10, 0x40, "mymod"),
             0xFFFFFFFF81000000: ("vmalloc", 0, 0x20, None),
             0xFFFFFFFFA000200F: ("caller", 0xF, 0x80, None)}
    return table.get(address)


@pytest.mark.parametrize("f, value, expected", [
    (b"%pS", 0xFFFFFFFFA0001010, "my_func+0x10/0x40 [mymod]"),
    (b"%ps", 0xFFFFFFFFA0001010, "my_func [mymod]"),
    (b"%pS", 0xFFFFFFFF81000000, "vmalloc+0x0/0x20"),
    (b"%pB", 0xFFFFFFFFA0002010, "caller+0x10/0x80"),  # looks up address-1, shows +1
    (b"%pS", 0xFFFFFFFF81000008, "0xffffffff81000008"),
])
def test_symbols(f: bytes, value: int, expected: str) -> None:
    assert fmt(f, value, lookup_symbol=_lookup) == expected


def test_symbols_without_lookup() -> None:
    assert fmt(b"%pS", 0xFFFFFFFF81000000) == "0xffffffff81000000"
    assert fmt(b"[%20pB]", 0x1234) == "[              0x1234]"


def test_kernel_and_user_strings() -> None:
    assert fmt(b"%pks %pus", "abc", "de") == "abc de"
    assert fmt(b"%pk|%pkz", "abc", "abc") == "(einval)|(einval)"


def test_opaque_extension_is_left_open() -> None:
    formatted = run(b"mac %pM!", 0x2000, strings=HEX)
    assert formatted.pattern is not None
    assert re.fullmatch(formatted.pattern, "mac 00:01:ab:ff:10:00!")


# ---- level prefixes ---------------------------------------------------------------------------
def test_constants() -> None:
    assert printk.KERN_SOH == b"\x01"
    assert printk.DEFAULT_MESSAGE_LOGLEVEL == 4
    assert printk.LOG_LINE_MAX == 992


@pytest.mark.parametrize("text, expected", [
    (b"\x016hello", (6, False, b"hello")),
    (b"\x01c\x013x", (3, True, b"x")),
    (b"\x014\x016x", (4, False, b"x")),               # the first level wins
    (b"plain", (None, False, b"plain")),
    (b"\x018x", (None, False, b"\x018x")),             # 8 is no level
    (b"\x01", (None, False, b"\x01")),
    (b"\x01c", (None, True, b"")),
    (b"a\x016", (None, False, b"a\x016")),             # only leading pairs count
])
def test_parse_prefix(text: bytes, expected: tuple[int | None, bool, bytes]) -> None:
    assert printk.parse_prefix(text) == expected


def records(*messages: tuple[bytes, str]) -> list[tuple[object, ...]]:
    log = printk.LogBuffer()
    for text, source in messages:
        log.emit(text, source)
    return [(r["level"], r["source"], r["text"], r["pattern"]) for r in log.records()]


def test_record_defaults() -> None:
    log = printk.LogBuffer()
    log.emit(b"hello\n", "kernel")
    assert log.records() == [{"level": 4, "source": "kernel", "text": "hello", "pattern": None}]


@pytest.mark.parametrize("messages, expected", [
    ([(b"\x016info\n", "k")], [(6, "k", "info", None)]),
    ([(b"\x013abc", "m"), (b"\x01cdef\n", "m")], [(3, "m", "abcdef", None)]),
    ([(b"a", "m"), (b"\x01c\x017b\n", "m")], [(4, "m", "ab", None)]),   # cont level ignored
    ([(b"a", "m1"), (b"\x01cb\n", "m2")], [(4, "m1", "a", None), (4, "m2", "b", None)]),
    ([(b"a", "m"), (b"b\n", "m"), (b"\x01cc\n", "m")],
     [(4, "m", "a", None), (4, "m", "b", None), (4, "m", "c", None)]),
    ([(b"\x015x\n", "m"), (b"\x01c\x012y\n", "m")], [(5, "m", "x", None), (2, "m", "y", None)]),
    ([(b"a", "m"), (b"\x01c\n", "m"), (b"\x01cb", "m")],
     [(4, "m", "a", None), (4, "m", "b", None)]),
    ([(b"l1\nl2\n", "m")], [(4, "m", "l1\nl2", None)]),
    ([(b"\x01c\x01c\x01c\x016x\n", "m")], [(4, "m", "x", None)]),   # 4th pair unseen
    ([(b"\x01c\x016x\n", "m")], [(6, "m", "x", None)]),
    ([(b"open", "m")], [(4, "m", "open", None)]),
])
def test_records(messages: list[tuple[bytes, str]], expected: list[tuple[object, ...]]) -> None:
    assert records(*messages) == expected


def test_records_view_does_not_close_the_open_record() -> None:
    log = printk.LogBuffer()
    log.emit(b"a", "m")
    assert [r["text"] for r in log.records()] == ["a"]
    log.emit(b"\x01cb\n", "m")
    assert [r["text"] for r in log.records()] == ["ab"]


def test_truncation_keeps_991_bytes_including_the_prefix() -> None:
    # 2003 formatted bytes, reserve 992: 991 survive ("\x016" + 989 a's), the newline is
    # lost so the record stays open, but "b" (reserve 5) no longer fits: 989 + 5 > 992.
    assert records((b"\x016" + b"a" * 2000 + b"\n", "m"), (b"\x01cb\n", "m")) == [
        (6, "m", "a" * 989, None), (4, "m", "b", None)]


def test_truncation_boundaries() -> None:
    assert records((b"x" * 990 + b"\n", "m")) == [(4, "m", "x" * 990, None)]
    # 992 bytes: the newline is byte 992 and is cut; the empty continuation cannot join
    assert records((b"x" * 991 + b"\n", "m"), (b"\x01c\n", "m")) == [
        (4, "m", "x" * 991, None), (4, "m", "", None)]


def test_continuation_must_fit_its_reserve() -> None:
    assert records((b"a" * 985, "m"), (b"\x01cbbb\n", "m")) == [
        (4, "m", "a" * 985 + "bbb", None)]                 # 985 + 7 == 992
    assert records((b"a" * 985, "m"), (b"\x01cbbbb\n", "m")) == [
        (4, "m", "a" * 985, None), (4, "m", "bbbb", None)]  # 985 + 8 > 992


def test_records_keep_pointer_patterns() -> None:
    log = printk.LogBuffer()
    log.emit_formatted(run(b"\x016ptr %p", 0x1234000), "m")
    log.emit_formatted(run(b"\x01c q\n"), "m")
    (record,) = log.records()
    assert record["level"] == 6
    assert isinstance(record["text"], str) and re.fullmatch(r"ptr 00000000[0-9a-f]{8} q",
                                                            record["text"])
    assert isinstance(record["pattern"], str)
    assert re.fullmatch(record["pattern"], "ptr 0000000012345678 q")
    assert not re.fullmatch(record["pattern"], "ptr 0000000012345678 q\n")


def test_truncation_inside_a_hashed_pointer() -> None:
    # "\x014" + 980 a's + 16 hash digits = 998 bytes: 991 survive, 9 of them hash digits
    log = printk.LogBuffer()
    log.emit_formatted(run(b"\x014" + b"a" * 980 + b"%p", 0x1234000,
                           hash_pointer=ptr_hash(0x89ABCDEF)), "m")
    (record,) = log.records()
    assert record["text"] == "a" * 980 + "000000008"
    assert isinstance(record["pattern"], str)
    assert re.fullmatch(record["pattern"], "a" * 980 + "00000000f")
    assert not re.fullmatch(record["pattern"], "a" * 980 + "00000000f0")


def test_emit_formatted_without_pieces() -> None:
    log = printk.LogBuffer()
    log.emit_formatted(printk.Formatted("\x012abc\n", None), "m")
    assert log.records() == [{"level": 2, "source": "m", "text": "abc", "pattern": None}]


def test_pyargs() -> None:
    args = printk.PyArgs([0x1FF, -1, None], {0x4000: b"xy\0z"})
    assert args.next_int(1, True) == -1
    assert args.next_int(2, False) == 0xFFFF
    assert args.next_int(8, False) == 0
    assert args.read_cstring(0x4000, 10) == b"xy"
    assert args.read_cstring(0x4000, 1) == b"x"
    assert args.read_bytes(0x4001, 3) == b"y\0z"
    assert args.read_bytes(0x4001, 4) is None
    assert args.read_cstring(0x8000, 4) is None
    with pytest.raises(IndexError):
        args.next_int(4, False)
