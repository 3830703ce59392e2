"""Request batching for the reward server: one model thread, many concurrent requests.

`ModelRunner` owns the single thread that ever touches the model (a one-worker executor), so two
requests never run the model at once. `ScoreBatcher` queues the items of concurrent /v1/score
requests and a background asyncio task drains the queue in batches: it waits for a first item,
then keeps collecting until ``max_batch`` items are queued or ``max_wait_ms`` has passed since
that first item, and runs the whole batch through the model in one call. Each item carries its
own asyncio future, so a request just awaits the futures of its items, whatever batches they
landed in. A batch that fails is retried item by item, so one bad item fails only its request.

    runner = ModelRunner()
    batcher = ScoreBatcher(lambda quads: score(model, processor, quads), runner, max_batch=16)
    batcher.start()                       # inside a running event loop (the app's lifespan)
    scored = await batcher.submit(quads)  # list, aligned with quads
    await batcher.stop(); runner.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ModelRunner:
    """Runs functions on one dedicated thread, in submission order: the model's only caller."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="editr1-model")

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class BatchStats:
    """Counters for /health and benchmarks: batches run, items scored, largest batch, items that failed."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    item_errors: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)


class ScoreBatcher(Generic[T, R]):
    """Groups items of concurrent requests into batches for ``fn`` (see the module docstring).

    ``fn(items) -> results`` must return one result per item, in order; it runs on ``runner``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        runner: ModelRunner,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 10.0,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            raise RuntimeError("batcher already started")
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="editr1-score-batcher")

    async def stop(self) -> None:
        """Cancel the worker; pending items fail with CancelledError."""
        if self._worker is None:
            return
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue ``items`` and wait for their results (in order). Raises the item's error, if any."""
        if self._queue is None or self._worker is None:
            raise RuntimeError("batcher not started")
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # after a failed item (or a cancelled request) its queued siblings are dropped
            for future in futures:
                future.cancel()
        errors = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if errors:
            raise errors[0]
        return [future.result() for future in futures]

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        while True:
            batch = [(item, fut) for item, fut in await self._collect() if not fut.done()]
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await self.runner.run(self._call, items)
            except Exception:
                await self._one_by_one(batch)
                continue
            self.stats.record(len(items))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for item, future in batch:
            if future.done():
                continue
            try:
                (result,) = await self.runner.run(self._call, [item])
            except Exception as exc:
                self.stats.item_errors += 1
                if not future.done():
                    future.set_exception(exc)
                continue
            self.stats.record(1)
            if not future.done():
                future.set_result(result)

    def _call(self, items: list[T]) -> list[R]:
        results = list(self.fn(items))
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results
