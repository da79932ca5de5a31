"""NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad around any method."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attribution import functional
from attribution._internal.canonical import (
    TensorOrTuple,
    format_additional_args,
    format_baseline_distribution,
    format_baselines,
    format_inputs,
    format_stdevs,
    format_target,
    repeat_rows,
    restore_structure,
)
from attribution._internal.checks import ArgumentError, ArgumentTypeError, check_choice, check_int
from attribution.methods.base import Attribution, WithDelta, with_delta


class NoiseTunnel(Attribution):
    """Run an attribution method on noisy copies of the inputs and aggregate.

    Args:
        attribution_method: any attribution object of this package, e.g.
            ``IntegratedGradients(model)``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attribution import IntegratedGradients, NoiseTunnel
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> nt = NoiseTunnel(IntegratedGradients(model))
        >>> attr = nt.attribute(images, nt_type="smoothgrad_sq", nt_samples=10, target=2)
        >>> attr.shape, bool((attr >= 0).all())  # the mean of squared attributions
        (torch.Size([2, 3, 8, 8]), True)
    """

    draws_random_numbers = True

    def __init__(self, attribution_method: Attribution) -> None:
        if not isinstance(attribution_method, Attribution):
            raise ArgumentTypeError(
                f"attribution_method: expected an attribution object such as Saliency(model), "
                f"got {type(attribution_method).__name__}"
            )
        super().__init__(attribution_method.forward_func)
        self.attribution_method = attribution_method

    def has_convergence_delta(self) -> bool:
        return self.attribution_method.has_convergence_delta()

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution_method.multiplies_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 1.0,
        draw_baseline_from_distrib: bool = False,
        **kwargs: Any,
    ) -> WithDelta:
        """Aggregate the wrapped method's attributions over noisy inputs.

        Args:
            inputs: a tensor or tuple of tensors with the batch in dim 0.
            nt_type: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of
                squares) or ``"vargrad"`` (variance).
            nt_samples: noisy copies per example.
            nt_samples_batch_size: copies evaluated per call of the wrapped
                method (all at once by default); results do not depend on it
                beyond the random draws, which follow the reference's: after
                the same ``torch.manual_seed`` the noisy copies are Captum's
                for every batch size.
            stdevs: standard deviation of the Gaussian noise (absolute, one per
                input in a tuple).
            draw_baseline_from_distrib: treat ``baselines`` as a distribution
                and draw one baseline per noisy copy (from torch's generator,
                after each batch's noise; Captum draws them with numpy's).
            **kwargs: passed to the wrapped method's ``attribute`` (``target``,
                ``baselines``, ``additional_forward_args``, ``n_steps``, ...).

        Returns:
            The aggregated attributions, and the wrapped method's deltas
            (example-major: all copies of example 0 first, whatever
            ``nt_samples_batch_size``; Captum lists each batch's in turn) if
            ``return_convergence_delta=True`` was passed.
        """
        check_choice(nt_type, "nt_type", functional.NT_TYPES)
        check_int(nt_samples, "nt_samples")
        check_int(nt_samples_batch_size, "nt_samples_batch_size", allow_none=True)
        values, given_as_tensor = format_inputs(inputs)
        n = values[0].shape[0]
        target = format_target(kwargs.pop("target", None), n)
        forward_args = format_additional_args(kwargs.pop("additional_forward_args", None))
        baselines = kwargs.pop("baselines", None)
        if draw_baseline_from_distrib:
            if baselines is None:
                raise ArgumentError("baselines: draw_baseline_from_distrib=True needs a baseline distribution")
            baselines = format_baseline_distribution(baselines, values)
        elif baselines is not None:
            baselines = format_baselines(baselines, values)
        want_delta = bool(kwargs.get("return_convergence_delta", False))
        if want_delta and not self.has_convergence_delta():
            raise ArgumentError(
                f"return_convergence_delta: {type(self.attribution_method).__name__} has no convergence delta"
            )

        # Input methods answer the tuple we pass with a tuple; layer methods follow the layer's output.
        returned_tensor = False

        def attribute_noisy(
            noisy: tuple[Tensor, ...], k: int, row_baselines: tuple[Tensor, ...] | None
        ) -> tuple[tuple[Tensor, ...], Tensor | None]:
            nonlocal returned_tensor
            extra: dict[str, Any] = {} if row_baselines is None else {"baselines": row_baselines}
            if "feature_mask" in kwargs:
                extra["feature_mask"] = _repeat_per_example(kwargs["feature_mask"], values, k)
            result = self.attribution_method.attribute(
                noisy,
                target=target.repeat(k),
                additional_forward_args=tuple(repeat_rows(a, k) for a in forward_args),
                **extra,
                **{key: value for key, value in kwargs.items() if key not in extra},
            )
            attrs, delta = result if want_delta else (result, None)
            returned_tensor = isinstance(attrs, Tensor)
            return ((attrs,) if returned_tensor else attrs), delta

        attrs, delta = functional.noise_tunnel(
            attribute_noisy,
            values,
            nt_type=nt_type,
            nt_samples=nt_samples,
            nt_samples_batch_size=nt_samples_batch_size,
            stdevs=format_stdevs(stdevs, len(values)),
            baselines=baselines,
            draw_baseline_from_distrib=draw_baseline_from_distrib,
        )
        result = attrs[0] if returned_tensor else restore_structure(attrs, given_as_tensor)
        return with_delta(result, delta, want_delta)


def _repeat_per_example(mask: Any, inputs: tuple[Tensor, ...], repeats: int) -> Any:
    """A feature mask for the noisy copies: a per-example mask (the input's dimensions, first one the batch
    size > 1) repeated with the copies, a shared one left as it is; one mask, or a tuple (one per input)."""
    if isinstance(mask, tuple):
        return tuple(_repeat_per_example(m, (x,), repeats) for m, x in zip(mask, inputs))
    n, dims = inputs[0].shape[0], inputs[0].dim()
    per_example = isinstance(mask, Tensor) and mask.dim() == dims and mask.shape[0] == n > 1
    return repeat_rows(mask, repeats) if per_example else mask
