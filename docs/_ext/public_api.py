"""The public names of both packages, read from the packages themselves at build time.

One list for the API pages (``api_pages``), the links in prose (``api_links``) and
``tests/test_docs.py``: a name added to an ``__all__`` gets its page with no edit here.
A module without ``__all__`` contributes the functions and classes it defines and its
UPPER_CASE constants (read from its source, so imported helpers are left out).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

MODULES = (
    "attribution",
    "attribution.lrp",
    "attribution.influence",
    "attribution.concept",
    "attribution.concept.significance",
    "attribution.robust",
    "attribution.module",
    "attribution.functional",
    "attribution.metrics",
    "attribution.utils",
    "attribution.registry",
    "attribution.outputs",
    "attribution.methods.surrogate",
    "attribution.visualization",
    "attribution.text_visualization",
    "lightning_xai",
    "lightning_xai.monitor",
    "lightning_xai.influence_monitor",
)
"""The documented modules, each with a page; every public name in them gets a page of its own."""

PACKAGES = ("attribution", "lightning_xai")


@dataclass(frozen=True)
class PublicName:
    """One public name: ``module.name``, and what autodoc directive documents it.  A class or function that
    an earlier module already exports (``attribution.methods.surrogate.Lime`` is ``attribution.Lime``) is an alias:
    its page is the first one's."""

    module: str
    name: str
    kind: str  # "class", "exception", "function", "data"
    alias_of: str | None = None

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


def _defined_names(module: ModuleType) -> list[str]:
    """Top-level functions, classes and UPPER_CASE constants defined in ``module``'s own source."""
    tree = ast.parse(inspect.getsource(module))
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    return [n for n in names if not n.startswith("_")]


def _reexported_names(module: ModuleType) -> list[str]:
    """For a module that only re-exports (``from ... import ...``): its public functions and classes
    that come from these packages."""
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__.split(".")[0] in PACKAGES
    ]


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def module_names(modname: str) -> list[PublicName]:
    """The public names of one documented module (sub-modules excluded: they have pages of their own)."""
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None) or _defined_names(module) or _reexported_names(module)
    found = []
    for name in sorted(names, key=str.lower):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or isinstance(obj, TypeVar):  # sub-modules have pages; type variables none
            continue
        found.append(PublicName(modname, name, _kind(obj)))
    return found


def missing_modules() -> list[str]:
    """Documented modules that cannot be imported (moved or removed): the build warns about each, and
    their names are left out of :func:`public_names`."""
    missing = []
    for modname in MODULES:
        try:
            importlib.import_module(modname)
        except ModuleNotFoundError:
            missing.append(modname)
    return missing


def public_names() -> list[PublicName]:
    """Every public name of every documented (and importable) module, aliases marked (see
    :class:`PublicName`)."""
    first: dict[int, str] = {}
    names = []
    missing = missing_modules()
    for modname in MODULES:
        if modname in missing:
            continue
        module = importlib.import_module(modname)
        for public in module_names(modname):
            obj = getattr(module, public.name)
            if public.kind != "data":
                if id(obj) in first:
                    public = PublicName(public.module, public.name, public.kind, alias_of=first[id(obj)])
                else:
                    first[id(obj)] = public.path
            names.append(public)
    return names
