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
    "long (hesitation, conjunction, number), forced (vad.max_utterance_s or end of stream)",
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
