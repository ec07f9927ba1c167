"""The plugin's msgpack encoder (lua/oob/msgpack.lua) round-trips through Python's msgpack.

Every case is a Lua expression (``M`` is the encoder module) and the Python value the node
must decode. Scalars must also be byte-identical to ``msgpack.packb(value, use_bin_type=True)``
(the smallest format, as Python's packer chooses it); containers are compared decoded since
Lua's pairs() order is not defined.
"""

from __future__ import annotations

import math
import random
import struct

import msgpack
import pytest
from luarun import run_lua, unpack

LONG = 70000  # over 65535: str32 / bin32 / array32 territory

# (Lua expression, expected Python value)
SCALARS = [
    ("nil", None),
    ("M.null", None),
    ("true", True),
    ("false", False),
    ("0", 0),
    ("127", 127),
    ("128", 128),
    ("255", 255),
    ("256", 256),
    ("65535", 65535),
    ("65536", 65536),
    ("2^32 - 1", 2**32 - 1),
    ("2^32", 2**32),
    ("2^53", 2**53),
    ("2^53 - 1", 2**53 - 1),
    ("2^63", 2**63),
    ("2^64 - 2^11", 2**64 - 2**11),
    ("-1", -1),
    ("-32", -32),
    ("-33", -33),
    ("-128", -128),
    ("-129", -129),
    ("-32768", -32768),
    ("-32769", -32769),
    ("-2^31", -(2**31)),
    ("-2^31 - 1", -(2**31) - 1),
    ("-2^53", -(2**53)),
    ("-2^53 + 1", -(2**53) + 1),
    ("-2^63", -(2**63)),
    ("9223372036854775807LL", 2**63 - 1),
    ("-9223372036854775807LL - 1", -(2**63)),
    ("-9007199254740993LL", -(2**53) - 1),
    ("18446744073709551615ULL", 2**64 - 1),
    ("9007199254740993ULL", 2**53 + 1),
    ("42LL", 42),
    ("-5LL", -5),
    ("1.5", 1.5),
    ("-0.1", -0.1),
    ("1e300", 1e300),
    ("5e-324", 5e-324),
    ("2^64", float(2**64)),
    ("-2^63 - 2^11", float(-(2**63) - 2**11)),
    ("1/0", math.inf),
    ("-1/0", -math.inf),
    ('""', ""),
    ('"abc"', "abc"),
    ('string.rep("a", 31)', "a" * 31),
    ('string.rep("a", 32)', "a" * 32),
    ('string.rep("a", 255)', "a" * 255),
    ('string.rep("a", 256)', "a" * 256),
    ('string.rep("a", 65535)', "a" * 65535),
    (f'string.rep("a", {LONG})', "a" * LONG),
    ('"caf\\195\\169"', "café"),
    ('"\\240\\159\\152\\128"', "\U0001f600"),
    ('"\\239\\191\\191"', "\uffff"),
    ('"\\244\\143\\191\\191"', "\U0010ffff"),
    # not valid UTF-8, or with a zero byte: bin with the exact bytes
    ('"a\\0b"', b"a\x00b"),
    ('"\\0"', b"\x00"),
    ('"\\255"', b"\xff"),
    ('"\\192\\128"', b"\xc0\x80"),  # overlong NUL
    ('"\\224\\128\\128"', b"\xe0\x80\x80"),  # overlong 3-byte
    ('"\\240\\128\\128\\128"', b"\xf0\x80\x80\x80"),  # overlong 4-byte
    ('"\\237\\160\\128"', b"\xed\xa0\x80"),  # UTF-16 surrogate
    ('"\\244\\144\\128\\128"', b"\xf4\x90\x80\x80"),  # above U+10FFFF
    ('"\\226\\130"', b"\xe2\x82"),  # truncated
    ('"ok\\128"', b"ok\x80"),  # lone continuation byte
    ('"\\195"', b"\xc3"),
    ('M.bin("text")', b"text"),
    ('M.bin("")', b""),
    (f'M.bin(string.rep("\\0", {LONG}))', b"\x00" * LONG),
    ('M.bin(string.rep("x", 300))', b"x" * 300),
    ('M.str("plain")', "plain"),
    ('M.str("\\255")', b"\xff"),
]

