"""SQL confirmer: does a value flagged for SQL injection really form an injection?

Confirm stage of detection (after the Hyperscan prefilter, see ``engine.py``), run only on
values an ``sqli`` rule with ``confirm: sql`` flagged. Like libinjection: tokenize the value
as SQL three times (as is, as if it followed a single quote, as if it followed a double
quote: the contexts a parameter lands in), reduce each to a fingerprint of token types,
and look for the shapes of an injection: a string closed then a boolean operator and an
operand (``' or 1=1``), a string closed then a comment (``admin'--``), ``union select``,
stacked statements (``; drop``), dangerous or time-based functions (``sleep(``), numeric
tautologies (``1 or 1=1``), ``select`` with a column list. "Tom O'Neil or Jerry" closes a
string but continues with a plain word: not an injection.

Token types: ``s`` string, ``1`` number, ``v`` variable, ``n`` bare word, ``f`` function,
``U`` union, ``E`` select, ``T`` other statement, ``k`` keyword, ``&`` boolean operator,
``o`` operator, ``c`` comment, punctuation as itself.
"""

from __future__ import annotations

import re

MAX_TOKENS = 24
UNION = frozenset({"union"})
SELECT = frozenset({"select"})
STATEMENTS = frozenset({"insert", "update", "delete", "drop", "create", "alter", "truncate",
                        "exec", "execute", "declare", "shutdown", "grant", "revoke", "call",
                        "rename", "load", "handler", "set", "begin", "waitfor", "merge"})
LOGIC = frozenset({"or", "and", "xor", "&&", "||", "not"})
OPERATOR_WORDS = frozenset({"like", "rlike", "regexp", "between", "in", "is", "sounds", "div",
                            "mod", "glob", "match", "collate", "escape"})
KEYWORDS = frozenset({"from", "where", "order", "group", "by", "having", "limit", "into",
                      "outfile", "dumpfile", "case", "when", "then", "else", "end", "null",
                      "all", "distinct", "as", "top", "offset", "procedure", "delay", "values",
                      "table", "true", "false", "asc", "desc", "join", "on", "exists"})
