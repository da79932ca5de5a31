"""Generated sentences with planted sentiment words and a small token classifier.

Each sentence is a sequence of filler words with one or two sentiment words
at random positions; the label is the sentiment of those words.  The planted
words are the ground truth a token attribution should point at.  Everything
is drawn from a seed with a private ``torch.Generator`` (the global RNG is
left alone), nothing is downloaded.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

PAD = "<pad>"
POSITIVE = ("great", "excellent", "love", "wonderful", "superb", "enjoyed")
NEGATIVE = ("awful", "terrible", "hate", "boring", "dreadful", "disliked")
FILLER = (
    "the", "a", "movie", "film", "plot", "actors", "was", "and", "it", "this", "really", "story",
    "i", "of", "with", "scene", "very", "quite", "music", "ending", "cast", "script", "show", "all",
)  # fmt: skip
VOCABULARY = (PAD, *FILLER, *POSITIVE, *NEGATIVE)
"""Token names by id; id 0 is padding (the natural baseline for token attributions)."""


def make_sentences(n: int, length: int = 12, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``(tokens (n, length) long, labels (n,) long, planted (n, length) bool)``.

    Labels alternate and are then shuffled; every sentence holds one or two
    sentiment words of its label's polarity among fillers.
    """
    if n < 1 or length < 3:
        raise ValueError(f"n and length: expected n >= 1 and length >= 3, got n={n}, length={length}")
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]
    filler_ids = torch.arange(1, 1 + len(FILLER))
    tokens = filler_ids[torch.randint(len(FILLER), (n, length), generator=generator)]
    first_positive = 1 + len(FILLER)
    first_negative = first_positive + len(POSITIVE)
    planted = torch.zeros(n, length, dtype=torch.bool)
    count = 1 + torch.randint(2, (n,), generator=generator)  # one or two sentiment words
    order = torch.rand(n, length, generator=generator).argsort(dim=1)
    planted.scatter_(1, order[:, :2], (torch.arange(2)[None, :] < count[:, None]))
    words = torch.randint(len(POSITIVE), (n, length), generator=generator)
    sentiment = torch.where(labels[:, None] == 1, first_positive + words, first_negative + words)
    return torch.where(planted, sentiment, tokens), labels, planted


class SentenceDataset(Dataset[dict[str, Tensor]]):
    """Items ``{"tokens": (T,) long, "label": long, "mask": (T,) bool}`` (mask: the planted words)."""

    def __init__(self, tokens: Tensor, labels: Tensor, planted: Tensor) -> None:
        self.tokens, self.labels, self.planted = tokens, labels, planted

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"tokens": self.tokens[index], "label": self.labels[index], "mask": self.planted[index]}


class SentenceDataModule(L.LightningDataModule):
    """Generated training and validation sentences (different seeds)."""

    def __init__(self, n_train: int = 2000, n_val: int = 200, length: int = 12, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.n_train, self.n_val, self.length, self.batch_size, self.seed = n_train, n_val, length, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = SentenceDataset(*make_sentences(self.n_train, self.length, seed=2 * self.seed))
        self.val_set = SentenceDataset(*make_sentences(self.n_val, self.length, seed=2 * self.seed + 1))

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return DataLoader(self.val_set, batch_size=self.batch_size)


class TextClassifier(L.LightningModule):
    """Token embeddings, mean over the non-padding tokens, a small MLP: the layer to explain is ``embedding``."""

    def __init__(self, vocabulary_size: int = len(VOCABULARY), dim: int = 16, n_classes: int = 2, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr
        self.embedding = nn.Embedding(vocabulary_size, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, n_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        vectors = self.embedding(tokens)
        present = (tokens != 0).unsqueeze(-1).to(vectors.dtype)
        logits: Tensor = self.head((vectors * present).sum(1) / present.sum(1).clamp_min(1))
        return logits

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["tokens"])
        loss = F.cross_entropy(logits, batch["label"])
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        if stage == "val":
            self.log("val_acc", (logits.argmax(1) == batch["label"]).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
