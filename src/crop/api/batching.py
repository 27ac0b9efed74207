"""Dynamic batching, as TEI's queue does it: the items of concurrent requests wait in a queue; a background task
takes the oldest item, gathers more items of the same kind (same language pair, same mode) until the batch is
full (items or tokens) or a short wait has passed, and runs the engine once for all of them in a worker thread.

A full queue refuses new requests (`QueueFull`, answered 429 with Retry-After), and a request with more items
than the queue can ever hold is refused for good (`TooManyItems`, 413); a request that waits longer than its
timeout gets `TimeoutError` (504), and a request that is cancelled (its client went away) leaves nothing behind:
the items of both are dropped from the queue and never reach the engine.

A batch that fails is retried item by item, so that one bad item does not fail the others, unless the engine
itself is down (`EngineUnavailable`): then every item of the batch fails at once with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from crop.errors import EngineUnavailable

log = logging.getLogger(__name__)

# runs one batch: (key, items) -> one result per item, in order
RunBatch = Callable[[Hashable, list[Any]], list[Any]]


class QueueFull(Exception):
    def __init__(self, waiting: int, retry_after: float) -> None:
        super().__init__(f"{waiting} items are waiting; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class TooManyItems(Exception):
    def __init__(self, items: int, max_queue: int) -> None:
        super().__init__(f"{items} items in one request; the queue holds at most {max_queue}")


@dataclass
class _Item:
    key: Hashable
    value: Any
    tokens: int
    future: asyncio.Future[Any]
    queued: float = field(default_factory=time.perf_counter)


class BatchQueue:
    def __init__(self, run: RunBatch, max_batch_size: int = 64, max_batch_tokens: int = 8192,
                 max_wait_ms: float = 5.0, max_queue: int = 2048,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch  # (batch size, seconds in the engine), for metrics
        self._items: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # one engine call at a time: engines are not thread-safe, and the GPU is one
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._seconds_per_item = 0.01  # running estimate, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._items)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batch-queue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._items:
            if not item.future.done():
                item.future.set_exception(RuntimeError("service shutting down"))
        self._items.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Hashable, values: Sequence[Any], tokens: Sequence[int],
                     timeout: float | None = None) -> list[Any]:
        """Queue the items of one request; their results in order once all have run."""
        if self._wakeup is None:
            raise RuntimeError("BatchQueue.start() was not called")
        if len(values) > self.max_queue:
            raise TooManyItems(len(values), self.max_queue)
        if len(self._items) + len(values) > self.max_queue:
            retry = max(1.0, round(len(self._items) * self._seconds_per_item))
            raise QueueFull(len(self._items), retry)
        loop = asyncio.get_running_loop()
        items = [_Item(key, v, max(1, t), loop.create_future()) for v, t in zip(values, tokens, strict=True)]
        self._items.extend(items)
        self._wakeup.set()
        futures = [it.future for it in items]
        try:
            async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for: less per request
                return [await futures[0]] if len(futures) == 1 else list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:  # a timed-out or cancelled request leaves nothing behind in the queue
                f.cancel()
            raise

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._items[0]
            # wait for more items of this kind, unless the batch is full already
            deadline = first.queued + self.max_wait
            while not self._full(first.key) and time.perf_counter() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
                except TimeoutError:
                    break
            batch = self._take(first.key)
            if batch:
                await self._run(first.key, batch)

    def _full(self, key: Hashable) -> bool:
        n = tokens = 0
        for it in self._items:
            if it.key == key and not it.future.done():
                n += 1
                tokens += it.tokens
                if n >= self.max_batch_size or tokens >= self.max_batch_tokens:
                    return True
        return False

    def _take(self, key: Hashable) -> list[_Item]:
        batch: list[_Item] = []
        tokens = 0
        kept: deque[_Item] = deque()
        while self._items:
            it = self._items.popleft()
            if it.future.done():  # its request timed out or went away
                continue
            fits = len(batch) < self.max_batch_size and (not batch or tokens + it.tokens <= self.max_batch_tokens)
            if it.key == key and fits:
                batch.append(it)
                tokens += it.tokens
            else:
                kept.append(it)
        self._items = kept
        return batch

    async def _run(self, key: Hashable, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run, key, [it.value for it in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} items")
        except EngineUnavailable as exc:  # not the items' fault: one by one would only multiply the wait
            log.warning("engine unavailable", extra={"key": str(key), "size": len(batch), "error": repr(exc)})
            _fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                # the request's answer (4xx for bad input, 5xx otherwise) is logged at the level its status calls for
                log.info("item failed", extra={"key": str(key), "error": repr(exc)})
                _fail(batch, exc)
                return
            # find the item(s) the engine fails on: each alone, so that the others still get their results
            log.info("batch failed, retrying its items one by one",
                        extra={"key": str(key), "size": len(batch), "error": repr(exc)})
            for i, it in enumerate(batch):
                if not it.future.done():
                    await self._run(key, [it])
                    if _engine_down(it):  # it went down meanwhile: the others would only wait for the same
                        _fail(batch[i + 1:], it.future.exception())  # type: ignore[arg-type]
                        return
            return
        finally:
            seconds = time.perf_counter() - t0
            self._seconds_per_item = 0.8 * self._seconds_per_item + 0.2 * seconds / len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)
        for it, result in zip(batch, results, strict=True):
            if not it.future.done():
                it.future.set_result(result)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for it in batch:
        if not it.future.done():
            it.future.set_exception(exc)


def _engine_down(item: _Item) -> bool:
    f = item.future
    return f.done() and not f.cancelled() and isinstance(f.exception(), EngineUnavailable)
