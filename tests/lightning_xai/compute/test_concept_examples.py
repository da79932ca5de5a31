"""A concept's examples from a tensor, a dataset or a folder of images, and the random sets."""

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from lightning_xai._compute.concept_examples import concept_examples, random_sets


def test_tensors_datasets_and_folders_give_the_same_examples(tmp_path):
    pixels = torch.randint(0, 256, (3, 5, 4, 3), dtype=torch.uint8)  # three 5x4 RGB images
    for i, image in enumerate(pixels):
        Image.fromarray(image.numpy()).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    expected = pixels.permute(0, 3, 1, 2).float() / 255
    from_folder = concept_examples(tmp_path, "c", "input")
    torch.testing.assert_close(from_folder, expected)
    assert torch.equal(concept_examples(expected, "c", "input"), expected)
    assert torch.equal(concept_examples(TensorDataset(expected, torch.zeros(3)), "c", "input"), expected)
    dicts = [{"image": x} for x in expected]
    assert torch.equal(concept_examples(dicts, "c", "image"), expected)
    doubled = concept_examples(tmp_path, "c", "input", transform=lambda x: 2 * x)
    torch.testing.assert_close(doubled, 2 * expected)


def test_bad_sources_name_the_concept(tmp_path):
    with pytest.raises(ValueError, match=r"concepts\['c'\]: .* is not a folder"):
        concept_examples(tmp_path / "missing", "c", "input")
    with pytest.raises(ValueError, match=r"concepts\['c'\]: no examples"):
        concept_examples(tmp_path, "c", "input")
    with pytest.raises(ValueError, match="different shapes"):
        concept_examples([torch.zeros(3), torch.zeros(4)], "c", "input")
    with pytest.raises(ValueError, match="dicts with 'input'"):
        concept_examples([{"image": torch.zeros(3)}], "c", "input")


def test_random_sets_are_disjoint_equal_and_seeded():
    examples = torch.arange(23).float()[:, None]
    sets = random_sets(examples, 4, seed=1)
    assert [len(s) for s in sets] == [5] * 4
    values = torch.cat(sets).flatten().tolist()
    assert len(set(values)) == 20 and set(values) <= set(range(23))
    assert all(torch.equal(a, b) for a, b in zip(sets, random_sets(examples, 4, seed=1)))
    with pytest.raises(ValueError, match="at least 10"):
        random_sets(examples[:9], 5, seed=0)
