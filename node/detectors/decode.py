"""Decoding pipeline: the variants of one extracted value that are worth scanning.

Second stage of detection (after ``points.py``, before the Hyperscan scan in ``engine.py``).
Every transform is a named row of ``TRANSFORMS``, with a trigger that says when it can
change a value and a cheaper gate (``in`` tests, str methods) tried first; a value no
trigger fires on is scanned as is (the common case, kept fast). ``fired`` evaluates them
once per distinct intermediate value, not once per pass.

Order: the *decoders* (URL incl. ``%u`` and overlong UTF-8, HTML entities, JS/backslash
escapes) run together in passes until nothing changes or ``max_decode_passes``; every
distinct intermediate result is a variant. The *canonicalizers* (Unicode NFKC + case
folding, whitespace folding) then chain on the decoded value. The *class folds* (base64,
SQL comments, path normalization, shell quotes, control escapes, split tags, NULs inside
words) each apply once to the canonical value and each add a variant of their own,
because each destroys evidence another class needs.

ASCII case is left to the patterns' ``caseless`` flag. # SECURITY: everything is bounded:
input cut at ``max_value_bytes`` characters, a fixed number of passes, no transform
expands a value more than NFKC does (and outputs are cut again), at most ``MAX_VARIANTS``.
"""

from __future__ import annotations

import binascii
import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MAX_VARIANTS: Final = 10
B64_MIN: Final = 16  # shortest run decoded as base64 (9 bytes: "or 1=1--")
B64_MAX_RUNS: Final = 4


@dataclass(frozen=True, eq=False)  # compared by identity: kept in sets on the hot path
class Transform:
    name: str
    stage: str  # decoder | canonical | fold
    trigger: re.Pattern[str]  # the transform can only change a value this matches
    fn: Callable[[str], str]
    # A cheap test (str methods, ``in``) run before the trigger: False only where the
    # transform cannot change the value, so skipping it changes no output.
    gate: Callable[[str], bool]


# ----------------------------------------------------------------------------- decoders

_PCT: Final = re.compile(r"%[uU]([0-9a-fA-F]{4})|((?:%[0-9a-fA-F]{2})+)")
# A C0/C1 byte after a C0/C1 lead is not taken as its second byte: it starts a pair of its own.
_OVERLONG2: Final = re.compile(rb"[\xc0\xc1][\x00-\xbf\xc2-\xff]")
_OVERLONG3: Final = re.compile(rb"\xe0[\x80-\x9f][\x80-\xbf]")
# The 4-byte overlong forms, and the 5- and 6-byte forms of the original UTF-8 (RFC 2279),
# which no valid text holds: %f0%80%80%af, %f8%80%80%80%af, %fc%80%80%80%80%af are "/".
_OVERLONG_LONG: Final = re.compile(rb"\xf0[\x80-\x8f][\x80-\xbf]{2}|\xf8[\x80-\x87][\x80-\xbf]{3}"
                                   rb"|\xfc[\x80-\x83][\x80-\xbf]{4}")
# What a lenient decoder makes of a C0/C1 lead before a byte that is no continuation byte
# (%c0%2f, %c1%1c: the IIS-era bypasses), kept only where it gives a path separator or a dot:
# elsewhere such a pair is Latin-1 text ("À" then a letter) and stays as it was.
_LENIENT: Final = frozenset(b"/\\.")


def _overlong(m: re.Match[bytes]) -> bytes:
    # SECURITY: %c0%af is an overlong "/" that old decoders accepted: fold it to ASCII.
    b = m.group(0)
    if len(b) == 2:
        code = ((b[0] & 0x1F) << 6) | (b[1] & 0x3F)
        if not 0x80 <= b[1] < 0xC0 and code not in _LENIENT:
            return b  # no continuation byte: lenient, for separators and dots only
    else:
        code = 0
        for byte in b[1:]:
            code = (code << 6) | (byte & 0x3F)
        if (code >= 0x80 and len(b) > 4) or 0xD800 <= code < 0xE000:
            return b  # a 5- or 6-byte form of a non-ASCII character, a surrogate: as sent
    return chr(code).encode("utf-8")


