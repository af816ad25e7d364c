"""Load every engine once per process, warm it up, and say when it is ready."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field, replace

from models.dialogue import load_dialogue
from models.errors import ModelError
from models.scheduler import AsrScheduler
from models.turn import load_turn_model
from models.vad import SileroVad
from models.whisper import WhisperEngine, load_whisper
from models.workers import WorkerPool
from pipeline import metrics

log = logging.getLogger("dauys.models")


@dataclass
class Services:
    """What sessions share: engines, the ASR queue and the VAD thread pool."""

    settings: object
    asr: WhisperEngine
    vad: SileroVad
    scheduler: AsrScheduler
    vad_pool: ThreadPoolExecutor
    _: KW_ONLY  # the rest by name: a field added in between must not shift what comes after it
    dialogue: object = None
    """The DialogueEngine (models/dialogue)."""
    tts: object = None
    """The TtsRouter (models/tts); None if no engine could be set up (replies are then text only)."""
    dialogue_pool: WorkerPool | None = None
    tts_pool: WorkerPool | None = None
    capture: object = None
    """The CaptureWriter (pipeline/capture.py) when capture.enabled; None otherwise."""
    load_seconds: dict[str, float] = field(default_factory=dict)
    turn: object = None
    """The learned end-of-turn model (models/turn.py, ``vad.turn_model``); None when not configured."""
    prefill_stop: threading.Event | None = None
    """Set on close: stops pre-synthesising the fixed texts."""

    def close_asr(self) -> None:
        """Stop this generation's ASR queue (the pools and other engines are shared)."""
        self.scheduler.close()

    def close(self) -> None:
        if self.prefill_stop is not None:
            self.prefill_stop.set()
        self.scheduler.close()
        for pool in (self.vad_pool, self.dialogue_pool, self.tts_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def load_services(settings) -> Services:
    """Blocking: resolve, load and warm up the models (call from a thread)."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    vad = SileroVad()
    turn = load_turn_model(settings.vad.turn_model)
    times["vad"] = time.perf_counter() - t
    asr, scheduler, asr_times = load_asr(settings.asr)
    times.update(asr_times)
    t = time.perf_counter()
    dialogue = load_dialogue(settings.dialogue)
    times["dialogue"] = time.perf_counter() - t
    t = time.perf_counter()
    tts = load_tts(settings.tts)
    if tts is not None:
        metrics.watch_tts(tts)
    if tts is not None and settings.asr.warmup:
        tts.warmup(settings.asr.default_language)
    times["tts"] = time.perf_counter() - t
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad")
    dialogue_pool, tts_pool = make_pools(settings)
    log.info("models ready: %s", ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
    services = Services(
        settings, asr, vad, scheduler, pool, dialogue=dialogue, tts=tts, dialogue_pool=dialogue_pool, tts_pool=tts_pool, load_seconds=times, turn=turn,
    )
    cache_fixed_speech(services)
    return services


def make_pools(settings) -> tuple[WorkerPool, WorkerPool]:
    """The dialogue and TTS worker pools (models/workers.py): bounded, and a stuck step's thread is replaced."""
    d, t = settings.dialogue, settings.tts
    dialogue_pool = WorkerPool(d.workers, max_threads=max(d.workers, d.max_threads), max_queue=d.max_queue, stuck_after_s=d.timeout_s, name="dialogue")
    # synthesis steps are bounded by the engines' own timeouts (Piper, espeak-ng: 30 s)
    tts_pool = WorkerPool(t.workers, max_threads=max(t.workers, t.max_threads), max_queue=t.max_queue, stuck_after_s=t.stuck_after_s, name="tts")
    metrics.watch_pools(dialogue=dialogue_pool, tts=tts_pool)
    return dialogue_pool, tts_pool


def fixed_texts(settings, dialogue) -> list[tuple[str, str]]:
    """(language, text) said word for word: the disclosures, "please repeat" and handoff sentences
    of the settings, and what the dialogue engine says as written (``spoken_texts``, where it has it)."""
    session = settings.session
    out = [session.disclosure_for(lang) for lang in session.disclosure]
    out += list(session.not_heard.items()) + list(session.handoff.items()) + list(session.hold.items())
    spoken = getattr(dialogue, "spoken_texts", None)
    if spoken is not None:
        out += spoken()
    return [(lang, text) for lang, text in dict.fromkeys(out) if text]


def cache_fixed_speech(services: Services) -> None:
    """Keep the speech of the fixed texts (``tts.cache_mb``) and, with ``tts.prefill``, synthesise
    them in a background thread now (stopped by :meth:`Services.close`)."""
    tts, settings = services.tts, services.settings
    if tts is None or settings.tts.cache_mb <= 0 or not hasattr(tts, "cache_texts"):
        return
    allowed = tts.cache_texts(fixed_texts(settings, services.dialogue), settings.tts.cache_mb * 2**20)
    metrics.watch_tts_cache(tts.cache)
    if not settings.tts.prefill:
        return
    services.prefill_stop = threading.Event()

    def run():
        try:
            n, seconds = tts.prefill(services.prefill_stop)
            log.info("tts: %d fixed sentences pre-synthesised in %.1fs (%d allowed, %.1f MB kept)", n, seconds, allowed, tts.cache.bytes / 2**20)
        except Exception:
            log.warning("tts: pre-synthesising the fixed texts failed", exc_info=True)

    threading.Thread(target=run, name="tts-prefill", daemon=True).start()


def make_scheduler(asr: WhisperEngine, asr_settings) -> AsrScheduler:
    """The process-wide ASR queue in front of ``asr``."""
    cuda = asr.device == "cuda"
    batch = asr_settings.batch_size or (8 if cuda else 1)
    return AsrScheduler(
        asr.recognize,
        workers=asr_settings.num_workers,
        batch_size=batch,
        batch_window_ms=asr_settings.batch_window_ms,
        recognize_batch=asr.recognize_batch,
        batch_key=asr.batch_key,
        mix_partials=cuda,  # on CUDA a batch costs about one decode; on the CPU, the sum of its items
        partial_share=asr_settings.partial_share,
    )


def load_asr(asr_settings) -> tuple[WhisperEngine, AsrScheduler, dict[str, float]]:
    """Blocking: load (and warm up) one recogniser and its queue, e.g. to switch models."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    asr = load_whisper(asr_settings)
    times["asr_load"] = time.perf_counter() - t
    if asr_settings.warmup:
        times["asr_warmup"] = asr.warmup(asr_settings.languages)
    return asr, make_scheduler(asr, asr_settings), times


def load_tts(settings):
    """The speech engines (Piper voices where configured, espeak-ng elsewhere)."""
    try:
        from models.tts import TtsRouter
    except ImportError:  # pragma: no cover
        log.warning("no TTS module: replies will be text only")
        return None
    return TtsRouter.from_settings(settings)


class SwitchError(Exception):
    """A model switch was refused (nothing loaded yet, a switch under way, or the new model failed)."""


class ModelHub:
    """Async wrapper: loads in a thread at start-up; /readyz reflects the state.

    :meth:`switch_asr` hot-swaps the recogniser: the new model is loaded and
    warmed up in a thread while calls go on; then new sessions get a new
    :class:`Services` generation (same VAD, dialogue, TTS and pools, new
    engine and ASR queue), while sessions already running keep the one they
    started with until they end.  :meth:`retire` closes an old generation's
    queue once no live session uses it.
    """

    def __init__(self, settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.error: str | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._switching = False
        self.retired: list[Services] = []
        self.capture = None
        """The process's CaptureWriter, given to every Services generation (set before start)."""

    def start(self) -> asyncio.Task:
        self._task = asyncio.ensure_future(self._load())
        return self._task

    async def _load(self) -> None:
        try:
            self.services = await asyncio.to_thread(load_services, self.settings)
            self.services.capture = self.capture
        except ModelError as e:
            self.error = str(e)
            log.error("%s", e)
        except Exception as e:  # any other failure at start: still one line and exit 2, never a traceback
            self.error = f"the models could not be loaded: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            log.error("%s", self.error)
            log.debug("the models could not be loaded", exc_info=True)  # the traceback at --log-level debug
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self.services is not None

    async def wait(self, timeout: float) -> Services | None:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return None
        return self.services

    async def switch_asr(self, asr_settings) -> Services:
        """Load ``asr_settings.model`` and make it the model of every new session.

        Raises :class:`SwitchError` (the old model stays live) if nothing is
        loaded yet, a switch is already under way, or the new model fails to load.
        """
        old = self.services
        if old is None:
            raise SwitchError("models are not loaded yet")
        if self._switching:
            raise SwitchError("a model switch is already under way")
        self._switching = True
        try:
            try:
                asr, scheduler, times = await asyncio.to_thread(load_asr, asr_settings)
            except (ModelError, OSError, ValueError, RuntimeError) as e:
                raise SwitchError(f"the new ASR model did not load, keeping {old.asr.model_id}: {e}") from None
            settings = old.settings.model_copy(update={"asr": asr_settings})
            new = replace(old, settings=settings, asr=asr, scheduler=scheduler, load_seconds={**old.load_seconds, **times})
            self.services = new
            self.retired.append(old)
            log.info("ASR model switched: %s -> %s (%s); sessions already running keep the old one", old.asr.model_id, asr.model_id, ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
            return new
        finally:
            self._switching = False

    def retire(self, live_sessions) -> int:
        """Close the ASR queue of old generations no live session uses; returns how many are still in use."""
        in_use = {id(getattr(s, "services", None)) for s in live_sessions}
        keep = []
        for svc in self.retired:
            if id(svc) in in_use:
                keep.append(svc)
            else:
                svc.close_asr()
                log.info("ASR model %s retired", svc.asr.model_id)
        self.retired = keep
        return len(keep)

    def close(self) -> None:
        for svc in self.retired:
            svc.close_asr()
        self.retired = []
        if self.services is not None:
            self.services.close()
