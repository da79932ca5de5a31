"""Online TracIn against its definition: per-step checkpoints replayed by hand with full autograd gradients,
for the last layer's weight in closed form and for all parameters from torch.func; processes added up."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_xai._compute.indexed_batch import MissingIndexError, split_indexed_batch
from lightning_xai._compute.online_tracin import OnlineTracIn, combined
from lightning_xai._compute.training_gradients import StepScores, TrainingGradients, linear_weight_factors

N_TRAIN = 12


def _loss(scores, labels):
    return F.cross_entropy(scores, labels, reduction="none")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Dropout(0.3), nn.Linear(7, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_TRAIN, 5, generator=g)
    y = torch.randint(0, 3, (N_TRAIN,), generator=g)
    probe = (torch.randn(4, 5, generator=g), torch.randint(0, 3, (4,), generator=g))
    return x, y, probe


def _grads(model, x, y, names):
    """Per-example gradients of the parameters ``names``, by autograd on a copy in eval mode: the definition.
    One ``(N, numel)`` tensor per name."""
    replica = copy.deepcopy(model).eval()
    params = dict(replica.named_parameters())
    rows = []
    for xi, yi in zip(x, y):
        loss = F.cross_entropy(replica(xi[None]), yi[None])
        rows.append([g.flatten() for g in torch.autograd.grad(loss, [params[n] for n in names])])
    return [torch.stack(parts) for parts in zip(*rows)]


ALL = ["0.weight", "0.bias", "3.weight", "3.bias"]


def _train(batch_size, capacity, epochs=2, shuffle_seed=0, parameters=None, ranks=1):
    """SGD on a tiny model, feeding OnlineTracIn at each step and replaying TracIn by hand beside it.

    ``parameters=None``: the last layer's weight in closed form; else those parameters from torch.func, the
    first layer at a tenth of the rate. ``ranks``: each batch is split among that many OnlineTracIn (the
    processes of DDP); returned combined."""
    model = _model()
    x, y, probe = _data()
    names = ["3.weight"] if parameters is None else parameters
    first = [p for n, p in model.named_parameters() if n.startswith("0.")]
    last = [p for n, p in model.named_parameters() if n.startswith("3.")]
    optimizer = torch.optim.SGD([{"params": first}, {"params": last}], lr=0.5)
    gradients = TrainingGradients(model, parameters, model[3] if parameters is None else None, _loss)
    tracins = [OnlineTracIn(len(probe[0]), capacity) for _ in range(ranks)]
    exact = torch.zeros(len(probe[0]), N_TRAIN)
    exact_self = torch.zeros(N_TRAIN)
    g = torch.Generator().manual_seed(shuffle_seed)
    step = 0
    for _ in range(epochs):
        for indices in torch.randperm(N_TRAIN, generator=g).split(batch_size):
            lr = 0.5 / (1 + step)  # a schedule: the score must use each step's own rate
            optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = lr / 10, lr
            rates = [lr / 10 if n.startswith("0.") else lr for n in names]
            model.eval()
            for rank, share in enumerate(indices.chunk(ranks)):
                tracins[rank].update(share, y[share], gradients.step_scores(probe, x[share], y[share], rates))
            train_grads = _grads(model, x[indices], y[indices], names)
            probe_grads = _grads(model, *probe, names)
            for rate, t, q in zip(rates, train_grads, probe_grads):
                exact[:, indices] += rate * q @ t.T
                exact_self[indices] += rate * t.pow(2).sum(1)
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(x[indices]), y[indices]).backward()
            optimizer.step()
            step += 1
    tracin = tracins[0] if ranks == 1 else combined([t.state_dict() for t in tracins])
    return tracin, exact, exact_self, y


@pytest.mark.parametrize("parameters", [None, ALL, ["0.weight"]], ids=["last-weight", "all", "first-weight"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_online_scores_equal_the_checkpoint_replay(batch_size, parameters):
    # the pool holds everyone: no approximation
    tracin, exact, _, _ = _train(batch_size, capacity=N_TRAIN, parameters=parameters)
    for p in range(exact.shape[0]):
        got = tracin.scores_of(p, torch.arange(N_TRAIN))
        torch.testing.assert_close(got, exact[p], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("parameters", [None, ALL], ids=["last-weight", "all"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_self_influence_is_the_sum_over_visits_of_lr_times_the_squared_gradient_norm(batch_size, parameters):
    tracin, _, exact_self, y = _train(batch_size, capacity=2, parameters=parameters)
    torch.testing.assert_close(tracin.self_influence[:N_TRAIN], exact_self, rtol=1e-4, atol=1e-7)
    assert tracin.visits[:N_TRAIN].tolist() == [2] * N_TRAIN
    assert tracin.labels[:N_TRAIN].tolist() == y.tolist()
    assert tracin.suspects().tolist() == exact_self.argsort(descending=True).tolist()


def test_proponents_and_opponents_are_ranked_by_sign():
    tracin, exact, _, _ = _train(4, capacity=N_TRAIN)
    proponents, opponents = tracin.proponents(3), tracin.opponents(3)
    for p in range(exact.shape[0]):
        order = exact[p].argsort(descending=True)
        positive = [int(i) for i in order if exact[p, i] > 0][:3]
        negative = [int(i) for i in exact[p].argsort() if exact[p, i] < 0][:3]
        assert [i for i in proponents.indices[p].tolist() if i >= 0] == positive
        assert [i for i in opponents.indices[p].tolist() if i >= 0] == negative
        assert (proponents.scores[p][proponents.indices[p] >= 0] > 0).all()
        assert (opponents.scores[p][opponents.indices[p] >= 0] < 0).all()


def test_a_small_pool_is_exact_over_one_epoch():
    """With one visit per example, every score is a single term: the bounded pool keeps the true extremes."""
    tracin, exact, _, _ = _train(3, capacity=2, epochs=1)
    for p in range(exact.shape[0]):
        kept = tracin.pool_indices[p][tracin.pool_indices[p] >= 0]
        assert len(kept) == 4
        torch.testing.assert_close(tracin.scores_of(p, kept), exact[p, kept], rtol=1e-4, atol=1e-6)
        ranked = exact[p].argsort(descending=True)
        assert set(kept.tolist()) == set(ranked[:2].tolist()) | set(ranked[-2:].tolist())


def test_processes_added_up_equal_one_process():
    """DDP: each process sums over its share of every batch; combined, they give the one-process scores."""
    whole, exact, exact_self, _ = _train(4, capacity=N_TRAIN, parameters=ALL)
    split, _, _, _ = _train(4, capacity=N_TRAIN, parameters=ALL, ranks=2)
    torch.testing.assert_close(split.self_influence, whole.self_influence)
    assert torch.equal(split.visits, whole.visits) and torch.equal(split.labels, whole.labels)
    for p in range(exact.shape[0]):
        torch.testing.assert_close(split.scores_of(p, torch.arange(N_TRAIN)), exact[p], rtol=1e-4, atol=1e-6)


def test_combined_pools_keep_the_extremes_of_the_summed_scores():
    one, two = OnlineTracIn(1, capacity=1), OnlineTracIn(1, capacity=1)
    one.update(
        torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), StepScores(torch.tensor([[3.0, -1.0, 0.5]]), torch.ones(3))
    )
    two.update(torch.tensor([1, 3]), torch.tensor([0, 0]), StepScores(torch.tensor([[5.0, -2.0]]), torch.ones(2)))
    merged = combined([one.state_dict(), two.state_dict()])
    # example 1: -1 in the first process (kept there as its most negative) and +5 in the second: +4 in all;
    # example 0 (+3) is dropped, below example 1's sum
    pool = sorted(zip(merged.pool_indices[0].tolist(), merged.pool_scores[0].tolist()))
    assert pool == [(1, 4.0), (3, -2.0)]
    assert merged.proponents(1).indices.tolist() == [[1]] and merged.opponents(1).indices.tolist() == [[3]]
    assert merged.visits.tolist() == [1, 2, 1, 1] and merged.self_influence.tolist() == [1.0, 2.0, 1.0, 1.0]


def test_an_index_twice_in_a_batch_counts_twice():
    tracin = OnlineTracIn(1, capacity=4)
    scores = StepScores(torch.full((1, 3), 3.0), torch.full((3,), 3.0))
    tracin.update(torch.tensor([5, 5, 1]), torch.tensor([0, 0, 1]), scores)
    assert tracin.scores_of(0, torch.tensor([5, 1])).tolist() == [6.0, 3.0]
    assert tracin.self_influence[[5, 1]].tolist() == [6.0, 3.0]
    assert tracin.visits[[5, 1]].tolist() == [2, 1]


def test_state_round_trip():
    tracin, _, _, _ = _train(4, capacity=3)
    again = OnlineTracIn.from_state_dict(tracin.state_dict())
    for name in ("pool_indices", "pool_scores", "self_influence", "visits", "labels"):
        assert torch.equal(getattr(again, name), getattr(tracin, name))
    assert again.steps == tracin.steps == 6
    empty = again.emptied()
    assert empty.visits.sum() == 0 and empty.self_influence.sum() == 0 and (empty.pool_indices < 0).all()
    assert torch.equal(empty.labels, tracin.labels)


def test_factors_leave_the_model_untouched():
    model = _model()
    x, y, _ = _data()
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    linear_weight_factors(model.eval(), model[3], x, y, _loss)
    TrainingGradients(model, ALL, None, _loss).step_scores((x[:2], y[:2]), x, y, [1.0] * 4)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(p.requires_grad for p in model.parameters())
    assert not model[3]._forward_hooks


def test_factors_refuse_a_mean_loss_and_a_reused_layer():
    model = _model().eval()
    x, y, _ = _data()
    with pytest.raises(ValueError, match="one loss per example"):
        linear_weight_factors(model, model[3], x, y, F.cross_entropy)
    with pytest.raises(ValueError, match="one loss per example"):
        TrainingGradients(model, ALL, None, lambda s, t: F.cross_entropy(s, t)[None].expand(2)).factors(x, y)
    twice = nn.Linear(5, 5)
    double = nn.Sequential(twice, nn.Tanh(), twice)
    with pytest.raises(ValueError, match="called once"):
        linear_weight_factors(double, twice, x, torch.zeros(N_TRAIN, dtype=torch.long), _loss)
    assert not twice._forward_hooks


@pytest.mark.parametrize(
    "batch",
    [
        (torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)),
        {"input": torch.zeros(2, 5), "label": torch.zeros(2, dtype=torch.long)},
        torch.zeros(2, 5),
        (torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), torch.zeros(2)),
    ],
    ids=["pair", "dict-without-index", "tensor", "float-index"],
)
def test_a_batch_without_indices_is_refused_clearly(batch):
    with pytest.raises(MissingIndexError, match="IndexedDataset"):
        split_indexed_batch(batch, "input", "label")


def test_indexed_batches_are_split():
    x, y, i = torch.zeros(2, 5), torch.tensor([1, 2]), torch.tensor([7, 3])
    for batch in [(x, y, i), [x, y, i], {"input": x, "label": y, "index": i, "extra": 0}]:
        parts = split_indexed_batch(batch, "input", "label")
        assert parts.indices.tolist() == [7, 3] and parts.labels is y and parts.inputs is x
