"""A method that fails on some process fails everywhere, with the error each process can raise: its own
exception, or the text another process sent (errors cross processes as text, a process's own included)."""

from lightning_xai._compute.explain import _error


def test_a_processs_own_exception_is_raised_as_it_was():
    own = ValueError("layer: not found")
    assert _error([(0, own), (1, "other")], rank=0) is own


def test_a_processs_own_error_as_text_becomes_an_exception_with_that_text():
    error = _error([(0, "layer: not found")], rank=0)
    assert isinstance(error, RuntimeError) and str(error) == "layer: not found"


def test_another_processs_error_names_the_process():
    error = _error([(2, "out of memory")], rank=0)
    assert isinstance(error, RuntimeError) and str(error) == "out of memory (on process 2)"