def bytes_to_text(raw: bytes) -> str:
    """UTF-8 with overlong forms folded; invalid bytes kept as surrogate escapes."""
    if raw.isascii():
        return raw.decode("ascii")
    if b"\xc0" in raw or b"\xc1" in raw or b"\xe0" in raw:
        raw = _OVERLONG3.sub(_overlong, _OVERLONG2.sub(_overlong, raw))
    if b"\xf0" in raw or b"\xf8" in raw or b"\xfc" in raw:
        raw = _OVERLONG_LONG.sub(_overlong, raw)
    return raw.decode("utf-8", "surrogateescape")


def _pct(m: re.Match[str]) -> str:
    if m.group(1):
        return chr(int(m.group(1), 16))
    return bytes_to_text(bytes.fromhex(m.group(2).replace("%", "")))


# What urllib's unquote_to_bytes does, in the compiled module (urllib's loop runs
# interpreted): byte -> its hex digit's value (-1: none), and the 256 one-byte strings.
_HEX_DIGIT: Final = tuple(int(chr(b), 16) if chr(b) in "0123456789abcdefABCDEF" else -1
                          for b in range(256))
_BYTE: Final = tuple(bytes([b]) for b in range(256))


def _unquote_bytes(raw: bytes) -> bytes:
    """``%XX`` escapes decoded; a ``%`` without two hex digits stays as it is."""
    parts = raw.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 2:
            high, low = _HEX_DIGIT[part[0]], _HEX_DIGIT[part[1]]
            if high >= 0 and low >= 0:
                out.append(_BYTE[high * 16 + low])
                out.append(part[2:])
                continue
        out.append(b"%")
        out.append(part)
    return b"".join(out)


def url_decode(value: str) -> str:
    """One pass of URL decoding: ``%XX`` (as UTF-8), ``%uXXXX``, ``+`` as a space."""
    value = value.replace("+", " ")  # "+" first: "%2B" stays a plus
    if "%" not in value:
        return value
    if "%u" not in value and "%U" not in value:
        # The common case at byte level, as a server decodes it: split on "%" (the regex
        # called back into Python for every run), then the bytes read as UTF-8 like any
        # wire text. Surrogate escapes are the wire's own bytes.
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass  # a lone surrogate that no byte stands for (from an earlier %uD800)
        else:
            return bytes_to_text(_unquote_bytes(raw))
    return _PCT.sub(_pct, value)


def html_decode(value: str) -> str:
    """Named, decimal and hex entities, also without the final semicolon."""
    return html.unescape(value)


_JS: Final = re.compile(r"\\(?:[xX]([0-9a-fA-F]{2})|u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})"
                        r"|([0-7]{1,3}))")


def _js(m: re.Match[str]) -> str:
    hexa = m.group(1) or m.group(2) or m.group(3)
    code = int(hexa, 16) if hexa else int(m.group(4), 8)
    return chr(code) if code <= 0x10FFFF else m.group(0)


def js_decode(value: str) -> str:
    """JavaScript/C escapes: ``\\x3c``, ``\\u003c``, ``\\u{3c}``, octal ``\\74``."""
    return _JS.sub(_js, value)


# ----------------------------------------------------------------------------- canonical

# Slashes NFKC leaves alone but Windows' best-fit mapping (IIS, ANSI file APIs) turns into
# path separators: ..%u2215..%u2215etc reaches the file system as ../../etc.
_BEST_FIT: Final = str.maketrans({"\u2215": "/", "\u29f8": "/", "\u2216": "\\", "\u29f9": "\\"})


def unicode_fold(value: str) -> str:
    """NFKC (fullwidth and compatibility forms to ASCII) after case folding, and the
    best-fit slashes."""
    return unicodedata.normalize("NFKC", value.casefold()).translate(_BEST_FIT)


# A lone 0xA0 byte (Latin-1 NBSP, kept as the surrogate escape \udca0) is whitespace to
# MySQL: "1%A0and%A01=1" must read as "1 and 1=1". (U+00A0 is already matched by \s.)
_WS: Final = re.compile(r"\s+")
_LATIN1_NBSP: Final = chr(0xDCA0)  # chr(): mypyc takes no surrogate in a string literal


def whitespace_fold(value: str) -> str:
    if _LATIN1_NBSP in value:
        value = value.replace(_LATIN1_NBSP, " ")
    return _WS.sub(" ", value)


