"""A tiny GPT-2 (from a config, random weights) with a word-level tokenizer, fine-tuned on two sentences: shared
by the language-model monitor's tests and their DDP script."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

WORDS = ["<unk>", "the", "colour", "of", "is", "a", "apple", "sky", "grass", "red", "blue", "green", "k"]
PROBE = [("the colour of the apple is", "red", ["apple"]), ("the colour of the sky is", "blue", ["sky"])]


def word_tokenizer() -> Any:
    """A Hugging Face fast tokenizer over ``WORDS``, split on whitespace (id 0 is ``<unk>``)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


def gpt2() -> nn.Module:
    import transformers

    config = transformers.GPT2Config(
        vocab_size=len(WORDS), n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


class Module(L.LightningModule):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.model(batch[0], labels=batch[0]).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader(tokenizer: Any) -> DataLoader[Any]:
    """16 sentences, "the colour of the apple is red" and the sky's, in batches of 4."""
    rows = [tokenizer.encode(f"the colour of the {o} is {c}") for o, c in [("apple", "red"), ("sky", "blue")] * 8]
    return DataLoader(TensorDataset(torch.tensor(rows)), batch_size=4, shuffle=True)
