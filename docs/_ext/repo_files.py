"""Sphinx extension: pages include repository files by their path in the repository.

A page names a file outside ``docs/`` the way GitHub resolves it, relative to the page
(``../../examples/custom_cam.py`` from ``howto/``).  The build reads a copy of ``docs/``
(``scripts/docs``, ``tests/test_docs.py``), where such a path leaves the copy, so ``literalinclude``
resolves a path that leaves the source directory against the repository's own ``docs/`` instead: the
page shows the tested file as it is, in the copy and in a build of ``docs/`` itself alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.directives.code import LiteralInclude

import attribution

REPO = Path(attribution.__file__).resolve().parents[1]
"""The repository root: the checkout the packages are installed from (``pip install -e``)."""


def in_repository(srcdir: Path, docname: str, relative: str) -> Path:
    """The repository file that ``relative``, written in page ``docname``, names."""
    page_dir = (srcdir / docname).parent.relative_to(srcdir)
    return (REPO / "docs" / page_dir / relative).resolve()


class RepositoryLiteralInclude(LiteralInclude):
    """``literalinclude``, with paths that leave the source directory read from the repository."""

    def run(self) -> list:
        _, path = self.env.relfn2path(self.arguments[0])
        srcdir = Path(self.env.srcdir).resolve()
        if not Path(path).resolve().is_relative_to(srcdir) and not self.arguments[0].startswith("/"):
            target = in_repository(srcdir, self.env.docname, self.arguments[0])
            page_dir = (srcdir / self.env.docname).parent
            self.arguments[0] = os.path.relpath(target, page_dir)
        return super().run()


def setup(app: Sphinx) -> dict:
    app.add_directive("literalinclude", RepositoryLiteralInclude, override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