# (Lua expression, expected Python value) compared after decoding
CONTAINERS = [
    ("{}", {}),
    ("M.array({})", []),
    ("M.empty_array", []),
    ("M.map({})", {}),
    ("{1, 2, 3}", [1, 2, 3]),
    ("{[1] = 1, [3] = 3}", {1: 1, 3: 3}),
    ("{[1] = 'a', [3] = 'c', [4] = 'd'}", {1: "a", 3: "c", 4: "d"}),
    ("{[0] = 'z', 'a'}", {0: "z", 1: "a"}),
    ("{[-1] = 1}", {-1: 1}),
    ("{a = 1}", {"a": 1}),
    ("{1, a = 2}", {1: 1, "a": 2}),
    ("{[1.5] = 'x'}", {1.5: "x"}),
    ("{[true] = 1}", {True: 1}),
    ("M.map({1, 2})", {1: 1, 2: 2}),
    ("{M.null, 2}", [None, 2]),
    ("{{}, {{}}, M.array({})}", [{}, [{}], []]),
    ("{a = {b = {c = {1, {d = 'e'}}}}}", {"a": {"b": {"c": [1, {"d": "e"}]}}}),
    ("{h = {{'name', 'v'}, {'name', '\\255'}}}", {"h": [["name", "v"], ["name", b"\xff"]]}),
    ("(function() local t = {} for i = 1, 15 do t[i] = i end return t end)()",
     list(range(1, 16))),
    ("(function() local t = {} for i = 1, 16 do t[i] = i end return t end)()",
     list(range(1, 17))),
    ("(function() local t = {} for i = 1, 65536 do t[i] = i % 7 end return t end)()",
     [i % 7 for i in range(1, 65537)]),
    ("(function() local t = {} for i = 1, 16 do t['k' .. i] = i end return t end)()",
     {f"k{i}": i for i in range(1, 17)}),
    ("(function() local t = {} for i = 1, 65536 do t['k' .. i] = true end return t end)()",
     {f"k{i}": True for i in range(1, 65537)}),
    ("{v = 1, records = M.array({{body = M.bin('\\0\\1'), ts = 1.25}})}",
     {"v": 1, "records": [{"body": b"\x00\x01", "ts": 1.25}]}),
]

ERRORS = [
    ("function() end", "cannot encode a function"),
    ("coroutine.create(print)", "cannot encode a thread"),
    ("{f = print}", "cannot encode a function"),
    ("(function() local t = {} t[1] = t return t end)()", "nesting deeper"),
    ("(function() local t = {} for _ = 1, 40 do t = {t} end return t end)()",
     "nesting deeper"),
    ("require('ffi').new('double', 1)", "unsupported cdata"),
]


def encode(exprs: list[str]) -> list[str]:
    lines = run_lua("encode.lua", stdin="\n".join(exprs) + "\n", timeout=60)
    assert len(lines) == len(exprs)
    return lines


def decoded(line: str) -> object:
    assert not line.startswith("ERR"), line
    return unpack(bytes.fromhex(line))


def test_scalars_round_trip_in_the_smallest_format() -> None:
    lines = encode([expr for expr, _ in SCALARS])
    for (expr, expected), line in zip(SCALARS, lines, strict=True):
        value = decoded(line)
        assert value == expected and type(value) is type(expected), expr
        assert bytes.fromhex(line) == msgpack.packb(expected, use_bin_type=True), expr


def test_nan_is_a_float64_nan() -> None:
    (line,) = encode(["0/0"])
    value = decoded(line)
    assert isinstance(value, float) and math.isnan(value)
    assert line.startswith("cb")


def test_containers_round_trip() -> None:
    lines = encode([expr for expr, _ in CONTAINERS])
    for (expr, expected), line in zip(CONTAINERS, lines, strict=True):
        assert decoded(line) == expected, expr


def test_container_headers_use_16_and_32_bit_forms() -> None:
    lines = encode(["M.array({1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16})",
                    "(function() local t = {} for i = 1, 65536 do t[i] = 0 end return t end)()"])
    assert lines[0].startswith("dc0010")
    assert lines[1].startswith("dd00010000")


def test_errors_are_returned_not_raised() -> None:
    lines = encode([expr for expr, _ in ERRORS])
    for (expr, message), line in zip(ERRORS, lines, strict=True):
        assert line.startswith("ERR ") and not line.startswith("ERR eval"), (expr, line)
        assert message in line, (expr, line)


def _doubles() -> list[float]:
    rng = random.Random(1234)
    fixed = [0.0, -0.5, 1.5, 0.1, -2.5e-300, 5e-324, 2.2250738585072014e-308,
             2.2250738585072009e-308, 1.7976931348623157e308, 123456.789, math.pi, -math.e]
    randoms = [struct.unpack(">d", rng.randbytes(8))[0] for _ in range(300)]
    return fixed + [x for x in randoms if math.isfinite(x)]


def test_manual_float64_matches_python() -> None:
    """The encoder's no-ffi float path (for a Lua without ffi) is exact too."""
    doubles = _doubles()
    exprs = [f"M.bin(M._encode_double_manual({x!r}))" for x in doubles]
    exprs += ["M.bin(M._encode_double_manual(1/0))", "M.bin(M._encode_double_manual(-1/0))",
              "M.bin(M._encode_double_manual(0/0))", "M.bin(M._encode_double_manual(-0.0))"]
    lines = encode(exprs)
    expected = [*doubles, math.inf, -math.inf, math.nan, -0.0]
    for x, line in zip(expected, lines, strict=True):
        raw = decoded(line)
        assert isinstance(raw, bytes) and raw[:1] == b"\xcb", x
        if math.isnan(x):
            assert math.isnan(struct.unpack(">d", raw[1:])[0])
        else:
            assert raw == msgpack.packb(x), x


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 1_000_000])
def test_binary_with_every_byte_value(size: int) -> None:
    expr = (f"(function() local t = {{}} for i = 0, {size} - 1 do t[#t + 1] = string.char(i % 256)"
            " end return table.concat(t) end)()")
    (line,) = encode([expr])
    expected_bytes = bytes(i % 256 for i in range(size))
    # the first byte is a zero byte: bin; the empty string is an empty str
    assert decoded(line) == (expected_bytes if size else "")
