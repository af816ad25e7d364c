"""Load every engine once per process, warm it up, and say when it is ready."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.dialogue import load_dialogue
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
    dialogue: object = None
    """The DialogueEngine (models/dialogue)."""
    tts: object = None
    """The TtsRouter (models/tts); None if no engine could be set up (replies are then text only)."""
    dialogue_pool: ThreadPoolExecutor | None = None
    tts_pool: ThreadPoolExecutor | None = None
    load_seconds: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        self.scheduler.close()
        for pool in (self.vad_pool, self.dialogue_pool, self.tts_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


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
    t = time.perf_counter()
    dialogue = load_dialogue(settings.dialogue)
    times["dialogue"] = time.perf_counter() - t
    t = time.perf_counter()
    tts = load_tts(settings.tts)
    if tts is not None and settings.asr.warmup:
        tts.warmup(settings.asr.default_language)
    times["tts"] = time.perf_counter() - t
    scheduler = AsrScheduler(asr.recognize, workers=settings.asr.num_workers)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad")
    dialogue_pool = ThreadPoolExecutor(max_workers=settings.dialogue.workers, thread_name_prefix="dialogue")
    tts_pool = ThreadPoolExecutor(max_workers=settings.tts.workers, thread_name_prefix="tts")
    log.info("models ready: %s", ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
    return Services(settings, asr, vad, scheduler, pool, dialogue, tts, dialogue_pool, tts_pool, times)


def load_tts(settings):
    """The speech engines (Piper voices where configured, espeak-ng elsewhere)."""
    try:
        from models.tts import TtsRouter
    except ImportError:  # pragma: no cover
        log.warning("no TTS module: replies will be text only")
        return None
    return TtsRouter.from_settings(settings)


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
