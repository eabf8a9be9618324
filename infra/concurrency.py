"""A thread pool that, when the block fails or is interrupted, cancels the work not yet started."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


@contextmanager
def cancelling_pool(max_workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """ThreadPoolExecutor's own `with` waits for every queued task even after an error or Ctrl-C; this
    drops the queued ones at once, and lets running ones finish before the caller cleans up."""
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
