"""The few pieces of Markdown the generated parts are made of."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A code span, whose pipes a table leaves alone (and whose backslashes it would show).
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


def code(text: object) -> str:
    """`text` as inline code (a backtick inside takes a longer fence)."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    padding = " " if fence == "``" else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def cell(text: object) -> str:
    """`text` made safe for a table cell: one line, its pipes escaped outside code spans."""
    line = " ".join(str(text).split())
    parts, start = [], 0
    for span in _CODE_SPAN.finditer(line):
        parts += [line[start : span.start()].replace("|", "\\|"), span.group()]
        start = span.end()
    parts.append(line[start:].replace("|", "\\|"))
    return "".join(parts)


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def joined(items: Iterable[object]) -> str:
    """Items as inline code, comma-separated; empty for none."""
    return ", ".join(code(item) for item in items)
