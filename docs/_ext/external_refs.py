"""Sphinx extension: references to Python, torch, Lightning, numpy and matplotlib names link to their
documentation, with no network at build time (intersphinx would download the inventories).

Only the names listed here are resolved; any other unresolved reference stays a nitpicky warning, so a
typo or a reference to a private object of ours is still caught.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

PYTHON = "https://docs.python.org/3/library/"
TORCH = "https://docs.pytorch.org/docs/stable/"
LIGHTNING = "https://lightning.ai/docs/pytorch/stable/api/"
NUMPY = "https://numpy.org/doc/stable/reference/generated/"
MATPLOTLIB = "https://matplotlib.org/stable/api/"

BUILTINS = {
    "bool", "bytes", "dict", "float", "frozenset", "int", "list", "object", "set", "slice", "str", "tuple", "type",
}  # fmt: skip
EXCEPTIONS = {
    "AssertionError", "BaseException", "Exception", "IndexError", "KeyError", "NotImplementedError",
    "RuntimeError", "TypeError", "UserWarning", "ValueError", "Warning",
}  # fmt: skip

# Exact names (as autodoc writes them: canonical module paths, or the short name a string annotation has).
EXACT = {
    "None": PYTHON + "constants.html#None",
    "Any": PYTHON + "typing.html#typing.Any",
    "enum.Enum": PYTHON + "enum.html#enum.Enum",
    "pathlib.Path": PYTHON + "pathlib.html#pathlib.Path",
    "os.PathLike": PYTHON + "os.html#os.PathLike",
    "torch.Tensor": TORCH + "tensors.html#torch.Tensor",
    "Tensor": TORCH + "tensors.html#torch.Tensor",
    "torch.nn.Module": TORCH + "generated/torch.nn.Module.html",
    "torch.nn.modules.module.Module": TORCH + "generated/torch.nn.Module.html",
    "nn.Module": TORCH + "generated/torch.nn.Module.html",
    "torch.device": TORCH + "tensor_attributes.html#torch.device",
    "torch.dtype": TORCH + "tensor_attributes.html#torch.dtype",
    "torch.Size": TORCH + "size.html#torch.Size",
    "torch.Generator": TORCH + "generated/torch.Generator.html",
    "torch.jit.Future": TORCH + "futures.html#torch.futures.Future",
    "torch.futures.Future": TORCH + "futures.html#torch.futures.Future",
    "torch.utils.data.DataLoader": TORCH + "data.html#torch.utils.data.DataLoader",
    "torch.utils.data.dataloader.DataLoader": TORCH + "data.html#torch.utils.data.DataLoader",
    "torch.utils.data.Dataset": TORCH + "data.html#torch.utils.data.Dataset",
    "torch.utils.data.dataset.Dataset": TORCH + "data.html#torch.utils.data.Dataset",
    "abc.ABC": PYTHON + "abc.html#abc.ABC",
    "lightning.pytorch.trainer.trainer.Trainer": LIGHTNING + "lightning.pytorch.trainer.trainer.Trainer.html",
    "lightning.pytorch.Trainer": LIGHTNING + "lightning.pytorch.trainer.trainer.Trainer.html",
    "lightning.pytorch.core.module.LightningModule": LIGHTNING + "lightning.pytorch.core.LightningModule.html",
    "lightning.pytorch.core.LightningModule": LIGHTNING + "lightning.pytorch.core.LightningModule.html",
    "lightning.pytorch.LightningModule": LIGHTNING + "lightning.pytorch.core.LightningModule.html",
    "lightning.pytorch.callbacks.callback.Callback": LIGHTNING + "lightning.pytorch.callbacks.Callback.html",
    "lightning.pytorch.callbacks.Callback": LIGHTNING + "lightning.pytorch.callbacks.Callback.html",
    "numpy.ndarray": NUMPY + "numpy.ndarray.html",
    "np.ndarray": NUMPY + "numpy.ndarray.html",
    "matplotlib.figure.Figure": MATPLOTLIB + "_as_gen/matplotlib.figure.Figure.html",
    "Figure": MATPLOTLIB + "_as_gen/matplotlib.figure.Figure.html",
    "matplotlib.axes.Axes": MATPLOTLIB + "axes_api.html#matplotlib.axes.Axes",
    "matplotlib.axes._axes.Axes": MATPLOTLIB + "axes_api.html#matplotlib.axes.Axes",
    "Axes": MATPLOTLIB + "axes_api.html#matplotlib.axes.Axes",
    "matplotlib.colors.Colormap": MATPLOTLIB + "_as_gen/matplotlib.colors.Colormap.html",
    "Colormap": MATPLOTLIB + "_as_gen/matplotlib.colors.Colormap.html",
}


def url_for(target: str) -> str | None:
    """The documentation address of an external name, or None when it is not one we know."""
    if target in EXACT:
        return EXACT[target]
    if target in BUILTINS:
        return f"{PYTHON}functions.html#{target}"
    if target in EXCEPTIONS:
        return f"{PYTHON}exceptions.html#{target}"
    for module in ("typing", "collections.abc"):  # every name in these modules has the same kind of address
        if target.startswith(module + ".") and target[len(module) + 1 :].isidentifier():
            return f"{PYTHON}{module}.html#{target}"
    return None


def _is_type_variable(target: str) -> bool:
    """``module.T`` names a ``TypeVar``: it has no page, its name in a signature is plain text."""
    module, _, name = target.rpartition(".")
    try:
        return isinstance(getattr(importlib.import_module(module), name, None), TypeVar)
    except (ImportError, ValueError):
        return False


def _resolve(app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.Element) -> nodes.Node | None:
    if node.get("refdomain") != "py":
        return None
    if _is_type_variable(node["reftarget"]):
        return contnode
    url = url_for(node["reftarget"])
    if url is None:
        return None
    reference = nodes.reference("", "", internal=False, refuri=url, reftitle=node["reftarget"])
    reference.append(contnode)
    return reference


def setup(app: Sphinx) -> dict:
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
