"""GradCAM's layer: where the layer methods and GradCAM look, how that layer's output becomes a
``(N, C, h, w)`` map, and proof on the probe that gradient reaches the map's positions.

Decided once, at the start of fit, from the probe forward (:class:`lightning_xai._compute.model.ModelView`).
The default is the last convolution, or a transformer's last block; for a class-token transformer the
last block's first normalisation (after the last block the classifier reads only the class token, so
the patch tokens there get no gradient and GradCAM would be exactly zero, as pytorch-grad-cam's docs
warn); for maps of fewer than 2x2 positions the last layer with at least 2x2.  A candidate is taken
only when the gradient of the class scores reaches its positions on two probe examples: that also
rules out layers inside reentrant gradient checkpointing and branches that do not feed the scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from attribution.utils import channels_last_reshape, token_grid_reshape
from lightning_xai._compute.model import LayerOutput, ModelView

NORMALIZATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
ASPECT_TOLERANCE = 0.5
"""A spatial map's height/width ratio may differ this much (relatively) from the input's (odd sizes round)."""
PREFIX_TOKENS = (1, 0, 2)
"""Leading non-patch tokens tried for token-shaped layers: a class token (ViT), none, class + distillation (DeiT)."""
MIN_GRID = 2
"""A GradCAM map needs at least this many positions in each spatial direction to show where anything is."""
MAX_TRIES = 4
"""Default candidates checked on the probe at most (each costs a forward and backward of two examples)."""
CHECKED_EXAMPLES = 2

Layout = Literal["channels_first", "channels_last", "tokens", ""]


def gradcam_reshape(
    shape: tuple[int, ...], input_size: tuple[int, int]
) -> tuple[Callable[[Tensor], Tensor] | None, Layout]:
    """How to make a layer output of ``shape`` a ``(N, C, h, w)`` map for images of ``input_size``.

    A 4-D output is read channels-first or channels-last, whichever puts a grid shaped like the input
    in the spatial dims; a 3-D output as vision-transformer tokens when their count fits such a grid.

    Returns:
        ``(reshape_transform or None, layout)`` with layout ``"channels_first"``, ``"channels_last"`` or
        ``"tokens"``; ``(None, "")`` when the output cannot be read as a spatial map.
    """
    if len(shape) == 4:
        candidates: list[tuple[tuple[int, ...], Layout]] = [
            (shape[2:], "channels_first"),
            (shape[1:3], "channels_last"),
        ]
        fits = [(_aspect_error(grid, input_size), layout) for grid, layout in candidates if grid[0] * grid[1] > 1]
        fits = [fit for fit in fits if fit[0] <= ASPECT_TOLERANCE]
        if fits:
            layout = min(fits)[1]  # ties: channels-first, the PyTorch convention
            return (channels_last_reshape if layout == "channels_last" else None), layout
        return None, ""
    if len(shape) == 3:
        grid = token_grid(shape[1], input_size)
        if grid is not None:
            (height, width), prefix = grid
            return token_grid_reshape(height, width, prefix), "tokens"
    return None, ""


def _aspect_error(spatial: tuple[int, ...], input_size: tuple[int, int]) -> float:
    """Relative difference between a candidate grid's aspect ratio and the input's (0: the same)."""
    grid_ratio, input_ratio = spatial[0] / spatial[1], input_size[0] / input_size[1]
    return abs(grid_ratio - input_ratio) / input_ratio


def token_grid(tokens: int, input_size: tuple[int, int]) -> tuple[tuple[int, int], int] | None:
    """``((h, w), prefix)`` when ``tokens`` is ``prefix + h * w`` patches on a grid shaped like the input."""
    height, width = input_size
    for prefix in PREFIX_TOKENS:
        patches = tokens - prefix
        for rows in range(1, patches + 1):
            if patches % rows == 0 and rows * width == (patches // rows) * height and patches > 1:
                return (rows, patches // rows), prefix
    return None


@dataclass(frozen=True)
class Candidate:
    """A layer whose output can be read as a map: its module, output shape, how it is read and its grid."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    reshape_transform: Callable[[Tensor], Tensor] | None
    layout: Layout
    grid: tuple[int, int] = (0, 0)
    prefix_tokens: int = 0

    @classmethod
    def of(cls, out: LayerOutput, input_size: tuple[int, int], name: str | None = None) -> Candidate:
        """The layer that produced ``out`` (named ``name``, default ``out.name``), read for images of ``input_size``."""
        reshape, layout = gradcam_reshape(out.shape, input_size)
        grid, prefix = (0, 0), 0
        if layout == "channels_first":
            grid = out.shape[2], out.shape[3]
        elif layout == "channels_last":
            grid = out.shape[1], out.shape[2]
        elif layout == "tokens":
            tokens = token_grid(out.shape[1], input_size)  # not None: it gave the layout
            if tokens is not None:
                grid, prefix = tokens
        return cls(name or out.name, out.module, out.shape, reshape, layout, grid, prefix)

    @property
    def big_enough(self) -> bool:
        """At least ``MIN_GRID`` positions in each direction."""
        return min(self.grid) >= MIN_GRID

    @property
    def size_text(self) -> str:
        return f"{self.grid[0]}x{self.grid[1]}"


