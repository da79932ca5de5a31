"""Sphinx extension: public API names written as code in the prose pages link to their API pages.

The Markdown pages are read on GitHub too, where MyST roles would show as raw text, so they name API
objects as plain code (`attribution.IntegratedGradients`, `registry.available()`,
`AttributionMonitor`).  This transform turns such a literal into a cross-reference when its text (less a
trailing ``()``) is a public path, a public class's short name, a name's path relative to
``attribution`` (``registry.available``), or a public class's method; every other literal stays as it
is.  The references go through the Python domain, so nitpicky mode still checks that each one resolves.
"""

from __future__ import annotations

import importlib
import inspect

from docutils import nodes
from public_api import MODULES, public_names
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

_TARGETS: dict[str, str] = {}


def targets() -> dict[str, str]:
    """Literal text -> the public path it names (built once per process)."""
    if not _TARGETS:
        found = {}
        found.update({modname: modname for modname in MODULES})  # full paths only: `metrics` is also an argument
        for public in public_names():
            path = public.alias_of or public.path
            found[public.path] = path
            if public.module.startswith("attribution."):
                found[public.path.removeprefix("attribution.")] = path  # registry.available, metrics.infidelity
            if public.module in ("attribution", "lightning_xai") and public.kind in ("class", "exception"):
                found[public.name] = path
                cls = getattr(importlib.import_module(public.module), public.name)
                for member, value in inspect.getmembers(cls):
                    if not member.startswith("_") and (inspect.isfunction(value) or inspect.ismethod(value)):
                        found[f"{public.name}.{member}"] = f"{path}.{member}"
                        found[f"{public.path}.{member}"] = f"{path}.{member}"
        _TARGETS.update(found)
    return _TARGETS


class LinkPublicNames(SphinxTransform):
    default_priority = 5  # early: before pending references are collected and resolved

    def apply(self, **kwargs: object) -> None:
        if self.env.docname.startswith("api/"):
            return  # the API pages' own literals come from docstrings, which use roles
        known = targets()
        for literal in list(self.document.findall(nodes.literal)):
            if isinstance(literal.parent, (nodes.reference, addnodes.pending_xref, nodes.title, nodes.literal_block)):
                continue
            text = literal.astext()
            target = known.get(text.removesuffix("()"))
            if target is None:
                continue
            ref = addnodes.pending_xref(
                "",
                refdomain="py",
                reftype="obj",
                reftarget=target,
                refexplicit=True,
                refwarn=True,
                refdoc=self.env.docname,
            )
            ref += nodes.literal(text, text, classes=["xref", "py", "py-obj"])
            literal.replace_self(ref)


def setup(app: Sphinx) -> dict:
    app.add_transform(LinkPublicNames)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
