"""Load every engine once per process, warm it up, and say when it is ready."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.errors import ModelError
from models.scheduler import AsrScheduler
from models.vad import SileroVad
from models.whisper import WhisperEngine, load_whisper

log = logging.getLogger("dauys.models")


@dataclass
class Services:
    """What sessions share: engines, the ASR queue and the VAD thread pool."""

    settings: object
    asr: WhisperEngine
    vad: SileroVad
    scheduler: AsrScheduler
    vad_pool: ThreadPoolExecutor
    load_seconds: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        self.scheduler.close()
        self.vad_pool.shutdown(wait=False, cancel_futures=True)


def load_services(settings) -> Services:
    """Blocking: resolve, load and warm up the models (call from a thread)."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    vad = SileroVad()
    times["vad"] = time.perf_counter() - t
    t = time.perf_counter()
    asr = load_whisper(settings.asr)
    times["asr_load"] = time.perf_counter() - t
    if settings.asr.warmup:
        times["asr_warmup"] = asr.warmup(settings.asr.languages)
    scheduler = AsrScheduler(asr.recognize, workers=settings.asr.num_workers)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad")
    log.info("models ready: %s", ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
    return Services(settings, asr, vad, scheduler, pool, times)


class ModelHub:
    """Async wrapper: loads in a thread at start-up; /readyz reflects the state."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.error: str | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        self._task = asyncio.ensure_future(self._load())
        return self._task

    async def _load(self) -> None:
        try:
            self.services = await asyncio.to_thread(load_services, self.settings)
        except ModelError as e:
            self.error = str(e)
            log.error("%s", e)
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self.services is not None

    async def wait(self, timeout: float) -> Services | None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return self.services

    def close(self) -> None:
        if self.services is not None:
            self.services.close()
