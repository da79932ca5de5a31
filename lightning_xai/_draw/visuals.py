"""The images the monitor logs: labelled overlay grids, filmstrips, timelines and coloured token text.

Tag names come from :mod:`lightning_xai._config.tags`; drawing from :mod:`lightning_xai._draw.render`.  The
finished images go to an :class:`ImageOutput` (the monitor's writer, :mod:`lightning_xai._write.writers`),
which this module does not know: it only draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from attribution.text_visualization import token_figure
from lightning_xai._compute.explanation import Explanation
from lightning_xai._compute.heat import Heat, is_signed
from lightning_xai._compute.history import History, Point
from lightning_xai._compute.self_check import MASK_EXAMPLES
from lightning_xai._config import tags
from lightning_xai._config.choices import ImageFormat
from lightning_xai._config.probe import Probe, round_robin
from lightning_xai._draw import render
from lightning_xai._draw.timeline import timeline_image


class ImageOutput(Protocol):
    """Where the finished images go (the monitor's :class:`~lightning_xai._write.writers.ExplanationWriter`)."""

    def image(
        self,
        tag: str,
        image: Tensor,
        step: int,
        file_name: str | None = None,
        caption: str | None = None,
        lossy: bool = False,
    ) -> None:
        """Show a ``(3, H, W)`` image under ``tag`` at global ``step``; also as ``file_name`` beside the maps if
        given; ``caption`` where the logger shows captions; ``lossy``: may be encoded as JPEG."""


class Visuals:
    """Renders a fixed probe's explanations; the display images are computed once.

    A large probe is shown through a fixed subset of ``shown`` examples (``display_samples`` of them,
    covering the classes), on the colour scale of the whole probe; its metrics cover all of it.
    """

    def __init__(
        self,
        probe: Probe,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        token_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        display_samples: int | None = None,
        image_format: ImageFormat = "auto",
    ) -> None:
        self.source = probe
        self.shown = display_rows(probe, display_samples or len(probe))
        self.probe, self.mean, self.std = probe.rows(torch.tensor(self.shown)), mean, std
        self.token_names, self.class_names = token_names, class_names
        self._display: Tensor | None = None
        self._display_pixels: np.ndarray | None = None
        self._frames = _FrameTiles(self.display)
        self._labels = _class_labels(self.probe)
        self._probe_logged = False  # once per fit (a Visuals lasts a fit): a resumed fit may log elsewhere
        self.lossy = image_format == "jpeg" or (image_format == "auto" and photographs(self.probe.inputs))

    @property
    def images(self) -> bool:
        return self.probe.inputs.dim() == 4

    def display_pixels(self) -> np.ndarray:
        """The probe at display size as ``(N, H, W, 3)`` uint8 tiles (see :func:`render.display_pixels`)."""
        if self._display_pixels is None:
            self._display_pixels = render.display_pixels(self.display())
        return self._display_pixels

    def display(self) -> Tensor:
        """The probe as RGB images in [0, 1], at the resolution overlays are computed at (see :func:`render.base`)."""
        if self._display is None:
            self._display = render.base(render.displayable(self.probe.inputs, self.mean, self.std))
        return self._display

    def point(
        self, writer: ImageOutput, point: Point, results: list[Explanation], history: History, filmstrips: bool = True
    ) -> None:
        """Everything one logged point writes: text for token inputs; grids for images, and their filmstrips
        when ``filmstrips`` (they show every point so far, so need not be written at each)."""
        targets, predictions = self._targets_predictions(history, point.step)
        predicted = _listed(predictions, len(self.probe))
        samples = [self.caption(i, p, t) for i, (p, t) in enumerate(zip(predicted, targets.tolist()))]
        for result in results:
            if result.token_scores is not None:
                image = self.tokens(result.token_scores[self.shown], targets, predictions)
                caption = _caption_text(f"{result.method}, {point.label}", samples)
                writer.image(tags.text_tag(result.method), image, point.step, caption=caption)
        if not self.images:
            return
        if not self._probe_logged:
            caption = _caption_text(self._probe_title(), [self.caption(i) for i in range(len(samples))])
            writer.image(tags.PROBE_IMAGE, self.probe_sheet(), point.step, caption=caption, lossy=self.lossy)
            self._probe_logged = True
        for result in results:
            if result.heat is not None:
                heat = Heat(result.heat.maps[self.shown], result.heat.scale, result.heat.signed)
                problems = [result.problems[i] for i in self.shown] if result.problems else None
                image = self.grid(result.method, heat, point, targets, predictions, problems)
                caption = _caption_text(f"{result.method}, {point.label}", samples)
                writer.image(tags.grid_tag(result.method), image, point.step, caption=caption, lossy=self.lossy)
        if filmstrips:
            self.filmstrips(writer, history, point.step)

    # ------------------------------------------------------------------ one image each

    def probe_sheet(self) -> Tensor:
        """The probe's inputs, numbered, with their true classes."""
        captions = [self.caption(i) for i in range(len(self.probe))]
        return render.sheet(self.display(), captions, [self._probe_title()])

    def _probe_title(self) -> str:
        total, shown = len(self.source), len(self.probe)
        return f"probe: {total} examples" + (f", {shown} shown" if shown < total else "")

    def grid(
        self,
        method: str,
        heat: Heat,
        point: Point,
        targets: Tensor,
        predictions: Tensor | None,
        problems: list[str | None] | None = None,
    ) -> Tensor:
        """Every probe sample with ``method``'s map overlaid at one point, labelled, under its colour scale;
        a map that failed the self-check (``problems``, per shown sample) is a grey tile that says why."""
        overlays = render.overlay(self.display(), heat.maps, heat.signed)
        target_list: list[int] = targets.tolist()
        predicted = _listed(predictions, len(target_list))
        problems = problems or [None] * len(target_list)
        captions = [self.caption(i, predicted[i], target_list[i]) for i in range(len(self.probe))]
        for lines, problem in zip(captions, problems):
            if problem is not None:
                lines.append((f"no map: {problem}", render.WRONG))
        what = self._explained([target_list], [predicted])
        legend = render.Legend(heat.signed, render.value_text(heat.scale), _meaning(heat.signed, what))
        marks = [_mark(problem) for problem in problems]
        return render.sheet(overlays, captions, [f"{method}: {point.label}"], legend, marks=marks)

    def filmstrips(self, writer: ImageOutput, history: History, step: int) -> None:
        """Per probe sample and method: its overlay at up to ``MAX_FRAMES`` logged points (evenly spaced,
        always the first and the latest), each labelled with its step, epoch and the prediction."""
        inputs = self.display_pixels()
        epochs = {p.step: p.epoch for p in history.points}
        for method, by_step in history.thumbnails.items():
            steps = sorted(by_step)
            steps_shown = [steps[i] for i in render.pick(len(steps), render.MAX_FRAMES)]
            signed = is_signed(torch.stack([by_step[s] for s in steps_shown]))
            frames = self._frames.pixels(method, {s: by_step[s] for s in steps_shown}, signed)
            at_steps = [self._targets_predictions(history, s) for s in steps_shown]
            targets = [t.tolist() for t, _ in at_steps]
            predicted = [_listed(p, len(inputs)) for _, p in at_steps]
            legend = render.Legend(signed, "max", _meaning(signed, self._explained(targets, predicted)))
            problems = history.problems.get(method, {})
            for i in range(len(inputs)):
                captions: list[list[render.Caption]] = [self.caption(i, prefix="input")] + [
                    [f"step {s} (epoch {epochs.get(s, '?')})", *self.caption(i, p[i], t[i])[1:]]
                    for s, p, t in zip(steps_shown, predicted, targets)
                ]
                title: list[render.Caption] = [
                    f"{method}: sample #{self.shown[i]}",
                    ("each step on its own scale", render.MUTED),
                ]
                tiles = np.stack([inputs[i], *(frame[i] for frame in frames)])
                marks = [None] + [_mark(problems.get(s, {}).get(self.shown[i])) for s in steps_shown]
                image = render.sheet(tiles, captions, title, legend, marks=marks)
                caption = _caption_text(f"{method}, sample #{self.shown[i]}", captions)
                writer.image(tags.filmstrip_tag(method, self.shown[i]), image, step, caption=caption, lossy=self.lossy)

    def timelines(self, writer: ImageOutput, history: History) -> None:
        """Per method: every probe sample at a few logged points, with the metric curves; to TensorBoard and as
        ``timeline_<method>.png`` beside the maps."""
        last = history.points[-1]
        epochs = {p.step: p.epoch for p in history.points}
        predicted = _listed(self._targets_predictions(history, last.step)[1], len(self.probe))
        rows = [self._row_label(i, predicted[i]) for i in range(len(self.probe))]
        for method, by_step in history.thumbnails.items():
            steps = sorted(by_step)
            logged, curves = history.curves(method)
            curves = {
                name: [dict(zip(logged, values)).get(s) for s in steps]
                for name, values in curves.items()
                if name != MASK_EXAMPLES  # a count, charted in the scalars: not a quality to follow here
            }
            frames = torch.stack([by_step[s] for s in steps])
            points = [Point(s, epochs.get(s, -1)) for s in steps]
            problems = history.problems.get(method, {})
            marks = [[problems.get(s, {}).get(i) for s in steps] for i in self.shown]
            image = timeline_image(method, self.display(), frames, points, curves, rows, problems=marks)
            title = f"{method}, steps {steps[0]} to {steps[-1]}, predictions at step {last.step}"
            caption = _caption_text(title, [[row] for row in rows])
            tag, file_name = tags.timeline_tag(method), f"timeline_{method}.png"
            writer.image(tag, image, last.step, file_name=file_name, caption=caption, lossy=self.lossy)

    def tokens(self, scores: Tensor, targets: Tensor, predictions: Tensor | None = None) -> Tensor:
        """The probe sentences with each token shaded by its attribution, as an image."""
        names = self.token_names
        words = [[names[t] if names and t < len(names) else str(t) for t in row] for row in self.probe.inputs.tolist()]
        predicted = _listed(predictions, len(words))
        titles = [_joined(self.caption(i, p, t)) for i, (p, t) in enumerate(zip(predicted, targets.tolist()))]
        return render.figure_to_tensor(token_figure(words, scores.cpu(), titles))

    def _targets_predictions(self, history: History, step: int) -> tuple[Tensor, Tensor | None]:
        """The explained classes and the predictions of the shown examples at ``step``."""
        predictions = history.predictions.get(step)
        return history.targets[step][self.shown], None if predictions is None else predictions[self.shown]

    # ------------------------------------------------------------------ labels

    def class_name(self, index: int) -> str:
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else f"class {index}"

    def caption(
        self, sample: int, predicted: int | None = None, target: int | None = None, prefix: str = ""
    ) -> list[render.Caption]:
        """The lines under a probe sample's tile: its number and true class (when the probe has labels); the
        prediction, green when right and red when wrong; the explained class when it is neither."""
        truth = None if self._labels is None else self._labels[sample]
        number = self.shown[sample]  # the example's place in the whole probe
        head = f"{prefix} #{number}" if prefix else f"#{number}"
        lines: list[render.Caption] = [head if truth is None else f"{head}  true: {self.class_name(truth)}"]
        if predicted is not None:
            colour = render.INK if truth is None else render.RIGHT if predicted == truth else render.WRONG
            lines.append((f"pred: {self.class_name(predicted)}", colour))
        if target is not None and target != predicted and target != truth:
            lines.append((f"explains: {self.class_name(target)}", render.MUTED))
        return lines

    def _row_label(self, sample: int, predicted: int | None) -> render.Caption:
        """One line for a sample's row of the timeline: red when the latest prediction is wrong."""
        lines = self.caption(sample, predicted)
        wrong = any(not isinstance(line, str) and line[1] == render.WRONG for line in lines)
        return (_joined(lines), render.WRONG) if wrong else _joined(lines)

    def _explained(self, targets: list[list[int]], predicted: list[list[int | None]]) -> str:
        """What the maps explain, in words, for the legend."""
        if targets == predicted:
            return "the prediction"
        if self._labels is not None and all(t == self._labels[: len(t)] for t in targets):
            return "the true class"
        classes = {c for t in targets for c in t}
        return self.class_name(classes.pop()) if len(classes) == 1 else "the explained class"


class _FrameTiles:
    """Filmstrip frames as display pixels, drawn once per method and point: a filmstrip shows the same
    frames at point after point, and drawing them was most of its cost."""

    def __init__(self, display: Callable[[], Tensor]) -> None:
        self.display = display
        self._drawn: dict[tuple[str, int], tuple[Tensor, bool, np.ndarray]] = {}

    def pixels(self, method: str, maps: dict[int, Tensor], signed: bool) -> list[np.ndarray]:
        """``(N, H, W, 3)`` uint8 overlays of ``method``'s maps (``(N, h, w)`` per step), in step order; only
        these steps stay kept for ``method``."""
        tiles = []
        for step, heat in sorted(maps.items()):
            kept = self._drawn.get((method, step))
            if kept is None or kept[0] is not heat or kept[1] != signed:
                overlay = render.overlay(self.display(), heat.float(), signed)
                kept = (heat, signed, render.display_pixels(overlay))
            tiles.append(kept[2])
        for key in [key for key in self._drawn if key[0] == method]:
            del self._drawn[key]
        self._drawn.update({(method, step): (maps[step], signed, tile) for step, tile in zip(sorted(maps), tiles)})
        return tiles


def photographs(inputs: Tensor) -> bool:
    """Whether ``inputs`` are images shown at their own size or shrunk (short side at least ``TILE_SIDE``):
    their tiles hold no enlarged pixel blocks, and JPEG suits them better than PNG (see ``image_format``)."""
    return inputs.dim() == 4 and min(inputs.shape[-2:]) >= render.TILE_SIDE


def display_rows(probe: Probe, count: int) -> list[int]:
    """The ``count`` probe examples shown in the images: fixed for the probe, covering its classes."""
    labels = _class_labels(probe)
    return round_robin(labels if labels is not None else [None] * len(probe), count)


def _class_labels(probe: Probe) -> list[int] | None:
    """One class index per probe example, if its labels are that (not, e.g., segmentation masks)."""
    labels = probe.labels
    if labels is None or labels.numel() != len(probe) or labels.dim() > 2:
        return None
    values = labels.flatten().tolist()
    return [int(v) for v in values] if all(float(v).is_integer() for v in values) else None


def _mark(problem: str | None) -> render.Caption | None:
    """The text on a grey tile whose map failed the self-check."""
    return None if problem is None else (problem, render.WRONG)


def _meaning(signed: bool, what: str) -> str:
    return f"red: for {what}, blue: against" if signed else f"bright: strong attribution to {what}"


def _joined(lines: list[render.Caption]) -> str:
    return ", ".join(line if isinstance(line, str) else line[0] for line in lines)


def _listed(values: Tensor | None, count: int) -> list[int | None]:
    return [None] * count if values is None else values.tolist()


def _caption_text(title: str, samples: list[list[render.Caption]]) -> str:
    """One line for loggers that show captions (W&B, MLflow): the title, then each sample's lines."""
    return f"{title}: " + "; ".join(_joined(lines) for lines in samples)
