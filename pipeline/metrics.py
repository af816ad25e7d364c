"""Prometheus metrics (served at /metrics). Labels never carry personal data."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS_ACTIVE = Gauge("dauys_sessions_active", "Sessions in progress", registry=REGISTRY)
SESSIONS_TOTAL = Counter("dauys_sessions_total", "Sessions started", ["transport"], registry=REGISTRY)
SESSIONS_REFUSED = Counter(
    "dauys_sessions_refused_total", "Connections refused (auth, origin, throttled, key_limit, not_allowed, capacity, not_ready, shutting_down, unsupported_media)", ["reason"], registry=REGISTRY
)
ERRORS = Counter("dauys_errors_total", "Errors, by code (PROTOCOL.md error codes; slow_consumer when a client is cut off)", ["code"], registry=REGISTRY)
TRANSCRIPTS = Counter("dauys_transcripts_total", "Transcripts sent", ["kind", "language"], registry=REGISTRY)
ENDPOINT_TO_FINAL = Histogram(
    "dauys_endpoint_to_final_seconds",
    "From the VAD endpoint decision to the final transcript",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0),
    registry=REGISTRY,
)
_STAGE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
FINAL_TO_REPLY = Histogram(
    "dauys_final_to_reply_seconds",
    "From the final transcript (or typed text) to the reply text (the dialogue's answer, the `reply` event); "
    "time spent waiting for an earlier reply to finish playing is not counted",
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
REPLY_TO_FIRST_AUDIO = Histogram(
    "dauys_reply_to_first_audio_seconds",
    "From the reply text to its first synthesised audio frame handed to the connection",
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
VOICE_TO_VOICE = Histogram(
    "dauys_voice_to_voice_seconds",
    "From the end of the caller's speech (endpoint decision minus the silence that confirmed it) "
    "to the first audio frame of the reply",
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
ASR_RTF = Histogram(
    "dauys_asr_rtf", "Decode time / audio duration of final decodes",
    buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0), registry=REGISTRY,
)
HANDOFFS = Counter("dauys_handoffs_total", "Calls handed to a human", ["reason"], registry=REGISTRY)
BARGE_INS = Counter("dauys_barge_ins_total", "Replies interrupted by the caller", registry=REGISTRY)
SHORT_ANSWERS = Counter(
    "dauys_short_answers_total", "Short replies to clarifying questions understood by scoring the answer words", ["answer"], registry=REGISTRY,
)
DIALOGUE_ACTS = Counter(
    "dauys_dialogue_acts_total",
    "Replies by what the dialogue did: answer, confirm, choose, reask, confirmed, chosen, rephrase, not_heard, handoff",
    ["act"], registry=REGISTRY,
)
ENDPOINTS = Counter(
    "dauys_endpoints_total",
    "Utterance endpoints by the silence that confirmed them: default (vad.min_silence_ms), short (the words settled the turn), "
    "long (hesitation, conjunction, number), undecided (the pause held the endpoint vad.long_silence_ms and no decision came: "
    "the speculative decode was late), forced (vad.max_utterance_s or end of stream)",
    ["silence"], registry=REGISTRY,
)
PARTIALS_SHED = Counter(
    "dauys_partials_shed_total", "Partial transcripts not decoded: the ASR queue was long, or partials had used asr.partial_share of the decoder's time",
    registry=REGISTRY,
)
SPECULATIVE_REPLIES = Counter(
    "dauys_speculative_replies_total",
    "Replies prepared at the caller's first pause (dialogue.speculative), by result: hit (the final was the same turn: "
    "sent after the endpoint), miss (speech resumed, the final differed, another reply came first)",
    ["result"], registry=REGISTRY,
)
SPECULATIVE_WASTED = Counter(
    "dauys_speculative_wasted_seconds_total", "Worker seconds spent preparing speculative replies that were discarded (misses)", registry=REGISTRY,
)
MODEL_SWITCHES = Counter("dauys_asr_model_switches_total", "Hot ASR model switches (SIGHUP reload)", registry=REGISTRY)
HANDOFF_WEBHOOK = Counter(
    "dauys_handoff_webhook_total", "Handoff records POSTed to compliance.handoff_webhook, by result (delivered, retried, failed)",
    ["result"], registry=REGISTRY,
)
CAPTURE_CONSENT = Counter(
    "dauys_capture_consent_total", "Recording consent decisions (capture): granted or refused, by source (upstream, voice, dtmf, unanswered, not_asked)",
    ["decision", "source"], registry=REGISTRY,
)
CAPTURE_WRITES = Counter("dauys_capture_writes_total", "Captured files written (calls and utterances of consented calls)", registry=REGISTRY)
CAPTURE_DROPPED = Counter(
    "dauys_capture_dropped_total",
    "Capture writes not made: queue_full (an utterance dropped), disk_full / io_error / error (capture stopped for that call; the call goes on)",
    ["reason"], registry=REGISTRY,
)

TTS_CACHE = Gauge(
    "dauys_tts_cache", "Speech of fixed texts kept (tts.cache_mb): hits and misses since start, sentences and bytes kept",
    ["what"], registry=REGISTRY,
)


def watch_tts_cache(cache) -> None:
    """Report ``cache`` (models.tts.cache.SpeechCache) in :data:`TTS_CACHE` at each scrape."""
    for what in ("hits", "misses", "bytes"):
        TTS_CACHE.labels(what).set_function(lambda w=what: getattr(cache, w))
    TTS_CACHE.labels("sentences").set_function(lambda: len(cache))


# ---------------------------------------------------------------- faults (README: What happens when things fail)
DIALOGUE_TIMEOUTS = Counter(
    "dauys_dialogue_timeouts_total",
    "Dialogue steps that took longer than dialogue.timeout_s (any backend; waiting for a worker included): the caller was handed off",
    registry=REGISTRY,
)
HOLD_NOTICES = Counter(
    "dauys_hold_notices_total", "Times a caller heard session.hold (\"one moment\") because an answer took session.hold_after_s", registry=REGISTRY,
)
TTS_FAILURES = Counter(
    "dauys_tts_failures_total", "Replies whose speech failed midway (no fallback voice could say a sentence): ended with audio_end interrupted", registry=REGISTRY,
)
LOG_ERRORS = Counter(
    "dauys_log_errors_total", "Log lines that could not be written (e.g. a full disk: ENOSPC); the call goes on", registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "dauys_event_loop_lag_seconds", "How late the event loop ran a 100 ms timer (blocking work on the loop shows here)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=REGISTRY,
)
_LAG_WINDOW_S = 10.0
_lags: list[tuple[float, float]] = []
LOOP_LAG_MAX = Gauge("dauys_event_loop_lag_max_seconds", "The largest event-loop lag over the last 10 s", registry=REGISTRY)
LOOP_LAG_MAX.set_function(lambda: max((lag for _, lag in _lags), default=0.0))


async def watch_loop_lag(interval_s: float = 0.1) -> None:
    """Run for the server's life: measure how late the loop wakes a timer (LOOP_LAG, LOOP_LAG_MAX)."""
    import asyncio
    import time

    while True:
        t = time.monotonic()
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        lag = max(0.0, now - t - interval_s)
        LOOP_LAG.observe(lag)
        _lags.append((now, lag))
        while _lags and _lags[0][0] < now - _LAG_WINDOW_S:
            _lags.pop(0)


