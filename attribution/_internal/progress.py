"""``show_progress``: a progress bar over perturbed copies, closed even when the model raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None] | None]:
    """Yield ``update(count)`` for a tqdm bar of ``total`` steps, or None when not ``enabled``."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm  # tqdm ships with lightning

    bar = tqdm(total=total, desc=description, unit="eval")
    try:
        yield bar.update
    finally:
        bar.close()