_CONTROL_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t"}
_CONTROL: Final = re.compile(r"\\([nrt])")
_WINDOWS_PATH: Final = re.compile(r"\b[A-Za-z]:\\|(?:^|[\s=])\\\\[^\\\s]")  # C:\..., \\host\...


def control_escape_fold(value: str) -> str:
    """``\\n``, ``\\r``, ``\\t`` as the line break / tab a JSON, JS or ``echo -e`` reader
    makes of them (``\\n/bin/ls -al\\n``). A fold, not a decoder: Windows paths
    (``..\\temp\\new``) keep their backslashes in every other variant, and a value holding
    an absolute one (``C:\\new\\notes.txt``, ``\\\\host\\c$\\new``) is left alone: its
    backslashes are separators, and a line break made of them would be reported as CRLF."""
    if _WINDOWS_PATH.search(value) is not None:
        return value
    return _CONTROL.sub(lambda m: _CONTROL_ESCAPES[m.group(1)], value)


# ----------------------------------------------------------------------------- class folds

# Tried from the start of each run of the alphabet only: a shorter run is not retried from
# each of its characters (the runs found are the same).
_B64_RUN: Final = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{" + str(B64_MIN) + r",}={0,2}")
# A whole value of 8, 12 or 16 characters that is base64 (btoa("or 1=1--") is 12); such
# short runs inside text are too often words, so they are only tried as a whole value.
_B64_SHORT: Final = re.compile(r"[A-Za-z0-9+/]{6,16}={0,2}")
_B64_WHOLE: Final = re.compile(r"\s*[A-Za-z0-9+/_-]+={0,2}\s*")
_PRINTABLE: Final = bytes(range(0x20, 0x7F)) + b"\t\r\n"
_DIGIT: Final = re.compile(r"[0-9+/]")