DANGEROUS = frozenset({"sleep", "benchmark", "pg_sleep", "load_file", "extractvalue",
                       "updatexml", "xp_cmdshell", "sp_executesql", "dbms_pipe.receive_message",
                       "utl_inaddr.get_host_address", "utl_http.request", "randomblob",
                       "dbms_lock.sleep", "get_lock", "geometrycollection", "multipoint",
                       "name_const", "xp_dirtree", "sp_oacreate", "pg_read_file", "lo_import",
                       "sys_eval", "sys_exec", "make_set", "json_keys", "gtid_subset",
                       "exec", "execute", "analyse", "dbms_xmlgen.getxml", "xmltype",
                       "ctxsys.drithsx.sn"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<c>--[^\n]*|\#[^\n]*|/\*!\d*|\*/|/\*.*?(?:\*/|$))
  | (?P<s>'(?:[^'\\]|\\.|'')*'?|"(?:[^"\\]|\\.|"")*"?)
  | (?P<bt>`[^`]*`?)
  | (?P<num>0x[0-9a-f]+|0b[01]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+|(?-i:\\N))
  | (?P<v>@@?[\w.$]+|@`[^`]*`)
  | (?P<w>[a-z_][\w$]*(?:\.[a-z_][\w$]*)*)
  | (?P<op>\|\||&&|<=>|<>|!=|<=|>=|:=|[=<>+\-*/%^|&~!])
  | (?P<p>[(),;.])
  | (?P<x>.)
""", re.X | re.S | re.I)


def _word_type(word: str, rest: str) -> str:
    low = word.lower()
    if low in UNION:
        return "U"
    if low in SELECT:
        return "E"
    if low in LOGIC:
        return "&"
    if low in OPERATOR_WORDS:
        return "o"
    if low in ("true", "false", "null"):
        return "1"
    if rest.lstrip().startswith("("):
        return "f"
    if low in STATEMENTS:
        return "T"
    return "k" if low in KEYWORDS else "n"


def tokens(text: str) -> list[tuple[str, str]]:
    """(type, text) of the first ``MAX_TOKENS`` tokens, whitespace and versioned-comment
    markers dropped."""
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "ws" or tok in ("*/",) or tok.startswith("/*!"):
            continue
        out.append((_classify(kind or "x", tok, text[m.end():m.end() + 8]), tok))
        if len(out) >= MAX_TOKENS:
            break
    return out


def _classify(kind: str, tok: str, rest: str) -> str:
    if kind == "w":
        return _word_type(tok, rest)
    if kind == "op":
        return "&" if tok in ("||", "&&") else "o"
    return {"c": "c", "s": "s", "bt": "n", "num": "1", "v": "v", "p": tok}.get(kind, "?")


# Shapes that are an injection in any context (searched anywhere in the fingerprint).
ANYWHERE = (
    re.compile(r"U[k(]*E"),  # union [all] select
    re.compile(r";\(*[ETU]"),  # stacked statement
    re.compile(r"[&o,=(]\(*E[1onvfs(k]"),  # subquery: and (select 1 ...
)
# Shapes of a value used as is (a number or bare word in the query), from its start.
AS_IS = (
    # 1 or 1=1; x or 1=1--; (1)and(1)=(1) (parentheses for blanks)
    re.compile(r"\(*[1nv]\)*&\(*(?:[(fkEv]|[1s](?:o|c|;|\)|$)|n[oc])"),
    re.compile(r"1\)*k(?=[k1])"),  # 1 order by 3 / 1 limit 1 (keyword checked below)
    re.compile(r"\(*E(?:[ofv1s(]|[nk]\.|n,)"),  # select * / select @@version / select a,b
    re.compile(r"T(?:k|v|n+T|n+o)"),  # drop table / declare @x / update t set a=
)
# Shapes after a closed string (quote context), matched at the rest of the fingerprint.
AFTER_QUOTE = (
    re.compile(r"[c;]"),  # admin'--   x';
    re.compile(r"&\(*[1snvfkE(]"),  # ' or 1=1   ' and 'a'='a   ' || sleep(5)
    re.compile(r"o\(*[1snvf(](?:$|[o&c;)s1])"),  # '='   ' + (select ...
    re.compile(r"[kU]"),  # ' order by 1   ' union ... (keyword checked below)
)
CLAUSE_WORDS = frozenset({"order", "group", "having", "limit", "procedure", "into", "union",
                          "where", "from", "case", "exists", "when", "if"})
# A filter clause opened on a constant comparison: " WHERE 1=1 AND 1=0", " HAVING 1=1#".
_CONDITION = re.compile(r"k\(*1o\(*1")
CONDITION_WORDS = frozenset({"where", "having"})


def _types(toks: list[tuple[str, str]]) -> str:
    return "".join(t for t, _ in toks)


def _dangerous(toks: list[tuple[str, str]]) -> bool:
    return any(t == "f" and w.lower() in DANGEROUS for t, w in toks)


def _keyword_ok(toks: list[tuple[str, str]], types: str, m: re.Match[str]) -> bool:
    """A shape that starts with a keyword needs a clause keyword (not "1 as a number")."""
    i = types.find("k", m.start(), m.end() + 1)
    if i < 0 or m.group().startswith(("T", "(", "E")):
        return True
    return toks[i][1].lower() in CLAUSE_WORDS


def _constant_condition(toks: list[tuple[str, str]], types: str) -> bool:
    return any(toks[m.start()][1].lower() in CONDITION_WORDS
               for m in _CONDITION.finditer(types))


def _as_is(toks: list[tuple[str, str]]) -> bool:
    if len(toks) > 1 and toks[0][1] in ("-", "+") and toks[1][0] == "1":
        toks = toks[1:]  # a signed number: "-5521 and 8751=8751" is "1 and 1=1"
    types = _types(toks)
    if _constant_condition(toks, types):
        return True
    for shape in AS_IS:
        m = shape.match(types)
        if m and _keyword_ok(toks, types, m):
            return True
    return False


def _after_quote(toks: list[tuple[str, str]]) -> bool:
    """Quote context: the value closes the string; what follows is an injection shape."""
    first = toks[0][1]
    if toks[0][0] != "s" or len(first) < 2 or first[-1] != first[0]:
        return False
    skip = 1
    while skip < len(toks) and toks[skip][0] == ")":
        skip += 1
    if (skip + 1 < len(toks) and toks[skip][1].lower() == "as"
            and toks[skip + 1][0] in "nv"):
        skip += 2  # the closed string aliased as a table: sqlmap's ') AS xyz WHERE 1=1
    rest, types = toks[skip:], _types(toks[skip:])
    for shape in AFTER_QUOTE:
        m = shape.match(types)
        if m and _keyword_ok(rest, types, m):
            return True
    return False


COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "<=>", "like"})
PROCEDURE_PREFIXES = ("sp_", "xp_", "master")


def _tautology(toks: list[tuple[str, str]]) -> bool:
    """A boolean operator, then a constant comparison that is either cut off by a comment
    or terminator (``or 1=1 --``) or compares a number with itself (``or 2=2``), wherever it
    stands: what comes before it is often junk meant to trip tokenizers (``1 +1``, ``1.%@``).
    """
    for i in range(len(toks) - 3):
        if (toks[i][0] == "&" and toks[i + 1][0] == "1" and toks[i + 3][0] == "1"
                and toks[i + 2][1].lower() in COMPARISONS):
            after = toks[i + 4][0] if i + 4 < len(toks) else ""
            if after in ("c", ";") or (toks[i + 2][1] == "=" and after in ("", ")")
                                       and toks[i + 1][1] == toks[i + 3][1]):
                return True
    return False


def _exec_procedure(toks: list[tuple[str, str]]) -> bool:
    """``exec sp_addlogin ...``, ``execute master..xp_cmdshell``: a stored procedure run."""
    return any(w.lower() in ("exec", "execute") and i + 1 < len(toks)
               and toks[i + 1][1].lower().startswith(PROCEDURE_PREFIXES)
               for i, (_, w) in enumerate(toks))


def _injection_in(text: str, quoted: bool) -> bool:
    toks = tokens(text)
    if not toks:
        return False
    types = _types(toks)
    if (any(shape.search(types) for shape in ANYWHERE) or _dangerous(toks)
            or _tautology(toks) or _exec_procedure(toks)):
        return True
    return _after_quote(toks) if quoted else _as_is(toks)


def confirm(value: str) -> bool:
    """True when ``value`` forms SQL injection in one of the three contexts."""
    value = value[:4096]
    if _injection_in(value, False):
        return True
    return any(q in value and _injection_in(q + value, True) for q in ("'", '"'))
