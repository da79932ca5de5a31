"""RobustnessMonitor inside real Trainers: attack success and minimal epsilons against their closed forms on a
linear model, training unchanged, curves read back from TensorBoard."""

import glob

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import RobustnessMonitor

pytestmark = pytest.mark.slow


class TwoClassLinear(L.LightningModule):
    """Scores ``(w.x, -w.x)``: class 0 iff ``w.x > 0``. FGSM's step against class 0 is ``-eps sign(w)``, which
    lowers ``w.x`` by ``eps |w|_1``: an example of class 0 flips exactly when ``eps > w.x / |w|_1``."""

    def __init__(self, lr=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]))
        self.lr = lr

    def forward(self, x):
        score = x @ self.w
        return torch.stack([score, -score], 1)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _probe():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    return x, torch.where(x @ w > 0, 0, 1)


def _fit(tmp_path, model, callbacks, epochs=1):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=epochs,
        logger=TensorBoardLogger(tmp_path, name="logs", version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    x, y = _probe()
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=10))
    return trainer


def test_attacks_match_the_closed_form_of_a_linear_model(tmp_path):
    x, y = _probe()
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    # for both classes the flipping epsilon is |w.x| / |w|_1 (class 1's step raises w.x)
    needed = (x @ w).abs() / w.abs().sum()
    epsilon, max_epsilon = 0.3, 1.6
    monitor = RobustnessMonitor((x, y), epsilon=epsilon, max_epsilon=max_epsilon, pgd_steps=10)
    _fit(tmp_path, TwoClassLinear(), [monitor])
    first = monitor.history[0]
    assert [h["step"] for h in monitor.history] == [0, 4]
    assert first["probe_accuracy"] == 1.0
    assert first["fgsm_success"] == pytest.approx(float((needed < epsilon).float().mean()))
    # PGD's Linf ball holds FGSM's corner, the optimum for a linear score: it cannot do better or worse
    assert first["pgd_success"] == pytest.approx(first["fgsm_success"])
    resolution = max_epsilon / 32
    capped = needed.clamp(max=max_epsilon)
    assert first["min_epsilon_median"] == pytest.approx(float(capped.median()), abs=resolution)
    assert first["flipped_within_max"] == pytest.approx(float((needed <= max_epsilon).float().mean()), abs=0.05)

    (path,) = glob.glob(str(tmp_path / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    for name in ("probe_accuracy", "fgsm_success", "pgd_success", "min_epsilon_median", "seconds"):
        assert [e.step for e in events.Scalars(f"robustness/{name}")] == [0, 4]
    assert events.Scalars("robustness/fgsm_success")[0].value == pytest.approx(first["fgsm_success"])


def test_l2_pgd_flips_exactly_the_examples_within_its_l2_reach(tmp_path):
    """PGD's steps are signed gradient steps (Captum's), projected on the L2 ball: they end at
    ``radius * sign(grad) / |sign(grad)|``, which moves ``w.x`` by ``radius * |w|_1 / sqrt(nnz(w))``."""
    x, y = _probe()
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    needed = (x @ w).abs() / (w.abs().sum() / w.count_nonzero().sqrt())
    monitor = RobustnessMonitor((x, y), epsilon=0.5, norm="L2", pgd_steps=20, max_epsilon=0)
    _fit(tmp_path, TwoClassLinear(), [monitor])
    assert "min_epsilon_median" not in monitor.history[0]
    assert monitor.history[0]["pgd_success"] == pytest.approx(float((needed < 0.5).float().mean()))
    assert monitor.history[0]["pgd_success"] < monitor.history[0]["fgsm_success"]  # the L2 ball is smaller here


def test_training_is_unchanged_and_an_untrained_model_is_flagged(tmp_path):
    plain = TwoClassLinear(lr=0.5)
    _fit(tmp_path / "plain", plain, [], epochs=2)
    watched = TwoClassLinear(lr=0.5)
    x, y = _probe()
    with pytest.warns(UserWarning, match="gets no probe example right"):
        _fit(tmp_path / "watched", watched, [RobustnessMonitor((x, 1 - y), epsilon=0.1)], epochs=2)
    assert torch.equal(plain.w, watched.w)
    assert watched.w.grad is not None  # the trainer's own gradient, as in the plain run
    assert torch.equal(plain.w.grad, watched.w.grad)


def test_two_monitors_with_their_own_names_log_apart_and_resume_their_own_histories(tmp_path):
    # Linf and L2 side by side: each logs under its name and checkpoints its history under its own key.
    def monitors():
        x, y = _probe()
        linf = RobustnessMonitor((x, y), epsilon=0.5, pgd_steps=20, max_epsilon=0)
        return linf, RobustnessMonitor((x, y), epsilon=0.5, norm="L2", pgd_steps=20, max_epsilon=0, name="robust_l2")

    linf, l2 = monitors()
    assert linf.state_key == "RobustnessMonitor"  # the default keeps the key of checkpoints before names
    trainer = _fit(tmp_path / "first", TwoClassLinear(lr=0.1), [linf, l2])
    alone = RobustnessMonitor(_probe(), epsilon=0.5, norm="L2", pgd_steps=20, max_epsilon=0)
    _fit(tmp_path / "alone", TwoClassLinear(lr=0.1), [alone])
    assert l2.history == [{**h, "seconds": l2.history[i]["seconds"]} for i, h in enumerate(alone.history)]
    assert l2.history[0]["pgd_success"] < linf.history[0]["pgd_success"]  # the L2 ball is smaller here
    (path,) = glob.glob(str(tmp_path / "first" / "logs" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    for monitor, prefix in ((linf, "robustness"), (l2, "robust_l2")):
        logged = [e.value for e in events.Scalars(f"{prefix}/pgd_success")]
        assert logged == pytest.approx([h["pgd_success"] for h in monitor.history])

    trainer.save_checkpoint(tmp_path / "first.ckpt")
    linf_again, l2_again = monitors()
    L.seed_everything(0, verbose=False)
    resumed = L.Trainer(
        default_root_dir=tmp_path / "resumed", accelerator="cpu", max_epochs=2, logger=False,
        callbacks=[linf_again, l2_again], enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    resumed.fit(
        TwoClassLinear(lr=0.1), DataLoader(TensorDataset(*_probe()), batch_size=10), ckpt_path=tmp_path / "first.ckpt"
    )
    assert [h["step"] for h in linf_again.history] == [h["step"] for h in l2_again.history] == [0, 4, 8]
    assert linf_again.history[:2] == linf.history and l2_again.history[:2] == l2.history
    with pytest.raises(RuntimeError, match="state_key"):  # two of the same name would share one key
        L.Trainer(callbacks=list(monitors()[:1]) + [RobustnessMonitor(_probe())], logger=False)


def test_bad_arguments_are_refused():
    x, y = _probe()
    for name in ("", "robustness/", 3):
        with pytest.raises(MisconfigurationException, match="name must be a tag prefix"):
            RobustnessMonitor((x, y), name=name)
    with pytest.raises(MisconfigurationException, match="norm"):
        RobustnessMonitor((x, y), norm="L1")
    with pytest.raises(MisconfigurationException, match="epsilon"):
        RobustnessMonitor((x, y), epsilon=-1)
    with pytest.raises(MisconfigurationException, match="class indices"):
        RobustnessMonitor((x, y.float()))
    with pytest.raises(MisconfigurationException, match="probe"):
        RobustnessMonitor(x)


class BreaksInEval(TwoClassLinear):
    """Trains as the linear model; fails whenever it is evaluated (the monitor explains in eval mode)."""

    def forward(self, x):
        if not self.training:
            raise RuntimeError("eval broke")
        return super().forward(x)


def test_a_failing_point_warns_once_and_training_goes_on_unless_on_error_raise(tmp_path):
    monitor = RobustnessMonitor(_probe())
    with pytest.warns(
        UserWarning,
        match=r"RobustnessMonitor skipped the point at step 0 \(epoch 0\): "
        r"RuntimeError: eval broke",
    ) as caught:
        trainer = _fit(tmp_path / "warn", BreaksInEval(lr=0.1), [monitor], epochs=3)
    assert trainer.current_epoch == 3 and monitor.history == []  # all 4 points failed, training ran to the end
    assert sum("skipped the point" in str(w.message) for w in caught) == 1  # said once
    with pytest.raises(RuntimeError, match="eval broke"):
        _fit(tmp_path / "raise", BreaksInEval(lr=0.1), [RobustnessMonitor(_probe(), on_error="raise")])
    with pytest.raises(MisconfigurationException, match="on_error"):
        RobustnessMonitor(_probe(), on_error="ignore")