def _b64_text(run: str) -> str | None:
    """The run decoded, when it looks like base64 (mixed case and a digit, a padded or
    whole-quantum length, or 20+ characters: not a word, not hex) and decodes to mostly
    printable text (ASCII, or UTF-8 such as curly quotes and fullwidth letters)."""
    padded = run.endswith("=")
    # Both cases: lower() and upper() each change the run (no regex call per run).
    if not ((padded or (run.lower() != run and run.upper() != run))
            and (len(run) >= 20 or padded or len(run) % 4 == 0 or _DIGIT.search(run))):
        return None
    data = run.rstrip("=")
    data += "=" * (-len(data) % 4)
    try:
        # The run holds base64 letters only (the url-safe ones translated): b64decode's
        # validation and wrappers would only repeat that, interpreted.
        raw = binascii.a2b_base64(data.replace("-", "+").replace("_", "/").encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    if not raw:
        return None
    # Mostly printable ASCII (counted in C: bytes.translate drops the printable ones).
    if len(raw.translate(None, _PRINTABLE)) <= len(raw) // 10:
        return raw.decode("utf-8", "replace")
    return _utf8_text(raw)


def _utf8_text(raw: bytes) -> str | None:
    """Valid UTF-8 whose characters are mostly printable (random bytes rarely are)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    odd = sum(1 for c in text if not (c.isprintable() or c in "\t\r\n"))
    return text if odd <= len(text) // 10 else None


_SHORT_B64_LENS: Final = frozenset((8, 12, 16))


def _short_b64(value: str) -> bool:
    # Padded, or mixed case: "username" and "ABCDEFGH" are words, "IE9SIDE9MQ==" is not.
    return (len(value) in _SHORT_B64_LENS and (value.endswith("=") or _mixed_case(value))
            and _B64_SHORT.fullmatch(value) is not None)


def _b64_segments(run: str) -> str | None:
    """The run with its "/"-separated pieces decoded, when some piece decodes: a path such
    as ``/api/PHNjcmlwdD4/edit`` is one run of the base64 alphabet, misaligned as a whole."""
    pieces = run.split("/")
    decoded = 0
    for k, piece in enumerate(pieces):
        if len(piece) >= B64_MIN and decoded < B64_MAX_RUNS:
            text = _b64_text(piece)
            if text is not None:
                pieces[k] = text
                decoded += 1
    return "/".join(pieces) if decoded else None


def base64_decode(value: str) -> str:
    """Decode base64-looking runs (whole value or embedded) that give printable text."""
    if _short_b64(value):
        text = _b64_text(value)
        return value if text is None else text
    out: list[str] = []
    last = 0
    for i, m in enumerate(_B64_RUN.finditer(value)):
        if i >= B64_MAX_RUNS:
            break
        text = _b64_text(m.group(0))
        if text is None and "/" in m.group(0):
            text = _b64_segments(m.group(0))
        if text is not None:
            out += [value[last:m.start()], text]
            last = m.end()
    return "".join(out) + value[last:] if out else value


_VERSIONED: Final = re.compile(r"/\*!\d*(.*?)\*/", re.S)
_COMMENT: Final = re.compile(r"/\*.*?(?:\*/|$)", re.S)
# A line comment used as a blank: "union--x%0Aselect", "and#abc%0A1=1". The fold sees the
# value after whitespace folding (the line break is already a space), so a "--"/"#" with
# the word glued to it, then a blank, is the comment: it becomes a space (a comment at the
# end of the value hides nothing). Only where SQL could put one:
# after a blank, punctuation, a number or a keyword, not inside a word ("cpython#84774",
# "x--y" stay: a new blank there would join what the value keeps apart).
_LINE_COMMENT: Final = re.compile(r"(?:--|#)\S*\s")
_SQL_WORDS: Final = frozenset({
    "and", "or", "xor", "not", "select", "union", "all", "distinct", "from", "where", "case",
    "when", "then", "else", "end", "by", "like", "rlike", "regexp", "in", "is", "null", "if",
    "exec", "execute", "declare", "waitfor", "delay", "limit", "order", "group", "having",
    "as", "on", "set", "values", "into", "insert", "update", "delete", "drop", "sleep",
    "benchmark", "div", "mod", "between", "exists", "begin"})


def _word_before(value: str, end: int) -> str:
    start = end
    while start > 0 and (value[start - 1].isalnum() or value[start - 1] == "_"):
        start -= 1
    return value[start:end]


def _line_comment(m: re.Match[str]) -> str:
    word = _word_before(m.string, m.start())
    if not word or word[0].isdigit() or word.lower() in _SQL_WORDS:
        return " "
    return m.group(0)


def _versioned_body(m: re.Match[str]) -> str:
    return f" {m.group(1)} "


def sql_comment_fold(value: str) -> str:
    """``/*!50000select*/`` keeps its content; other ``/*...*/`` and line comments with
    their glued word (``--abc``, ``#abc``) become a space."""
    value = _COMMENT.sub(" ", _VERSIONED.sub(_versioned_body, value))
    if "--" in value or "#" in value:
        value = _LINE_COMMENT.sub(_line_comment, value)
    return value


_SLASHES: Final = re.compile(r"/{2,}")
_DOT_SEG: Final = re.compile(r"/(?:\./)+")


def path_normalize(value: str) -> str:
    """Backslashes to slashes, ``//`` and ``/./`` folded; ``..`` stays visible."""
    return _DOT_SEG.sub("/", _SLASHES.sub("/", value.replace("\\", "/")))


_IFS: Final = re.compile(r"\$\{IFS[^}]{0,8}\}|\$IFS\b|\$\{?[@*]\}?|\$\{?9\}?")
# A short variable glued to a word or opening a path is taken as unset, so empty:
# cat$gi /etc$gi/passwd, sleep$jj 5 (commix's evasion). Only a scanned variant: a set one
# ($HOME/x) only loses a prefix.
_EMPTY_VAR: Final = re.compile(r"(?<=\w)\$[A-Za-z_]\w{0,3}\b|\$[A-Za-z_]\w{0,3}(?=/)")
# Quotes only group words for the shell (c"a"t == cat, ;'rmt' == ;rmt), a backslash before
# a letter or a brace leaves that character (c\at, $\{jndi:...\}), and an empty
# substitution (``, $(), <(), >()) expands to nothing.
# A quoted word is unquoted only where a command or argument starts (value start, separator,
# blank), so prose quotes ("' or 1=1") are left alone.
# Each alternative starts with a literal character (the lookbehinds come after the quote),
# so ``re`` jumps between candidate characters instead of trying every position.
# A backslash then one blank was a backslash-newline line continuation before whitespace
# folding (cat /et\<LF>c/pa\<LF>sswd): the shell joins the two halves.
_QUOTES: Final = re.compile(r"""''|""|'(?<=\w')['"]*(?=\w)|"(?<=\w")['"]*(?=\w)|\\(?=[A-Za-z/{}])"""
                            r"""|\\ (?=[\w/])|``|\$\(\s*\)|<\(\s*\)|>\(\s*\)""")
# Repeated slashes name the same file for the shell (/bin/////sh); "://" is kept (URLs).
_SHELL_SLASHES: Final = re.compile(r"(?<!:)//+")
_QUOTED_WORD: Final = re.compile(r"""(['"])(?<![^;|&`(\s]['"])([\w./-]+)\1(?=[\s;|&)\w]|$)""")


def _second_group(m: re.Match[str]) -> str:
    # A function, not the template r"\2": ``re`` expands a template in interpreted code.
    return m.group(2)


def shell_fold(value: str) -> str:
    """``c'a't``, ``c\\at``, ``ca$@t``, ``cat${IFS}/etc/passwd``, ``cat$gi /etc``, ``pi``ng``,
    ``'rmt' -v`` as the shell reads them."""
    if "$" in value:
        value = _IFS.sub(lambda m: " " if "IFS" in m.group(0) else "", value)
        value = _EMPTY_VAR.sub("", value)
    value = _QUOTED_WORD.sub(_second_group, _QUOTES.sub("", value))
    return _SHELL_SLASHES.sub("/", value) if "//" in value else value


# Patterns that open with a literal (or a set of them) let ``re`` skip ahead to it instead of
# trying every position: "(?<=\w)<" is written "<(?<=\w<)", which matches the same.
_SPLITTING_TAG: Final = re.compile(r"<(?<=\w<)[A-Za-z]{1,8}>")
_SPLITTING_NUL: Final = re.compile(r"\x00(?<=\w\x00)\x00*(?=\w)")
NULS_MAX: Final = 16  # more NUL characters: binary content (a file part), not a split keyword


def tag_split_fold(value: str) -> str:
    """``o<x>nfocus=alert<x>(1)`` as a filter that strips tags leaves it: short tags glued
    to a word dropped (``Hello<br>World`` only loses its ``<br>``)."""
    return _SPLITTING_TAG.sub("", value)


def null_fold(value: str) -> str:
    """``uni%00on sel%00ect``, ``<scr%00ipt>`` as a C-string reader or a filter dropping
    NULs leaves them (ModSecurity's ``removeNulls``): NULs inside a word removed. A NUL
    elsewhere (``..%00/``, ``x.php%00.jpg``) stays, for the rules that look for it."""
    return _SPLITTING_NUL.sub("", value)


def _few_nuls(s: str) -> bool:
    return "\x00" in s and s.count("\x00") <= NULS_MAX


# ----------------------------------------------------------------------------- the table

def _t(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _mixed_case(s: str) -> bool:
    # base64_decode only decodes runs holding both an A-Z and an a-z letter.
    return not (s.islower() or s.isupper())


def _odd_space(s: str) -> bool:
    # Every whitespace character but " " is non-printable: no tab, newline or double space
    # without one of these.
    return "  " in s or not s.isprintable()


TRANSFORMS: Final[tuple[Transform, ...]] = (
    Transform("url", "decoder", _t(r"%[0-9a-fA-F]{2}|%[uU][0-9a-fA-F]{4}|\+"), url_decode,
              lambda s: "%" in s or "+" in s),
    Transform("html_entities", "decoder", _t(r"&(?:#|[A-Za-z]{2})"), html_decode,
              lambda s: "&" in s),
    Transform("js_escapes", "decoder", _t(r"\\(?:[xX][0-9a-fA-F]{2}|u[0-9a-fA-F{]|[0-7])"),
              js_decode, lambda s: "\\" in s),
    Transform("unicode", "canonical", _t(r"[^\x00-\x7f]"), unicode_fold,
              lambda s: not s.isascii()),
    Transform("whitespace", "canonical", _t(r"[\t\n\r\x0b\x0c\udca0]|\s{2}"), whitespace_fold,
              _odd_space),
    Transform("base64", "fold", _B64_RUN, base64_decode, _mixed_case),
    Transform("sql_comments", "fold", _t(r"/\*|--\S*\s|#\S*\s"), sql_comment_fold,
              lambda s: "/*" in s or "--" in s or "#" in s),
    Transform("path", "fold", _t(r"\\|//|/\./"), path_normalize,
              lambda s: "\\" in s or "//" in s or "/./" in s),
    Transform("shell", "fold", _t(r"""['"\\`]|\$[{@*I9(]|[<>]\(|\w\$[A-Za-z_]|\$\w{1,4}/"""),
              shell_fold,
              lambda s: "'" in s or '"' in s or "\\" in s or "`" in s or "$" in s
              or "<(" in s or ">(" in s),
    Transform("control_escapes", "fold", _t(r"\\[nrt]"), control_escape_fold,
              lambda s: "\\" in s),
    Transform("tag_split", "fold", _SPLITTING_TAG, tag_split_fold, lambda s: "<" in s),
    Transform("nulls", "fold", _SPLITTING_NUL, null_fold, _few_nuls),
)
DECODERS: Final = tuple(t for t in TRANSFORMS if t.stage == "decoder")
CANONICAL: Final = tuple(t for t in TRANSFORMS if t.stage == "canonical")
FOLDS: Final = tuple(t for t in TRANSFORMS if t.stage == "fold")
_B64: Final = next(t for t in TRANSFORMS if t.name == "base64")
_DECODING: Final = DECODERS + CANONICAL
_NONE: Final[frozenset[Transform]] = frozenset()
_PLAIN_ONLY: Final[tuple[Transform, ...]] = (_B64,)
# Every gate but those of _NO_MARK needs one of these marks (or "//", "/./", "/*", "--"):
# one cheap test skips the other gates on most values (identifiers, tokens, user agents).
_MARKS: Final = "%+&\\'\"`$<>#"
_MARK: Final = re.compile("[" + re.escape(_MARKS) + "]")
_NO_MARK: Final = tuple(t for t in TRANSFORMS
                        if t.name in ("unicode", "whitespace", "base64", "nulls"))
# A value of these characters only, without a slash mark or a double space ("whitespace"),
# can only be changed by base64. One character set is the fastest ``re`` search (an
# alternation of sets and words measured three times slower).
_ODD_CHAR: Final = re.compile("[^" + re.escape("".join(
    c for c in map(chr, range(0x20, 0x7F)) if c not in _MARKS)) + "]")


def _marked(value: str) -> bool:
    return (_MARK.search(value) is not None or "//" in value or "/./" in value
            or "/*" in value or "--" in value)


# The characters _ODD_CHAR does not match, as bytes: deleting them from an ASCII value's
# bytes leaves nothing exactly when the regex finds nothing. Two C loops instead of one
# regex step per character: faster from a few dozen characters on.
_PLAIN_BYTES: Final = bytes(c for c in range(0x20, 0x7F) if chr(c) not in _MARKS)
_PLAIN_BY_BYTES: Final = 32


def _plain(value: str) -> bool:
    if len(value) < _PLAIN_BY_BYTES:
        if _ODD_CHAR.search(value) is not None:
            return False
    elif not value.isascii() or value.encode("ascii").translate(None, _PLAIN_BYTES):
        return False
    return ("//" not in value and "/./" not in value and "/*" not in value
            and "--" not in value and "  " not in value)


def fired(value: str) -> frozenset[Transform]:
    """The transforms that may change ``value``: gate, then trigger. Computed once per
    distinct intermediate value (a transform that changes nothing keeps the set)."""
    if _plain(value):
        # Only base64 can apply, and only to a value with both cases or a short padded
        # one. Most tokens, ids, paths and user agents end here.
        if (value.islower() or value.isupper()) and not (
                len(value) in _SHORT_B64_LENS and value.endswith("=")):
            return _NONE
        candidates = _PLAIN_ONLY
    else:
        candidates = TRANSFORMS if _marked(value) else _NO_MARK
    found = [t for t in candidates if t.gate(value) and t.trigger.search(value) is not None]
    if len(value) in _SHORT_B64_LENS and _B64 not in found and _short_b64(value):
        found.append(_B64)  # a whole short padded value: the run trigger wants B64_MIN
    return frozenset(found) if found else _NONE


# A whole value that is a base64 data URL (RFC 2397: avatars and images in JSON APIs). Its
# payload is base64 alphabet only, so no decoder can change it and only the base64 fold can
# reveal anything: the text a scripted one carries (data:text/html;base64,PHNjcmlwdD4...).
# The generic pipeline would also scan a "+"-as-space copy of kilobytes of image data.
_DATA_URL: Final = re.compile(r"data:[\w.+/-]{0,128}(?:;[\w.+-]{1,64}=[\w.+-]{1,128}){0,8}"
                              r";base64,([A-Za-z0-9+/]+={0,2})", re.I)


def variants(value: str, max_passes: int = 3, max_len: int = 16384) -> list[str]:
    """Distinct variants of ``value`` to scan, the value itself first."""
    if len(value) > max_len:
        value = value[:max_len]
    if value[:5].lower() == "data:":
        data_url = _DATA_URL.fullmatch(value)
        if data_url is not None:
            return _data_url(value, data_url.group(1), max_passes, max_len)
    first = fired(value)
    if not first:
        return [value]  # the common case: nothing could change it
    out, current, found = _pipeline(value, first, max_passes, max_len)
    if _B64 in found:
        _add_base64(out, current, max_passes, max_len)
    if current != value and _B64 in first:
        # URL decoding turns a base64 "+" into a space: also try the value as sent.
        _add_base64(out, value, max_passes, max_len)
    return out[:MAX_VARIANTS]


def _data_url(value: str, payload: str, max_passes: int, max_len: int) -> list[str]:
    """The data URL as sent, then its payload's text (when it is text) and that text's own
    variants (never a second base64 fold, as in ``_add_base64``)."""
    out = [value]
    text = _b64_text(payload)
    if text:
        text = text[:max_len]
        _add(out, text)
        _add_pipeline(out, text, max_passes, max_len)
    return out[:MAX_VARIANTS]


def _pipeline(value: str, first: frozenset[Transform], max_passes: int,
              max_len: int) -> tuple[list[str], str, frozenset[Transform]]:
    """The decoders in passes, the canonical forms, then every fold but base64: (variants,
    the canonical value, the transforms that may change it)."""
    out = [value]
    current, found = _decode_passes(value, first, max_passes, max_len, out)
    for t in CANONICAL:
        if t in found:
            current, found = _apply(t, current, found, max_len)
    _add(out, current)
    for t in FOLDS:
        if t in found and t is not _B64:
            _add(out, t.fn(current)[:max_len])
    return out, current, found


def _add_base64(out: list[str], source: str, max_passes: int, max_len: int) -> None:
    """The base64 fold of ``source``. The text of a value that is all base64, or decoded
    text that is itself encoded (PHglMDlvbnh4eD0x is "<x%09onxxx=1"), goes through the
    pipeline once more (never a second base64 fold); runs embedded in a longer value with
    nothing to decode, such as a JWT's JSON after "Bearer ", do not."""
    folded = base64_decode(source)[:max_len]
    if folded == source or folded in out:
        return
    out.append(folded)
    if _B64_WHOLE.fullmatch(source) is not None or any(
            t.gate(folded) and t.trigger.search(folded) is not None for t in _DECODING):
        _add_pipeline(out, folded, max_passes, max_len)


def _add_pipeline(out: list[str], text: str, max_passes: int, max_len: int) -> None:
    """The variants the pipeline makes of decoded ``text`` (``text`` itself excluded)."""
    first = fired(text)
    if first:
        for v in _pipeline(text, first, max_passes, max_len)[0][1:]:
            _add(out, v)


def _apply(t: Transform, current: str, found: frozenset[Transform],
           max_len: int) -> tuple[str, frozenset[Transform]]:
    """``t`` applied to ``current``, with the transforms that may change the result."""
    changed = t.fn(current)[:max_len]
    if changed == current:
        return current, found
    return changed, fired(changed)


def _decode_passes(value: str, found: frozenset[Transform], max_passes: int, max_len: int,
                   out: list[str]) -> tuple[str, frozenset[Transform]]:
    current = value
    for _ in range(max_passes):
        before = current
        for t in DECODERS:
            if t in found:
                current, found = _apply(t, current, found, max_len)
        if current == before:
            break
        _add(out, current)
    return current, found


def _add(out: list[str], value: str) -> None:
    if value and value not in out:
        out.append(value)


def explain(value: str, max_passes: int = 3, max_len: int = 16384) -> list[tuple[str, str]]:
    """(transform name, output) for every transform that changes ``value`` on its own,
    for tests and ``oob-node rules test`` diagnostics."""
    return [(t.name, t.fn(value)[:max_len]) for t in TRANSFORMS
            if t.trigger.search(value) and t.fn(value) != value]
