"""The decoding table: each transform on its own, the variants of a value, and bounds on
hostile values (sizes and counts are asserted, never times)."""

from __future__ import annotations

import base64
import random
import re
import string
import urllib.parse

import pytest

from node.detectors import decode
from node.detectors.decode import TRANSFORMS, _b64_text, _unquote_bytes, explain, fired, variants

BY_NAME = {t.name: t for t in TRANSFORMS}

TRANSFORM_CASES = [
    ("url", "%27%20or%201%3D1", "' or 1=1"),
    ("url", "a+b", "a b"),
    ("url", "%u003cscript%u003e", "<script>"),
    ("url", "%c0%af", "/"),  # overlong UTF-8 slash
    ("url", "%e0%80%ae%e0%80%ae", ".."),  # 3-byte overlong dots
    ("url", "%f0%80%80%afetc", "/etc"),  # 4-byte overlong slash
    ("url", "%f8%80%80%80%ae%fc%80%80%80%80%ae", ".."),  # 5- and 6-byte forms (RFC 2279)
    ("url", "%c0%ee%c0%ee%c0%af", "../"),  # a lead before a lead byte, read leniently
    ("url", "%c0%c0%af", "\udcc0/"),  # a lead after a lead starts its own pair
    # a C0/C1 lead before a plain byte, as lenient decoders read it (IIS-era bypasses)
    ("url", "..%c0%2f..%c0%2fetc", "../../etc"),
    ("url", "..%c1%1cwin.ini", "..\\win.ini"),
    ("url", "%C3%A9", "é"),
    ("html_entities", "&lt;script&gt;", "<script>"),
    ("html_entities", "&#60;&#x3C;&#0000060", "<<<"),
    ("html_entities", "&lt&gt", "<>"),  # missing semicolons
    ("html_entities", "&quot;&apos;&amp;", "\"'&"),
    ("js_escapes", r"\x3cscript\x3e", "<script>"),
    ("js_escapes", r"\u003cimg\u003e", "<img>"),
    ("js_escapes", r"\u{3c}svg", "<svg"),
    ("js_escapes", r"\74a\76", "<a>"),
    ("unicode", "ＳＥＬＥＣＴ", "select"),  # fullwidth
    ("unicode", "＜script＞", "<script>"),
    ("unicode", "..\u2215..\u2215etc\u2216x", "../../etc\\x"),  # best-fit slashes
    ("whitespace", "union\t\n  select", "union select"),
    ("whitespace", "1\udca0and\udca01=1", "1 and 1=1"),  # a lone 0xA0 byte (MySQL blank)
    ("base64", base64.b64encode(b"<script>alert(1)</script>").decode(),
     "<script>alert(1)</script>"),
    ("base64", "x=" + base64.b64encode(b"; cat /etc/passwd #").decode(),
     "x=; cat /etc/passwd #"),
    ("sql_comments", "union/**/select", "union select"),
    ("sql_comments", "/*!50000select*/ 1", " select  1"),
    ("sql_comments", "1 /* unterminated", "1  "),
    # line comments used as blanks (whitespace folded already: the line break is a space)
    ("sql_comments", "1)--xQz AND--xQz 1=1", "1) AND 1=1"),
    ("sql_comments", "1\"#rnd RLIKE#rnd (SELECT 1)", "1\" RLIKE (SELECT 1)"),
    ("control_escapes", r"\n/bin/ls -al\n", "\n/bin/ls -al\n"),
    ("control_escapes", r"a\r\nb\tc", "a\r\nb\tc"),
    ("base64", base64.b64encode("’ or ‘1’=’1".encode()).decode(), "’ or ‘1’=’1"),  # UTF-8
    # a path is one run of the base64 alphabet: its segments are decoded one by one
    ("base64", "/api/PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg/edit",
     "/api/<script>alert(1)</script>/edit"),
    ("path", "..\\..\\windows\\win.ini", "../../windows/win.ini"),
    ("path", "/a//b/./c/../d", "/a/b/c/../d"),  # ".." stays visible
    ("shell", "c'a't /etc/pa\"ss\"wd", "cat /etc/passwd"),
    ("shell", "c\\at /etc/passwd", "cat /etc/passwd"),
    ("shell", "cat${IFS}/etc/passwd", "cat /etc/passwd"),
    ("shell", "ca$@t /etc/passwd", "cat /etc/passwd"),
    ("shell", ";'rmt' --version", ";rmt --version"),  # quoted command word
    ("shell", ';"curl" http://x', ";curl http://x"),
    ("shell", "kill '-'9", "kill -9"),
    ("shell", "ping`` 127.0.0.1", "ping 127.0.0.1"),  # empty substitutions
    ("shell", "pi$()ng 127.0.0.1", "ping 127.0.0.1"),
    ("shell", "pi<()ng x", "ping x"),
    ("shell", "cat /et\\ c/pa\\ sswd", "cat /etc/passwd"),  # backslash-newline, folded
    ("shell", ";/\\b\\i\\n/////s\\h", ";/bin/sh"),  # repeated slashes
    ("shell", "$\\{$\\{::-j\\}ndi:x\\}", "${${::-j}ndi:x}"),  # escaped braces
    ("shell", "cat$gi $gi/etc$gi/passwd", "cat /etc/passwd"),  # unset variables
    ("shell", ";sleep$jj 5;", ";sleep 5;"),
    ("tag_split", '"autof<x>ocus o<x>nfocus=alert<x>(1)//', '"autofocus onfocus=alert(1)//'),
    ("nulls", "1 uni\x00on sel\x00\x00ect 1,2", "1 union select 1,2"),
    ("nulls", "<scr\x00ipt>alert(1)</script>", "<script>alert(1)</script>"),
]


