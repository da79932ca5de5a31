"""The generated shapes have the ground truth they claim, and the demo CNN learns them (or their shortcut)."""

import time

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from lightning_xai.demos.shapes import (
    SHAPES,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesDataModule,
    ShapesDataset,
    ShapesNet,
    denormalize_images,
    make_shapes,
    mark_mask,
    mark_size,
    normalize_images,
)


def _corner_guess(images, size):
    """Predict the class as the brightest of the four mark corners: reads nothing but the corners."""
    m = mark_size(size)
    corners = mark_mask(torch.arange(4), size)  # (4, size, size)
    brightness = (images.mean(1, keepdim=True) * corners).sum((2, 3)) / (m * m)
    return brightness.argmax(1)


def _fit(datamodule, max_epochs):
    L.seed_everything(0, verbose=False)
    model = ShapesNet()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return model, trainer, time.perf_counter() - start


# ---- make_shapes ----


@pytest.mark.parametrize("spurious_mark", [False, True])
def test_same_seed_same_data_other_seed_other_data_and_global_rng_untouched(spurious_mark):
    state = torch.get_rng_state()
    a = make_shapes(60, seed=3, spurious_mark=spurious_mark)
    b = make_shapes(60, seed=3, spurious_mark=spurious_mark)
    c = make_shapes(60, seed=4, spurious_mark=spurious_mark)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1]) and not torch.equal(a[2], c[2])


