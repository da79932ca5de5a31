"""The input boundary: every target form, baseline form and bad input, once for all methods."""

import pytest
import torch

from attribution import (
    DeepLiftShap,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from attribution._internal.canonical import (
    Target,
    format_baseline_distribution,
    format_baselines,
    format_inputs,
    format_target,
)


def test_target_forms_pick_the_same_values():
    out = torch.arange(24.0).view(4, 6)
    expected = out[torch.arange(4), torch.tensor([1, 5, 0, 2])]
    for form in ([1, 5, 0, 2], torch.tensor([1, 5, 0, 2]), lambda o: o[torch.arange(4), torch.tensor([1, 5, 0, 2])]):
        assert torch.equal(format_target(form, 4).select(out), expected)
    assert torch.equal(format_target(3, 4).select(out), out[:, 3])
    assert torch.equal(format_target(torch.tensor(3), 4).select(out), out[:, 3])


def test_tuple_targets_index_multi_dim_outputs():
    out = torch.arange(2 * 3 * 4.0).view(2, 3, 4)
    assert torch.equal(format_target((2, 1), 2).select(out), out[:, 2, 1])
    assert torch.equal(format_target([(0, 3), (2, 0)], 2).select(out), torch.stack([out[0, 0, 3], out[1, 2, 0]]))


def test_an_index_ignores_trailing_dimensions_of_size_one():
    output = torch.arange(12.0).view(4, 3, 1, 1)
    torch.testing.assert_close(format_target(2, 4).select(output), output[:, 2, 0, 0])
    torch.testing.assert_close(format_target([0, 1, 2, 0], 4).select(output), output[[0, 1, 2, 3], [0, 1, 2, 0], 0, 0])


def test_a_callable_may_keep_trailing_dimensions_of_size_one():
    output = torch.arange(12.0).view(4, 3)
    torch.testing.assert_close(format_target(lambda out: out[:, 1:2], 4).select(output), output[:, 1])
    with pytest.raises(ValueError, match=r"the callable must return a tensor of shape \(4,\)"):
        format_target(lambda out: out[:, :2], 4).select(output)


def test_none_target_needs_one_value_per_example():
    assert torch.equal(format_target(None, 3).select(torch.ones(3, 1)), torch.ones(3))
    with pytest.raises(ValueError, match="target: None needs one output value"):
        format_target(None, 3).select(torch.ones(3, 2))


def test_repeated_target_follows_repeat_major_rows():
    target = format_target([0, 2], 2).repeat(3)
    out = torch.arange(18.0).view(6, 3)
    assert torch.equal(target.select(out), out[torch.arange(6), torch.tensor([0, 2] * 3)])
    assert isinstance(format_target(target, 6), Target)


@pytest.mark.parametrize(
    "target, error, match",
    [
        (7, ValueError, "index 7 is out of range for output dimension 1 of size 3"),
        ([0, 1, 2], ValueError, "one entry per example \\(2\\), got 3"),
        (-1, ValueError, "non-negative"),
        (1.5, TypeError, "target: expected an int"),
        ((0, 1), ValueError, "selects 2 output dimension"),
        (lambda o: o, ValueError, "callable must return a tensor of shape \\(2,\\)"),
    ],
)
def test_bad_targets_name_the_argument(mlp, target, error, match):
    with pytest.raises(error, match=match):
        Saliency(mlp).attribute(torch.randn(2, 6), target=target)


def test_baseline_forms_broadcast():
    x = torch.randn(4, 3, 5)
    forms = (0.5, torch.tensor(0.5), torch.full((1, 3, 5), 0.5), torch.full((4, 3, 5), 0.5))
    for b in (*forms, torch.full((3, 5), 0.5), torch.full((5,), 0.5), torch.full((4, 1, 1), 0.5)):
        (fb,) = format_baselines(b, (x,))
        assert fb.dim() == x.dim() and torch.equal(fb.expand_as(x), torch.full_like(x, 0.5))
    for bad in (torch.zeros(2, 3, 5), torch.zeros(1, 1, 3, 5), torch.zeros(3)):
        with pytest.raises(ValueError, match=r"baselines: expected .* broadcasts to it .*got shape"):
            format_baselines(bad, (x,))


def test_baselines_given_as_a_function_are_called_with_the_inputs_when_it_takes_any():
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    (fb,) = format_baselines(lambda: torch.full((1, 3), 0.5), (x,))
    assert torch.equal(fb, torch.full((1, 3), 0.5))
    (fb,) = format_baselines(lambda inputs: inputs * 0.5, (x,))  # one input: the tensor itself
    assert torch.equal(fb, x * 0.5)
    seen = []
    pair = format_baselines(lambda inputs: seen.append(inputs) or (0.0, inputs[1] + 1), (x, y))
    assert isinstance(seen[0], tuple) and torch.equal(pair[1], y + 1)  # several inputs: the tuple
    rows = format_baseline_distribution(lambda: torch.zeros(6, 3), (x,))
    assert rows[0].shape == (6, 3)


def test_sampling_methods_take_baselines_as_a_function_as_captum_does(mlp):
    x, rows = torch.randn(4, 6), torch.randn(5, 6)
    torch.manual_seed(0)
    called = GradientShap(mlp).attribute(x, baselines=lambda: rows, target=1, n_samples=7)
    torch.manual_seed(0)
    given = GradientShap(mlp).attribute(x, baselines=rows, target=1, n_samples=7)
    assert torch.equal(called, given)
    called = DeepLiftShap(mlp).attribute(x, baselines=lambda inputs: inputs[:3] * 0, target=1)
    assert torch.equal(called, DeepLiftShap(mlp).attribute(x, baselines=torch.zeros(3, 6), target=1))


def test_baseline_dtypes_keep_integer_inputs_integer_where_they_can():
    ids, flags = torch.tensor([[1, 2, 3]]), torch.tensor([[True, False, True]])
    dtype = lambda b, x: format_baselines(b, (x,))[0].dtype  # noqa: E731
    assert dtype(0, ids) == dtype(0.0, ids) == dtype(torch.tensor([3.0, 0.0, 1.0]), ids) == torch.int64  # pad ids
    assert dtype(0.2, ids) == torch.float32 and dtype(torch.tensor([0.5, 0.0, 1.0]).double(), ids) == torch.float64
    assert dtype(True, flags) == dtype(0, flags) == torch.bool and dtype(0.5, flags) == torch.float32
    assert dtype(2, flags) == torch.int64
    x = torch.randn(2, 3, dtype=torch.float64)
    assert format_baselines(0.1, (x,))[0].item() == 0.1  # made in the input's dtype: no float32 rounding
    assert dtype(torch.tensor(1, dtype=torch.int32), x) == torch.float64


def test_non_finite_inputs_and_baselines_name_the_argument():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"^inputs: expected finite values, got 2 NaN or infinite"):
        format_inputs(torch.tensor([[0.0, float("nan")], [float("inf"), 1.0]]))
    with pytest.raises(ValueError, match=r"^inputs\[1\]: expected finite values"):
        format_inputs((x, torch.full((2, 2), float("-inf"))))
    with pytest.raises(ValueError, match=r"^baselines\[0\]: expected finite values"):
        format_baselines((float("nan"), 0.0), (x, x))
    with pytest.raises(ValueError, match=r"^baselines: expected finite values"):
        format_baseline_distribution(torch.full((3, 3), float("inf")), (x,))
    format_inputs(torch.tensor([[1, 2]]))  # integer and bool tensors hold no NaN


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda m, x: IntegratedGradients(m).attribute(x, baselines=torch.zeros(2, 5), target=0),
            ValueError,
            "baselines: expected a number or a tensor of shape \\(2, 6\\)",
        ),
        (
            lambda m, x: IntegratedGradients(m).attribute(x, target=0, n_steps=0),
            ValueError,
            "n_steps: expected an int >= 1",
        ),
        (
            lambda m, x: IntegratedGradients(m).attribute(x, target=0, method="simpson"),
            ValueError,
            "method: unknown value 'simpson'.*gausslegendre",
        ),
        (
            lambda m, x: IntegratedGradients(m).attribute(x, target=0, n_steps=1, method="riemann_trapezoid"),
            ValueError,
            "trapezoid rule needs at least 2",
        ),
        (lambda m, x: IntegratedGradients(m).attribute(x[:0], target=0), ValueError, "inputs: the batch is empty"),
        (lambda m, x: IntegratedGradients(m).attribute(x.long(), target=0), TypeError, "floating-point"),
        (
            lambda m, x: IntegratedGradients(m).attribute([x, "a"], target=0),
            TypeError,
            "inputs\\[1\\]: expected a tensor",
        ),
        (
            lambda m, x: GradientShap(m).attribute(x, baselines=torch.zeros(3, 4), target=0),
            ValueError,
            "baselines: expected a number or a tensor of shape \\(k, 6\\)",
        ),
        (lambda m, x: GradientShap(m).attribute(x, n_samples=0, target=0), ValueError, "n_samples"),
        (lambda m, x: GradientShap(m).attribute(x, stdevs=-1.0, target=0), ValueError, "stdevs"),
        (
            lambda m, x: NoiseTunnel(Saliency(m)).attribute(x, nt_type="smooth", target=0),
            ValueError,
            "nt_type: unknown value 'smooth' \\(did you mean 'smoothgrad'",
        ),
        (
            lambda m, x: NoiseTunnel(Saliency(m)).attribute(x, target=0, return_convergence_delta=True),
            ValueError,
            "Saliency has no convergence delta",
        ),
        (lambda m, x: NoiseTunnel(m), TypeError, "attribution_method"),
        (
            lambda m, x: Occlusion(m).attribute(x, sliding_window_shapes=(7,), target=0),
            ValueError,
            "window \\(7,\\) does not fit input 0",
        ),
        (
            lambda m, x: Occlusion(m).attribute(x, sliding_window_shapes=(2,), strides=3, target=0),
            ValueError,
            "strides: stride \\(3,\\)",
        ),
        (
            lambda m, x: Occlusion(m).attribute(x, sliding_window_shapes=(2, 2), target=0),
            ValueError,
            "sliding_window_shapes: expected 1 ints",
        ),
        (
            lambda m, x: Occlusion(m).attribute(x, sliding_window_shapes=(2,), perturbations_per_eval=0, target=0),
            ValueError,
            "perturbations_per_eval",
        ),
        (lambda m, x: LayerGradCam(m, "fc3"), ValueError, "no submodule named 'fc3'.*close matches: .*fc2"),
        (lambda m, x: InputXGradient("model"), TypeError, "forward_func: expected a callable"),
    ],
)
def test_bad_input_gets_a_clear_error(mlp, call, error, match):
    with pytest.raises(error, match=match):
        call(mlp, torch.randn(2, 6))


def test_inputs_of_different_batch_sizes_are_rejected():
    with pytest.raises(ValueError, match="inputs\\[1\\]: every input needs the same batch size"):
        format_inputs((torch.zeros(2, 3), torch.zeros(3, 3)))


def test_model_that_drops_the_batch_dimension(mlp):
    with pytest.raises(ValueError, match="forward_func: expected an output with one row per example"):
        Saliency(lambda x: mlp(x).sum()).attribute(torch.randn(2, 6), target=0)
