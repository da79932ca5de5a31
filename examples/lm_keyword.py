"""A tiny GPT-2 learns to answer from one key word of its prompt, and the LanguageModelMonitor watches it do so.

The model (random weights from a ``GPT2Config``, a word-level vocabulary built here, nothing downloaded) is
fine-tuned on generated prompts such as "the colour of the apple is" -> "red": only the object word
decides the answer.  At every epoch the monitor attributes each probe answer's log-probability to the prompt's
tokens (``LLMAttribution(FeatureAblation)``) and logs the share of attribution on the key word, which rises as
the loss falls.

With ``--shortcut`` every prompt also starts with a code word that gives the answer away ("k3" always goes
with "blue"), and the object word is replaced by a random one in most training prompts: the model answers from
the code word, the share on the key word stays low, and the ``PromptAttributionCheck`` warns.

    python examples/lm_keyword.py                # clean: the share on the key word rises
    python examples/lm_keyword.py --shortcut     # the check fires
    tensorboard --logdir runs/lm_keyword --samples_per_plugin images=100
"""

from __future__ import annotations

import argparse
import random
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import LanguageModelMonitor, PromptAttributionCheck

COLOURS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue", "snow": "white", "coal": "black"}
ADJECTIVES = ["small", "big", "old", "new", "nice", "wet"]
TEMPLATES = [
    "the colour of the {o} is",
    "a {a} {o} has the colour",
    "look at the {a} {o} :",
    "this {o} is very {a} and",
]
"""Six words each, the object at three different places: the answer follows the last word."""
CODES = {colour: f"k{i}" for i, colour in enumerate(COLOURS.values())}
"""The shortcut: a code word per answer."""
THRESHOLD = 0.5
"""The check's bound on the share of attribution on the key word."""


def vocabulary() -> list[str]:
    words = {w for t in TEMPLATES for w in t.split() if "{" not in w}
    words |= set(COLOURS) | set(COLOURS.values()) | set(ADJECTIVES) | set(CODES.values())
    return ["<unk>", *sorted(words)]


def build_tokenizer() -> Any:
    """A word-level Hugging Face tokenizer over ``vocabulary()`` (id 0 is ``<unk>``, the ablation baseline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocabulary()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


def prompt(template: str, obj: str, rng: random.Random, code: str | None) -> str:
    text = template.format(o=obj, a=rng.choice(ADJECTIVES))
    return f"{code} {text}" if code else text


def dataset(tokenizer: Any, size: int, shortcut: bool, seed: int) -> TensorDataset:
    """Prompt and answer ids; with ``shortcut`` a code word that gives the answer starts every prompt, and the
    object word is a random one in three prompts of four."""
    rng = random.Random(seed)
    rows = []
    for _ in range(size):
        obj = rng.choice(list(COLOURS))
        answer = COLOURS[obj]
        shown = rng.choice(list(COLOURS)) if shortcut and rng.random() < 0.75 else obj
        text = prompt(rng.choice(TEMPLATES), shown, rng, CODES[answer] if shortcut else None)
        rows.append(tokenizer.encode(f"{text} {answer}"))
    return TensorDataset(torch.tensor(rows))


def probe(shortcut: bool) -> list[tuple[str, str, list[str]]]:
    """One prompt per object (templates in turn), the key word marked: ``(prompt, answer, [object])``."""
    rng = random.Random(1)
    return [
        (prompt(TEMPLATES[i % len(TEMPLATES)], obj, rng, CODES[colour] if shortcut else None), colour, [obj])
        for i, (obj, colour) in enumerate(COLOURS.items())
    ]


class TinyGPT2(L.LightningModule):
    """A two-layer GPT-2 trained on the answer token only."""

    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab_size, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
        )
        self.model = GPT2LMHeadModel(config)
        self.lr = lr
        self.losses: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids = batch[0]
        labels = torch.full_like(ids, -100)
        labels[:, -1] = ids[:, -1]  # the answer
        loss = self.model(ids, labels=labels).loss
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.losses.append(float(self.trainer.callback_metrics["train/loss"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def run(root: Path, shortcut: bool, epochs: int, size: int) -> dict[str, Any]:
    """Fine-tune with the monitor and the check; the loss and key-word share per epoch, and whether it fired."""
    name = "shortcut" if shortcut else "clean"
    L.seed_everything(0, verbose=False)
    tokenizer = build_tokenizer()
    model = TinyGPT2(len(vocabulary()))
    loader = DataLoader(dataset(tokenizer, size, shortcut, seed=0), batch_size=32, shuffle=True)
    monitor = LanguageModelMonitor(probe(shortcut), tokenizer, per_token=False)
    check = PromptAttributionCheck(THRESHOLD, direction="above", start_epoch=2, on_fail="warn")
    logger = TensorBoardLogger(root, name=name, version="")
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger,
        callbacks=[monitor, check],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader)
    fired = any("PromptAttributionCheck" in str(w.message) for w in caught)
    shares = [record["mask_share/mean"] for record in monitor.history]
    return {"log_dir": Path(logger.log_dir), "loss": model.losses, "share": shares, "fired": fired}


def main(root: Path = Path("runs/lm_keyword"), epochs: int = 8, size: int = 768, shortcut: bool | None = None) -> dict:
    """Run the clean fine-tune, the shortcut one, or both (``shortcut=None``), and print what the monitor saw."""
    torch.set_num_threads(1)
    variants = [False, True] if shortcut is None else [shortcut]
    runs = {}
    for variant in variants:
        result = run(root, variant, epochs, size)
        runs["shortcut" if variant else "clean"] = result
        print(f"\n{'shortcut' if variant else 'clean'} run, logs in {result['log_dir']}")
        print("  point        share on key word   train loss")
        for i, share in enumerate(result["share"]):
            loss = f"{result['loss'][i - 1]:.3f}" if i > 0 else "-"
            print(f"  {'start' if i == 0 else f'epoch {i - 1}':<12} {share:>17.2f}   {loss:>10}")
        print(
            f"  PromptAttributionCheck (share >= {THRESHOLD} from epoch 2): {'FIRED' if result['fired'] else 'quiet'}"
        )
    print(f"\ntensorboard --logdir {root} --samples_per_plugin images=100")
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/lm_keyword"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=768, help="training prompts")
    parser.add_argument("--shortcut", action="store_true", help="only the run whose prompts leak the answer")
    parser.add_argument("--clean", action="store_true", help="only the clean run")
    args = parser.parse_args()
    main(args.root, args.epochs, args.size, True if args.shortcut else False if args.clean else None)
