"""Secrets never stored in clear: credential headers, cookies and token-bearing parameters are
masked in what aggregation stores, while the attack fragment itself is kept."""

from __future__ import annotations

import pytest
from agg_helpers import make_hit

from node.aggregation.redact import MASK, redact_hit

SECRET = "s3cr3tT0ken.abc"
SQLI = "' OR 1=1--"

CASES = [
    # (hit overrides, secrets that must be gone, texts that must stay)
    ({"path": f"/login?password={SECRET}&q=x"}, [SECRET], ["q=x", "/login"]),
    ({"path": f"/cb?access_token={SECRET}&api_key={SECRET}2"}, [SECRET], ["/cb"]),
    ({"path": f"/a;jsessionid={SECRET}/b"}, [SECRET], ["/b"]),
    ({"query": f"session={SECRET}&id=1%27%20OR%201%3D1--"}, [SECRET], ["id=1%27%20OR"]),
    ({"headers": [["Authorization", f"Bearer {SECRET}"], ["User-Agent", "sqlmap/1.7"]]},
     [SECRET], ["Bearer", "sqlmap/1.7"]),
    ({"headers": [["Cookie", f"sid={SECRET}; theme=dark"], ["X-Api-Key", SECRET],
                  ["Proxy-Authorization", f"Basic {SECRET}"],
                  ["Set-Cookie", f"auth={SECRET}; Path=/"]]}, [SECRET, "dark"], ["Set-Cookie"]),
    # The attack inside a secret value: the fragment stays, the rest of the value goes.
    ({"point": ["cookie", "session"], "fragment": SQLI,
      "headers": [["Cookie", f"session={SECRET}{SQLI}; lang=en"]],
      "value": f"{SECRET}{SQLI}"}, [SECRET], [SQLI, f"session={MASK}{SQLI}; lang={MASK}"]),
    ({"point": ["header", "authorization"], "fragment": SQLI,
      "headers": [["Authorization", f"Bearer {SECRET}{SQLI}"]]}, [SECRET], [SQLI]),
    ({"point": ["query", "password"], "fragment": SQLI,
      "path": f"/login?password={SECRET}%27%20OR%201%3D1--&user=bob"}, [SECRET],
     [SQLI, "user=bob"]),
    # A fragment that itself carries a credential (a rule matched a whole header).
    ({"point": ["header", "authorization"], "fragment": f"Bearer {SECRET}"}, [SECRET],
     ["Bearer"]),
    ({"point": ["header", "cookie"], "fragment": f"token={SECRET}; q=<script>"}, [SECRET],
     ["<script>"]),
    # Nothing secret: untouched.
    ({"path": "/search?q=<script>alert(1)</script>", "fragment": "<script>"}, [],
     ["q=<script>alert(1)</script>"]),
]


@pytest.mark.parametrize("overrides,gone,kept", CASES)
def test_redaction(overrides, gone, kept):
    hit = make_hit("r1", **{k: v for k, v in overrides.items() if k != "point"})
    if "point" in overrides:
        hit["point"] = overrides["point"]
    text = repr(redact_hit(hit))
    for secret in gone:
        assert secret not in text
    for piece in kept:
        assert piece in text


async def test_stored_hits_and_samples_are_redacted(client, auth):
    hit = make_hit("r1", path=f"/login?password={SECRET}", point=("cookie", "session"),
                   fragment=SQLI, headers=[["Cookie", f"session={SECRET}{SQLI}"],
                                           ["Authorization", f"Bearer {SECRET}"]])
    await client.deps.store.apply([hit])
    keys = [k async for k in client.deps.redis.scan_iter(match=f"{client.deps.keys.prefix}:*")]
    for key in keys:
        dump = await client.deps.redis.dump(key)
        assert SECRET.encode() not in (dump or b""), key
    (attack,) = (await (await client.get("/api/v1/attacks", headers=auth)).json())["items"]
    detail = await (await client.get(f"/api/v1/attacks/{attack['id']}", headers=auth)).json()
    assert detail["sample_hits"][0]["fragment"] == SQLI
