"""The generated sentences: determinism, planted words, labels, and the global RNG left alone."""

import torch

from lightning_xai.demos.text import NEGATIVE, POSITIVE, VOCABULARY, SentenceDataModule, make_sentences


def test_sentences_are_deterministic_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    first = make_sentences(50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first, make_sentences(50, seed=3)):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], make_sentences(50, seed=4)[0])


def test_planted_words_carry_the_label():
    tokens, labels, planted = make_sentences(200, length=10, seed=0)
    words = [[VOCABULARY[t] for t in row] for row in tokens.tolist()]
    for row, label, mask in zip(words, labels.tolist(), planted.tolist()):
        sentiment = [w for w, m in zip(row, mask) if m]
        assert len(sentiment) in (1, 2)
        assert all(w in (POSITIVE if label else NEGATIVE) for w in sentiment)
        assert not any(w in POSITIVE + NEGATIVE for w, m in zip(row, mask) if not m)
    assert abs(labels.float().mean() - 0.5) < 0.01


def test_datamodule_batches_are_dicts():
    data = SentenceDataModule(n_train=64, n_val=16, length=8)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert batch["tokens"].shape == (16, 8) and batch["mask"].dtype == torch.bool and batch["label"].shape == (16,)
