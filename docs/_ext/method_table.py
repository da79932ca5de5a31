"""Sphinx extension: the ``method-table`` directive, the attribution registry as a table.

Read when the page is built: one row per ``attribution.registry.available()`` name, with its class (linked
to the class's page), the module that defines it, and a column per trait field of
``attribution.registry.MethodRecord``, so a new method or a new trait shows up with no edit here.  The
legend under the table is the record's own ``Attributes:`` documentation.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import inspect
import re
import sys

from docutils import nodes
from public_api import public_names
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

NOT_TRAITS = ("name", "cls")


def trait_fields() -> list[str]:
    """The trait fields of ``MethodRecord``, in declaration order (its name, class and private fields aside)."""
    from attribution.registry import MethodRecord

    return [f.name for f in dataclasses.fields(MethodRecord) if f.name not in NOT_TRAITS and not f.name.startswith("_")]


def trait_descriptions() -> dict[str, str]:
    """Trait -> its description in ``MethodRecord``'s ``Attributes:`` section (empty when undocumented)."""
    from attribution.registry import MethodRecord

    doc = inspect.getdoc(MethodRecord) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    descriptions: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"    (\w+): (.*)", line)
        if match:
            current = match.group(1)
            descriptions[current] = match.group(2)
        elif current and line.startswith("        "):
            descriptions[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return descriptions


def _public_path(cls: type) -> str | None:
    for public in public_names():
        if public.kind == "class" and not public.alias_of:
            if getattr(importlib.import_module(public.module), public.name) is cls:
                return public.path
    return None


def _xref(target: str, text: str, docname: str) -> nodes.Node:
    ref = addnodes.pending_xref(
        "", refdomain="py", reftype="class", reftarget=target, refexplicit=True, refwarn=True, refdoc=docname
    )
    ref += nodes.literal(text, text, classes=["xref", "py", "py-class"])
    return ref


def _cell(content: nodes.Node | list[nodes.Node] | str, classes: tuple[str, ...] = ()) -> nodes.entry:
    entry = nodes.entry(classes=list(classes))
    paragraph = nodes.paragraph()
    paragraph += nodes.Text(content) if isinstance(content, str) else content
    entry += paragraph
    return entry


def _row(cells: list[nodes.entry]) -> nodes.row:
    row = nodes.row()
    row += cells
    return row


def _mark(value: object) -> str:
    """A trait's value in the table: a tick for True, nothing for False, the value otherwise."""
    return "✓" if value is True else "" if value is False else str(value)


def _with_literals(text: str, docname: str) -> nodes.paragraph:
    """A paragraph of docstring prose: its ````literals```` as code, its ``:role:`target``` references as
    links (the record's docstring is reST, read here without a parser)."""
    paragraph = nodes.paragraph()
    position = 0
    for match in re.finditer(r"``(.+?)``|:(\w+):`~?([^`]+)`", text):
        paragraph += nodes.Text(text[position : match.start()])
        if match.group(1) is not None:
            paragraph += nodes.literal(match.group(1), match.group(1))
        else:
            role, target = match.group(2), match.group(3)
            ref = addnodes.pending_xref(
                "", refdomain="py", reftype=role, reftarget=target, refexplicit=True, refwarn=True, refdoc=docname
            )
            ref += nodes.literal(target, target, classes=["xref", "py", f"py-{role}"])
            paragraph += ref
        position = match.end()
    paragraph += nodes.Text(text[position:])
    return paragraph


class MethodTable(SphinxDirective):
    """``.. method-table::``: the registry's methods and their traits."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import attribution
        from attribution import registry

        # Re-read this page in an incremental build when the registry, the package or a method's module changes.
        sources = {attribution, registry, *(sys.modules[registry.get(n).__module__] for n in registry.available())}
        for module in sources:
            self.env.note_dependency(inspect.getsourcefile(module))
        traits = trait_fields()
        table = nodes.table(classes=["method-table"])
        group = nodes.tgroup(cols=2 + len(traits))
        table += group
        group += [nodes.colspec(colwidth=1) for _ in range(2 + len(traits))]
        head = nodes.thead()
        head += _row(
            [_cell("Name"), _cell("Class and module")]
            + [_cell(nodes.literal(t, t), classes=("trait",)) for t in traits]
        )
        group += head
        body = nodes.tbody()
        for name in registry.available():
            record = registry.record(name)
            path, cls_name = _public_path(record.cls), record.cls.__name__
            cls = _xref(path, cls_name, self.env.docname) if path else nodes.literal(cls_name, cls_name)
            module = ".<wbr>".join(html.escape(part) for part in record.cls.__module__.split("."))  # breaks at dots
            module = nodes.raw("", f'<br/><span class="method-module">{module}</span>', format="html")
            cells = [_cell(nodes.literal(name, name)), _cell([cls, module])]
            cells += [_cell(_mark(getattr(record, t)), classes=("trait",)) for t in traits]
            body += _row(cells)
        group += body

        legend = nodes.definition_list(classes=["method-table-legend"])
        descriptions = trait_descriptions()
        for trait in traits:
            item = nodes.definition_list_item()
            item += nodes.term("", "", nodes.literal(trait, trait))
            definition = nodes.definition()
            definition += _with_literals(descriptions.get(trait, ""), self.env.docname)
            item += definition
            legend += item
        summary = nodes.paragraph(text=f"{len(registry.available())} methods, {len(traits)} traits:")
        return [summary, table, nodes.rubric(text="The traits"), legend]


def setup(app: Sphinx) -> dict:
    app.add_directive("method-table", MethodTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
