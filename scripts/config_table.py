"""The README's configuration table, generated from node/config.py (the single source of truth).

Usage: .venv/bin/python scripts/config_table.py [--write]
With --write, replaces the table between the config-table markers of README.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from node.config import build_config, describe

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def table() -> str:
    lines = ["| option | environment | default | description |", "|---|---|---|---|"]
    for name, var, value, help_text in describe(build_config(None, env={})):
        default = "unset" if value is None else f"`{value!r}`"
        lines.append(f"| `{name}` | `{var}` | {default} | {help_text} |")
    return "\n".join(lines)


def main() -> None:
    if "--write" not in sys.argv:
        print(table())
        return
    text = README.read_text(encoding="utf-8")
    block = f"{START}\n{table()}\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
        text.replace("<!-- section: config-table -->", block)
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
