"""The native protocol's messages (PROTOCOL.md) as small typed dataclasses.

Client messages are parsed with :func:`parse_client_message`, which raises
:class:`ProtocolError` with a stable code; server events encode with
``to_json()`` and decode with :func:`parse_server_event` (used by the CLI
client and the tests), so every event round-trips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from models.audio import MAX_RATE, MIN_RATE, Encoding
from pipeline.errors import ProtocolError


# --------------------------------------------------------------------------
# client -> server
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioFormat:
    encoding: Encoding = Encoding.PCM_S16LE
    sample_rate: int = 16000
    channels: int = 1

    @classmethod
    def from_dict(cls, d: Any, what: str) -> "AudioFormat":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ProtocolError("invalid_message", f"'{what}' must be an object")
        enc = d.get("encoding", "pcm_s16le")
        try:
            encoding = Encoding(enc)
        except ValueError:
            raise ProtocolError("unsupported_encoding", f"{what}.encoding {enc!r} is not one of pcm_s16le, mulaw") from None
        rate = d.get("sample_rate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            raise ProtocolError("unsupported_sample_rate", f"{what}.sample_rate must be an integer from {MIN_RATE} to {MAX_RATE}, got {rate!r}")
        channels = d.get("channels", 1)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels not in (1, 2):
            raise ProtocolError("unsupported_channels", f"{what}.channels must be 1 or 2, got {channels!r}")
        return cls(encoding, rate, channels)

    def to_dict(self) -> dict:
        return {"encoding": self.encoding.value, "sample_rate": self.sample_rate, "channels": self.channels}


@dataclass(frozen=True)
class Start:
    type: ClassVar[str] = "start"
    audio: AudioFormat = field(default_factory=AudioFormat)
    output: AudioFormat = field(default_factory=AudioFormat)
    language: str = "auto"
    pacing: str = "realtime"
    """Extension (``output.pacing``): 'realtime' sends reply audio paced to real time (so barge-in
    can stop it); 'none' sends it as fast as it is synthesised (batch clients, load tests)."""
    keypad: bool = False
    """Extension: the caller has a phone keypad (a gateway bridging a phone line): ``dtmf`` messages
    are acted on and clarifying questions mention the keys. Without it ``dtmf`` is ignored."""
    consent: str | None = None
    """Extension (``consent.recording``): 'granted' (asked upstream, e.g. by the IVR), 'refused', or 'ask'
    (Dauys asks after the disclosure); None = the server's capture.ask_consent decides."""

    def to_json(self) -> str:
        out = self.output.to_dict()
        out.pop("channels")
        if self.pacing != "realtime":
            out["pacing"] = self.pacing
        msg = {"type": "start", "audio": self.audio.to_dict(), "output": out, "language": self.language}
        if self.keypad:
            msg["keypad"] = True
        if self.consent is not None:
            msg["consent"] = {"recording": self.consent}
        return json.dumps(msg)


@dataclass(frozen=True)
class Text:
    type: ClassVar[str] = "text"
    text: str

    def to_json(self) -> str:
        return json.dumps({"type": "text", "text": self.text}, ensure_ascii=False)


@dataclass(frozen=True)
class Dtmf:
    """Extension: a key the caller pressed ('0'-'9', '*', '#'); acted on only in a ``keypad`` session."""

    type: ClassVar[str] = "dtmf"
    digit: str

    def to_json(self) -> str:
        return json.dumps({"type": "dtmf", "digit": self.digit})


@dataclass(frozen=True)
class End:
    type: ClassVar[str] = "end"

    def to_json(self) -> str:
        return json.dumps({"type": "end"})


ClientMessage = Start | Text | Dtmf | End


def parse_client_message(raw: str) -> ClientMessage:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's limit
        raise ProtocolError("invalid_json", "text frames must be JSON objects") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_json", "text frames must be JSON objects")
    kind = msg.get("type")
    if kind == "start":
        lang = msg.get("language", "auto")
        if not isinstance(lang, str) or not lang:
            raise ProtocolError("unsupported_language", "language must be 'auto' or a language code")
        output = msg.get("output")
        pacing = output.get("pacing", "realtime") if isinstance(output, dict) else "realtime"
        if pacing not in ("realtime", "none"):
            raise ProtocolError("invalid_message", "output.pacing must be 'realtime' or 'none'")
        keypad = msg.get("keypad", False)
        if not isinstance(keypad, bool):
            raise ProtocolError("invalid_message", "keypad must be true or false")
        consent = msg.get("consent")
        if consent is not None:
            recording = consent.get("recording") if isinstance(consent, dict) else None
            if recording not in ("granted", "refused", "ask"):
                raise ProtocolError("invalid_message", "consent must be an object {\"recording\": \"granted\" | \"refused\" | \"ask\"}")
            consent = recording
        return Start(AudioFormat.from_dict(msg.get("audio"), "audio"), AudioFormat.from_dict(output, "output"), lang.lower(), pacing, keypad, consent)
    if kind == "text":
        text = msg.get("text")
        if not isinstance(text, str):
            raise ProtocolError("invalid_message", "'text' needs a string field 'text'")
        try:  # "\ud800" is valid JSON but no Unicode text: echoed in a transcript, it broke the connection
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("invalid_message", "'text' holds an unpaired surrogate (\\ud800-\\udfff escape)") from None
        return Text(text)
    if kind == "dtmf":
        digit = msg.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in "0123456789*#":
            raise ProtocolError("invalid_message", "'dtmf' needs a field 'digit': one of 0-9, * or #")
        return Dtmf(digit)
    if kind == "end":
        return End()
    raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected start, text, dtmf or end")


