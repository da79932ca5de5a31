"""Sphinx extension: one API page per public name, generated from the packages' ``__all__`` at build time.

At ``builder-inited`` it writes into ``<srcdir>/api/`` a page per documented module
(``api/<module>/index.rst``: its docstring and a summary table), a page per public name
(``api/<module>/<name>.rst``, autodoc) and ``api/types/index.rst`` (the types that public signatures
name and no public module exports, see :func:`signature_classes`), rewriting only files whose text
changed and removing pages of names that are gone; ``api.md`` lists the modules' pages with a glob.
``scripts/docs`` and ``tests/test_docs.py`` build from a copy of ``docs/``, so nothing is generated in
the repository; a plain ``sphinx-build docs <out>`` generates into ``docs/api/``, which git ignores.
The name pages are orphans, reached from their module's table: in the sidebar's tree, 170 pages would
make every page's build several times slower.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
import typing
from collections.abc import Callable
from pathlib import Path

from public_api import MODULES, PACKAGES, PublicName, missing_modules, public_names
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.typing import stringify_annotation

logger = logging.getLogger(__name__)

API_DIR = "api"

TYPES_DIR = "types"


def page_of(path: str) -> str:
    """The docname of a public name's page (``attribution.IntegratedGradients`` ->
    ``api/attribution/IntegratedGradients``); a module's page is ``api/<module>/index``."""
    for modname in sorted(MODULES, key=len, reverse=True):
        if path == modname:
            return f"{API_DIR}/{modname}/index"
        if path.startswith(modname + "."):
            return f"{API_DIR}/{modname}/{path[len(modname) + 1 :]}"
    raise ValueError(f"{path} is in none of the documented modules {MODULES}")


def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def _external_bases(cls: type) -> list[str]:
    """Names of the classes in ``cls``'s MRO from outside these packages, whose members autodoc leaves out
    (a callback's Lightning hooks, an exception's ``args``)."""
    return sorted({c.__name__ for c in cls.__mro__[1:] if c.__module__.split(".")[0] not in PACKAGES} - {"object"})


def name_page(public: PublicName) -> str:
    """The reST of one public name's page."""
    directive = {"class": "autoclass", "exception": "autoexception", "function": "autofunction", "data": "autodata"}
    lines = [
        ":orphan:",  # reached from its module's table, not the sidebar (see the module's docstring)
        "",
        _title(public.path),
        f".. currentmodule:: {public.module}",
        "",
        f".. {directive[public.kind]}:: {public.name}",
    ]
    if public.kind in ("class", "exception"):
        cls = getattr(importlib.import_module(public.module), public.name)
        lines += ["   :members:", "   :show-inheritance:", "   :special-members: __call__"]
        external = _external_bases(cls)
        lines.append(f"   :inherited-members: {', '.join(external)}" if external else "   :inherited-members:")
    return "\n".join(lines) + "\n"


def module_page(modname: str, names: list[PublicName]) -> str:
    """The reST of a module's page: its docstring, then a table of its public names linking to their pages
    (aliases link to the page of the name they stand for)."""
    lines = [_title(modname), f".. automodule:: {modname}", "   :no-members:", ""]
    aliases = [n for n in names if n.alias_of]
    names = [n for n in names if not n.alias_of]
    if names:
        lines += [
            ".. rubric:: Public names",
            "",
            f".. currentmodule:: {modname}",
            "",
            ".. autosummary::",
            "   :nosignatures:",
            "",
            *(f"   {n.name}" for n in names),
            "",
        ]
    if aliases:
        links = ", ".join(f":py:obj:`{n.name} <{n.alias_of}>`" for n in aliases)
        lines += [f"Also exported here, documented under their first public path: {links}.", ""]
    return "\n".join(lines) + "\n"


TYPES = """\
Types used in signatures
========================

The public functions and classes name a few types that no public module exports: the functional core's
canonical arguments (an ``Objective``, ``FeatureMasks``), the base class of the summarizer's statistics,
what some members return, and the aliases for the forms an argument may take (``TensorOrTuple``,
``TargetType``, ``BaselineType``, ...).  Each is documented here under the path of the module that
defines it, so every name in a signature links to what it is.  These modules are private: the public
classes build the core's arguments at their boundary, and code outside the engine uses the public names.

"""


def _annotation_words(function: Callable) -> list[tuple[str, object]]:
    """(word, value in the function's module) for each name its annotations use: the words of string
    annotations, and the classes inside evaluated ones."""
    function = inspect.unwrap(function)  # a context manager's or a cache's wrapper keeps the annotations only
    found: list[tuple[str, object]] = []
    annotations = getattr(function, "__annotations__", {})
    pending = [a for name, a in annotations.items() if name not in ("self", "cls")]  # signatures omit them
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, str):
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", annotation))
            found += [(w, function.__globals__[w]) for w in sorted(words) if w in function.__globals__]
        elif inspect.isclass(annotation):
            found.append((annotation.__name__, annotation))
        else:
            pending += typing.get_args(annotation)
    return found


def _signature_callables(obj: object) -> list[Callable]:
    """The callables whose signatures a public name's page shows: the function, or a class's constructor
    and public methods and properties."""
    if not inspect.isclass(obj):
        return [obj] if callable(obj) else []
    found = []
    for name in ["__init__", "__call__", *(n for n in dir(obj) if not n.startswith("_"))]:
        member = inspect.getattr_static(obj, name, None)
        member = getattr(member, "__func__", member)  # static and class methods
        member = getattr(member, "fget", member)  # properties
        if inspect.isfunction(member):
            found.append(member)
    return found


