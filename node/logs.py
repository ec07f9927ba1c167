"""Structured logging: one JSON object per line (or plain text), configured once at start-up.

Attacker-controlled text must never reach a log line raw: ``safe`` escapes control characters
and caps the length, so a payload cannot forge log lines or flood a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from node.config import LoggingConfig

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def safe(value: Any, limit: int = 200) -> str:
    """SECURITY: attacker text for logs: control characters escaped, length capped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(cfg: LoggingConfig, role: str = "node") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {role} %(levelname)s %(name)s: "
                                               "%(message)s"))
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