@pytest.mark.parametrize("name,value,expected", TRANSFORM_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TRANSFORM_CASES)])
def test_transform(name: str, value: str, expected: str) -> None:
    t = BY_NAME[name]
    assert t.trigger.search(value), "the trigger must fire where the transform changes"
    assert t.fn(value) == expected


@pytest.mark.parametrize("name,value,expected", TRANSFORM_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TRANSFORM_CASES)])
def test_gate_lets_the_transform_through(name: str, value: str, expected: str) -> None:
    # The cheap gates before the triggers may only skip transforms that change nothing.
    assert BY_NAME[name].gate(value)
    assert BY_NAME[name] in fired(value)



def _every_gate_and_trigger(value: str) -> set[str]:
    """``fired`` by its definition: every transform whose gate and trigger accept the value,
    plus base64 for a whole short base64 value."""
    names = {t.name for t in TRANSFORMS if t.gate(value) and t.trigger.search(value)}
    if len(value) in (8, 12, 16) and (value.endswith("=") or not (
            value.islower() or value.isupper())) and re.fullmatch(r"[A-Za-z0-9+/]{6,16}={0,2}",
                                                                  value):
        names.add("base64")
    return names


def _shortcut_cases() -> list[str]:
    # Values around the shortcuts of ``fired``: plain tokens in one or both cases, each
    # character class it sorts on, the slash marks, and short padded base64.
    rng = random.Random(7)
    alphabets = ["abcdef0123456789-", "ABCDEF0123456789_", string.ascii_letters + string.digits,
                 string.printable, "a/.*- ", "aA=/+", "é\x00\t a"]
    values = ["e5ec9dcf47e238be2c1f32cfa107a9256e6", "00-9d6696bc7f2d-01", "IE9SIDE9MQ==",
              "ABCDEFGH", "abcdefgh", "YWJjZA==", "1234567890123456", "a//b", "a/./b", "a/*b",
              "a--b", "a  b", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/125.0"]
    for alphabet in alphabets:
        for size in (1, 8, 12, 16, 17, 40):
            values += ["".join(rng.choice(alphabet) for _ in range(size)) for _ in range(30)]
    return values


def test_lenient_overlong_only_gives_separators_and_dots() -> None:
    # "À" then a letter in Latin-1 text stays: only "/", "\\" and "." come out of such a pair.
    assert BY_NAME["url"].fn("%C0bout %C1/x") == "\udcc0bout \udcc1/x"


def test_long_overlong_forms_never_make_a_surrogate_or_a_non_ascii_guess() -> None:
    # An overlong surrogate (U+D800 in four bytes) has no UTF-8 form: its bytes stay as
    # sent; so do 5- and 6-byte forms of non-ASCII characters (no decoder agrees on them).
    assert BY_NAME["url"].fn("%f0%8d%a0%80") == "\udcf0\udc8d\udca0\udc80"
    assert BY_NAME["url"].fn("%f8%88%80%80%80") == "\udcf8\udc88\udc80\udc80\udc80"
    assert BY_NAME["url"].fn("%f0%9f%98%80") == "\U0001f600"  # valid 4-byte UTF-8 as ever


def test_percent_decoding_is_urllibs() -> None:
    # The compiled copy of unquote_to_bytes, on escapes that are whole, cut, bad or mixed.
    rng = random.Random(7)
    units = ["%", "%2", "%2f", "%2F", "%zz", "%%", "%c0%af", "a", "+", "%u2215", "\xff", "é"]
    values = ["".join(rng.choice(units) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    for value in values:
        raw = value.encode("utf-8", "surrogateescape")
        assert _unquote_bytes(raw) == urllib.parse.unquote_to_bytes(raw), value


def test_base64_runs_decode_as_the_standard_decoder_does() -> None:
    # a2b_base64 directly, as b64decode(validate=True) would on the runs the fold tries.
    for text in ("' or 1=1-- -?>>?", "<script>alert(1)</script>", "ls -la /etc/passwd; id"):
        for run in (base64.b64encode(text.encode()).decode(),
                    base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")):
            assert _b64_text(run) == text
    assert _b64_text("YT1iP2M") == "a=b?c"  # padding restored
    assert _b64_text("YWJjZDE1x") is None  # 4n+1 characters: no base64


@pytest.mark.parametrize("plain,fast", [
    (r"(?<=\w)<[A-Za-z]{1,8}>", decode._SPLITTING_TAG.pattern),
    (r"(?<=\w)\x00+(?=\w)", decode._SPLITTING_NUL.pattern),
    (r"/\*|(?:--|#)\S*\s", BY_NAME["sql_comments"].trigger.pattern),
])
def test_literal_first_patterns_match_what_their_plain_forms_match(plain: str,
                                                                    fast: str) -> None:
    rng = random.Random(3)
    units = ["a", "B", "1", "_", "<", ">", "\x00", " ", "\t", "/", "*", "-", "#", "é"]
    for _ in range(20000):
        value = "".join(rng.choice(units) for _ in range(rng.randint(0, 14)))
        assert ([m.span() for m in re.finditer(plain, value)]
                == [m.span() for m in re.finditer(fast, value)]), value


def test_base64_runs_are_the_runs_of_the_alphabet() -> None:
    rng = random.Random(4)
    for _ in range(5000):
        value = "".join(rng.choice("aB1+/_- .=é") for _ in range(rng.randint(0, 60)))
        assert ([m.span() for m in decode._B64_RUN.finditer(value)]
                == [m.span() for m in re.finditer(r"[A-Za-z0-9+/_-]{16,}={0,2}", value)]), value


def test_plain_values_are_found_alike_short_and_long() -> None:
    # _plain reads long values by bytes, short ones by regex: the same answer either way.
    rng = random.Random(5)
    for _ in range(5000):
        value = "".join(rng.choice("aZ9 .-/_~:%<\té") for _ in range(rng.randint(0, 80)))
        expected = (re.search(decode._ODD_CHAR.pattern, value) is None and not any(
            mark in value for mark in ("//", "/./", "/*", "--", "  ")))
        assert decode._plain(value) == expected, value


def test_nulls_leave_binary_content_alone() -> None:
    # A file part's bytes hold NULs everywhere: only a few NULs are a split keyword.
    binary = "IHDR\x00\x00\x00\x01IDAT" + "ab\x00cd" * 20
    assert BY_NAME["nulls"] not in fired(binary)
    assert BY_NAME["nulls"] in fired("sel\x00ect")


def test_fired_shortcuts_keep_its_definition() -> None:
    wrong = [v for v in _shortcut_cases()
             if {t.name for t in fired(v)} != _every_gate_and_trigger(v)]
    assert not wrong, wrong[:5]


NO_CHANGE = [
    ("base64", "abcdefghijklmnopqrstuvwxyz"),  # a word, not base64
    ("base64", "0123456789abcdef0123456789abcdef"),  # hex
    ("base64", base64.b64encode(bytes(range(256))).decode()),  # binary, not text
    ("html_entities", "fish & chips"),
    ("path", "/api/v1/users"),
    ("sql_comments", "a / b * c"),
    ("shell", "' or 1=1"),  # prose quotes are not a quoted command word
    ("shell", "He said 'hello there' twice"),
    ("shell", "curl http://x.example/a"),  # "://" keeps its slashes
    ("sql_comments", "see python/cpython#84774 now"),  # a "#" inside a word is no comment
    ("sql_comments", "----WebKitFormBoundaryX"),  # no blank after: nothing hidden
    ("control_escapes", r"C:\Users\bob"),
    ("tag_split", "<b>bold</b> and <i>x</i>"),  # tags not glued to a word stay
    ("nulls", "../../etc/passwd\x00.png"),  # a NUL ending a name is the null-byte rules' case
    ("nulls", "..\x00/..\x00/etc/passwd"),
    # backslashes of absolute Windows paths are separators: no line break to report as CRLF
    ("control_escapes", r"/files/C:\new\notes.txt"),
    ("control_escapes", r"\\fileserver\share\new\readme.txt"),
    ("base64", "/api/users/AbCdEfGhIjKlMnOpQrSt/profile"),  # a random id is no text
    ("base64", "username"),  # a short word: never tried
    ("base64", "ABCDEFGH"),
]


@pytest.mark.parametrize("name,value", NO_CHANGE, ids=[f"{n}-{i}" for i, (n, _) in
                                                        enumerate(NO_CHANGE)])
def test_transform_leaves_alone(name: str, value: str) -> None:
    assert BY_NAME[name].fn(value) == value


# Bytes of a PNG with "+" and "/" in their base64 (a generic pipeline would decode the "+").
IMAGE_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
                             + bytes(range(256)) * 4).decode()
VARIANT_CASES = [
    ("plain", "hello", ["hello"]),
    ("user agent", "Mozilla/5.0 (X11; Linux x86_64)", ["Mozilla/5.0 (X11; Linux x86_64)"]),
    ("double url", "%2527%20or%201%3D1", ["%2527%20or%201%3D1", "%27 or 1=1", "' or 1=1"]),
    # one pass runs every decoder in turn: URL then HTML in the same pass
    ("url then html", "%26lt%3Bscript%26gt%3B", ["%26lt%3Bscript%26gt%3B", "<script>"]),
    ("fullwidth", "ＳＥＬＥＣＴ", ["ＳＥＬＥＣＴ", "select"]),
    # a whole short value (8, 12, 16 characters) is tried too: padded, or mixed case
    ("short base64", base64.b64encode(b"or 1=1--").decode(),
     [base64.b64encode(b"or 1=1--").decode(), "or 1=1--"]),
    ("short base64 one case", base64.b64encode(b" OR 1=1").decode(),
     [base64.b64encode(b" OR 1=1").decode(), " OR 1=1"]),
    ("short word", "username", ["username"]),
    ("short capitals", "PASSWORD", ["PASSWORD"]),
    # base64 of an encoded payload: its text is decoded once more
    ("base64 then url", base64.b64encode(b"<x%09onxxx=1").decode(),
     [base64.b64encode(b"<x%09onxxx=1").decode(), "<x%09onxxx=1", "<x\tonxxx=1", "<x onxxx=1"]),
    # a JWT's JSON after "Bearer " has nothing to decode: one variant, no second pipeline
    ("jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF123",
     ["Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF123",
      'Bearer {"alg":"HS256"}.{"sub":"1234"}.abcDEF123']),
    # a base64 data URL: the payload's text and its own variants, no "+"-as-space copy
    ("data url with script", "data:text/html;charset=utf-8;base64,"
     + base64.b64encode(b"<script>alert(1)</script>+%3Cx%3E").decode(),
     ["data:text/html;charset=utf-8;base64,"
      + base64.b64encode(b"<script>alert(1)</script>+%3Cx%3E").decode(),
      "<script>alert(1)</script>+%3Cx%3E", "<script>alert(1)</script> <x>"]),
    ("data url of an image", "data:image/png;base64," + IMAGE_B64,
     ["data:image/png;base64," + IMAGE_B64]),
    # anything else after the comma is no data URL of ours: the generic pipeline
    ("data url percent-encoded", "data:text/html,%3Cscript%3E",
     ["data:text/html,%3Cscript%3E", "data:text/html,<script>"]),
]


@pytest.mark.parametrize("name,value,expected", VARIANT_CASES,
                         ids=[c[0] for c in VARIANT_CASES])
def test_variants(name: str, value: str, expected: list[str]) -> None:
    assert variants(value) == expected


def test_passes_are_capped() -> None:
    value = "%" + "25" * 0 + "3C"
    for _ in range(6):
        value = value.replace("%", "%25")
    out = variants(value, max_passes=3)
    assert "<" not in "".join(out)  # 7 levels deep: beyond 3 passes, never fully decoded
    assert len(out) <= 4


def test_explain_lists_the_transforms_that_apply() -> None:
    names = [name for name, _ in explain("union/**/select%20x")]
    assert names == ["url", "sql_comments"]


def _nested_base64(levels: int) -> str:
    value = "<script>alert(1)</script>"
    for _ in range(levels):
        value = base64.b64encode(value.encode()).decode()
    return value


HOSTILE = [
    ("1 MB value", "A%41" * 262144),
    ("huge repetition", "'" * 1_000_000),
    ("nested base64", _nested_base64(30)),
    ("url bomb", "%25" * 300000),
    ("entity bomb", "&amp;" * 200000),
    ("escape bomb", "\\x5c" * 200000),
    ("nfkc expansion", "\ufdfa" * 100000),  # one char -> 18 chars under NFKC
    ("invalid utf-8", bytes(range(256)).decode("utf-8", "surrogateescape") * 1000),
    ("comments", "/*" * 300000),
    ("ifs", "${IFS}" * 200000),
]


@pytest.mark.parametrize("name,value", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_values_are_bounded(name: str, value: str) -> None:
    cap = 16384
    out = variants(value, max_passes=3, max_len=cap)
    assert 1 <= len(out) <= 10
    assert all(len(v) <= cap for v in out)
