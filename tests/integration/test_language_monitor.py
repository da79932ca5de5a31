"""LanguageModelMonitor and PromptAttributionCheck on a tiny GPT-2 fine-tuned by a real Trainer: what reaches
TensorBoard (read back from the event files), that training is unchanged, that the numbers are the engine's,
and when the check acts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugin_util import markdown_to_safe_html
from torch import nn

from attribution import (
    FeatureAblation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTokenInput,
)
from lightning_xai import AttributionRegressionError, LanguageModelMonitor, PromptAttributionCheck
from tests.integration._tiny_lm import PROBE, WORDS, Module, gpt2, loader, word_tokenizer

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """A fit without a logger writes its images under the trainer's root, the working directory: the test's."""
    monkeypatch.chdir(tmp_path)


def fit(module, tokenizer, callbacks, root=None, epochs=1, **trainer_args):
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name="", version="") if root is not None else False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(module, loader(tokenizer))
    return trainer


def test_logs_token_images_html_tables_and_scalars(tmp_path, tokenizer):
    torch.manual_seed(0)
    monitor = LanguageModelMonitor(PROBE, tokenizer, per_token=True)
    fit(Module(gpt2()), tokenizer, [monitor], tmp_path, epochs=2)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Images("llm/tokens")]
    assert steps == [0, 4, 8]  # before the first step and at both epoch ends
    png = events.Images("llm/tokens")[-1]
    assert png.encoded_image_string.startswith(b"\x89PNG") and png.width > 200 and png.height > 100
    texts = events.Tensors("llm/attributions/text_summary")
    assert [t.step for t in texts] == steps
    shown = markdown_to_safe_html(texts[-1].tensor_proto.string_val[0].decode())  # as TensorBoard's text tab
    assert shown.count("<table>") == 2 and "<th><em>apple</em></th>" in shown and "<strong>" in shown
    last = monitor.history[-1]
    assert f"{last['log_prob/prompt_0']:.3f}" in shown  # the table shows this point's numbers
    for tag in ["llm/log_prob/prompt_0", "llm/log_prob/prompt_1", "llm/log_prob/mean", "llm/mask_share/mean"]:
        assert [e.step for e in events.Scalars(tag)] == steps, tag
    similarity = events.Scalars("llm/similarity_previous")
    assert [e.step for e in similarity] == [4, 8] and all(-1 <= e.value <= 1 for e in similarity)
    mean = events.Scalars("llm/log_prob/mean")[-1].value
    assert mean == pytest.approx((last["log_prob/prompt_0"] + last["log_prob/prompt_1"]) / 2, abs=1e-6)
    assert mean < 0 and events.Scalars("llm/log_prob/mean")[0].value < mean  # the targets got likelier


def test_training_is_bit_identical_with_the_monitor(tokenizer):
    def trained(callbacks):
        L.seed_everything(3, verbose=False)
        module = Module(gpt2())
        fit(module, tokenizer, callbacks, epochs=2)
        return module

    plain = trained([])
    monitors = [
        LanguageModelMonitor(PROBE, tokenizer),
        LanguageModelMonitor(
            PROBE, tokenizer, method="layer_integrated_gradients", method_options={"n_steps": 4}, name="llm_ig"
        ),
    ]
    watched = trained(monitors)
    assert all(len(m.history) == 3 for m in monitors)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_point_leaves_modes_grads_hooks_and_rng_alone(tokenizer):
    module = Module(gpt2())
    module.model.transformer.h[0].train()
    module.model.lm_head.eval()
    module.model.transformer.wpe.weight.requires_grad_(False)
    for p in module.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 7.0)
    modes = [m.training for m in module.modules()]
    rng = torch.get_rng_state()
    monitor = LanguageModelMonitor(PROBE, tokenizer, method="layer_integrated_gradients", method_options={"n_steps": 4})
    monitor.attribute(module)
    assert [m.training for m in module.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert not module.model.transformer.wpe.weight.requires_grad
    assert all(torch.all(p.grad == 7.0) for p in module.parameters() if p.requires_grad)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in module.modules())


@pytest.mark.parametrize("method", ["feature_ablation", "layer_integrated_gradients"])
def test_attributions_are_the_engines(tokenizer, method):
    torch.manual_seed(1)
    module = Module(gpt2())
    options = {"n_steps": 8} if method == "layer_integrated_gradients" else {}
    point = LanguageModelMonitor(PROBE, tokenizer, method=method, method_options=options).attribute(module)
    model = module.model.eval()
    if method == "feature_ablation":
        explainer = LLMAttribution(FeatureAblation(model), tokenizer)
    else:
        explainer = LLMGradientAttribution(LayerIntegratedGradients(model, model.transformer.wte), tokenizer)
    for (prompt, target, _), result in zip(PROBE, point.results):
        direct = explainer.attribute(TextTokenInput(prompt, tokenizer, baselines=0), target=target, **options)
        torch.testing.assert_close(result.seq_attr, direct.seq_attr)
        torch.testing.assert_close(result.token_attr, direct.token_attr)
        assert result.input_tokens == direct.input_tokens
    with torch.no_grad():
        ids = torch.tensor([tokenizer.encode("the colour of the apple is red")])
        expected = model(ids).logits[0, -2].log_softmax(-1)[WORDS.index("red")]
    assert float(point.log_probs[0]) == pytest.approx(float(expected), abs=1e-5)
    assert 0 <= point.shares[0] <= 1


class KeyTokenLM(nn.Module):
    """A causal LM whose every position predicts from one key token seen so far: ablating any other token
    changes nothing, so all attribution falls on the key token."""

    def __init__(self, key: int, answer: int) -> None:
        super().__init__()
        self.table = nn.Embedding(len(WORDS), len(WORDS))
        with torch.no_grad():
            self.table.weight.zero_()
            self.table.weight[key, answer] = 5.0

    def forward(self, ids):
        return self.table(ids).cumsum(dim=1)


class KeyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lm = KeyTokenLM(WORDS.index("apple"), WORDS.index("red"))

    def training_step(self, batch, batch_idx):
        return self.lm(batch[0]).sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize(("watched", "fires"), [(["apple"], False), (["colour"], True)])
def test_the_check_fires_when_attribution_leaves_the_watched_tokens(tokenizer, watched, fires):
    monitor = LanguageModelMonitor([("the colour of the apple is", "red", watched)], tokenizer, model_attr="lm")
    check = PromptAttributionCheck(0.5, on_fail="raise")
    if fires:
        with pytest.raises(AttributionRegressionError, match=r"llm/mask_share/mean = 0.000 at step 4 .* below"):
            fit(KeyModule(), tokenizer, [monitor, check])
    else:
        fit(KeyModule(), tokenizer, [monitor, check])
    share = 1.0 if watched == ["apple"] else 0.0
    assert [r["mask_share/mean"] for r in monitor.history] == [share, share]  # start, and the epoch end
    assert [h["violated"] for h in check.history] == [fires]  # the untrained point is not checked


def test_two_monitors_under_their_names_and_a_check_that_reads_the_one_it_names(tokenizer):
    def monitor(watched, **name):
        return LanguageModelMonitor(
            [("the colour of the apple is", "red", watched)], tokenizer, model_attr="lm", **name
        )

    apple, colour = monitor(["apple"]), monitor(["colour"], name="llm_colour")
    check = PromptAttributionCheck(0.5, on_fail="raise", monitor_name="llm_colour")
    with pytest.raises(AttributionRegressionError, match=r"llm_colour/mask_share/mean = 0.000 at step 4 .* below"):
        fit(KeyModule(), tokenizer, [apple, colour, check])
    assert [r["mask_share/mean"] for r in apple.history] == [1.0, 1.0]  # each its own values
    assert [r["mask_share/mean"] for r in colour.history] == [0.0, 0.0]
    assert check.monitor is colour and check.name == "llm_colour/mask_share/mean"
    unnamed = PromptAttributionCheck(0.5)
    with pytest.raises(MisconfigurationException, match=r"monitor_name: .* among \['llm', 'llm_colour'\], got None"):
        fit(KeyModule(), tokenizer, [monitor(["apple"]), monitor(["colour"], name="llm_colour"), unnamed])


def test_the_check_warns_or_stops(tokenizer):
    monitor = LanguageModelMonitor([("the colour of the apple is", "red", ["colour"])], tokenizer, model_attr="lm")
    check = PromptAttributionCheck(0.5, on_fail="stop")
    with pytest.warns(UserWarning, match="stopping training"):
        trainer = fit(KeyModule(), tokenizer, [monitor, check], epochs=3)
    assert trainer.current_epoch == 1 and len(check.history) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"probe": []}, "probe must be a non-empty list"),
        ({"probe": [("only a prompt",)]}, r"probe\[0\] must be \(prompt, target\[, mask\]\)"),
        ({"probe": [("a prompt", "")]}, "non-empty prompt and target"),
        ({"probe": [("a prompt", "x", [0.5])]}, r"probe\[0\]'s mask must be"),
        ({"tokenizer": None}, r"tokenizer must be the model's tokenizer .* got NoneType without \['encode'"),
        ({"method": "occlusion"}, "method"),
        ({"method_options": 3}, "method_options must be a dict"),
        ({"every_n_epochs": 0}, "every_n_epochs must be a positive int, got 0"),
        ({"baseline": 1.5}, "baseline must be a token id"),
    ],
)
def test_bad_arguments_are_refused_at_construction(tokenizer, arguments, message):
    given = {"probe": PROBE, "tokenizer": tokenizer, **arguments}
    with pytest.raises(MisconfigurationException, match=message):
        LanguageModelMonitor(**given)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"threshold": 1.5}, r"threshold: expected a share in \[0, 1\], got 1.5"),
        ({"threshold": float("nan")}, "threshold: expected a finite number"),
        ({"direction": "up"}, "direction"),
        ({"on_fail": "explode"}, "on_fail"),
        ({"prompt": -1}, "prompt: expected a probe index"),
    ],
)
def test_bad_check_arguments_are_refused(arguments, message):
    with pytest.raises(MisconfigurationException, match=message):
        PromptAttributionCheck(**{"threshold": 0.5, **arguments})


@pytest.mark.parametrize(
    ("probe", "callbacks", "message"),
    [
        ([("the colour of the apple is", "red", ["banana"])], [], r"mask names \['banana'\], none of the prompt's"),
        ([("the colour is", "red", [1, 0])], [], "mask has 2 flags for a prompt of 3 tokens"),
        (PROBE, [PromptAttributionCheck(0.5, prompt=5)], "expected an index below the probe's 2 entries"),
        (
            [("the colour is", "red")],
            [PromptAttributionCheck(0.5)],
            "no probe entry of the LanguageModelMonitor has a mask",
        ),
    ],
)
def test_setup_refuses_probes_that_do_not_fit(tokenizer, probe, callbacks, message):
    with pytest.raises(MisconfigurationException, match=message):
        fit(Module(gpt2()), tokenizer, [LanguageModelMonitor(probe, tokenizer), *callbacks])


def test_setup_names_what_is_missing(tokenizer):
    with pytest.raises(
        MisconfigurationException, match=r"model_attr: Module has no 'net'; its children are \['model'\]"
    ):
        fit(Module(gpt2()), tokenizer, [LanguageModelMonitor(PROBE, tokenizer, model_attr="net")])
    with pytest.raises(MisconfigurationException, match="holds no Hugging Face PreTrainedModel"):
        fit(KeyModule(), tokenizer, [LanguageModelMonitor(PROBE, tokenizer)])
    with pytest.raises(MisconfigurationException, match="add one to the callbacks"):
        fit(Module(gpt2()), tokenizer, [PromptAttributionCheck(0.5)])


def test_bf16_mixed_training_is_explained_in_float32(tokenizer):
    torch.manual_seed(2)
    module = Module(gpt2())
    monitor = LanguageModelMonitor(PROBE, tokenizer, method="layer_integrated_gradients", method_options={"n_steps": 4})
    fit(module, tokenizer, [monitor], precision="bf16-mixed")
    last = monitor.attributions[max(monitor.attributions)]
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() and a.abs().sum() > 0 for a in last)
    again = monitor.attribute(module)  # the weights the last point saw, outside autocast
    for a, b in zip(last, again.seq_attr()):
        torch.testing.assert_close(a, b)
    assert torch.isfinite(torch.tensor(monitor.history[-1]["log_prob/mean"]))


def test_a_peft_lora_model_is_found_and_explained(tokenizer):
    peft = pytest.importorskip("peft")
    torch.manual_seed(4)
    lora = peft.get_peft_model(
        gpt2(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    module = Module(lora)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    monitor = LanguageModelMonitor(PROBE, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(module, tokenizer, [monitor])
    assert {n for n, p in module.named_parameters() if p.requires_grad} == trainable
    assert len(monitor.history) == 2 and monitor.history[-1]["log_prob/mean"] < 0
    # the adapters are part of what is explained: without them the attributions differ
    with lora.disable_adapter():
        base = monitor.attribute(module)
    assert not torch.allclose(base.seq_attr()[0], monitor.attribute(module).seq_attr()[0])


def test_history_and_attributions_survive_a_checkpoint(tokenizer):
    monitor = LanguageModelMonitor(PROBE, tokenizer)
    fit(Module(gpt2()), tokenizer, [monitor])
    restored = LanguageModelMonitor(PROBE, tokenizer)
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history
    assert all(torch.equal(a, b) for a, b in zip(restored.attributions[4], monitor.attributions[4]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_mixed_on_a_gpu_is_explained_in_float32_on_the_device(tokenizer):
    torch.manual_seed(5)
    module = Module(gpt2())
    monitor = LanguageModelMonitor(PROBE, tokenizer, method="layer_integrated_gradients", method_options={"n_steps": 4})
    fit(module, tokenizer, [monitor], accelerator="gpu", devices=1, precision="bf16-mixed")
    last = monitor.attributions[max(monitor.attributions)]
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() and a.abs().sum() > 0 for a in last)
    cpu = monitor.attribute(module.cpu())
    for a, b in zip(last, cpu.seq_attr()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


@pytest.mark.skipif(os.environ.get("LIGHTNING_XAI_SKIP_DDP") == "1", reason="DDP test disabled")
def test_under_ddp_every_process_computes_the_same_point_and_the_check_stops_them_all(tmp_path):
    repository = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.integration.ddp_language_script", str(tmp_path)]
    result = subprocess.run(command, cwd=repository, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Both processes stopped after the first epoch: a stop on one alone would leave the other waiting.
    assert [r["epoch"] for r in ranks] == [1, 1] and [r["violated"] for r in ranks] == [[True], [True]]
    history = ranks[0]["history"]
    assert [h["step"] for h in history] == [0, 2]  # 16 sentences, 2 processes, batches of 4: 2 steps an epoch
    for mine, theirs in zip(history, ranks[1]["history"]):  # the replicas hold the same weights
        assert mine.keys() == theirs.keys()
        assert {k: v for k, v in mine.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in theirs.items() if k != "seconds"}, abs=1e-6
        )
    assert history[-1]["log_prob/mean"] != history[0]["log_prob/mean"]  # trained between the points
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1  # rank zero alone writes
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Images("llm/tokens")] == [0, 2]
    logged = [e.value for e in events.Scalars("llm/mask_share/mean")]
    assert logged == pytest.approx([h["mask_share/mean"] for h in history]) and all(0 < v < 1 for v in logged)
