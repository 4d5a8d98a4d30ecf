"""The reference pages' generated parts: Markdown made from the code when the site is built.

A page of docs/reference holds a placeholder, `<!-- generated: settings -->`, where a part
goes; docs/hooks/reference.py (MkDocs' `on_page_markdown`) calls `expand` on every page,
and tests/test_docs_reference.py reads the same parts to check the code against the pages.
"""

from docsgen.pages import GENERATORS, PLACEHOLDER, expand

__all__ = ["GENERATORS", "PLACEHOLDER", "expand"]
