"""The generate-while-encoding loop, shared by the chunk task, `atelier gan sample` and the benchmarks,
so that a benchmark's bare loop is the worker's own loop minus the system.

    for each batch of indices:
        images = produce(batch)              on the device (CUDA out-of-memory: halve the batch, again)
        submit encode(image, index) for each to the thread pool
        consume(results of the PREVIOUS batch) while this one encodes
    consume(the last batch)

The device never waits for encoding or uploads: Pillow, zlib and boto3 release the GIL, so the pool
encodes and uploads on every core while the next batch generates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


def encode_pool() -> ThreadPoolExecutor:
    """The process's encode pool (never reused across a fork). Encoding is CPU work, but each thread
    then waits for an S3 round trip: four threads per core keep every core busy while puts fly."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        threads = 4 * (os.cpu_count() or 1)
        _pool, _pool_pid = ThreadPoolExecutor(threads, thread_name_prefix="encode"), os.getpid()
    return _pool


def _oom_error() -> type[BaseException]:
    import torch

    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def run_batches(
    indices: Sequence[int],
    *,
    produce: Callable[[list[int]], Any],
    encode: Callable[[Any, int], T],
    consume: Callable[[list[T]], None] = lambda _results: None,
    batch: int = 64,
    pool: ThreadPoolExecutor | None = None,
    stop: Callable[[], str | None] = lambda: None,
    on_batch_size: Callable[[int], None] | None = None,
) -> str | None:
    """Run the loop over `indices`; `produce` returns an indexable of images (HWC uint8) in order.
    Between batches `stop()` may return a reason to stop early (cancel, yield): the batches already
    made are still consumed, and the reason is returned (None when every index was done)."""
    pool = pool or encode_pool()
    oom = _oom_error()
    pending: list[Future] | None = None
    reason: str | None = None
    pos = 0
    while pos < len(indices):
        if pos and (reason := stop()):
            break
        part = list(indices[pos : pos + batch])
        try:
            images = produce(part)
        except oom:
            if batch == 1:
                raise
            import torch

            torch.cuda.empty_cache()
            batch = max(1, batch // 2)
            if on_batch_size is not None:
                on_batch_size(batch)
            continue
        futures = [pool.submit(encode, images[k], i) for k, i in enumerate(part)]
        if pending is not None:
            consume([f.result() for f in pending])
        pending = futures
        pos += len(part)
    if pending is not None:
        consume([f.result() for f in pending])
    return reason
