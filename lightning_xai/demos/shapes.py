"""Generated shapes with known ground truth and a small CNN, for examples, tests and benchmarks.

Nothing is downloaded: every image is drawn with torch from a seed, through a private
``torch.Generator`` so the global RNG is left alone. Each image holds one filled shape whose
pixel mask is returned with it, so the share of attribution mass on the object can be measured.
With ``spurious_mark=True`` a white square in a label-dependent corner predicts the label
perfectly: a shortcut ("Clever Hans") that a model learns instead of the shape.

Example:
    >>> import lightning as L
    >>> from lightning_xai.demos.shapes import ShapesDataModule, ShapesNet
    >>> dm = ShapesDataModule(n_train=64, n_val=32)
    >>> dm.setup()
    >>> batch = next(iter(dm.train_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape  # normalised images and their object masks
    (torch.Size([64, 3, 32, 32]), torch.Size([64, 32, 32]))
    >>> trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(ShapesNet(), datamodule=dm)
    >>> sorted(trainer.callback_metrics)
    ['train_loss', 'val_acc', 'val_loss']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

CLASSES = ("square", "circle", "triangle")
"""The default classes, in label order."""
SHAPES_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SHAPES_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

# Each predicate gets offsets (dx, dy) of pixel centres from the shape centre and the half-extent r;
# every shape lies inside the box [-r, r]^2, which is what placement keeps inside the image.
SHAPES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "square": lambda dx, dy, r: (dx.abs() <= r) & (dy.abs() <= r),
    "circle": lambda dx, dy, r: dx.square() + dy.square() <= r.square(),
    "triangle": lambda dx, dy, r: (dy <= r) & (dx.abs() <= (dy + r) / 2),  # apex up, base 2r wide
    "diamond": lambda dx, dy, r: dx.abs() + dy.abs() <= r,
}
_SCALE = (0.25, 0.45)  # shape side as a fraction of the image side


def mark_size(size: int) -> int:
    """Side in pixels of the spurious corner mark for ``size`` x ``size`` images."""
    return max(3, size // 10)


def mark_mask(labels: Tensor, size: int) -> Tensor:
    """Pixels of the spurious mark for each label: class k sits in corner k (TL, TR, BL, BR).

    Args:
        labels: (n,) class indices in 0-3.
        size: image side.

    Returns:
        (n, size, size) bool, True on the mark's pixels.
    """
    m = mark_size(size)
    corners = torch.zeros(4, size, size, dtype=torch.bool, device=labels.device)
    corners[0, :m, :m] = corners[1, :m, -m:] = corners[2, -m:, :m] = corners[3, -m:, -m:] = True
    return corners[labels]


def make_shapes(
    n: int,
    size: int = 32,
    seed: int = 0,
    spurious_mark: bool = False,
    classes: Sequence[str] = CLASSES,
    noise: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``n`` images, each one filled shape on a textured, noisy background.

    Labels are balanced (cycled through ``classes``, then shuffled). Each shape has a random colour
    0.2-0.4 lighter or darker than the background in every channel, a side of 25-45% of the image and a
    random position fully inside the image. With ``spurious_mark`` a white ``mark_size(size)``-pixel
    square is drawn in corner ``labels[i]`` (see :func:`mark_mask`); shapes keep a margin from the
    border so they never touch any corner area, and the mark is not part of the mask. The mark
    predicts the label perfectly, so a model can learn it as a shortcut instead of the shape.

    Args:
        n: number of images.
        size: image side in pixels (at least 16).
        seed: seed of the private generator; the global RNG is not touched.
        spurious_mark: draw the label-dependent corner mark.
        classes: distinct shape names from :data:`SHAPES` (at most 4, one per corner); class k is ``classes[k]``.
        noise: std of the Gaussian pixel noise.

    Returns:
        ``(images, labels, masks)``: (n, 3, size, size) float in [0, 1], (n,) long and
        (n, size, size) bool, exactly the shape's pixels.

    Raises:
        ValueError: on an unknown or repeated class name, or an invalid ``n``, ``size`` or ``noise``.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must be distinct names from {sorted(SHAPES)}, got {list(classes)}")
    if n < 1 or size < 16 or noise < 0:
        raise ValueError(f"expected n >= 1, size >= 16 and noise >= 0, got n={n}, size={size}, noise={noise}")

    g = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g)

    labels = (torch.arange(n) % len(classes))[torch.randperm(n, generator=g)]

    # Background: a low-contrast colour plus a faint oriented sine texture.
    bg = 0.35 + 0.3 * u(n, 3, 1, 1)
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    ys, xs = coords.view(1, size, 1), coords.view(1, 1, size)
    theta, freq, phase = (u(n, 1, 1) * math.pi, 1 + 2 * u(n, 1, 1), u(n, 1, 1) * 2 * math.pi)
    wave = torch.sin(2 * math.pi * freq * (xs * theta.cos() + ys * theta.sin()) / size + phase)
    images = bg + 0.04 * wave.unsqueeze(1)

    # Shape: half-extent r, centre so that [c - r, c + r] stays `margin` pixels from the border.
    margin = mark_size(size) + 1 if spurious_mark else 1
    r = (_SCALE[0] + (_SCALE[1] - _SCALE[0]) * u(n, 1, 1)) * size / 2
    cx, cy = (margin + r + (size - 2 * margin - 2 * r) * u(n, 1, 1) for _ in range(2))
    dx, dy = xs - cx, ys - cy
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for k, name in enumerate(classes):
        sel = labels == k
        masks[sel] = SHAPES[name](dx[sel], dy[sel], r[sel])

    # Shape colour: 0.2-0.4 away from the background in every channel, all lighter or all darker. One
    # polarity per image keeps the edges learnable in a few epochs; mixed per-channel polarities took ~3x longer.
    sign = torch.where(u(n, 1, 1, 1) < 0.5, -1.0, 1.0)
    fg = bg + sign * (0.2 + 0.2 * u(n, 3, 1, 1))
    images = torch.where(masks.unsqueeze(1), fg, images)
    images = (images + noise * torch.randn(images.shape, generator=g)).clamp_(0, 1)
    if spurious_mark:
        images.masked_fill_(mark_mask(labels, size).unsqueeze(1), 1.0)  # drawn after the noise: exactly white
    return images, labels, masks


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    def as_channels(v: tuple[float, ...]) -> Tensor:
        return torch.tensor(v, dtype=x.dtype, device=x.device).view(3, 1, 1)  # broadcasts over N too

    return as_channels(SHAPES_MEAN), as_channels(SHAPES_STD)


def normalize_images(images: Tensor) -> Tensor:
    """``(images - SHAPES_MEAN) / SHAPES_STD`` per channel, for (3, H, W) or (N, 3, H, W)."""
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize_images(images: Tensor) -> Tensor:
    """Undo :func:`normalize_images` (e.g. to display model inputs)."""
    mean, std = _stats(images)
    return images * std + mean


class ShapesDataset(Dataset[dict[str, Tensor]]):
    """Images, labels and masks from :func:`make_shapes`, as dict items.

    Args:
        images: (n, 3, H, W) float in [0, 1].
        labels: (n,) long.
        masks: (n, H, W) bool.
        normalize: return images normalised with ``SHAPES_MEAN``/``SHAPES_STD``.

    Example:
        >>> ds = ShapesDataset(*make_shapes(100), normalize=True)
        >>> ds[0]["image"].shape, ds[0]["label"].dtype, ds[0]["mask"].shape
        (torch.Size([3, 32, 32]), torch.int64, torch.Size([32, 32]))
    """

    mean = SHAPES_MEAN
    std = SHAPES_STD

    def __init__(self, images: Tensor, labels: Tensor, masks: Tensor, normalize: bool = False) -> None:
        n = images.shape[0]
        if images.dim() != 4 or images.shape[1] != 3 or labels.shape != (n,) or masks.shape != (n, *images.shape[2:]):
            raise ValueError(
                "expected images (n, 3, H, W), labels (n,) and masks (n, H, W), got "
                f"{tuple(images.shape)}, {tuple(labels.shape)} and {tuple(masks.shape)}"
            )
        self.images, self.labels, self.masks = images, labels, masks
        self._inputs = normalize_images(images) if normalize else images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self._inputs[i], "label": self.labels[i], "mask": self.masks[i]}


class ShapesDataModule(L.LightningDataModule):
    """Normalised shapes for training and validation, generated from ``2 * seed`` and ``2 * seed + 1``.

    Args:
        n_train: training images.
        n_val: validation images.
        size: image side.
        batch_size: batch size of both loaders.
        seed: data seed; train and val use different derived seeds, distinct across seeds.
        spurious_mark: draw the label-dependent corner mark (see :func:`make_shapes`).
        num_workers: loader worker processes.
        noise: std of the pixel noise (see :func:`make_shapes`); more noise, slower learning.
    """

    def __init__(
        self,
        n_train: int = 2000,
        n_val: int = 300,
        size: int = 32,
        batch_size: int = 64,
        seed: int = 0,
        spurious_mark: bool = False,
        num_workers: int = 0,
        noise: float = 0.05,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_train, self.n_val, self.size, self.batch_size = n_train, n_val, size, batch_size
        self.seed, self.spurious_mark, self.num_workers, self.noise = seed, spurious_mark, num_workers, noise
        self.train_set: ShapesDataset | None = None
        self.val_set: ShapesDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:  # generated once, whatever the stage

            def make(n: int, seed: int) -> ShapesDataset:
                images = make_shapes(n, self.size, seed, self.spurious_mark, noise=self.noise)
                return ShapesDataset(*images, normalize=True)

            self.train_set, self.val_set = make(self.n_train, 2 * self.seed), make(self.n_val, 2 * self.seed + 1)

    def _loader(self, ds: ShapesDataset | None, shuffle: bool) -> DataLoader[dict[str, Tensor]]:
        if ds is None:
            raise RuntimeError("call `setup()` before asking for a dataloader")
        w = self.num_workers
        return DataLoader(ds, self.batch_size, shuffle=shuffle, num_workers=w, persistent_workers=w > 0)

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader(self.val_set, shuffle=False)


class ShapesNet(L.LightningModule):
    """A small CNN for the shapes, ~15k parameters.

    ``features`` is the conv stack (convs at ``"features.0"``, ``"features.4"``, ``"features.8"``; the
    last ReLU, a natural Grad-CAM layer, is ``"features.10"``), ``classifier`` the pooled linear head.

    Args:
        n_classes: number of classes.
        lr: Adam learning rate.

    Example:
        >>> ShapesNet()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(self, n_classes: int = 3, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        # BatchNorm lets a net this small learn the shapes in ~60 Adam steps.
        self.features = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32))
        # Global max pooling asks "is this pattern anywhere?"; average pooling dilutes a small object
        # with background and needed several times more epochs.
        self.classifier = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, n_classes) for normalised images (N, 3, H, W)."""
        logits: Tensor = self.classifier(self.features(x))
        return logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch["image"]), batch["label"])
        self.log("train_loss", loss, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, y = self(batch["image"]), batch["label"]
        self.log("val_loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("val_acc", acc, batch_size=len(y), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def corner_mark_concept(n: int, corner: int, size: int = 32, seed: int = 0, noise: float = 0.05) -> Tensor:
    """Examples of the concept "a white mark in ``corner``" for TCAV: ``n`` normalised shapes images of every
    class, each with the spurious mark of :func:`make_shapes` drawn in ``corner`` (0-3: TL, TR, BL, BR)
    whatever its label. No labels or masks: the concept is given by examples only.

    Raises:
        ValueError: ``corner`` is not 0-3.
    """
    if corner not in range(4):
        raise ValueError(f"corner: expected 0-3 (TL, TR, BL, BR), got {corner!r}")
    images, _, _ = make_shapes(n, size, seed, noise=noise)
    images.masked_fill_(mark_mask(torch.full((n,), corner), size).unsqueeze(1), 1.0)
    return normalize_images(images)
