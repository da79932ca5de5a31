"""Chunking and the thread governor: chunk boundaries, thread choices, the caller's thread count restored."""

import itertools

import pytest
import torch

import attribution._internal.chunking as chunking
from attribution import IntegratedGradients, Occlusion
from attribution._internal.chunking import CoreUsage, ThreadGovernor, balanced_chunks, choose_threads, run_chunked
from tests.models import SmallCNN, seeded


@pytest.mark.parametrize(("start", "total", "size"), [(1, 50, 11), (1, 200, 11), (0, 7, 3), (1, 2, 5), (0, 12, 4)])
def test_balanced_chunks_cover_the_range_in_the_fewest_even_chunks(start, total, size):
    chunks = list(balanced_chunks(start, total, size))
    assert [lo for lo, _ in chunks] == [start] + [hi for _, hi in chunks[:-1]]
    assert chunks[-1][1] == total
    sizes = [hi - lo for lo, hi in chunks]
    assert max(sizes) <= size and max(sizes) - min(sizes) <= 1
    assert len(chunks) == -(-(total - start) // size)
    assert list(balanced_chunks(total, total, size)) == []


def _usage(at=0.0, threads=None, idle=0, ticks=0, cores=2):
    return CoreUsage(at, threads or {}, idle, ticks, cores)


def _window(shares, cores=2, idle=0.0, seconds=1.0):
    """Counters before and after a window where thread i waited ``shares[i]`` of its runnable time."""
    ns = int(seconds * 1e9)
    threads = {i: (int(ns * (1 - share)), int(ns * share)) for i, share in enumerate(shares)}
    ticks = int(100 * seconds) * cores
    return _usage(), _usage(seconds, threads, int(idle * ticks / cores), ticks, cores)


def test_waiting_for_cores_lowers_the_thread_count_to_the_cores_we_got():
    # Two threads that waited a third of their runnable time: 1.33 cores on average.
    assert choose_threads(2, 2, *_window([1 / 3, 1 / 3])) == 1
    # Sixteen threads, one of which shares its core with another process: the barrier waits for it.
    assert choose_threads(16, 16, *_window([0.5] + [0.0] * 15, cores=16)) == 15
    # Never below one thread.
    assert choose_threads(1, 2, *_window([0.9])) == 1


def test_a_thread_that_hardly_ran_does_not_count_as_waiting():
    before, after = _window([0.0, 0.0])
    after.threads[7] = (int(0.01e9), int(0.05e9))  # a sampler thread: 10 ms of work, 50 ms in queue
    assert choose_threads(2, 2, before, after) == 2


def test_a_quiet_machine_keeps_the_thread_count_and_idle_cores_raise_it_up_to_the_ceiling():
    assert choose_threads(2, 2, *_window([0.02, 0.01])) == 2
    assert choose_threads(1, 2, *_window([0.0])) == 1  # the other core was taken
    assert choose_threads(1, 2, *_window([0.0], idle=0.9)) == 2
    assert choose_threads(1, 4, *_window([0.0], cores=4, idle=3.0)) == 4
    assert choose_threads(2, 2, *_window([0.0, 0.0], idle=0.9)) == 2  # not above the caller's setting


class _ScriptedUsage:
    """CoreUsage.read returning counters where our two threads waited ``share`` of their runnable time."""

    def __init__(self, share):
        self.share, self.clock = share, itertools.count()

    def __call__(self):
        t = next(self.clock)
        waited = int(1e9 * t * self.share)
        return CoreUsage(float(t), {1: (int(1e9 * t) - waited, waited)}, 0, 200 * t, 2)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_governor_restores_the_callers_thread_count_also_after_an_error(monkeypatch, two_threads):
    monkeypatch.setattr(CoreUsage, "read", staticmethod(_ScriptedUsage(0.5)))
    seen = []
    with ThreadGovernor(torch.device("cpu")) as governor:
        for _ in range(3):
            with governor.chunk():
                seen.append(torch.get_num_threads())
    assert seen == [2, 1, 1] and torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), ThreadGovernor(torch.device("cpu")) as governor:
        with governor.chunk():
            pass
        with governor.chunk():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_the_governor_leaves_other_devices_and_missing_counters_alone(monkeypatch, two_threads):
    monkeypatch.setattr(CoreUsage, "read", staticmethod(_ScriptedUsage(0.5)))
    with ThreadGovernor(torch.device("meta")) as governor:
        for _ in range(3):
            with governor.chunk():
                assert torch.get_num_threads() == 2
    monkeypatch.setattr(CoreUsage, "read", staticmethod(lambda: None))
    with ThreadGovernor(torch.device("cpu")) as governor:
        for _ in range(3):
            with governor.chunk():
                assert torch.get_num_threads() == 2


def test_contended_runs_give_the_same_attributions_and_restore_threads(monkeypatch, two_threads):
    model = seeded(SmallCNN)
    x = torch.randn(3, 3, 8, 8)
    monkeypatch.setattr(chunking, "CPU_MEMORY_BUDGET", 1)  # one step per chunk
    reference_ig = IntegratedGradients(model).attribute(x, target=1, n_steps=12)
    kwargs = dict(sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2), target=1, perturbations_per_eval=2)
    reference_occlusion = Occlusion(model).attribute(x, **kwargs)

    threads = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (threads.append(n), original(n)))
    monkeypatch.setattr(CoreUsage, "read", staticmethod(_ScriptedUsage(0.5)))
    ig = IntegratedGradients(model).attribute(x, target=1, n_steps=12)
    assert threads == [1, 2] and torch.get_num_threads() == 2  # down after the first chunk, restored at the end
    torch.testing.assert_close(ig, reference_ig, atol=1e-6, rtol=1e-5)
    threads.clear()
    occlusion = Occlusion(model).attribute(x, **kwargs)
    assert threads == [1, 2] and torch.get_num_threads() == 2
    torch.testing.assert_close(occlusion, reference_occlusion, atol=1e-6, rtol=1e-5)


def test_explicit_internal_batch_size_keeps_captums_chunks():
    calls = []
    run_chunked(
        10, lambda lo, hi: calls.append((lo, hi)), rows_per_item=2, internal_batch_size=6, device=torch.device("cpu")
    )
    assert calls == [(0, 3), (3, 6), (6, 9), (9, 10)]
