"""DataLoaderAttribution against oracles.

Oracles: closed forms on a linear model (sum, mean and per-example metrics),
FeatureAblation on the concatenated data set (a metric that sums over
examples is the aggregate forward over all of them), invariance to
``perturbations_per_pass`` and to the batching of copies, and Captum where it
computes the same thing.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from attribution import DataLoaderAttribution, FeatureAblation, Saliency
from attribution.functional import dataloader as dataloader_core
from attribution.methods.dataloader import InputRole
from tests.models import MLP, seeded

N, D = 10, 4


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g), torch.randn(N, 2, 3, generator=g), torch.randint(0, 3, (N,), generator=g)


def _linear(d_in=D):
    model = nn.Linear(d_in, 1)
    with torch.no_grad():
        model.weight.copy_(torch.arange(1.0, d_in + 1) * torch.tensor([1.0, -1.0]).repeat(d_in)[:d_in])
        model.bias.fill_(0.5)
    return model


def _sum(total, output, batch):
    return output.sum() if total is None else total + output.sum()


class Counted:
    """A re-iterable over a loader that counts its traversals."""

    def __init__(self, loader):
        self.loader, self.traversals = loader, 0

    def __iter__(self):
        self.traversals += 1
        return iter(self.loader)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(D, 3), nn.Linear(6, 3)

    def forward(self, x, y):
        return torch.tanh(self.a(x) + self.b(y.flatten(1))).sum(1)


# --------------------------------------------------------------------------- closed forms


def test_linear_model_per_example_sum_and_mean_metrics(data):
    x = data[0]
    model = _linear()
    w = model.weight[0].detach()
    baseline = torch.full((1, D), 0.25)
    loader = DataLoader(TensorDataset(x), batch_size=3)
    dl = DataLoaderAttribution(FeatureAblation(lambda t: model(t)[:, 0]))

    per_example = dl.attribute(loader, baselines=baseline)
    torch.testing.assert_close(per_example, (w * (x - baseline),))

    total = dl.attribute(loader, baselines=baseline, reduce=_sum, return_input_shape=False)
    torch.testing.assert_close(total, (w * (x - baseline)).sum(0, keepdim=True))

    def mean(state):
        return state[0] / state[1]

    def accumulate(state, output, batch):
        return (output.sum(), len(output)) if state is None else (state[0] + output.sum(), state[1] + len(output))

    averaged = dl.attribute(loader, baselines=baseline, reduce=accumulate, to_metric=mean)
    torch.testing.assert_close(averaged, ((w * (x - baseline)).mean(0, keepdim=True),))


def test_metric_values_in_row_major_order_each_class_matches_feature_ablation(data):
    x = data[0]
    model = seeded(MLP, n_in=D)
    attrs = DataLoaderAttribution(FeatureAblation(model)).attribute(DataLoader(x, batch_size=4))
    assert attrs.shape == (N * 3, D)  # the metric's values in row-major order, as in Captum
    attrs = attrs.view(N, 3, D)
    for c in range(3):
        torch.testing.assert_close(attrs[:, c], FeatureAblation(model).attribute(x, target=c))


@pytest.mark.parametrize("as_bool", [False, True])
def test_integer_and_bool_metrics_give_float_drops(as_bool):
    x = torch.tensor([[1.0, 1.0], [1.0, -3.0]])  # sums 2 and -2: one positive; without feature 1, two

    def positives(count, output, batch):
        hits = (output > 0).sum()
        return hits if count is None else count + hits

    to_metric = (lambda count: count >= 2) if as_bool else None
    dl = DataLoaderAttribution(FeatureAblation(lambda t: t.sum(1)))
    drops = dl.attribute(DataLoader(x, batch_size=1), reduce=positives, to_metric=to_metric, return_input_shape=False)
    assert drops.dtype == torch.float32
    torch.testing.assert_close(drops, torch.tensor([[0.0, -1.0]]))


# --------------------------------------------------------------------------- FeatureAblation on all the data


@pytest.mark.parametrize("batch_size", [1, 3, N])
def test_sum_metric_equals_feature_ablation_of_the_whole_data_set(data, batch_size):
    x, y, _ = data
    model = seeded(TwoInputs)
    masks = (torch.tensor([0, 0, 1, 2]), torch.tensor([[3, 3, 4], [4, 2, 5]]))  # id 2 spans both elements
    baselines = (torch.full((D,), 0.3), -0.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    ours = DataLoaderAttribution(FeatureAblation(model)).attribute(
        loader, baselines=baselines, feature_mask=masks, reduce=_sum, perturbations_per_pass=4
    )
    expected = FeatureAblation(lambda a, b: model(a, b).sum()).attribute(
        (x, y), baselines=baselines, feature_mask=masks
    )
    for a, e in zip(ours, expected):
        torch.testing.assert_close(a, e)


def test_default_reduce_equals_per_example_feature_ablation(data):
    x, y, _ = data
    model = seeded(TwoInputs)
    masks = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[[3, 3, 4], [4, 2, 5]]]))
    ours = DataLoaderAttribution(FeatureAblation(model)).attribute(
        DataLoader(TensorDataset(x, y), batch_size=4), feature_mask=masks, perturbations_per_pass=3
    )
    expected = FeatureAblation(model).attribute((x, y), feature_mask=masks)
    for a, e in zip(ours, expected):
        torch.testing.assert_close(a, e)


def test_feature_mask_groups_and_unshaped_result(data):
    x = data[0]
    model = _linear()
    w = model.weight[0].detach()
    mask = torch.tensor([1, 0, 1, 0])
    dl = DataLoaderAttribution(FeatureAblation(lambda t: model(t)[:, 0]))
    loader = DataLoader(x, batch_size=4)
    per_feature = dl.attribute(loader, feature_mask=mask, reduce=_sum, return_input_shape=False)
    contributions = (w * x).sum(0)
    expected = torch.stack([contributions[[1, 3]].sum(), contributions[[0, 2]].sum()])
    torch.testing.assert_close(per_feature, expected[None])
    shaped = dl.attribute(loader, feature_mask=mask, reduce=_sum)
    torch.testing.assert_close(shaped, expected[mask][None])


# --------------------------------------------------------------------------- roles, passes, batching


def test_input_roles_forward_only_and_label_elements(data):
    x, _, labels = data
    scale = torch.linspace(0.5, 2.0, N)[:, None]
    model = seeded(MLP, n_in=D)

    def forward(inputs, factor):
        return model(inputs * factor)

    def correct_score(state, output, batch):
        assert len(batch) == 3  # reduce sees every element, the label included
        value = output.gather(1, batch[2][:, None]).sum()
        return value if state is None else state + value

    loader = DataLoader(TensorDataset(x, scale, labels), batch_size=4)
    roles = (InputRole.need_attr, InputRole.need_forward, InputRole.no_forward)
    ours = DataLoaderAttribution(FeatureAblation(forward)).attribute(loader, input_roles=roles, reduce=correct_score)
    expected = FeatureAblation(lambda a, s: model(a * s).gather(1, labels[:, None]).sum()).attribute(
        x, additional_forward_args=(scale,)
    )
    assert isinstance(ours, tuple) and len(ours) == 1  # one attribution per attributed element
    torch.testing.assert_close(ours[0], expected)


@pytest.mark.parametrize("per_pass", [1, 2, 3, 5, 6, 50])
def test_perturbations_per_pass_invariance_and_traversal_count(data, per_pass):
    x, y, _ = data
    model = seeded(TwoInputs)
    masks = (torch.tensor([0, 1, 2, 3]), torch.tensor([[4, 4, 5], [5, 4, 0]]))
    loader = Counted(DataLoader(TensorDataset(x, y), batch_size=3))
    dl = DataLoaderAttribution(FeatureAblation(model))
    ours = dl.attribute(loader, feature_mask=masks, perturbations_per_pass=per_pass)
    reference = dl.attribute(DataLoader(TensorDataset(x, y), batch_size=3), feature_mask=masks)
    for a, e in zip(ours, reference):
        torch.testing.assert_close(a, e)
    # The unperturbed metric rides along the first traversal, and nothing else traverses.
    assert loader.traversals == math.ceil(6 / per_pass)


def test_a_forward_that_pools_over_its_batch_gets_one_forward_per_copy(data):
    x = data[0]
    model = seeded(MLP, n_in=D)
    calls = []

    def batch_loss(inputs):
        calls.append(inputs.shape[0])
        return model(inputs).pow(2).sum()  # one value per batch: copies cannot be stacked

    loader = DataLoader(x, batch_size=4)
    ours = DataLoaderAttribution(FeatureAblation(batch_loss)).attribute(loader, reduce=_sum, perturbations_per_pass=D)
    expected = FeatureAblation(lambda t: model(t).pow(2).sum()).attribute(x)
    torch.testing.assert_close(ours, expected)
    assert sum(rows > 4 for rows in calls) == 1  # one try at stacking copies, then a forward per copy and batch


def test_copies_are_stacked_while_it_pays(monkeypatch):
    """With a fixed cost per forward, stacking more copies always pays: the stack grows to all of them."""
    x = torch.randn(N, 16)
    model = seeded(MLP, n_in=16)
    calls = []
    clock = [0.0]  # the core's clock, advanced only by the forwards: no timing noise from a busy machine
    monkeypatch.setattr(dataloader_core, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def forward(inputs):
        calls.append(inputs.shape[0])
        clock[0] += 0.01  # a fixed cost per forward, whatever its size
        return model(inputs)

    loader = DataLoader(x, batch_size=2)
    ours = DataLoaderAttribution(FeatureAblation(forward)).attribute(loader, perturbations_per_pass=16)
    torch.testing.assert_close(ours.view(N, 3, 16)[:, 2], FeatureAblation(model).attribute(x, target=2))
    copies = 5 * 17  # five batches, each with the base and 16 ablations in the one traversal
    assert len(calls) < copies // 3 and max(calls) >= 2 * 16


def test_loader_of_tensors_and_list_of_batches(data):
    """Captum iterates the rows of a tensor batch as if they were its elements (and fails); we do not."""
    x = data[0]
    model = seeded(MLP, n_in=D)

    class Rows(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return x[i]

    forward = lambda t: model(t)[:, 1]  # noqa: E731
    expected = FeatureAblation(forward).attribute(x)
    dl = DataLoaderAttribution(FeatureAblation(forward))
    torch.testing.assert_close(dl.attribute(DataLoader(Rows(), batch_size=4)), expected)
    torch.testing.assert_close(dl.attribute([x[:6], x[6:]]), expected)


def test_shuffled_loader_is_traversed_in_one_order_and_random_state_is_restored(data):
    x = data[0]
    model = seeded(MLP, n_in=D)
    generator = torch.Generator().manual_seed(7)
    shuffled = DataLoader(x, batch_size=3, shuffle=True)
    own = DataLoader(x, batch_size=3, shuffle=True, generator=generator)
    forward = lambda t: model(t)[:, 0]  # noqa: E731
    dl = DataLoaderAttribution(FeatureAblation(forward))
    for loader in (shuffled, own):
        rng, own_state = torch.get_rng_state(), generator.get_state()
        attrs = dl.attribute(loader, perturbations_per_pass=1)  # D traversals
        assert torch.equal(torch.get_rng_state(), rng) and torch.equal(generator.get_state(), own_state)
        order = torch.cat(list(loader))  # the order the attribution saw: same random state
        torch.testing.assert_close(attrs, FeatureAblation(forward).attribute(order))


def test_shuffled_loader_where_captum_mixes_examples(data):
    """Captum reshuffles on each of its traversals, so a feature's drop is taken between different examples."""
    captum = pytest.importorskip("captum.attr")
    x = data[0]
    w = torch.tensor([1.0, -2.0, 3.0, -4.0])
    loader = DataLoader(TensorDataset(x), batch_size=3, shuffle=True)
    rng = torch.get_rng_state()
    (ours,) = DataLoaderAttribution(FeatureAblation(lambda t: t @ w)).attribute(loader)
    (theirs,) = captum.DataLoaderAttribution(captum.FeatureAblation(lambda t: t @ w)).attribute(loader)
    torch.set_rng_state(rng)
    order = torch.cat([batch for (batch,) in loader])
    torch.testing.assert_close(ours, order * w)  # the linear model's closed form, in the loader's order
    assert not torch.allclose(theirs, order * w, atol=0.1)