# --------------------------------------------------------------------------
# server -> client
# --------------------------------------------------------------------------
_EVENTS: dict[str, type] = {}


def _event(cls):
    _EVENTS[cls.type] = cls
    return cls


class ServerEvent:
    type: ClassVar[str]

    def to_dict(self) -> dict:
        d = {"type": self.type}
        d.update({k: v for k, v in asdict(self).items() if v is not None or k in getattr(self, "_keep_none", ())})
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@_event
@dataclass
class Ready(ServerEvent):
    type: ClassVar[str] = "ready"
    session_id: str
    languages: list[str]
    disclosure: dict
    ai_generated: bool = True
    language: str = "auto"
    """Extension: the session language as accepted ('auto' or a code)."""
    protocol: int = 1
    """Extension: protocol version."""
    disclosures: list[dict] | None = None
    """Extension: every disclosure spoken, in order ({text, language}); `disclosure` is the first.
    An `auto` session gets several (session.disclosure_languages_auto, default kk then ru)."""


@_event
@dataclass
class SpeechStarted(ServerEvent):
    type: ClassVar[str] = "speech_started"
    utterance_id: str
    t: float


@_event
@dataclass
class Transcript(ServerEvent):
    type: ClassVar[str] = "transcript"
    utterance_id: str
    text: str
    final: bool
    language: str
    confidence: float | None = None
    t_end: float | None = None
    t_start: float | None = None
    """Extension: start of the utterance (seconds of input audio)."""
    source: str = "audio"
    """Extension: 'audio' or 'text' (typed input)."""
    forced: bool | None = None
    """Extension, finals only: cut at vad.max_utterance_s (or by `end`) rather than at a pause."""
    t_endpoint: float | None = None
    """Extension, finals only: input-audio time at which the endpoint was decided
    (speech end + vad.min_silence_ms); clients measure latency from it."""
    alternatives: list[dict] | None = None
    """Extension, finals only with asr.nbest > 1: the recogniser's other hypotheses, best first,
    each {text, confidence}; the dialogue weighs them with ``text``."""
    answer: str | None = None
    """Extension, finals only: yes, no, first or second when a short reply to a clarifying
    question was understood by scoring the answer words against the audio (asr.short_answers)."""


@_event
@dataclass
class SpeechDiscarded(ServerEvent):
    """Extension: speech_started was sent but the utterance held no recognisable speech."""

    type: ClassVar[str] = "speech_discarded"
    utterance_id: str
    reason: str
    t_end: float


@_event
@dataclass
class Reply(ServerEvent):
    type: ClassVar[str] = "reply"
    utterance_id: str
    reply_id: str
    text: str
    language: str
    ai_generated: bool = True
    provenance: dict | None = None
    dialogue: dict | None = None
    """Extension: what the dialogue did with the turn: {act: answer, confirm, choose, reask,
    confirmed, chosen, rephrase, not_heard or handoff; entry or entries (knowledge-base ids);
    score; margin}. Absent where the backend does not report it."""


@_event
@dataclass
class AudioStart(ServerEvent):
    type: ClassVar[str] = "audio_start"
    reply_id: str
    encoding: str
    sample_rate: int
    ai_generated: bool = True
    watermark: str | None = None
    """The payload id embedded in the audio (None where no watermark is embedded)."""
    provenance: dict | None = None
    """Extension: the same provenance object as the reply's."""


@_event
@dataclass
class AudioEnd(ServerEvent):
    type: ClassVar[str] = "audio_end"
    reply_id: str
    interrupted: bool = False


@_event
@dataclass
class Handoff(ServerEvent):
    type: ClassVar[str] = "handoff"
    reason: str
    language: str
    summary: str


@_event
@dataclass
class ErrorEvent(ServerEvent):
    type: ClassVar[str] = "error"
    code: str
    message: str


@_event
@dataclass
class Consent(ServerEvent):
    """Extension: the recording consent of the call (capture): asked, then granted or refused."""

    type: ClassVar[str] = "consent"
    recording: str
    """asked, granted or refused."""
    source: str | None = None
    """upstream (the start message, a carrier parameter or setting), voice, dtmf, unanswered (asked, no yes/no
    came: not recorded), not_asked (no consent given and none asked: not recorded). None while asked."""
    captured: bool = False
    """Whether this call's utterances are stored (granted and capture working on this server)."""
    utterance_id: str | None = None
    """The utterance (or ``dtmf:1``/``dtmf:2``) that answered the question."""
    questions: list[dict] | None = None
    """With ``asked``: the question(s) spoken after the disclosure, each {text, language}."""


@_event
@dataclass
class SessionEnd(ServerEvent):
    type: ClassVar[str] = "session_end"
    reason: str


def parse_server_event(raw: str) -> ServerEvent | dict:
    """Decode a server event; unknown types (later extensions) come back as plain dicts."""
    d = json.loads(raw)
    cls = _EVENTS.get(d.get("type"))
    if cls is None:
        return d
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