def test_types_ranges_and_speed():
    start = time.perf_counter()
    images, labels, masks = make_shapes(2000)
    assert time.perf_counter() - start < 1.0
    assert images.shape == (2000, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (2000,) and labels.dtype == torch.long
    assert masks.shape == (2000, 32, 32) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("n, classes", [(301, ("square", "circle", "triangle")), (302, tuple(SHAPES))])
def test_labels_are_balanced(n, classes):
    _, labels, _ = make_shapes(n, classes=classes)
    counts = torch.bincount(labels, minlength=len(classes))
    assert counts.max() - counts.min() <= 1
    assert not torch.equal(labels, torch.arange(n) % len(classes))  # shuffled, not cycled


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("spurious_mark", [False, True])
def test_masks_are_plausible_and_inside(size, spurious_mark):
    _, _, masks = make_shapes(300, size=size, spurious_mark=spurious_mark)
    share = masks.float().mean((1, 2))
    assert share.min() > 0.02 and share.max() <= (0.45 + 1 / size) ** 2  # a side of 25-45%, up to a pixel
    border = torch.ones(size, size, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert not (masks & border).any()  # fully inside, not cut by the image edge


def test_mask_is_exactly_the_shape_pixels():
    # Without noise the shape is one flat colour and the textured background never takes it.
    images, labels, masks = make_shapes(200, noise=0.0, classes=tuple(SHAPES))
    for image, mask in zip(images, masks):
        colour = image[:, mask][:, :1]
        assert torch.equal((image == colour[:, :, None]).all(0), mask)
    # The fill of the bounding box tells the shapes apart: square 1, circle ~pi/4, diamond and triangle ~1/2.
    rows, cols = masks.any(2).sum(1), masks.any(1).sum(1)
    fill = masks.sum((1, 2)) / (rows * cols)
    expected = {"square": (1.0, 1.0), "circle": (0.65, 0.9), "triangle": (0.4, 0.7), "diamond": (0.4, 0.7)}
    for k, name in enumerate(SHAPES):
        lo, hi = expected[name]
        assert lo <= fill[labels == k].min() and fill[labels == k].max() <= hi, name
    side = torch.maximum(rows, cols).float() / 32
    assert side.min() >= 0.2 and side.max() <= 0.5
    triangles = masks[labels == list(SHAPES).index("triangle")]
    top, bottom = (triangles.any(2).float().argmax(1), 31 - triangles.any(2).flip(1).float().argmax(1))
    idx = torch.arange(len(triangles))
    assert (triangles[idx, top].sum(1) < triangles[idx, bottom].sum(1)).all()  # apex up


def test_shape_colour_differs_from_the_background_around_it():
    images, _, masks = make_shapes(300)
    ring = (F.max_pool2d(masks[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0) & ~masks
    inside = (images * masks[:, None]).sum((2, 3)) / masks.sum((1, 2))[:, None]
    around = (images * ring[:, None]).sum((2, 3)) / ring.sum((1, 2))[:, None]
    assert ((inside - around).abs().min(1).values > 0.1).all()  # every channel, every image


def test_bad_arguments_raise_with_the_valid_names():
    with pytest.raises(ValueError, match="circle.*diamond.*square.*triangle.*got \\['hexagon'\\]"):
        make_shapes(10, classes=("hexagon",))
    with pytest.raises(ValueError, match="distinct"):
        make_shapes(10, classes=("square", "square"))
    with pytest.raises(ValueError, match="size >= 16"):
        make_shapes(10, size=8)
    with pytest.raises(ValueError, match="n >= 1"):
        make_shapes(0)


# ---- the spurious mark ----


@pytest.mark.parametrize("size", [16, 32, 64])
def test_mark_is_bright_in_the_label_corner_and_outside_every_shape(size):
    images, labels, masks = make_shapes(300, size=size, spurious_mark=True, classes=tuple(SHAPES))
    marks = mark_mask(labels, size)
    assert marks.sum((1, 2)).eq(mark_size(size) ** 2).all()
    assert (images.permute(1, 0, 2, 3)[:, marks] == 1.0).all()
    corner_area = mark_mask(torch.arange(4), size).any(0)
    corner_area = F.max_pool2d(corner_area[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0  # one pixel wider
    assert not (masks & corner_area).any()


def test_the_corners_alone_predict_the_label_only_with_the_mark():
    images, labels, _ = make_shapes(600, spurious_mark=True, seed=1)
    assert (_corner_guess(images, 32) == labels).all()
    images, labels, _ = make_shapes(600, spurious_mark=False, seed=1)
    assert (_corner_guess(images, 32) == labels).float().mean() < 0.45  # chance is 1/3 at best


# ---- dataset and datamodule ----


def test_dataset_items_and_batches_and_normalisation_round_trip():
    images, labels, masks = make_shapes(20)
    raw, normed = ShapesDataset(images, labels, masks), ShapesDataset(images, labels, masks, normalize=True)
    item = normed[3]
    assert set(item) == {"image", "label", "mask"} and len(normed) == 20
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.long
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.bool
    mean, std = torch.tensor(SHAPES_MEAN).view(3, 1, 1), torch.tensor(SHAPES_STD).view(3, 1, 1)
    torch.testing.assert_close(item["image"], (raw[3]["image"] - mean) / std)
    torch.testing.assert_close(denormalize_images(item["image"]), raw[3]["image"])
    torch.testing.assert_close(denormalize_images(normalize_images(images)), images)
    assert ShapesDataset.mean == SHAPES_MEAN and ShapesDataset.std == SHAPES_STD
    batch = next(iter(DataLoader(normed, batch_size=8)))
    shapes = {k: tuple(v.shape) for k, v in batch.items()}
    assert shapes == {"image": (8, 3, 32, 32), "label": (8,), "mask": (8, 32, 32)}


def test_dataset_rejects_mismatched_tensors():
    images, labels, masks = make_shapes(5)
    with pytest.raises(ValueError, match="expected images \\(n, 3, H, W\\)"):
        ShapesDataset(images, labels[:4], masks)


def test_datamodule_generates_distinct_normalised_splits_and_shuffles_only_train():
    dm = ShapesDataModule(n_train=100, n_val=40, batch_size=16)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    dm.setup("fit")
    assert len(dm.train_set) == 100 and len(dm.val_set) == 40
    assert not torch.equal(dm.train_set.images[:40], dm.val_set.images)
    torch.testing.assert_close(dm.train_set[0]["image"], normalize_images(dm.train_set.images[0]))
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    again = ShapesDataModule(n_train=100, n_val=40)
    again.setup("fit")
    assert torch.equal(again.train_set.images, dm.train_set.images)


# ---- the model ----


def test_model_layers_and_hyperparameters():
    model = ShapesNet(n_classes=4, lr=1e-3)
    names = dict(model.named_modules())
    assert isinstance(names["features.0"], torch.nn.Conv2d) and isinstance(names["features.8"], torch.nn.Conv2d)
    assert isinstance(names["features.10"], torch.nn.ReLU)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert model.hparams.lr == 1e-3 and model.configure_optimizers().param_groups[0]["lr"] == 1e-3


@pytest.mark.slow
def test_model_learns_the_shapes_in_three_epochs():
    _, trainer, seconds = _fit(ShapesDataModule(n_train=1200, n_val=300), max_epochs=3)
    metrics = trainer.callback_metrics
    assert {"train_loss", "val_loss", "val_acc"} <= set(metrics)
    print(f"ShapesNet: 3 epochs on 1200 images in {seconds:.2f} s, val_acc {float(metrics['val_acc']):.3f}")
    assert metrics["val_acc"] > 0.85


@pytest.mark.slow
def test_model_learns_the_mark_as_a_shortcut():
    model, trainer, _ = _fit(ShapesDataModule(n_train=1200, n_val=300, spurious_mark=True), max_epochs=2)
    assert trainer.callback_metrics["val_acc"] > 0.95
    images, labels, _ = make_shapes(300, seed=99, spurious_mark=True)
    moved = images.clone()
    moved[mark_mask(labels, 32)[:, None].expand_as(images)] = 0.5
    moved[mark_mask((labels + 1) % 3, 32)[:, None].expand_as(images)] = 1.0
    model.eval()
    with torch.no_grad():
        follows = model(normalize_images(moved)).argmax(1) == (labels + 1) % 3
    assert follows.float().mean() > 0.9  # the prediction follows the mark, not the shape
