"""MkDocs hook: the reference pages' generated parts, made from the code at build time.

A page's `<!-- generated: NAME -->` line becomes the Markdown `docsgen` makes for NAME
(the settings, the metrics, the error codes, the OpenAPI document...), so the reference
cannot drift from the code. The generators live in the `docsgen` package at the
repository's root, which the drift test (tests/test_docs_reference.py) imports too.
"""

from __future__ import annotations

import sys
from pathlib import Path

# MkDocs puts only this file's folder on the path while it loads a hook; the project's
# own packages come from its editable install, `docsgen` from the checkout itself.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from docsgen import expand  # noqa: E402  (after the path is set)


def on_page_markdown(markdown: str, **_: object) -> str:
    return expand(markdown)
