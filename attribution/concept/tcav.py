"""Testing with Concept Activation Vectors (Kim et al., 2018), Captum's ``TCAV``.

For each experimental set (a list of concepts) and layer, a linear classifier separates the concepts'
activations; its weight rows are the CAVs.  The TCAV scores of inputs are read from the dot products of the
CAVs with the layer sensitivities (by default the gradient of the target with respect to the layer):

- ``sign_count``: the share of inputs whose dot product is positive;
- ``magnitude``: the mean dot product (Captum's computation; its docstring's normalised formula is not what
  it computes, and its tests pin the mean).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from attribution._internal.autograd import resolve_layer
from attribution._internal.canonical import TargetType
from attribution._internal.checks import ArgumentError, ArgumentTypeError, describe
from attribution.concept.activations import layer_activations, layer_sensitivities, load_activations, save_activations
from attribution.concept.cav import CAV
from attribution.concept.classifier import Classifier, DefaultClassifier
from attribution.concept.concept import Concept, ConceptInterpreter, concepts_to_str
from attribution.methods.layer.gradient import LayerGradientXActivation

Scores = dict[str, dict[str, dict[str, Tensor]]]
"""``scores[concepts key][layer] = {"sign_count": (C,) tensor, "magnitude": (C,) tensor}``."""


class LabelledDataset(Dataset[tuple[Tensor, Tensor]]):
    """Item ``k``: the activations of the ``k``-th concept and their labels (its id), one batch per concept."""

    def __init__(self, datasets: Sequence[Tensor], labels: Sequence[int]) -> None:
        if len(datasets) != len(labels):
            raise ArgumentError(f"labels: expected one per dataset ({len(datasets)}), got {len(labels)}")
        self.datasets = list(datasets)
        self.labels = list(labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.datasets[i]
        return x, torch.full((x.shape[0],), self.labels[i], dtype=torch.long, device=x.device)

    def __len__(self) -> int:
        return len(self.datasets)


def _concat(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    inputs, labels = zip(*batch)
    return torch.cat(inputs), torch.cat(labels)


def tcav_scores(sensitivities: Tensor, cavs: Tensor) -> tuple[Tensor, Tensor]:
    """Sign-count and magnitude TCAV scores of every experimental set and concept.

    Args:
        sensitivities: ``(N, F)`` layer sensitivities of the inputs.
        cavs: ``(E, C, F)``: ``C`` CAVs of each of ``E`` experimental sets.

    Returns:
        ``(sign_count, magnitude)``, each ``(E, C)``.
    """
    dots = torch.matmul(sensitivities.to(cavs), cavs.transpose(1, 2))  # (E, N, C)
    return (dots > 0).float().mean(dim=1), dots.mean(dim=1)


class TCAV(ConceptInterpreter):
    """TCAV scores of concepts for a model's predictions (Kim et al., 2018), with Captum's arguments.

    Activations of each concept are gathered once per layer set, in one forward per batch for all layers,
    and kept in memory (and, with a ``save_path``, in Captum's ``AV`` layout on disk); the sensitivities of
    all layers come from one forward and one backward.  The model's mode, ``requires_grad`` and
    ``param.grad`` are left as they are.

    Args:
        model: the model.
        layers: a dotted layer name or a list of them.
        model_id: names the model's folder under ``save_path``.
        classifier: trains the CAVs (default :class:`DefaultClassifier`).
        layer_attr_method: a layer attribution method for the sensitivities, its ``layer`` set per layer
            (default ``LayerGradientXActivation(model, layers, multiply_by_inputs=False)``: the gradient).
        attribute_to_layer_input: use the layers' inputs instead of their outputs.
        save_path: the folder for CAVs and activations; None keeps everything in memory (no file written).
        classifier_kwargs: passed to ``classifier.train_and_eval`` (e.g. ``test_split_ratio``).

    Raises:
        ValueError: an empty ``model_id`` or no layer, or an unknown layer name.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution.concept import TCAV, Concept
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> striped = Concept(0, "striped", [torch.randn(20, 4) + 2])
        >>> random = Concept(1, "random", [torch.randn(20, 4)])
        >>> tcav = TCAV(model, ["0"], save_path=None)
        >>> scores = tcav.interpret(torch.randn(8, 4), [[striped, random]], target=0)
        >>> sorted(scores["0-1"]["0"])
        ['magnitude', 'sign_count']
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | list[str],
        model_id: str = "default_model_id",
        classifier: Classifier | None = None,
        layer_attr_method: Any = None,
        attribute_to_layer_input: bool = False,
        save_path: str | None = "./cav/",
        **classifier_kwargs: Any,
    ) -> None:
        super().__init__(model)
        self.layers: list[str] = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise ArgumentError("layers: expected a layer name or a non-empty list of them, got []")
        for name in self.layers:
            resolve_layer(model, name)
        if not model_id:
            raise ArgumentError(f"model_id: expected a non-empty name (default 'default_model_id'), got {model_id!r}")
        for method in ("train_and_eval", "weights", "classes"):
            if classifier is not None and not callable(getattr(classifier, method, None)):
                raise ArgumentTypeError(
                    f"classifier: expected a Classifier (with {method}), got {describe(classifier)}"
                )
        self.model_id = model_id
        self.concepts: set[Concept] = set()
        self.classifier: Classifier = DefaultClassifier() if classifier is None else classifier
        self.classifier_kwargs = classifier_kwargs
        self.cavs: dict[str, dict[str, CAV]] = defaultdict(dict)
        self.layer_attr_method = (
            LayerGradientXActivation(model, list(self.layers), multiply_by_inputs=False)
            if layer_attr_method is None
            else layer_attr_method
        )
        self.attribute_to_layer_input = attribute_to_layer_input
        self.save_path = save_path
        self.activations: dict[str, dict[str, Tensor]] = defaultdict(dict)
        """``activations[concept.identifier][layer]``: the ``(N, F)`` activations in memory."""
        if save_path is not None:
            CAV.create_cav_dir_if_missing(save_path, model_id)

    # ------------------------------------------------------------------ activations

    def generate_all_activations(self) -> None:
        """Gather the activations of every concept in ``self.concepts`` in every layer."""
        for concept in self.concepts:
            self.generate_activation(self.layers, concept)

    def generate_activation(self, layers: str | list[str], concept: Concept) -> None:
        """Gather ``concept``'s activations in ``layers`` (one forward per batch for all of them).

        Raises:
            ValueError: the concept has no ``data_iter``.
        """
        layers = [layers] if isinstance(layers, str) else list(layers)
        if concept.data_iter is None:
            raise ArgumentError(f"concept {concept!r}: data_iter is None; give the concept's examples")
        gathered = layer_activations(self.model, layers, concept.data_iter, self.attribute_to_layer_input)
        for layer, acts in gathered.items():
            self.activations[concept.identifier][layer] = acts
            if self.save_path is not None:
                save_activations(self.save_path, self.model_id, concept.identifier, layer, acts)

    def generate_activations(self, concept_layers: dict[Concept, list[str]]) -> None:
        """Gather the activations of each concept in its list of layers."""
        for concept, layers in concept_layers.items():
            if layers:
                self.generate_activation(layers, concept)

    def _has_activations(self, concept: Concept, layer: str) -> bool:
        if layer in self.activations.get(concept.identifier, {}):
            return True
        if self.save_path is None:
            return False
        loaded = load_activations(self.save_path, self.model_id, concept.identifier, layer)
        if loaded is not None:
            self.activations[concept.identifier][layer] = loaded
        return loaded is not None

    # ------------------------------------------------------------------ CAVs

    def load_cavs(self, concepts: list[Concept]) -> tuple[list[str], dict[Concept, list[str]]]:
        """Load the CAVs of ``concepts`` saved under ``save_path`` (or kept in memory).

        Returns:
            ``(layers, concept_layers)``: the layers whose CAVs still need training, and for each concept
            the layers whose activations are still missing.
        """
        key = concepts_to_str(concepts)
        layers: list[str] = []
        concept_layers: dict[Concept, list[str]] = defaultdict(list)
        for layer in self.layers:
            if layer not in self.cavs.get(key, {}) and self.save_path is not None:
                cav = CAV.load(self.save_path, self.model_id, concepts, layer)
                if cav is not None:
                    self.cavs[key][layer] = cav
            if layer in self.cavs.get(key, {}):
                continue
            layers.append(layer)
            for concept in concepts:
                if not self._has_activations(concept, layer):
                    concept_layers[concept].append(layer)
        return layers, concept_layers

    def compute_cavs(
        self, experimental_sets: list[list[Concept]], force_train: bool = False, processes: int | None = None
    ) -> dict[str, dict[str, CAV]]:
        """Train (or load) the CAVs of every experimental set in every layer.

        Args:
            experimental_sets: lists of concepts; each list gets one classifier per layer.
            force_train: gather the activations anew and retrain, ignoring saved CAVs (after the model
                changed, e.g. at each epoch).
            processes: accepted for Captum's signature; training runs in this process (it is one small
                linear solve per set and layer).

        Returns:
            ``cavs[concepts key][layer]``.

        Raises:
            ValueError: two different concepts with one id (also an ``AssertionError``, as Captum raises).
        """
        self._check_sets(experimental_sets)
        for concepts in experimental_sets:
            self.concepts.update(concepts)
        if force_train:
            self.generate_all_activations()
        to_train: dict[str, list[str]] = {}
        for concepts in experimental_sets:
            key = concepts_to_str(concepts)
            if force_train:
                to_train[key] = list(self.layers)
            else:
                to_train[key], missing = self.load_cavs(concepts)
                self.generate_activations(missing)
        for concepts in experimental_sets:
            key = concepts_to_str(concepts)
            for layer in to_train[key]:
                self.cavs[key][layer] = self._train_cav(concepts, layer)
        return self.cavs

    def _check_sets(self, experimental_sets: list[list[Concept]]) -> None:
        if not isinstance(experimental_sets, list) or not all(isinstance(s, list) for s in experimental_sets):
            raise ArgumentError(
                f"experimental_sets: expected a list of lists of Concepts, got {describe(experimental_sets)}"
            )
        by_id: dict[int, Concept] = {}
        for concept in [*self.concepts, *(c for s in experimental_sets for c in s)]:
            if not isinstance(concept, Concept):
                raise ArgumentError(f"experimental_sets: expected Concepts, got {describe(concept)}")
            if by_id.setdefault(concept.id, concept) is not concept:
                raise ArgumentError(
                    f"experimental_sets: two concepts have the id {concept.id} ({by_id[concept.id]!r} and "
                    f"{concept!r}); reuse one Concept instance per id"
                )

    def _train_cav(self, concepts: list[Concept], layer: str) -> CAV:
        data = [self.activations[c.identifier][layer] for c in concepts]
        loader = DataLoader(LabelledDataset(data, [c.id for c in concepts]), collate_fn=_concat)
        stats = self.classifier.train_and_eval(loader, **self.classifier_kwargs) or {}
        weights = self.classifier.weights()
        classes = self.classifier.classes()
        if weights is None or len(weights) == 0:
            raise ArgumentError("classifier: weights() returned no weights; train_and_eval must set them")
        if classes is None or len(classes) == 0:
            raise ArgumentError("classifier: classes() returned no classes")
        classes = classes.tolist() if isinstance(classes, Tensor) else classes
        weights = torch.as_tensor(weights).detach()
        cav = CAV(concepts, layer, {"weights": weights, "classes": classes, **stats}, self._path(), self.model_id)
        if self.save_path is not None:
            cav.save()
        return cav

    def _path(self) -> str:
        return "./cav/" if self.save_path is None else self.save_path

    # ------------------------------------------------------------------ scores

    def layer_sensitivities(
        self, inputs: Any, target: TargetType = None, additional_forward_args: Any = None, **kwargs: Any
    ) -> dict[str, Tensor]:
        """The ``(N, F)`` sensitivities of ``inputs`` in every layer: with the default method one forward
        and one backward for all layers, else one ``layer_attr_method.attribute`` call per layer."""
        method = self.layer_attr_method
        if type(method) is LayerGradientXActivation and not kwargs:
            return layer_sensitivities(
                self.model,
                self.layers,
                inputs,
                target,
                additional_forward_args,
                self.attribute_to_layer_input,
                multiply_by_inputs=method.multiplies_by_inputs,
            )
        result = {}
        for layer in self.layers:
            method.layer = resolve_layer(self.model, layer)
            attribs = method.attribute(
                inputs,
                target=target,
                additional_forward_args=additional_forward_args,
                attribute_to_layer_input=self.attribute_to_layer_input,
                **kwargs,
            )
            parts = attribs if isinstance(attribs, tuple) else (attribs,)
            result[layer] = torch.cat([a.reshape(a.shape[0], -1) for a in parts], dim=1)
        return result

    def interpret(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        experimental_sets: list[list[Concept]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        processes: int | None = None,
        **kwargs: Any,
    ) -> Scores:
        """TCAV scores of ``inputs`` for every experimental set and layer (CAVs trained or loaded first).

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            experimental_sets: lists of concepts.
            target: the output to explain (Captum's target forms).
            additional_forward_args: extra arguments passed to the model.
            processes: accepted for Captum's signature (see :meth:`compute_cavs`).
            kwargs: passed to ``layer_attr_method.attribute`` (e.g. ``n_steps``).

        Returns:
            ``scores[concepts key][layer] = {"sign_count": (C,), "magnitude": (C,)}``, the concepts in the
            order of their experimental set.

        Raises:
            ValueError: ``attribute_to_layer_input`` among ``kwargs`` (set it on the constructor).
        """
        if "attribute_to_layer_input" in kwargs:
            raise ArgumentError(
                "attribute_to_layer_input: set it as an argument of TCAV's constructor, so that the activations "
                "and the sensitivities use the same side of the layer"
            )
        self.compute_cavs(experimental_sets, processes=processes)
        sensitivities = self.layer_sensitivities(inputs, target, additional_forward_args, **kwargs)
        scores: Scores = defaultdict(dict)
        by_length: dict[int, list[list[Concept]]] = defaultdict(list)
        for concepts in experimental_sets:
            by_length[len(concepts)].append(concepts)
        for concepts in experimental_sets:  # keys in the caller's order
            scores[concepts_to_str(concepts)] = {}
        for layer, sens in sensitivities.items():
            for group in by_length.values():
                self._score_group(scores, layer, sens, group)
        return scores

    def _score_group(self, scores: Scores, layer: str, sens: Tensor, group: list[list[Concept]]) -> None:
        """Score experimental sets of one length together: one batched product for all their CAVs."""
        stats = [self.cavs[concepts_to_str(concepts)][layer].stats or {} for concepts in group]
        cavs = torch.stack([torch.as_tensor(s["weights"]).to(sens.device, torch.float32) for s in stats])
        sign_count, magnitude = tcav_scores(sens, cavs)
        for i, (concepts, s) in enumerate(zip(group, stats)):
            row_of = {int(c): r for r, c in enumerate(s["classes"])}
            order = torch.tensor([row_of[c.id] for c in concepts], device=sens.device)
            scores[concepts_to_str(concepts)][layer] = {
                "sign_count": sign_count[i].index_select(0, order),
                "magnitude": magnitude[i].index_select(0, order),
            }
