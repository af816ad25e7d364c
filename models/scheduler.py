"""The process-wide ASR queue: every session's decode requests, off the event loop.

Finals go before partials; a newer partial for the same key (one per
session) replaces a queued older one ("latest wins"), and partials are
refused outright when the queue is long, so partial transcripts degrade
under load while finals keep their latency.  ``asr.num_workers`` threads
call the (GIL-releasing) engine.

Cross-call batching (``asr.batch_size`` > 1): a worker decodes several
sessions' requests in one engine call (``WhisperEngine.recognize_batch``:
one CTranslate2 encode/generate for the whole batch).  The policy:

* The most urgent queued request heads the batch (finals first, then the
  oldest).  Queued requests that share its encoder window (``batch_key``;
  padding to another window would change Whisper's output) join it in the
  same order, up to ``batch_size``.  Partials join a batch headed by a final
  only when ``mix_partials`` is set (on CUDA, where a batch costs about what
  one decode costs); on the CPU a batch costs nearly the sum of its items,
  so a final never waits for partials decoded with it.
* If fewer than ``batch_size`` requests were taken, the worker waits for
  more until ``batch_window_ms`` after the head was submitted: requests that
  already waited in the queue (behind a running decode) go at once, and a
  lone request while no other decode runs goes at once too (an idle server
  adds no latency).  A final that arrives during the wait heads the next
  pick, so it is never held behind a batch of partials being gathered.
* ``batch_size`` 1 is the unbatched path: one ``recognize`` call per request.

Partial budget (``partial_share`` < 1): partials may take at most that share of
the workers' time over the last ``PARTIAL_WINDOW_S``; past it a new partial is
refused (shed) until the share falls again.  A final waits for a decode in
progress, so with several callers speaking the partials' share is what delays
finals; capping it keeps the decoder free for them.  Shed partials are
counted (:attr:`AsrScheduler.shed`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

import numpy as np

log = logging.getLogger("dauys.asr")


class Priority(IntEnum):
    FINAL = 0
    PARTIAL = 1


PARTIAL_WINDOW_S = 4.0
"""The window over which the partials' share of decoder time is measured."""


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
    bucket: object = field(compare=False, default=None)
    """Requests with the same bucket (encoder window) may share a batch."""
    submitted: float = field(compare=False, default=0.0)
    """time.monotonic() at submission."""
    hypotheses: int = field(compare=False, default=1)
    """How many recognition hypotheses to return (n-best, finals); > 1 is passed to the engine."""

    def request(self) -> tuple:
        """The engine's arguments: (audio, language, allowed), and hypotheses when more than one
        (so engines without n-best never see it)."""
        return (self.audio, self.language, self.allowed) + ((self.hypotheses,) if self.hypotheses > 1 else ())


