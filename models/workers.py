"""A bounded thread pool that a stuck call cannot starve: the dialogue and TTS workers.

``concurrent.futures.ThreadPoolExecutor`` reuses its threads: a dialogue
backend that hangs holds one for good, and ``workers`` hung calls stop every
session.  :class:`WorkerPool` is an ``Executor`` (``loop.run_in_executor``
takes it) with three bounds:

* ``workers`` threads serve the queue normally;
* a thread whose task has run longer than ``stuck_after_s`` is *stuck*: it no
  longer counts, and a replacement thread starts, up to ``max_threads`` threads
  in all (so hung calls cost threads, never the service, until the bound);
  when a stuck task returns at last, its thread retires if it is surplus;
* at most ``max_queue`` tasks wait; beyond that :meth:`submit` raises
  :class:`PoolFull` at once (the caller decides: wait, say "one moment", hand off).

Python cannot kill a thread; a stuck thread is abandoned, counted
(:attr:`stuck_total`) and left to finish.  The figures (threads by state,
queue depth, stuck and refused counts) are read by pipeline/metrics.py.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Executor, Future


class PoolFull(RuntimeError):
    """Every worker is busy and ``max_queue`` tasks already wait."""


class WorkerPool(Executor):
    def __init__(self, workers: int, *, max_threads: int | None = None, max_queue: int = 64, stuck_after_s: float = 20.0, name: str = "worker") -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.max_threads = max(workers, max_threads if max_threads is not None else 2 * workers)
        self.max_queue = max(0, max_queue)
        self.stuck_after_s = stuck_after_s
        self.name = name
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._running: dict[threading.Thread, float | None] = {}
        """Live threads -> time.monotonic() their current task started (None = idle)."""
        self._counted: set[threading.Thread] = set()
        """Threads already counted as stuck (each once)."""
        self._shutdown = False
        self._ids = 0
        self._monitor: threading.Thread | None = None
        self.stuck_total = 0
        """Tasks that ran past ``stuck_after_s`` (their threads were replaced)."""
        self.refused_total = 0
        """Submissions refused with :class:`PoolFull`."""
        self.threads_started = 0

    # -- Executor ---------------------------------------------------------
    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError(f"{self.name} pool is shut down")
            idle = sum(1 for v in self._running.values() if v is None)
            startable = max(0, min(self.workers - self._healthy(time.monotonic()), self.max_threads - len(self._running)))
            if len(self._queue) >= self.max_queue + idle + startable:
                self.refused_total += 1
                raise PoolFull(f"all {self.name} workers are busy and {len(self._queue)} tasks wait")
            self._queue.append((future, fn, args, kwargs))
            self._grow()
            self._cond.notify_all()  # the watcher waits on the same condition
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cond.notify_all()
            threads = list(self._running)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()

    # -- figures ----------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Threads by state (idle, busy, stuck), the tasks waiting, and the counts so far."""
        with self._cond:
            now = time.monotonic()
            stuck = sum(1 for v in self._running.values() if v is not None and now - v > self.stuck_after_s)
            busy = sum(1 for v in self._running.values() if v is not None) - stuck
            return {
                "idle": len(self._running) - busy - stuck, "busy": busy, "stuck": stuck, "queued": len(self._queue),
                "stuck_total": self.stuck_total, "refused_total": self.refused_total,
            }

    # -- internals --------------------------------------------------------
    def _healthy(self, now: float) -> int:
        n = 0
        for t, started in self._running.items():
            if started is not None and now - started > self.stuck_after_s:
                if t not in self._counted:
                    self._counted.add(t)
                    self.stuck_total += 1
            else:
                n += 1
        return n

    def _grow(self) -> None:
        """Start threads while tasks wait and the healthy ones are fewer than ``workers`` (call locked)."""
        now = time.monotonic()
        healthy = self._healthy(now)
        idle = sum(1 for v in self._running.values() if v is None)
        while len(self._queue) > idle and healthy < self.workers and len(self._running) < self.max_threads:
            self._ids += 1
            t = threading.Thread(target=self._work, name=f"{self.name}_{self._ids}", daemon=True)
            self._running[t] = None
            self.threads_started += 1
            t.start()
            healthy += 1
            idle += 1
        if self._queue and self._monitor is None:  # tasks wait behind busy threads: look again as they may get stuck
            self._monitor = threading.Thread(target=self._watch, name=f"{self.name}_watch", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        with self._cond:
            while not self._shutdown and self._queue:
                self._cond.wait(max(0.05, self.stuck_after_s / 4))
                self._grow()
            self._monitor = None

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._queue and not self._shutdown:
                    self._cond.wait()
                if not self._queue:  # shut down
                    self._running.pop(me, None)
                    return
                future, fn, args, kwargs = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                self._running[me] = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)
            else:
                future.set_result(result)
            finally:
                del fn, args, kwargs
            with self._cond:
                self._running[me] = None
                self._counted.discard(me)
                surplus = self._healthy(time.monotonic()) > self.workers
                if surplus or self._shutdown:  # a replacement took its place while it was stuck
                    self._running.pop(me, None)
                    return