def test_model_state_is_left_alone(data):
    x = data[0]
    model = seeded(MLP, n_in=D).train()
    DataLoaderAttribution(FeatureAblation(model)).attribute(DataLoader(x, batch_size=4), reduce=_sum)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())


def test_progress_bar_and_no_futures(data, capsys):
    dl = DataLoaderAttribution(FeatureAblation(seeded(MLP, n_in=D)))
    dl.attribute(DataLoader(data[0], batch_size=4), show_progress=True, perturbations_per_pass=2)
    assert "DataLoaderAttribution" in capsys.readouterr().err
    with pytest.raises(NotImplementedError):
        dl.attribute_future()


# --------------------------------------------------------------------------- Captum


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"feature_mask": (torch.tensor([[0, 0, 1, 2]]), torch.tensor([[[3, 4, 4], [5, 3, 2]]]))},
        {"baselines": (torch.tensor([[0.1, -1.0, 0.0, 2.0]]), 0.5), "perturbations_per_pass": 3},
        {"reduce": _sum, "perturbations_per_pass": 4},
        {"reduce": _sum, "to_metric": lambda s: torch.stack([s, 2 * s]), "return_input_shape": False},
    ],
)
def test_parity_with_captum(data, options):
    captum = pytest.importorskip("captum.attr")
    x, y, _ = data
    model = seeded(TwoInputs)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    ours = DataLoaderAttribution(FeatureAblation(model)).attribute(loader, **options)
    theirs = captum.DataLoaderAttribution(captum.FeatureAblation(model)).attribute(loader, **options)
    ours, theirs = (ours,) if torch.is_tensor(ours) else ours, (theirs,) if torch.is_tensor(theirs) else theirs
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e.to(a.dtype))