class AsrScheduler:
    """``recognize(audio, language, allowed)`` decodes one request; with ``batch_size`` > 1,
    ``recognize_batch([(audio, language, allowed), ...])`` decodes a batch (results in order)
    and ``batch_key(audio)`` says which requests may share one (see the module docstring)."""

    def __init__(
        self,
        recognize: Callable,
        workers: int = 1,
        max_partial_backlog: int = 2,
        *,
        batch_size: int = 1,
        batch_window_ms: float = 0.0,
        recognize_batch: Callable | None = None,
        batch_key: Callable | None = None,
        mix_partials: bool = False,
        partial_share: float = 1.0,
    ) -> None:
        if batch_size > 1 and recognize_batch is None:
            raise ValueError("batch_size > 1 needs recognize_batch")
        self._recognize = recognize
        self._recognize_batch = recognize_batch
        self._batch_key = batch_key or (lambda audio: None)
        self.batch_size = max(1, int(batch_size))
        self.batch_window_s = max(0.0, float(batch_window_ms)) / 1000.0
        self.mix_partials = mix_partials
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._partials: dict[object, _Job] = {}
        self._max_partial_backlog = max_partial_backlog
        self.partial_share = float(partial_share)
        self._partial_spans: list[tuple[float, float]] = []
        """(start, end) monotonic times of recent decodes holding partials only (lock held)."""
        self.shed = 0
        """Partials refused: the queue was long, or the partials' share of decoder time was spent."""
        self._closed = False
        self.busy = 0
        """Engine calls in progress."""
        self.batches = 0
        """Engine calls made (a batch of one counts)."""
        self.decoded = 0
        """Requests decoded in them (decoded / batches = mean batch size)."""
        self._threads = [threading.Thread(target=self._run, name=f"asr-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    async def submit(self, audio: np.ndarray, language: str | None, allowed: list[str], priority: Priority, key: object = None, hypotheses: int = 1):
        """Decode ``audio``; returns a Recognition (with ``hypotheses`` > 1, its n-best alternatives too).
        Cancelling the awaiting task drops a queued job."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        bucket = self._batch_key(audio) if self.batch_size > 1 else None
        job = _Job(
            int(priority), next(self._seq), audio, language, allowed, fut, loop, key, bucket=bucket, submitted=time.monotonic(),
            hypotheses=max(1, int(hypotheses)),
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("ASR scheduler is closed")
            if priority is Priority.PARTIAL:
                old = self._partials.pop(key, None)
                if old is not None and not old.cancelled and not old.future.done():
                    old.cancelled = True
                    loop.call_soon(self._cancel_future, old.future)
                backlog = sum(1 for j in self._heap if not j.cancelled)
                if backlog >= self._max_partial_backlog + len(self._threads) * self.batch_size or self._over_budget():
                    self.shed += 1
                    raise QueueFull()
                self._partials[key] = job
            heapq.heappush(self._heap, job)
            # a worker gathering a batch waits on the same condition as idle ones
            self._cond.notify_all() if self.batch_size > 1 else self._cond.notify()
        try:
            return await fut
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    def partial_load(self, now: float | None = None) -> float:
        """The share of the workers' time spent on partials over the last PARTIAL_WINDOW_S (lock held)."""
        now = time.monotonic() if now is None else now
        since = now - PARTIAL_WINDOW_S
        self._partial_spans = [(a, b) for a, b in self._partial_spans if b > since]
        busy = sum(b - max(a, since) for a, b in self._partial_spans)
        return busy / (PARTIAL_WINDOW_S * len(self._threads))

    def _over_budget(self) -> bool:
        return self.partial_share < 1.0 and self.partial_load() >= self.partial_share

    @staticmethod
    def _cancel_future(fut: asyncio.Future) -> None:
        if not fut.done():
            fut.cancel()

    def cancel_partial(self, key: object) -> None:
        with self._cond:
            job = self._partials.pop(key, None)
            if job is not None:
                job.cancelled = True
                try:
                    job.loop.call_soon_threadsafe(self._cancel_future, job.future)
                except RuntimeError:  # loop already closed
                    pass

    # ------------------------------------------------------------------ workers
    def _forget(self, job: _Job) -> None:
        if job.key is not None and self._partials.get(job.key) is job:
            del self._partials[job.key]

    def _select(self) -> list[_Job]:
        """The batch the queue offers now: its head and the requests that may join it (lock held)."""
        live = []
        for job in self._heap:
            if job.cancelled or job.future.cancelled():
                self._forget(job)
            else:
                live.append(job)
        if len(live) != len(self._heap):
            self._heap = live
            heapq.heapify(self._heap)
        if not live:
            return []
        live.sort()
        head = live[0]
        batch = [head]
        for job in live[1:]:
            if len(batch) >= self.batch_size:
                break
            if job.bucket != head.bucket:
                continue
            if job.priority != head.priority and not self.mix_partials:
                continue
            if job.hypotheses != head.hypotheses:  # one beam width per engine call
                continue
            batch.append(job)
        return batch

    def _take(self) -> list[_Job] | None:
        """Block until a batch is ready (see the module docstring); None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                batch = self._select()
                if not batch:
                    self._cond.wait()
                    continue
                if len(batch) < self.batch_size and self.batch_window_s > 0 and not (len(self._heap) == 1 and self.busy == 0):
                    remaining = batch[0].submitted + self.batch_window_s - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)
                        continue  # pick again: more may have come, or a final
                taken = {id(j) for j in batch}
                self._heap = [j for j in self._heap if id(j) not in taken]
                heapq.heapify(self._heap)
                for job in batch:
                    self._forget(job)
                self.busy += 1
                return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            results: list = []
            error: BaseException | None = None
            started = time.monotonic()
            try:
                if self.batch_size == 1:
                    results = [self._recognize(*batch[0].request())]
                else:
                    results = list(self._recognize_batch([j.request() for j in batch]))
                    if len(results) != len(batch):
                        raise RuntimeError(f"recognize_batch returned {len(results)} results for {len(batch)} requests")
            except BaseException as e:  # reported to the awaiting sessions
                log.exception("ASR decode failed (%d request%s)", len(batch), "" if len(batch) == 1 else "s")
                error = e
            with self._cond:  # counted before the sessions hear of it
                if all(j.priority == Priority.PARTIAL for j in batch):
                    self._partial_spans.append((started, time.monotonic()))
                self.busy -= 1
                self.batches += 1
                self.decoded += len(batch)
            for i, job in enumerate(batch):
                try:
                    if error is None:
                        job.loop.call_soon_threadsafe(_set_result, job.future, results[i])
                    else:
                        job.loop.call_soon_threadsafe(_set_exception, job.future, error)
                except RuntimeError:  # the requester's event loop is closed: nobody waits for this result
                    pass

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
