"""A concept's examples as one tensor, from what a user has: a tensor, a map-style dataset, or a folder of
image files."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

ConceptSource = Tensor | Dataset[Any] | str | Path
"""Examples of a concept: ``(N, ...)`` inputs, a dataset whose items are inputs (or ``(x, ...)`` tuples, or
dicts holding the input under ``input_key``), or a folder of images (PNG, JPEG) read as ``(3, H, W)`` floats
in [0, 1] and passed through ``transform``."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def concept_examples(
    source: ConceptSource, name: str, input_key: str, transform: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """The examples of ``source`` stacked into one tensor.

    Raises:
        ValueError: no examples, a missing folder, or examples of different shapes (naming ``name``).
    """
    if isinstance(source, Tensor):
        examples = list(source)
    elif isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"concepts[{name!r}]: {str(folder)!r} is not a folder of images")
        examples = [_image(path) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    elif hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        examples = [_input(source[i], input_key, name) for i in range(len(source))]
    else:
        raise ValueError(
            f"concepts[{name!r}]: expected a tensor of examples, a map-style dataset or a folder of images, got "
            f"{type(source).__name__}"
        )
    if transform is not None:
        examples = [transform(x) for x in examples]
    if not examples:
        raise ValueError(f"concepts[{name!r}]: no examples (an empty tensor, dataset or folder)")
    shapes = {tuple(x.shape) for x in examples}
    if len(shapes) > 1:
        raise ValueError(
            f"concepts[{name!r}]: the examples have different shapes {sorted(shapes)}; pass a transform that "
            "resizes them to the model's input"
        )
    return torch.stack(examples).detach()


def _image(path: Path) -> Tensor:
    from PIL import Image  # Pillow comes with matplotlib and torchvision

    with Image.open(path) as image:
        pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        return pixels.view(image.height, image.width, 3).permute(2, 0, 1).float() / 255


def _input(item: Any, input_key: str, name: str) -> Tensor:
    if isinstance(item, Mapping):
        item = item.get(input_key)
    elif isinstance(item, Sequence) and not isinstance(item, str) and item:
        item = item[0]
    if not isinstance(item, Tensor):
        raise ValueError(
            f"concepts[{name!r}]: the dataset's items must be inputs, (x, ...) tuples or dicts with {input_key!r}; "
            f"got {type(item).__name__}"
        )
    return item


def random_sets(examples: Tensor, count: int, seed: int) -> list[Tensor]:
    """``count`` disjoint random sets of equal size from ``examples``, after a seeded shuffle.

    Raises:
        ValueError: fewer than two examples a set.
    """
    size = len(examples) // count
    if size < 2:
        raise ValueError(
            f"random: {len(examples)} counter-examples make {count} random sets of {size}; give at least "
            f"{2 * count} (or lower num_random_sets)"
        )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return [examples[order[i * size : (i + 1) * size]] for i in range(count)]
