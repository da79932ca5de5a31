"""Concept activation vectors (Captum's ``CAV``): a classifier's weights per concept in one layer, saved to
and loaded from ``<save_path>/<model_id>/<concept ids>-<layer>.pkl`` as Captum names them."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Any

import torch

from attribution.concept.concept import Concept, concepts_to_str


class CAV:
    """The concept activation vectors of one experimental set in one layer.

    Args:
        concepts: the experimental set (only ids and names are saved).
        layer: the layer's dotted name.
        stats: what the classifier gave: ``{"weights": (C, F) tensor, "classes": the concept id of each
            row, "accs": accuracy, ...}``.
        save_path: the root folder of the CAV files.
        model_id: the model's folder under ``save_path``.
    """

    def __init__(
        self,
        concepts: list[Concept],
        layer: str,
        stats: dict[str, Any] | None = None,
        save_path: str = "./cav/",
        model_id: str = "default_model_id",
    ) -> None:
        self.concepts = concepts
        self.layer = layer
        self.stats = stats
        self.save_path = save_path
        self.model_id = model_id

    @staticmethod
    def assemble_save_path(path: str, model_id: str, concepts: Sequence[Concept], layer: str) -> str:
        """``<path>/<model_id>/<concept ids>-<layer>.pkl``, e.g. ``cav/default_model_id/0-1-conv2.pkl``."""
        return os.path.join(path, model_id, f"{concepts_to_str(concepts)}-{layer}.pkl")

    def save(self) -> None:
        """Write the concept ids and names, the layer and the stats to :meth:`assemble_save_path`."""
        record = {
            "concept_ids": [c.id for c in self.concepts],
            "concept_names": [c.name for c in self.concepts],
            "layer": self.layer,
            "stats": None if self.stats is None else {k: _on_cpu(v) for k, v in self.stats.items()},
        }
        CAV.create_cav_dir_if_missing(self.save_path, self.model_id)
        torch.save(record, CAV.assemble_save_path(self.save_path, self.model_id, self.concepts, self.layer))

    @staticmethod
    def create_cav_dir_if_missing(save_path: str, model_id: str) -> None:
        """Create ``<save_path>/<model_id>`` if it does not exist."""
        os.makedirs(os.path.join(save_path, model_id), exist_ok=True)

    @staticmethod
    def load(cavs_path: str, model_id: str, concepts: Sequence[Concept], layer: str) -> CAV | None:
        """The CAV saved for ``concepts`` and ``layer``, or None if there is no file.

        Files written by Captum (whose classes are numpy arrays) load too.
        """
        path = CAV.assemble_save_path(cavs_path, model_id, concepts, layer)
        if not os.path.exists(path):
            return None
        try:
            record = torch.load(path, weights_only=True)
        except pickle.UnpicklingError:  # Captum stores the classes as a numpy array
            with torch.serialization.safe_globals(_numpy_globals()):
                record = torch.load(path, weights_only=True)
        loaded = [Concept(i, name, None) for i, name in zip(record["concept_ids"], record["concept_names"])]
        return CAV(loaded, record["layer"], record["stats"], cavs_path, model_id)


def _on_cpu(value: Any) -> Any:
    """Tensors are saved from the CPU, so that a machine without the training device reads them."""
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _numpy_globals() -> list[Any]:
    """The numpy names a pickled array needs."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    names: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        names += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return names
