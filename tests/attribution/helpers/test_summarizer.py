"""Summarizer, its statistics and ClassSummarizer: oracles are torch's own reductions over all the data."""

import pytest
import torch

from attribution import (
    MSE,
    ArgumentError,
    ArgumentTypeError,
    ClassSummarizer,
    CommonStats,
    Count,
    Max,
    Mean,
    Min,
    StdDev,
    Sum,
    Summarizer,
    SummarizerSingleTensor,
    Var,
)
from attribution.helpers.stat import GeneralAccumFn, Stat

DATA = torch.randn(23, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1

ALL_STATS = [Mean(), Var(), Var(order=1), StdDev(), StdDev(order=1), Min(), Max(), Sum(), MSE(), Count()]


def _expected(x: torch.Tensor) -> dict:
    """Each statistic of ``ALL_STATS`` by name, from torch's two-pass reductions over dim 0."""
    return {
        "mean": x.mean(0),
        "variance": x.var(0, correction=0),
        "sample_variance": x.var(0, correction=1),
        "std_dev": x.std(0, correction=0),
        "sample_std_dev": x.std(0, correction=1),
        "min": x.amin(0),
        "max": x.amax(0),
        "sum": x.sum(0),
        "mse": ((x - x.mean(0)) ** 2).sum(0),
        "count": x.shape[0],
    }


def _assert_summary(summary: dict, expected: dict, **tolerance) -> None:
    assert list(summary) == list(expected)
    for name, value in expected.items():
        if isinstance(value, int):
            assert summary[name] == value, name
        else:
            torch.testing.assert_close(summary[name], value, **tolerance, msg=name)


CHUNKINGS = {"one by one": [1] * 23, "all at once": [23], "uneven": [5, 1, 9, 8], "with an empty batch": [4, 0, 19]}


@pytest.mark.parametrize("chunks", list(CHUNKINGS.values()), ids=list(CHUNKINGS))
def test_every_chunking_gives_torch_reductions_over_all_the_data(chunks):
    summarizer = Summarizer(ALL_STATS)
    for part in DATA.split(chunks):
        summarizer.update_batch(part)
    _assert_summary(summarizer.summary, _expected(DATA))


def test_update_adds_one_observation_as_in_captum():
    one_by_one, batched = Summarizer(ALL_STATS), Summarizer(ALL_STATS)
    for x in DATA:
        one_by_one.update(x)
    batched.update_batch(DATA)
    _assert_summary(one_by_one.summary, batched.summary)
    assert one_by_one.summary["mean"].shape == (2, 3)


def test_var_order_is_the_divisor_n_minus_order():
    summarizer = Summarizer([Var(), Var(order=1), Var(order=2), StdDev(order=2), MSE()])
    summarizer.update_batch(DATA)
    summary, n = summarizer.summary, DATA.shape[0]
    assert list(summary) == ["variance", "sample_variance", "variance(2)", "std_dev(2)", "mse"]
    torch.testing.assert_close(summary["variance"], DATA.var(0, correction=0))  # population
    torch.testing.assert_close(summary["sample_variance"], DATA.var(0, correction=1))  # sample (Bessel)
    torch.testing.assert_close(summary["variance(2)"], summary["mse"] / (n - 2))
    torch.testing.assert_close(summary["std_dev(2)"], (summary["mse"] / (n - 2)).sqrt())


def test_var_is_zero_while_there_are_no_more_observations_than_its_order():
    summarizer = Summarizer([Var(order=1), Var(order=3), Mean()])
    assert summarizer.summary is None
    for i in range(3):
        summarizer.update(torch.tensor([1.0, 5.0]) * i)
        assert (summarizer.summary["variance(3)"] == 0).all()
    assert (summarizer.summary["sample_variance"] > 0).all()


def test_welford_keeps_the_variance_of_data_far_from_zero():
    """``E[x^2] - E[x]^2`` cancels every digit of a variance of 1 at an offset of 1e9 in float64; the
    running deviations keep it, chunked or not."""
    x = 1e9 + torch.randn(1000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    naive = (x**2).mean(0) - x.mean(0) ** 2
    assert ((naive - x.var(0, correction=0)).abs() > 0.5).any()
    for chunks in ([1000], [1] * 1000, [7, 300, 693]):
        summarizer = Summarizer([Var(), Mean()])
        for part in x.split(chunks):
            summarizer.update_batch(part)
        torch.testing.assert_close(summarizer.summary["variance"], x.var(0, correction=0), rtol=1e-6, atol=0)


def test_float32_data_stays_float32_and_integers_give_float64():
    floats = Summarizer([Mean(), StdDev()])
    floats.update_batch(DATA.float())
    assert {v.dtype for v in floats.summary.values()} == {torch.float32}
    torch.testing.assert_close(floats.summary["std_dev"], DATA.float().std(0, correction=0))
    ints = Summarizer([Mean(), Var(), Max()])
    ints.update(torch.tensor([1, 2]))
    ints.update(torch.tensor([4, 2]))
    assert ints.summary["mean"].dtype == torch.float64 and ints.summary["max"].dtype == torch.int64
    torch.testing.assert_close(ints.summary["mean"], torch.tensor([2.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(ints.summary["variance"], torch.tensor([2.25, 0.0], dtype=torch.float64))


def test_numbers_are_observations_too():
    summarizer = Summarizer([Mean(), Max()])
    for value in (1, 2.5, -4):
        summarizer.update(value)
    torch.testing.assert_close(summarizer.summary["mean"], torch.tensor(-0.5 / 3))
    assert summarizer.summary["max"] == 2.5


def test_a_tuple_gives_one_summary_per_input_each_of_its_own_shape():
    a, b = torch.randn(10, 4, 5, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    summarizer = Summarizer(CommonStats())
    summarizer.update_batch((a[:6], b[:6]))
    for i in range(6, 10):
        summarizer.update((a[i], b[i]))
    first, second = summarizer.summary
    for summary, x in ((first, a), (second, b)):
        assert list(summary) == ["mean", "sample_variance", "sample_std_dev", "min", "max"]
        expected = _expected(x)
        for name in ("mean", "sample_variance", "sample_std_dev", "min", "max"):
            torch.testing.assert_close(summary[name], expected[name])


def test_summary_shows_the_requested_stats_in_the_given_order_once_under_their_names():
    summarizer = Summarizer([Max(), StdDev(order=1), Var(order=1, name="spread"), Mean(), Max(name="again")])
    summarizer.update_batch(DATA)
    assert list(summarizer.summary) == ["max", "sample_std_dev", "spread", "mean"]  # Count, MSE: only used
    torch.testing.assert_close(summarizer.summary["spread"] ** 0.5, summarizer.summary["sample_std_dev"])


def test_custom_min_max_sum_functions_and_a_captum_style_stat():
    class Last(Stat):
        """Written against Captum's API: ``update`` of one observation and ``get``."""

        def __init__(self):
            super().__init__(name="last")
            self.value = None

        def update(self, x):
            self.value = x

        def get(self):
            return self.value

    summarizer = Summarizer([Max(max_fn=lambda a, b: torch.maximum(a.abs(), b.abs())), Last(), Sum()])
    for part in DATA.split([3, 11, 9]):
        summarizer.update_batch(part)
    torch.testing.assert_close(summarizer.summary["max"], DATA.abs().amax(0))
    torch.testing.assert_close(summarizer.summary["last"], DATA[-1])
    torch.testing.assert_close(summarizer.summary["sum"], DATA.sum(0))
    assert Min(min_fn=torch.minimum) != Min() and Var(order=1) == Var(order=1, name="other")


def test_gradients_are_not_kept_and_the_callers_tensor_is_not_aliased():
    x = DATA[:3].clone().requires_grad_(True)
    summarizer = Summarizer([Mean(), Min()])
    summarizer.update(x[0])
    summarizer.update_batch(x[1:])
    assert all(not v.requires_grad for v in summarizer.summary.values())
    single = Summarizer([Min()])
    observation = torch.ones(2)
    single.update(observation)
    observation.zero_()
    assert (single.summary["min"] == 1).all()


FIRST = {"tensor": DATA[0], "tuple": (DATA[0],), "pair": (DATA[0], DATA[0])}
BAD_UPDATES = {  # the first update, then a bad one
    "tuple after a tensor": ("tensor", lambda s: s.update((DATA[0],)), ArgumentError, "x"),
    "tensor after a tuple": ("tuple", lambda s: s.update(DATA[0]), ArgumentError, "x"),
    "another shape": ("tensor", lambda s: s.update(DATA[0, 0]), ArgumentError, "shape"),
    "another number of inputs": ("tuple", lambda s: s.update((DATA[0], DATA[0])), ArgumentError, "x"),
    "batches of different sizes": ("pair", lambda s: s.update_batch((DATA, DATA[:2])), ArgumentError, "batch size"),
    "a 0-d batch": ("tensor", lambda s: s.update_batch(torch.tensor(1.0)), ArgumentError, "dim 0"),
    "a string": ("tensor", lambda s: s.update("1"), ArgumentTypeError, "x"),
}


@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_bad_updates_are_refused_and_change_nothing(case):
    first, call, kind, match = BAD_UPDATES[case]
    summarizer = Summarizer([Mean(), Count()])
    summarizer.update(FIRST[first])
    before = summarizer.summary
    with pytest.raises(kind, match=match):
        call(summarizer)
    assert str(summarizer.summary) == str(before)


def test_bad_stats_are_refused():
    with pytest.raises(ArgumentTypeError, match="stats"):
        Summarizer([Mean, Var()])
    with pytest.raises(ArgumentError, match="stats"):
        Summarizer([Mean(name="m"), Max(name="m")])
    with pytest.raises(ArgumentError, match="order"):
        Var(order=-1)
    with pytest.raises(AssertionError):  # Captum's convention still catches it
        StdDev(order=1.5)


def test_single_tensor_summarizer_takes_captum_arguments():
    stats = [Count(), Mean(), MSE(), Var(order=1)]
    single = SummarizerSingleTensor(stats, summary_stats_indices=[3, 1])
    single.update_batch(DATA)
    assert list(single.summary) == ["sample_variance", "mean"]
    assert single.get(Mean()) is stats[1] and single.get(Max()) is None


# --------------------------------------------------------------------------- ClassSummarizer

LABELS = [2, 0, 2, 1, 1, 2, 0, 2, 2, 1, 0, 0, 2, 1, 2, 2, 0, 1, 1, 2, 0, 0, 2]


@pytest.mark.parametrize("labels", [LABELS, torch.tensor(LABELS), [f"c{label}" for label in LABELS]], ids=str)
def test_class_summaries_are_the_statistics_of_each_class_examples(labels):
    summarizer = ClassSummarizer(CommonStats())
    for start, stop in ((0, 4), (4, 5), (5, 23)):
        summarizer.update(DATA[start:stop], labels[start:stop])
    keys = [f"c{c}" if isinstance(labels[0], str) else c for c in (2, 0, 1)]
    assert list(summarizer.class_summaries) == keys  # order of first appearance; tensor labels as Python ints
    for key, c in zip(keys, (2, 0, 1)):
        (summary,) = summarizer.class_summaries[key]
        rows = DATA[torch.tensor(LABELS) == c]
        expected = _expected(rows)
        for name in ("mean", "sample_variance", "sample_std_dev", "min", "max"):
            torch.testing.assert_close(summary[name], expected[name], msg=f"{key} {name}")
    (total,) = summarizer.summary
    torch.testing.assert_close(total["sample_variance"], DATA.var(0))


def test_one_label_for_a_batch_and_no_label_as_in_captum():
    one = ClassSummarizer([Mean(), Max()])
    one.update(DATA, "all")
    one.update(DATA[:2], ["all"])
    assert list(one.class_summaries) == ["all"]
    torch.testing.assert_close(one.class_summaries["all"][0]["mean"], torch.cat([DATA, DATA[:2]]).mean(0))
    torch.testing.assert_close(one.summary[0]["max"], DATA.amax(0))
    unlabelled = ClassSummarizer([Mean()])
    unlabelled.update(DATA)  # one observation: the whole tensor
    assert unlabelled.summary["mean"].shape == DATA.shape and unlabelled.class_summaries == {}


def test_class_summarizer_with_tuples():
    a, b = DATA, DATA[:, 0, :2] * 10
    summarizer = ClassSummarizer([Mean()])
    summarizer.update((a, b), LABELS)
    for c in (0, 1, 2):
        rows = torch.tensor(LABELS) == c
        mean_a, mean_b = (s["mean"] for s in summarizer.class_summaries[c])
        torch.testing.assert_close(mean_a, a[rows].mean(0))
        torch.testing.assert_close(mean_b, b[rows].mean(0))


def test_bad_labels_are_refused_before_anything_changes():
    summarizer = ClassSummarizer([Mean()])
    with pytest.raises(ArgumentError, match="labels"):
        summarizer.update(DATA, [0, 1])
    with pytest.raises(ArgumentTypeError, match="labels"):
        summarizer.update(DATA[:2], [[0], [1]])
    assert summarizer.summary is None and summarizer.class_summaries == {}


# --------------------------------------------------------------------------- parity with Captum


def test_parity_with_captum_on_the_same_updates():
    captum = pytest.importorskip("captum.attr")
    ours = Summarizer(ALL_STATS)
    theirs = captum.Summarizer(
        [captum.Mean(), captum.Var(), captum.Var(order=1), captum.StdDev(), captum.StdDev(order=1)]
        + [captum.Min(), captum.Max(), captum.Sum(), captum.MSE(), captum.Count()]
    )
    for x in DATA:
        ours.update(x)
        theirs.update(x)
    assert set(ours.summary) == set(theirs.summary)
    for name, value in theirs.summary.items():
        if name == "count":
            assert ours.summary[name] == value
        else:
            torch.testing.assert_close(ours.summary[name], value, msg=name)


def test_class_parity_with_captum_on_list_labels():
    captum = pytest.importorskip("captum.attr")
    ours, theirs = ClassSummarizer(CommonStats()), captum.ClassSummarizer(captum.CommonStats())
    for part, labels in zip(DATA.split([7, 16]), (LABELS[:7], LABELS[7:])):
        ours.update(part, labels)
        theirs.update(part, labels)
    assert set(ours.class_summaries) == set(theirs.class_summaries)
    for label, (summary,) in theirs.class_summaries.items():
        for name, value in summary.items():
            torch.testing.assert_close(ours.class_summaries[label][0][name], value, msg=f"{label} {name}")


def test_captum_makes_one_class_per_example_from_tensor_labels_we_do_not():
    captum = pytest.importorskip("captum.attr")
    theirs, ours = captum.ClassSummarizer([captum.Mean()]), ClassSummarizer([Mean()])
    theirs.update(DATA[:6], torch.tensor([0, 1, 0, 1, 0, 1]))
    ours.update(DATA[:6], torch.tensor([0, 1, 0, 1, 0, 1]))
    assert len(theirs.class_summaries) == 6  # tensors hash by identity: every label is a new class
    assert list(ours.class_summaries) == [0, 1]


def test_general_accum_fn_rejects_a_non_callable():
    with pytest.raises(ArgumentError, match="fn"):
        GeneralAccumFn(fn=3)
