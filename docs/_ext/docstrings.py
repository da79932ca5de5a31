"""Sphinx extension: napoleon read the way this project writes docstrings.

An attribute's docstring here is prose ("``attribute`` takes ``target``: the model output ..."), never
napoleon's inline ``type: description`` form, so a colon in its first line must not turn the words
before it into a type.  An empty comment (``..``) as first line makes napoleon read it all as description
(napoleon skips blank lines, so it needs a line without a colon).
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _attribute_docstring_is_prose(app: Sphinx, what: str, name: str, obj: object, options: dict, lines: list) -> None:
    if what in ("attribute", "data", "property") and lines and ":" in lines[0]:
        lines[:0] = ["..", ""]


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("autodoc-process-docstring", _attribute_docstring_is_prose, priority=400)  # before napoleon (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
