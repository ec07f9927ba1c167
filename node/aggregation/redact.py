"""Secrets are never stored in clear: the redaction applied to every hit before aggregation
stores it (stored hits, attack samples, exports, webhook payloads all come from the result).

What is masked: credential headers (Authorization, Proxy-Authorization, Cookie, Set-Cookie,
X-Api-Key and friends), every cookie value, and the values of token-bearing parameters
(password, token, api_key, secret, session, ...) in query strings, form-like text and
``name=value`` pairs. What is kept: the attack fragment itself. When an attack sits inside a
secret value (a SQL injection in a session cookie), the matched fragment survives and the rest
of the value becomes ``***``; the evidence stays, the credential does not.

Hits carry the fragment, the path and the point; a hit may also carry optional context
fields (``query``, ``headers``, ``value``, ``url``): each is redacted the same way if present.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

# SECURITY: header names whose values are credentials (lower case).
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token",
    "x-goog-api-key", "x-session-id", "x-vault-token",
})
COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})

# SECURITY: a parameter whose name contains one of these carries a secret.
SECRET_PARAM = re.compile(
    r"pass(?:wd|word|phrase)?|pwd|token|secret|api[_-]?key|apikey|session|sessid|\bsid\b"
    r"|auth|credential|private[_-]?key|jwt|csrf|xsrf|signature|access[_-]?key", re.I)

# A value made only of these characters carries no attack syntax: a credential to mask.
TOKEN_LIKE = re.compile(r"[A-Za-z0-9_~+/=.:%-]*")
AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token|digest|negotiate|apikey)(\s+)(\S+)")
PAIR = re.compile(r"([^\s=&;,?]+)=([^&;,\s]*)")


def is_secret_param(name: str) -> bool:
    return bool(SECRET_PARAM.search(name))


def _token_like(value: str) -> bool:
    return bool(TOKEN_LIKE.fullmatch(value)) and ".." not in value


def mask_keeping(value: str, fragment: str) -> str:
    """``value`` masked except where it contains the attack ``fragment`` (also when the value
    is URL-encoded and the fragment is the decoded text)."""
    if not value:
        return value
    if fragment:
        for candidate in (value, unquote_plus(value)):
            if fragment in candidate:
                pieces = candidate.split(fragment)
                return fragment.join(MASK if piece else "" for piece in pieces)
    return MASK


def redact_pairs(text: str, fragment: str, *, sep: str = "&", all_values: bool = False) -> str:
    """``name=value`` pairs split on ``sep`` (query strings and form bodies on ``&``, cookie
    headers on ``;``): secret values (every value when ``all_values``) masked except the
    attack fragment."""
    parts = text.split(sep)
    for index, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if eq and (all_values or is_secret_param(unquote_plus(name.strip()))):
            parts[index] = f"{name}={mask_keeping(value, fragment)}"
    return sep.join(parts)


def redact_header_value(name: str, value: str, fragment: str) -> str:
    lname = name.lower()
    if lname in COOKIE_HEADERS:
        return redact_pairs(value, fragment, sep=";", all_values=True)
    if lname in SECRET_HEADERS:
        scheme = AUTH_SCHEME.match(value)
        if scheme:
            return f"{scheme.group(1)}{scheme.group(2)}{mask_keeping(scheme.group(3), fragment)}"
        return mask_keeping(value, fragment)
    return value


def redact_headers(headers: list[Any], fragment: str) -> list[list[str]]:
    out: list[list[str]] = []
    for pair in headers:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            name, value = str(pair[0]), str(pair[1])
            out.append([name, redact_header_value(name, value, fragment)])
    return out


def redact_url(url: str, fragment: str) -> str:
    """A path or URL: query string and ``;jsessionid=``-style path parameters redacted."""
    path, sep, query = url.partition("?")
    if ";" in path:
        segments = path.split("/")
        path = "/".join(redact_pairs(seg, fragment, sep=";") for seg in segments)
    return path + sep + redact_pairs(query, fragment) if sep else path


def redact_fragment(fragment: str, point: list[str]) -> str:
    """The attack fragment is kept; only credentials it visibly carries are masked: a
    ``Bearer <token>`` at a credential header whose token has no attack syntax, or the
    token-like value of a secret ``name=value`` pair (a rule that matched across a whole
    Cookie header or query string)."""

    def scheme(m: re.Match[str]) -> str:
        creds = m.group(3)
        return f"{m.group(1)}{m.group(2)}{MASK}" if _token_like(creds) else m.group(0)

    def pair(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if is_secret_param(name) and value and _token_like(value):
            return f"{name}={MASK}"
        return m.group(0)

    if _is_secret_point(point):
        fragment = AUTH_SCHEME.sub(scheme, fragment)
    return PAIR.sub(pair, fragment)


def _is_cookie_point(point: list[str]) -> bool:
    return bool(point) and (point[0] == "cookie" or
                            (point[0] == "header" and len(point) > 1
                             and point[1].lower() in COOKIE_HEADERS))


def redact_hit(hit: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``hit`` safe to store: see the module docstring."""
    out = dict(hit)
    point = [str(p) for p in out.get("point") or []]
    # Context is masked around the *redacted* fragment: a credential the fragment carried is
    # not brought back through the context fields.
    out["fragment"] = raw_fragment = redact_fragment(str(out.get("fragment") or ""), point)
    if isinstance(out.get("path"), str):
        out["path"] = redact_url(out["path"], raw_fragment)
    for name in ("url", "query"):
        if isinstance(out.get(name), str):
            out[name] = redact_url(out[name], raw_fragment) if name == "url" else \
                redact_pairs(out[name], raw_fragment)
    if isinstance(out.get("headers"), list):
        out["headers"] = redact_headers(out["headers"], raw_fragment)
    if isinstance(out.get("value"), str) and _is_secret_point(point):
        out["value"] = mask_keeping(out["value"], raw_fragment)
    return out


def _is_secret_point(point: list[str]) -> bool:
    if not point:
        return False
    if point[0] == "header":
        return len(point) > 1 and point[1].lower() in SECRET_HEADERS
    return _is_cookie_point(point) or any(is_secret_param(p) for p in point[1:])
