"""Confirmers: real injections confirmed, look-alikes turned down, hostile input bounded."""

from __future__ import annotations

import pytest

from node.detectors.confirm import CONFIRMERS

SQL_YES = [
    "1' OR '1'='1", "admin' or 1=1--", "admin'--", "x') or ('a'='a", "' or ''='",
    "1 union select 1,2", "-1 UNION ALL SELECT NULL--", "1'; drop table users--",
    "1 and sleep(5)", "' and sleep(5)#", "1 or 1=1", "x or 1=1--", "select * from users",
    "select username, password from accounts--", "' OR true--", "' || '1'='1",
    "1 AND (SELECT 1 FROM users WHERE name='admin')=1", "1 order by 10--",
    "DROP TABLE users", "declare @q varchar(99)", "1;waitfor delay '0:0:5'--",
    "\" or \"\"=\"", "1) or (1=1", "' and extractvalue(1,concat(0x7e,version()))--",
    "-5521 AND 8751=8751", " WHERE 1=1 AND 1=0--", " AS x HAVING 1=1#", "(1)and(1)=(1)--",
    "' or ''-'",
    # a tautology after junk meant to trip the tokenizer, a stored procedure run
    "1 +1 or 1=1 -- 1", "1.%@ or 1=1 -- 1", "? or 1=1 --", "a or 2=2",
    "exec sp_addlogin 'name', 'password'", "execute master..xp_cmdshell 'dir'",
    # the closed string aliased as a table before the condition (a sqlmap boundary)
    "-2987\") as iyob where 7827=7827 or (8459=8459)*4906--", "1') AS xyz WHERE 2929=2929",
    # union glued to a number or to MySQL's NULL \N: the lexer splits them
    "0union select 1,2", "1.union select null", "\\Nunion select 1",
]
SQL_NO = [
    "Tom O'Neil or Jerry", "order by price", "Select items from the list", "It's 5 o'clock",
    "rock 'n' roll", "between 1 and 5 items", "3 or 4 stars", "rated 4 or more",
    "it's me or you", "\"Rock\" and \"Roll\" are fine", "Update your profile", "1 as a number",
    "the union of selected sets", "-5 degrees and falling", "where 5 is the answer",
    "pick 2 or 3 = 4", "is it 2 or 3", "size 2 or 3 = 3 -ish", "I exec my sp_ routine",
    "exec summary", "O'Brien as manager where needed", "it's as good as where we live",
    "\\norder by 1 line",  # \N is NULL in capitals only: a literal "\n" is no number
]
HTML_YES = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)",
    "\" onmouseover=\"alert(1)", "<svg/onload=alert(1)>", "java\tscript:alert(1)",
    "<iframe src=//evil>", "<a href=\"javascript:alert(1)\">x</a>",
    "<div style=\"width:expression(alert(1))\">", "<body onload=alert(1)>",
]
HTML_NO = [
    "<b>bold</b>", "a < b and c > d", "<a href=\"https://x\">x</a>", "I like <3 onions = good",
    "<p class=\"note\">hi</p>", "x > 5 && y < 3",
]
CASES = ([("sql", v, True) for v in SQL_YES] + [("sql", v, False) for v in SQL_NO]
         + [("html", v, True) for v in HTML_YES] + [("html", v, False) for v in HTML_NO])


@pytest.mark.parametrize("name,value,expected", CASES,
                         ids=[f"{n}-{e}-{i}" for i, (n, _, e) in enumerate(CASES)])
def test_confirmer(name: str, value: str, expected: bool) -> None:
    assert CONFIRMERS[name](value) is expected


@pytest.mark.parametrize("name", sorted(CONFIRMERS))
@pytest.mark.parametrize("value", ["'" * 100000, "<" * 100000, "(" * 100000,
                                   "/*" * 50000, "\"" * 100000, "<a " + "x=1 " * 50000])
def test_hostile_values_do_not_raise(name: str, value: str) -> None:
    assert CONFIRMERS[name](value) in (True, False)
