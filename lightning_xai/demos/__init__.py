"""Demo data with known ground truth and the small models trained on it (examples, tests, benchmarks).

- :mod:`lightning_xai.demos.shapes`: generated images of shapes with object masks
  (optionally a spurious corner mark) and ``ShapesNet``.
- :mod:`lightning_xai.demos.text`: generated sentences with planted sentiment words
  and ``TextClassifier``.

Nothing is downloaded and the global RNG is left alone.  The callbacks never import this package.
"""

from lightning_xai.demos.shapes import (
    CLASSES,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesDataModule,
    ShapesDataset,
    ShapesNet,
    denormalize_images,
    make_shapes,
    normalize_images,
)
from lightning_xai.demos.text import SentenceDataModule, SentenceDataset, TextClassifier, make_sentences

__all__ = [
    "CLASSES",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "SentenceDataModule",
    "SentenceDataset",
    "ShapesDataModule",
    "ShapesDataset",
    "ShapesNet",
    "TextClassifier",
    "denormalize_images",
    "make_shapes",
    "make_sentences",
    "normalize_images",
]