# --------------------------------------------------------------------------- does gradient reach the map?

Verdict = Literal["reaches", "flat", "unchecked", "no_grad", "reentrant", "prefix_only", "blocked"]


@dataclass(frozen=True)
class Reach:
    """Whether the gradient of the class scores reaches a layer's map positions on the probe.

    Verdicts: ``"reaches"``; ``"flat"`` (the scores do not depend on the input yet, e.g. a classifier head
    initialised to zero, so nothing can be judged); ``"unchecked"`` (the model fails when run with
    gradients: the methods will report that themselves); ``"no_grad"`` (the layer's output does not require
    grad: it runs under ``torch.no_grad()`` or inside reentrant gradient checkpointing); ``"reentrant"``
    (the gradient to it must pass reentrant checkpointing, which ``torch.autograd.grad`` cannot); ``"prefix_only"``
    (gradient reaches only the class or distillation tokens); ``"blocked"`` (the output does not feed
    the scores).
    """

    verdict: Verdict
    detail: str = ""

    @property
    def usable(self) -> bool:
        """GradCAM can give a map here (or nothing can tell yet)."""
        return self.verdict in ("reaches", "flat", "unchecked")

    def cause(self, layer: str) -> str:
        """What is wrong with ``layer``, in words, for a warning."""
        return {
            "reaches": f"gradient reaches the positions of {layer!r}",
            "flat": "the class scores do not depend on the input yet (zero gradient everywhere, as with a classifier "
            "head initialised to zero, e.g. torchvision's VisionTransformer)",
            "unchecked": f"the model fails when run with gradients ({self.detail})",
            "no_grad": f"the output of {layer!r} does not require grad in the forward: it runs under torch.no_grad() "
            f"or inside torch.utils.checkpoint(..., use_reentrant=True)",
            "reentrant": f"the gradient to {layer!r} must pass through torch.utils.checkpoint(..., "
            f"use_reentrant=True), which torch.autograd.grad cannot go through",
            "prefix_only": f"no gradient reaches the patch tokens of {layer!r}: after it the classifier reads only "
            f"the class token",
            "blocked": f"no gradient of the class scores reaches the output of {layer!r} now (it does not feed "
            f"them, or only through weights that are zero now, e.g. a residual branch's last BatchNorm initialised "
            f"to zero, as in timm's ResNets)",
        }[self.verdict]

    def fix(self, better: str | None) -> str:
        """What to do about it; ``better``: a layer that works, if one was found."""
        if self.verdict in ("no_grad", "reentrant"):
            return "checkpoint with use_reentrant=False, or pass layer=<a layer outside the checkpointed part>"
        return f"use layer={better!r}" if better else "pass layer=<a layer whose output feeds the class scores>"


