"""The images the monitor logs: overlay grids, filmstrips, timelines and coloured token text."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attribution.text_visualization import token_figure
from lightning_xai import _render
from lightning_xai._explain import Explanation
from lightning_xai._probe import Probe
from lightning_xai._timeline import timeline_figure
from lightning_xai._writers import ExplanationWriter

FILMSTRIP_EVERY = 5
"""Filmstrips (which grow with every epoch) are written every this many logged epochs and at the end of fit."""


class Visuals:
    """Renders a fixed probe's explanations; the display images are computed once."""

    def __init__(
        self,
        probe: Probe,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        token_names: Sequence[str] | None = None,
    ) -> None:
        self.probe, self.mean, self.std, self.token_names = probe, mean, std, token_names
        self._display: Tensor | None = None
        self.filmstrips_at: int | None = None

    @property
    def images(self) -> bool:
        return self.probe.inputs.dim() == 4

    def display(self) -> Tensor:
        """The probe as RGB images in [0, 1], enlarged for legibility."""
        if self._display is None:
            self._display = _render.enlarge(_render.displayable(self.probe.inputs, self.mean, self.std))
        return self._display

    def epoch(
        self,
        writer: ExplanationWriter,
        epoch: int,
        results: list[Explanation],
        targets: Tensor,
        thumbnails: dict[str, list[Tensor]],
        epochs: list[int],
    ) -> None:
        """Everything one logged epoch writes: text for token inputs, grids (and filmstrips) for images."""
        for result in results:
            if result.token_scores is not None:
                writer.image(f"xai_text/{result.method}", self.tokens(result.token_scores, targets), epoch)
        if not self.images:
            return
        if len(epochs) == 1:
            writer.image("xai/probe", _render.grid(self.display()), epoch)
        for result in results:
            if result.heat is not None:
                overlays = _render.overlay(self.display(), _render.enlarge(result.heat))
                writer.image(f"xai/{result.method}", _render.grid(overlays), epoch)
        if len(epochs) % FILMSTRIP_EVERY == 0:
            self.filmstrips(writer, thumbnails, epochs)

    def filmstrips(self, writer: ExplanationWriter, thumbnails: dict[str, list[Tensor]], epochs: list[int]) -> None:
        """One image per probe sample and method: its overlay at every logged epoch so far."""
        images = self.display()
        for method, maps in thumbnails.items():
            history = torch.stack(maps)  # (epochs, N, h, w)
            for i in range(len(images)):
                writer.image(
                    f"xai_filmstrip/{method}/sample_{i}", _render.filmstrip(images[i], history[:, i]), epochs[-1]
                )
        self.filmstrips_at = epochs[-1]

    def timelines(
        self, writer: ExplanationWriter, thumbnails: dict[str, list[Tensor]], manifest: list[dict], epochs: list[int]
    ) -> None:
        """Per method: samples x logged epochs, with the metric curves; to TensorBoard and as PNG."""
        for method, maps in thumbnails.items():
            records = [r for r in manifest if r["method"] == method]
            names = dict.fromkeys(name for r in records for name in r["metrics"])
            curves = {name: [r["metrics"].get(name) for r in records] for name in names}
            image = _render.figure_to_tensor(timeline_figure(method, self.display(), torch.stack(maps), epochs, curves))
            writer.image(f"xai_timeline/{method}", image, epochs[-1], file_name=f"timeline_{method}.png")

    def tokens(self, scores: Tensor, targets: Tensor) -> Tensor:
        """The probe sentences with each token shaded by its attribution, as an image."""
        names = self.token_names
        words = [[names[t] if names and t < len(names) else str(t) for t in row] for row in self.probe.inputs.tolist()]
        titles = [f"target {t}" for t in targets.tolist()]
        return _render.figure_to_tensor(token_figure(words, scores.cpu(), titles))
