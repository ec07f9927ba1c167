"""HTML confirmer: does a value flagged for XSS hold markup that would execute?

Confirm stage of detection (after the Hyperscan prefilter, see ``engine.py``), run only on
values an ``xss`` rule with ``confirm: html`` flagged. A small tokenizer, not a parser:
it looks for a script-capable tag, an event-handler attribute, a ``javascript:``-like URI
in a URL attribute (or as the whole value, for values that land in an ``href``), or an
attribute-breaking quote followed by a handler. Plain ``<b>``, ``a < b`` or an https link
are not XSS.
"""

from __future__ import annotations

import re

# Tags that run script or load active content on their own.
ACTIVE_TAGS = frozenset({
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "meta",
    "link", "svg", "math", "xss", "import", "portal", "template", "isindex", "style",
})
URL_ATTRS = frozenset({"href", "src", "action", "formaction", "data", "xlink:href", "srcdoc",
                       "background", "poster", "lowsrc", "dynsrc", "code", "codebase", "to",
                       "values", "from", "by", "content"})
_TAG = re.compile(r"<\s*/?\s*([A-Za-z][\w:-]{0,31})([^<>]{0,2048})(?:>|$)", re.S)
_ATTR = re.compile(r"""([^\s"'>/=]{1,64})\s*(?:=\s*("[^"]*"|'[^']*'|`[^`]*`|[^\s>]+))?""")
_HANDLER = re.compile(r"""(?:^|["'`\s/;])on[a-z]{3,40}\s*=""", re.I)
_BAD_URI = re.compile(r"^(?:javascript|vbscript|livescript|data\s*:\s*text/html|data\s*:[^,]*"
                      r"base64)\s*:?", re.I)
_CTRL = re.compile(r"[\x00-\x20\x7f]+")
_STYLE_EXPR = re.compile(r"expression\s*\(|url\s*\(\s*['\"]?\s*javascript:", re.I)


def _bad_uri(value: str) -> bool:
    # SECURITY: browsers ignore control characters and spaces inside the scheme.
    return _BAD_URI.match(_CTRL.sub("", value.strip("\"'`"))) is not None


def _attrs_execute(attrs: str) -> bool:
    if _HANDLER.search(" " + attrs):
        return True
    for m in _ATTR.finditer(attrs):
        name, value = m.group(1).lower(), m.group(2) or ""
        if name in URL_ATTRS and _bad_uri(value):
            return True
        if name == "style" and _STYLE_EXPR.search(value):
            return True
    return False


def confirm(value: str) -> bool:
    """True when ``value`` would run script if reflected into an HTML page."""
    if _bad_uri(value):
        return True  # the whole value is a javascript: URI (lands in an href)
    for m in _TAG.finditer(value):
        if m.group(1).lower() in ACTIVE_TAGS or _attrs_execute(m.group(2)):
            return True
    # Breaking out of a quoted attribute: x" onmouseover="alert(1)
    return bool(re.search(r"""["'`][^<>]{0,64}?(?:\s|/)on[a-z]{3,40}\s*=""", value, re.I))