class _FaultCollector:
    """Counters and gauges read from the engines at each scrape (models/ cannot import this module):
    worker pools (models/workers.py), Piper worker restarts, TTS fallbacks."""

    def __init__(self) -> None:
        self.pools: dict = {}
        self.tts = None

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        threads = GaugeMetricFamily("dauys_worker_threads", "Dialogue and TTS worker threads by state (idle, busy, stuck: past its timeout, replaced)", labels=["pool", "state"])
        queued = GaugeMetricFamily("dauys_worker_queue_depth", "Steps waiting for a dialogue or TTS worker thread", labels=["pool"])
        stuck = CounterMetricFamily("dauys_worker_stuck", "Steps that ran past their pool's timeout (their threads were replaced)", labels=["pool"])
        refused = CounterMetricFamily("dauys_worker_refused", "Steps refused because the pool's queue was full (the caller waited and retried)", labels=["pool"])
        for name, pool in self.pools.items():
            s = pool.stats()
            for state in ("idle", "busy", "stuck"):
                threads.add_metric([name, state], s[state])
            queued.add_metric([name], s["queued"])
            stuck.add_metric([name], s["stuck_total"])
            refused.add_metric([name], s["refused_total"])
        yield from (threads, queued, stuck, refused)
        restarts = CounterMetricFamily("dauys_tts_worker_restarts", "Piper worker processes restarted (died, or stopped after a timeout)")
        fallbacks = CounterMetricFamily("dauys_tts_fallbacks", "Sentences a Piper voice failed on and espeak-ng spoke instead")
        tts = self.tts
        restarts.add_metric([], sum(getattr(e, "restarts", 0) for e in tts.engines()) if tts is not None else 0)
        fallbacks.add_metric([], getattr(tts, "fallbacks", 0) if tts is not None else 0)
        yield from (restarts, fallbacks)


_FAULTS = _FaultCollector()
REGISTRY.register(_FAULTS)


def watch_pools(**pools) -> None:
    """Report these worker pools (name=pool) at each scrape."""
    _FAULTS.pools.update(pools)


def watch_tts(router) -> None:
    """Report ``router``'s (models.tts.TtsRouter) Piper restarts and fallbacks at each scrape."""
    _FAULTS.tts = router