def test_parity_with_captum_input_roles(data):
    captum = pytest.importorskip("captum.attr")
    x, y, labels = data
    model = seeded(TwoInputs)
    loader = DataLoader(TensorDataset(x, y, labels), batch_size=4)
    ours = DataLoaderAttribution(FeatureAblation(model)).attribute(loader, input_roles=(1, 0, 2))
    theirs = captum.DataLoaderAttribution(captum.FeatureAblation(model)).attribute(loader, input_roles=(1, 0, 2))
    torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------- errors


def _growing_metric():
    """A to_metric whose metric gets longer on every call."""
    sizes = iter(range(1, 99))
    return lambda state: torch.zeros(next(sizes))


def _call(data, **kwargs):
    dl = DataLoaderAttribution(FeatureAblation(seeded(TwoInputs)))
    loader = kwargs.pop("loader", DataLoader(TensorDataset(data[0], data[1]), batch_size=4))
    return dl.attribute(loader, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, names",
    [
        ({"input_roles": (0,)}, ValueError, "input_roles"),
        ({"input_roles": (0, 3)}, ValueError, "input_roles"),
        ({"input_roles": (1, 2)}, ValueError, "input_roles"),
        ({"input_roles": 0}, TypeError, "input_roles"),
        (
            {"feature_mask": (torch.zeros(2, D, dtype=torch.long), torch.ones(1, 2, 3, dtype=torch.long))},
            ValueError,
            "feature_mask[0]",
        ),
        ({"baselines": (torch.zeros(4, D), 0.0)}, ValueError, "baselines[0]"),
        ({"perturbations_per_pass": 0}, ValueError, "perturbations_per_pass"),
        ({"reduce": 3}, TypeError, "reduce"),
        ({"to_metric": "mean"}, TypeError, "to_metric"),
        ({"reduce": lambda s, o, b: 1.0}, TypeError, "reduce"),
        ({"reduce": _sum, "to_metric": lambda s: s.item()}, TypeError, "to_metric"),
        ({"reduce": _sum, "to_metric": _growing_metric()}, ValueError, "to_metric"),
        ({"loader": []}, ValueError, "dataloader"),
        ({"loader": iter([torch.zeros(2, D)])}, TypeError, "dataloader"),
        ({"loader": [{"x": torch.zeros(2, D)}]}, TypeError, "dataloader"),
        (
            {"loader": [(torch.zeros(2, D), torch.zeros(2, 2, 3)), (torch.zeros(2, D + 1), torch.zeros(2, 2, 3))]},
            ValueError,
            "dataloader",
        ),
        ({"loader": [(torch.zeros(2, D), torch.zeros(3, 2, 3))]}, ValueError, "dataloader"),
    ],
)
def test_bad_arguments_name_the_argument(data, kwargs, error, names):
    with pytest.raises(error, match=names.replace("[", r"\[").replace("]", r"\]")):
        _call(data, **kwargs)


def test_unsupported_method_and_outputs(data):
    with pytest.raises(TypeError, match="attr_method"):
        DataLoaderAttribution(Saliency(seeded(MLP)))
    dl = DataLoaderAttribution(FeatureAblation(lambda t: t.sum()))  # one value per batch
    with pytest.raises(ValueError, match="reduce"):
        dl.attribute(DataLoader(data[0], batch_size=4))  # the default reduce concatenates per-example rows


@pytest.mark.parametrize("n_out", [1, 3])
def test_parity_with_captum_multi_value_outputs(data, n_out):
    captum = pytest.importorskip("captum.attr")
    model = seeded(MLP, n_in=D, n_out=n_out)
    loader = DataLoader(TensorDataset(data[0]), batch_size=4)
    ours = DataLoaderAttribution(FeatureAblation(model)).attribute(loader, perturbations_per_pass=2)
    theirs = captum.DataLoaderAttribution(captum.FeatureAblation(model)).attribute(loader)
    torch.testing.assert_close(ours, theirs)