def gradient_reach(
    forward: Callable[..., Tensor], forward_args: tuple[Tensor, ...], inputs: Tensor, candidate: Candidate
) -> Reach:
    """Run two probe examples (``inputs`` and ``forward_args`` on the model's device) forward and backward
    and judge ``candidate``.  Call inside the monitor's untouched training state; gradients go to the
    captured output only, never to ``param.grad``."""
    x = inputs[:CHECKED_EXAMPLES].detach().clone()
    args = tuple(a[:CHECKED_EXAMPLES].to(x.device) for a in forward_args)
    outputs: list[tuple[Tensor, bool]] = []  # the output, and whether it required grad when the layer ran

    def capture(module: nn.Module, args: object, output: object) -> None:
        first = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(first, Tensor) and not outputs:
            outputs.append((first, first.requires_grad))

    handle = candidate.module.register_forward_hook(capture)
    try:
        return _judge(forward, x, args, outputs, candidate)
    except Exception as error:  # the methods report the model's own failures, each with its name
        if isinstance(error, RuntimeError) and "checkpoint" in str(error).lower() and ".grad()" in str(error):
            return Reach("reentrant")
        return Reach("unchecked", f"{type(error).__name__}: {error}")
    finally:
        handle.remove()


def _judge(
    forward: Callable[..., Tensor],
    x: Tensor,
    args: tuple[Tensor, ...],
    outputs: list[tuple[Tensor, bool]],
    candidate: Candidate,
) -> Reach:
    """The verdict on ``candidate`` from one forward (its output lands in ``outputs``) and backward."""
    with torch.inference_mode(False), torch.enable_grad():
        x.requires_grad_(x.is_floating_point())
        scores = forward(x, *args)
        if not outputs or not outputs[0][1] or not scores.requires_grad:  # as the layer methods' hooks see it
            return Reach("no_grad")
        objective = scores.gather(1, scores.argmax(dim=1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(objective, outputs[0][0], retain_graph=True, allow_unused=True)
        if grad is not None and grad.any():
            spatial = grad if candidate.reshape_transform is None else candidate.reshape_transform(grad)
            if spatial.flatten(1).any(dim=1).all() or candidate.layout != "tokens":
                return Reach("reaches")
            return Reach("prefix_only")
        return Reach("blocked" if _input_gradient(objective, x) else "flat")


def _input_gradient(objective: Tensor, inputs: Tensor) -> bool:
    """Whether the scores' gradient reaches the inputs at all (False when it cannot be taken)."""
    if not inputs.requires_grad:
        return False
    try:
        (grad,) = torch.autograd.grad(objective, inputs, allow_unused=True)
    except RuntimeError:  # reentrant checkpointing refuses torch.autograd.grad
        return False
    return grad is not None and bool(grad.any())


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class LayerChoice:
    """The layer of layer methods and GradCAM, how its output becomes a map, and whether GradCAM runs.

    ``note`` says why GradCAM is left out (a warning); ``remark`` why GradCAM uses a layer other than the
    obvious one (the last convolution or block), for the log.
    """

    name: str | None = None
    reshape_transform: Callable[[Tensor], Tensor] | None = None
    gradcam: bool = False
    note: str | None = None
    remark: str | None = None
    candidate: Candidate | None = None  # the layer read as a map, for checking it again later


def layer_output(view: ModelView, name: str) -> LayerOutput | None:
    """What the module ``name`` returned in the probe forward (None if it did not run)."""
    return next((out for out in view.layers if out.name == name), None)


def default_candidates(view: ModelView, input_size: tuple[int, int]) -> tuple[list[Candidate], str]:
    """GradCAM's default layers, best first, and why there are none (empty when there are).

    The last convolution, unless blocks with token-shaped or channels-last spatial outputs run after it
    (a transformer): then the last such block that is not a normalisation, and the blocks before it.  A
    class-token transformer's last block is replaced by its first normalisation (then the blocks before,
    whose outputs are its input).  For a convolutional model, the last block with a map of at least 2x2
    positions comes next (a residual block's output also carries its shortcut's gradient), then the
    earlier convolutions; maps of fewer than 2x2 positions are skipped.  Among modules returning the same
    tensor (a block and the ``Sequential`` holding it), the innermost is named.
    """
    layers = view.layers
    innermost: dict[int, str] = {}
    innermost_block: dict[int, str] = {}
    for out in layers:
        innermost.setdefault(out.tensor_id, out.name)
        if list(out.module.children()):
            innermost_block.setdefault(out.tensor_id, out.name)
    convs = [i for i, out in enumerate(layers) if isinstance(out.module, nn.modules.conv._ConvNd)]
    start = convs[-1] + 1 if convs else 0
    norm_outputs = {out.tensor_id for out in layers if isinstance(out.module, NORMALIZATION)}
    blocks: dict[int, Candidate] = {}
    for out in layers[start:]:
        if list(out.module.children()) and out.tensor_id not in norm_outputs:
            candidate = Candidate.of(out, input_size, innermost[out.tensor_id])
            if candidate.layout in ("channels_last", "tokens") and candidate.big_enough:
                blocks.pop(out.tensor_id, None)
                blocks[out.tensor_id] = candidate
    ordered = list(reversed(blocks.values()))
    if ordered:
        last = ordered[0]
        if last.layout == "tokens" and last.prefix_tokens > 0:
            norm = _first_normalisation(view, last, input_size)
            return ([norm] if norm is not None else []) + ordered[1:], ""
        return ordered, ""
    maps = [Candidate.of(layers[i], input_size) for i in reversed(convs)]
    usable = [c for c in maps if c.layout == "channels_first" and c.big_enough]
    conv_blocks = [
        Candidate.of(out, input_size, innermost_block[out.tensor_id])
        for out in reversed(layers)
        if out.tensor_id in innermost_block and out.name == innermost_block[out.tensor_id]
    ]
    last_block = [c for c in conv_blocks if c.layout == "channels_first" and c.big_enough][:1]
    if usable and usable[0] is maps[0]:
        return [usable[0], *last_block, *usable[1:]], ""
    if usable or last_block:
        return [*last_block, *usable], ""
    if maps:
        return [], (
            f"every convolution's output has fewer than {MIN_GRID}x{MIN_GRID} positions for inputs of "
            f"{input_size[0]}x{input_size[1]} (the last, {maps[0].name!r}, outputs shape {maps[0].shape}); pass "
            f"larger inputs or layer=<a layer with a spatial output>"
        )
    return [], "the model has no convolution or transformer block"


def _first_normalisation(view: ModelView, block: Candidate, input_size: tuple[int, int]) -> Candidate | None:
    """The first normalisation inside ``block`` that keeps its token shape (``norm1``, ``ln_1``,
    ``layernorm_before``): the block's attention reads all its tokens."""
    prefix = block.name + "."
    for out in view.layers:
        if out.name.startswith(prefix) and isinstance(out.module, NORMALIZATION) and out.shape == block.shape:
            return Candidate.of(out, input_size)
    return None


def choose_layer(
    view: ModelView, inputs: Tensor, layer: str | None, gradcam: bool, needs_layer: bool, gradcam_named: bool
) -> LayerChoice:
    """Pick (or check) the layer from the probe forward; call inside the monitor's untouched training state.

    Args:
        view: the probe forward.
        inputs: the probe's inputs on the model's device (images ``(N, C, H, W)`` get GradCAM; token ids
            do not).
        layer: the user's layer, or None for the default.
        gradcam: GradCAM is wanted by default (``AttributionMonitor(gradcam=True)``).
        needs_layer: a requested method needs a layer.
        gradcam_named: ``layer_gradcam`` (or ``guided_gradcam``) is among the requested methods.

    Returns:
        The choice. A user's layer that gradient does not reach is kept, with a ``note`` that says so.

    Raises:
        MisconfigurationException: no layer for methods that need one; a layer that does not run; a layer
            whose output is no spatial map while GradCAM was asked for by name.
    """
    images = inputs.dim() == 4
    size = (inputs.shape[-2], inputs.shape[-1])
    if layer is not None:
        return _users_layer(view, inputs, layer, gradcam, gradcam_named)
    candidates, why_none = default_candidates(view, size) if images else ([], "")
    if not candidates:
        if needs_layer:
            reason = why_none or f"inputs of shape {tuple(inputs.shape)} are not images"
            raise MisconfigurationException(
                f"layer: the requested methods need a layer and there is no default ({reason}); "
                f"pass layer=<dotted module name>"
            )
        return LayerChoice(note=why_none or None)
    if not (gradcam or gradcam_named):  # only other layer methods: nothing to check
        first = candidates[0]
        return LayerChoice(first.name, first.reshape_transform, False, candidate=first)
    failed: list[tuple[Candidate, Reach]] = []
    for candidate in candidates[:MAX_TRIES]:
        reach = gradient_reach(view.forward, view.forward_args, inputs, candidate)
        if reach.usable:
            remark = _remark(view, candidate, failed)
            return LayerChoice(candidate.name, candidate.reshape_transform, gradcam, remark=remark, candidate=candidate)
        failed.append((candidate, reach))
    first, reach = failed[0]
    tried = ", ".join(repr(c.name) for c, _ in failed)
    note = f"{reach.cause(first.name)} (tried {tried}); {reach.fix(None)}"
    return LayerChoice(first.name, first.reshape_transform, False, note=note, candidate=first)


def _users_layer(view: ModelView, inputs: Tensor, layer: str, gradcam: bool, gradcam_named: bool) -> LayerChoice:
    """The layer the user named: it must run; for GradCAM its output must be a map gradient reaches."""
    out = layer_output(view, layer)
    if out is None:
        raise MisconfigurationException(f"layer: {layer!r} does not run in the model's forward on the probe")
    images, size = inputs.dim() == 4, (inputs.shape[-2], inputs.shape[-1])
    candidate = Candidate.of(out, size) if images else None
    if candidate is None or not candidate.layout:
        if gradcam_named:
            raise MisconfigurationException(
                f"layer: GradCAM needs a spatial map, but {layer!r} outputs shape {out.shape}"
                + (" for image inputs" if images else f" for inputs of shape {tuple(inputs.shape)} (not images)")
                + "; choose a layer with (N, C, h, w), (N, h, w, C) or vision-transformer token outputs"
            )
        note = f"the output of {layer!r} has shape {out.shape}, not a spatial map" if images else None
        return LayerChoice(layer, None, False, note)
    if not (gradcam or gradcam_named):
        return LayerChoice(layer, candidate.reshape_transform, False, candidate=candidate)
    reach = gradient_reach(view.forward, view.forward_args, inputs, candidate)
    if reach.usable:
        return LayerChoice(layer, candidate.reshape_transform, gradcam, candidate=candidate)
    better = next(
        (c.name for c in default_candidates(view, size)[0][:MAX_TRIES] if c.name != layer
         and gradient_reach(view.forward, view.forward_args, inputs, c).usable),
        None,
    )  # fmt: skip
    note = f"{reach.cause(layer)}, so its GradCAM maps would be all zero; {reach.fix(better)}"
    return LayerChoice(layer, candidate.reshape_transform, False, note=note, candidate=candidate)


def _remark(view: ModelView, chosen: Candidate, failed: list[tuple[Candidate, Reach]]) -> str | None:
    """Why GradCAM looks at ``chosen`` rather than the obvious layer, or None when it is the obvious one."""
    reasons = [reach.cause(c.name) for c, reach in failed]
    if chosen.prefix_tokens:
        reasons.insert(0, "after the last block the classifier reads only the class token, so that block's patch "
                       "tokens get no gradient")  # fmt: skip
    convs = [out for out in view.layers if isinstance(out.module, nn.modules.conv._ConvNd)]
    last = convs[-1] if convs else None
    too_small = last is not None and len(last.shape) == 4 and min(last.shape[2:]) < MIN_GRID
    if chosen.layout == "channels_first" and last is not None and too_small:
        reasons.insert(0, f"the last convolution, {last.name!r}, outputs shape {last.shape}: fewer than "
                       f"{MIN_GRID}x{MIN_GRID} positions")  # fmt: skip
    if not reasons:
        return None
    return f"GradCAM uses {chosen.name!r} ({chosen.size_text} positions): " + "; ".join(reasons)
