"""The dialogue/TTS worker pool (models/workers.py): bounded, and a stuck task cannot starve the others."""

import threading
import time
from concurrent.futures import wait

import pytest

from models.workers import PoolFull, WorkerPool


def test_runs_tasks_and_passes_results_and_errors():
    pool = WorkerPool(2, name="t")
    try:
        assert pool.submit(lambda x: x * 2, 21).result(5) == 42
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
        s = pool.stats()
        assert s["busy"] == 0 and s["stuck"] == 0 and s["queued"] == 0 and s["idle"] <= 2
    finally:
        pool.shutdown()


def test_a_stuck_task_is_replaced_up_to_the_bound_and_its_thread_retires():
    release = threading.Event()
    pool = WorkerPool(1, max_threads=2, stuck_after_s=0.2, name="t")
    try:
        hung = pool.submit(release.wait, 30)
        time.sleep(0.05)
        # the only worker hangs: the next task still runs once that worker counts as stuck
        assert pool.submit(lambda: "served").result(10) == "served"
        s = pool.stats()
        assert s["stuck"] == 1 and s["stuck_total"] == 1
        # the bound: with two threads (one stuck, one hanging now too) a third task waits
        hung2 = pool.submit(release.wait, 30)
        time.sleep(0.5)
        third = pool.submit(lambda: "late")
        time.sleep(0.5)
        assert not third.done() and pool.stats()["stuck"] == 2  # max_threads reached: no third thread
        release.set()
        assert third.result(10) == "late" and hung.result(5) and hung2.result(5)
        time.sleep(0.2)
        assert len(pool._running) <= 1  # surplus threads retired once their tasks returned
    finally:
        release.set()
        pool.shutdown()


def test_the_queue_is_bounded():
    release = threading.Event()
    pool = WorkerPool(1, max_threads=1, max_queue=2, stuck_after_s=60, name="t")
    try:
        futures = [pool.submit(release.wait, 30) for _ in range(3)]  # one running, two queued
        time.sleep(0.05)
        with pytest.raises(PoolFull):
            pool.submit(lambda: None)
        assert pool.stats()["queued"] == 2 and pool.stats()["refused_total"] == 1
        release.set()
        wait(futures, 10)
        assert all(f.result() for f in futures)
        assert pool.submit(lambda: "again").result(5) == "again"
    finally:
        release.set()
        pool.shutdown()


def test_cancelled_queued_tasks_never_run():
    release = threading.Event()
    ran = []
    pool = WorkerPool(1, max_threads=1, stuck_after_s=60, name="t")
    try:
        first = pool.submit(release.wait, 30)
        queued = pool.submit(ran.append, 1)
        assert queued.cancel()
        release.set()
        first.result(5)
        pool.submit(lambda: None).result(5)
        assert ran == []
    finally:
        release.set()
        pool.shutdown()


def test_the_pools_take_their_bounds_from_the_settings():
    """tts.max_threads / max_queue / stuck_after_s (and dialogue.*) reach the pools the server builds."""
    from server.services import make_pools
    from tests.helpers.server import make_settings

    settings = make_settings(tts={"workers": 1, "max_threads": 2, "max_queue": 0, "stuck_after_s": 0.2}, dialogue={"workers": 1, "max_threads": 3, "max_queue": 1})
    dialogue, tts = make_pools(settings)
    release = threading.Event()
    try:
        assert (dialogue.max_threads, dialogue.max_queue) == (3, 1)
        hung = tts.submit(release.wait, 30)
        time.sleep(0.05)
        with pytest.raises(PoolFull):  # one thread busy, no queue: refused before it counts as stuck
            tts.submit(lambda: None)
        time.sleep(0.3)  # past stuck_after_s: a second thread (max_threads 2) takes the next step
        assert tts.submit(lambda: 7).result(5) == 7
        second = tts.submit(release.wait, 30)  # the second thread hangs too
        time.sleep(0.3)
        with pytest.raises(PoolFull):  # both threads stuck, max_threads reached, no queue
            tts.submit(lambda: None)
        assert not hung.done() and not second.done()
    finally:
        release.set()
        dialogue.shutdown()
        tts.shutdown()
