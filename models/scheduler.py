"""The process-wide ASR queue: every session's decode requests, off the event loop.

Finals go before partials; a newer partial for the same key (one per
session) replaces a queued older one ("latest wins"), and partials are
refused outright when the queue is long, so partial transcripts degrade
under load while finals keep their latency.  ``asr.num_workers`` threads
call the (GIL-releasing) engine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

import numpy as np

log = logging.getLogger("dauys.asr")


class Priority(IntEnum):
    FINAL = 0
    PARTIAL = 1


class QueueFull(Exception):
    """A partial was refused because the decoder is busy."""


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    audio: np.ndarray = field(compare=False)
    language: str | None = field(compare=False)
    allowed: list[str] = field(compare=False)
    future: asyncio.Future = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    key: object = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


class AsrScheduler:
    def __init__(self, recognize: Callable, workers: int = 1, max_partial_backlog: int = 2) -> None:
        self._recognize = recognize
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._partials: dict[object, _Job] = {}
        self._max_partial_backlog = max_partial_backlog
        self._closed = False
        self.busy = 0
        self._threads = [threading.Thread(target=self._run, name=f"asr-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def queued(self) -> int:
        with self._cond:
            return sum(1 for j in self._heap if not j.cancelled)

    async def submit(self, audio: np.ndarray, language: str | None, allowed: list[str], priority: Priority, key: object = None):
        """Decode ``audio``; returns a Recognition. Cancelling the awaiting task drops a queued job."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        job = _Job(int(priority), next(self._seq), audio, language, allowed, fut, loop, key)
        with self._cond:
            if self._closed:
                raise RuntimeError("ASR scheduler is closed")
            if priority is Priority.PARTIAL:
                old = self._partials.pop(key, None)
                if old is not None and not old.cancelled and not old.future.done():
                    old.cancelled = True
                    loop.call_soon(self._cancel_future, old.future)
                backlog = sum(1 for j in self._heap if not j.cancelled)
                if backlog >= self._max_partial_backlog + len(self._threads):
                    raise QueueFull()
                self._partials[key] = job
            heapq.heappush(self._heap, job)
            self._cond.notify()
        try:
            return await fut
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    @staticmethod
    def _cancel_future(fut: asyncio.Future) -> None:
        if not fut.done():
            fut.cancel()

    def cancel_partial(self, key: object) -> None:
        with self._cond:
            job = self._partials.pop(key, None)
            if job is not None:
                job.cancelled = True
                job.loop.call_soon_threadsafe(self._cancel_future, job.future)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._heap:
                    self._cond.wait()
                if self._closed:
                    return
                job = heapq.heappop(self._heap)
                if job.key is not None and self._partials.get(job.key) is job:
                    del self._partials[job.key]
                if job.cancelled or job.future.cancelled():
                    continue
                self.busy += 1
            try:
                result = self._recognize(job.audio, job.language, job.allowed)
                job.loop.call_soon_threadsafe(_set_result, job.future, result)
            except BaseException as e:  # reported to the awaiting session
                log.exception("ASR decode failed")
                job.loop.call_soon_threadsafe(_set_exception, job.future, e)
            finally:
                with self._cond:
                    self.busy -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _set_result(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