def _is_ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] in PACKAGES


def _public_objects() -> list[object]:
    return [getattr(importlib.import_module(n.module), n.name) for n in public_names() if not n.alias_of]


@functools.cache
def signature_classes() -> dict[str, type]:
    """Path -> class, for each class of these packages that a public signature names and no documented
    module exports, and, in turn, each such class that their documented members' signatures name."""
    public = {id(obj) for obj in _public_objects()}
    found: dict[str, type] = {}
    pending = _public_objects()
    while pending:
        for function in _signature_callables(pending.pop()):
            for _, value in _annotation_words(function):
                if inspect.isclass(value) and _is_ours(value) and id(value) not in public:
                    path = f"{value.__module__}.{value.__qualname__}"
                    if path not in found:
                        found[path] = value
                        pending.append(value)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def type_aliases() -> dict[str, object]:
    """Alias name -> value, for every name that a public signature's string annotations use (or those of
    a class in :func:`signature_classes`) and that the defining module binds to a type alias (a union or a
    parametrised generic, not a class)."""
    aliases = {}
    for obj in _public_objects() + list(signature_classes().values()):
        for function in _signature_callables(obj):
            for word, value in _annotation_words(function):
                if typing.get_origin(value) is not None and not inspect.isclass(value):
                    aliases[word] = value
    return dict(sorted(aliases.items()))


def types_page(classes: dict[str, type], aliases: dict[str, object]) -> str:
    """The reST of the page of the types that signatures use: each class under its module's path, with its
    docstring and public members, then ``.. py:type::`` per alias, with the type it stands for."""
    lines = [TYPES]
    if classes:
        lines += ["Classes", "-------", ""]
        for path, cls in classes.items():
            heading = f"``{path}``"
            lines += [
                heading,
                "~" * len(heading),
                "",
                f".. currentmodule:: {cls.__module__}",
                "",
                f".. autoclass:: {cls.__qualname__}",
                "   :members:",
                "",
            ]
    public_classes = {n.name: n.path for n in public_names() if n.module == "attribution" and n.kind != "data"}
    lines += ["Type aliases", "------------", "", ".. currentmodule:: None", ""]
    for name, value in aliases.items():
        text = stringify_annotation(value, "fully-qualified-except-typing")
        text = re.sub(r"(?<![\w.])([A-Z]\w*)", lambda m: public_classes.get(m.group(1), m.group(1)), text)
        lines += [f".. py:type:: {name}", f"   :canonical: {text}", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """Docname -> reST, for every module, every public name and the type aliases."""
    out = {}
    names = public_names()
    for modname in MODULES:
        if modname in missing_modules():
            continue
        in_module = [n for n in names if n.module == modname]
        out[page_of(modname)] = module_page(modname, in_module)
        out.update({page_of(n.path): name_page(n) for n in in_module if not n.alias_of})
    out[f"{API_DIR}/{TYPES_DIR}/index"] = types_page(signature_classes(), type_aliases())
    return out


def write_pages(srcdir: Path) -> int:
    """Write the pages under ``srcdir/api``; returns how many files changed."""
    wanted = {srcdir / f"{docname}.rst": text for docname, text in pages().items()}
    changed = 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed += 1
    for stale in (srcdir / API_DIR).rglob("*.rst"):
        if stale not in wanted:
            stale.unlink()
            changed += 1
    return changed


def _generate(app: Sphinx) -> None:
    for modname in missing_modules():
        logger.warning(
            f"[api_pages] the documented module {modname} cannot be imported: restore it, or take it out of "
            "MODULES in docs/_ext/public_api.py and out of the pages that name it"
        )
    changed = write_pages(Path(app.srcdir))
    logger.info(f"[api_pages] {changed} API page(s) written under {Path(app.srcdir) / API_DIR}")


def _public_bases(app: Sphinx, name: str, obj: object, options: dict, bases: list[type]) -> None:
    """Show a class's documented bases only: a private base that has no entry on the types page is replaced
    by its own bases, so no "Bases:" line points at an undocumented implementation class."""
    public, pending = [], list(bases)
    while pending:
        base = pending.pop(0)
        private = _is_ours(base) and not _is_public(base) and base not in signature_classes().values()
        if private:
            pending[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in public:
            public.append(base)
    bases[:] = public or [object]


def _is_public(cls: type) -> bool:
    return id(cls) in _public_ids()


@functools.cache
def _public_ids() -> frozenset[int]:
    return frozenset(id(getattr(importlib.import_module(n.module), n.name)) for n in public_names())


def _dataclass_factories(
    app: Sphinx, what: str, name: str, obj: object, options: dict, signature: str | None, annotation: str | None
) -> tuple[str, str | None] | None:
    """A dataclass field's ``default_factory`` shown as its call (``list()``) where Python's signature has
    ``<factory>``, which the signature parser cannot read (it would split the signature at every comma)."""
    if not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    for field in dataclasses.fields(obj):
        if field.init and field.default_factory is not dataclasses.MISSING:
            factory = getattr(field.default_factory, "__qualname__", "")
            signature = signature.replace("<factory>", f"{factory}()" if factory.isidentifier() else "...", 1)
    return signature, annotation


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.autosummary")
    app.connect("builder-inited", _generate)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-signature", _dataclass_factories)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
