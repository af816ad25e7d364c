"""One Session per call: audio in, typed events out.

The session knows nothing of wire formats beyond the declared input format
it converts once on arrival; transports (the native protocol, telephony
adapters) feed it and drain its bounded outbound queue.

Audio path: bytes -> InputConverter (16 kHz float32) -> bounded queue ->
segmenter (VAD, worker thread) -> partial decodes every
``asr.partial_interval_s`` of new speech, a speculative final decode at the
first pause, the final at the endpoint -> Transcript events, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np

from models.audio import InputConverter
from models.dialogue.base import Pending
from models.dialogue.turns import unfinished
from models.dialogue.yesno import parse_answer, pick_spoken, spoken_candidates
from models.scheduler import Priority, QueueFull
from models.whisper import SAMPLE_RATE, choose_language, confidence
from pipeline import metrics
from pipeline.capture import CallCapture
from pipeline.context import SESSION_ID
from pipeline.errors import ProtocolError
from pipeline.events import Consent, ErrorEvent, Ready, Reply, ServerEvent, SessionEnd, SpeechDiscarded, SpeechStarted, Start, Transcript
from pipeline.langid import detect_text_language
from pipeline.replies import Responder
from pipeline.segmenter import Segmenter, SegmentEvent

log = logging.getLogger("dauys.session")

OUTBOX_SIZE = 256


@dataclass(frozen=True)
class Close:
    """Outbox item: close the connection with this code after what is queued."""

    code: int
    reason: str
AUDIO_QUEUE_SIZE = 200


@dataclass
class _Utterance:
    id: str
    t_start: float
    closed: bool = False
    partial_task: asyncio.Task | None = None
    last_partial_at: float = 0.0  # seconds of speech when the last partial was asked for
    last_partial_text: str = ""
    last_partial_decode_s: float = 0.0
    speculation: asyncio.Task | None = None
    spec_audio: np.ndarray | None = None
    t_endpoint: float = 0.0
    endpoint: str = "default"
    """The endpoint silence adaptive endpointing chose: default, short or long."""
    endpoint_pause: int = 0
    """The pause that choice was made for (a later pause the decision did not reach in time ends "undecided")."""


@dataclass
class SessionStats:
    utterances: int = 0
    finals: int = 0
    partials: int = 0
    discarded: int = 0


class Session:
    def __init__(self, services, session_id: str | None = None, transport: str = "native") -> None:
        self.services = services
        self.settings = services.settings
        self.id = session_id or uuid.uuid4().hex[:16]
        self.transport = transport
        """native, twilio or audiosocket (in the handoff record)."""
        self.carrier_call_id: str | None = None
        """The telephony platform's id of the call (Twilio callSid, AudioSocket UUID), where known."""
        # + room for the items appended without waiting (audio_end on barge-in, error + close on a fault)
        self.outbox: asyncio.Queue = asyncio.Queue(OUTBOX_SIZE + 8)
        self.started: Start | None = None
        self.language: str | None = None  # None = detect per utterance
        self.stats = SessionStats()
        self._converter: InputConverter | None = None
        self._segmenter: Segmenter | None = None
        self._audio_q: asyncio.Queue[np.ndarray | None] = asyncio.Queue(AUDIO_QUEUE_SIZE)
        self._audio_task: asyncio.Task | None = None
        self._utt: _Utterance | None = None
        self._final_chain: asyncio.Future | None = None
        self._counter = 0
        self._last_language: str | None = None
        self._ended = False
        self._tasks: set[asyncio.Task] = set()
        self.end_reason: str | None = None
        self._closing = False
        self.responder = Responder(self)
        self.capture: CallCapture | None = None
        """Recording consent and capture of this call (pipeline/capture.py); None when neither applies."""
        self.speech_end_at: dict[str, float] = {}
        """perf_counter() at which the caller's speech of an utterance ended, until its reply (voice-to-voice)."""
        SESSION_ID.set(self.id)  # log lines of this connection's task and of the tasks it spawns carry the id

    @property
    def ended(self) -> bool:
        """The session is ending or over (:meth:`end` has begun, or :meth:`close`): no more audio is
        taken, and once :meth:`end` is through the outbox holds its last item, ``None``."""
        return self._ended

    # ------------------------------------------------------------------ inbound
    async def start(self, msg: Start) -> Ready:
        if self.started is not None:
            raise ProtocolError("already_started", "the session has already started")
        asr = self.settings.asr
        if msg.language != "auto" and msg.language not in asr.languages:
            raise ProtocolError(
                "unsupported_language", f"language {msg.language!r} is not configured; use 'auto' or one of {', '.join(asr.languages)}"
            )
        self.started = msg
        self.responder.state.keypad = msg.keypad
        self.language = None if msg.language == "auto" else msg.language
        self._converter = InputConverter(msg.audio.encoding, msg.audio.sample_rate, msg.audio.channels)
        self._segmenter = Segmenter.from_settings(self.services.vad.stream(), self.settings.vad, adaptive=self.settings.vad.adaptive)
        self._audio_task = self.spawn(self._audio_loop())
        self._audio_task.add_done_callback(self._audio_done)
        # a known language: its disclosure (fallback ru, then kk); auto: session.disclosure_languages_auto, in order
        parts = self.settings.session.disclosures(self.language)
        d_lang, d_text = parts[0] if parts else (self.language or asr.default_language, "")
        ready = Ready(
            self.id, list(asr.languages), {"text": d_text, "language": d_lang}, language=msg.language,
            disclosures=[{"text": t, "language": lang} for lang, t in parts],
        )
        await self.emit(ready)
        parts = parts + await self._start_capture(msg, parts)
        if self.settings.session.spoken_disclosure and parts and self.services.tts is not None:
            self.responder.disclose(parts)
        log.info("session %s started: %s %d Hz x%d, language %s", self.id, msg.audio.encoding.value, msg.audio.sample_rate, msg.audio.channels, msg.language)
        return ready

    async def _start_capture(self, msg: Start, parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The recording consent of the call (capture): decided by the start (``consent``), asked after
        the disclosure (returns the question(s) to speak), or none. Only when the server captures or the
        start speaks of consent; the decision is a ``consent`` event, in the provenance and in the log."""
        writer = getattr(self.services, "capture", None)
        if writer is None and msg.consent is None:
            return []
        cap = self.settings.capture
        consent = msg.consent if writer is not None or msg.consent != "ask" else None  # nothing to ask for
        self.capture = CallCapture(self.id, writer, consent, writer is not None and cap.ask_consent, self.transport)
        self.capture.carrier_call_id = self.carrier_call_id
        if not self.capture.asking:
            await self._consent_decided(None)
            return []
        questions = list(dict.fromkeys(cap.question_for(lang, msg.keypad) for lang, _ in parts or [(self.settings.asr.default_language, "")]))
        questions = [(lang, text) for lang, text in questions if text]
        await self.emit(Consent("asked", questions=[{"text": t, "language": lang} for lang, t in questions]))
        log.info("session %s: recording consent asked", self.id)
        return questions

    async def _consent_decided(self, utterance_id: str | None) -> None:
        rec = self.capture.record()
        await self.emit(Consent(rec["recording"], rec["source"], rec["captured"], utterance_id))
        log.info("session %s: recording consent %s (%s)%s", self.id, rec["recording"], rec["source"], ", captured" if rec["captured"] else "")

    async def _consent_answer(self, utterance_id: str, kind: str | None, source: str, language: str) -> bool:
        """The caller answered the consent question (or did not: their turn is then answered as usual).
        True when it was a yes or a no: thanked, and not passed to the dialogue."""
        answered = self.capture.answer(kind, source)
        await self._consent_decided(utterance_id)
        if answered:
            lang, text = self.settings.capture.thanks_for(language)
            self.responder.say(utterance_id, text, lang, {"act": "consent", "recording": self.capture.decision})
        return answered

    def reconfigure_input(self, rate: int) -> None:
        """The input sample rate changed mid-call (AudioSocket kinds): new converter, same segmenter."""
        enc, channels = self._converter.encoding, self._converter.channels
        self._converter = InputConverter(enc, rate, channels)

    async def feed_audio(self, data: bytes) -> None:
        if self.started is None:
            raise ProtocolError("audio_before_start", "send a start message before audio")
        if self._ended:
            return
        chunk = self._converter.convert(data)
        if len(chunk):
            await self._audio_q.put(chunk.samples)

    async def text(self, text: str) -> None:
        if self.started is None:
            raise ProtocolError("text_before_start", "send a start message before text")
        if len(text) > self.settings.server.max_text_chars:
            raise ProtocolError("text_too_long", f"text is limited to {self.settings.server.max_text_chars} characters")
        text = text.strip()
        if not text:
            return
        asr = self.settings.asr
        lang = self.language or detect_text_language(text, asr.languages, asr.default_language)
        uid = self._next_id()
        t = self._segmenter.t if self._segmenter else 0.0
        ev = Transcript(uid, text, True, lang, confidence=1.0, t_end=round(t, 3), source="text")
        self._chain(self._deliver_final(ev))

    async def _deliver_final(
        self, ev: Transcript, alternatives: tuple = (), avg_logprob: float | None = None, dialogue_text: str | None = None
    ) -> None:
        """Emit a final transcript, then answer it (the reply comes after its transcript);
        ``dialogue_text`` replaces the transcript's text for the dialogue (a scored short answer)."""
        await self.emit(ev)
        if self.capture is not None and self.capture.asking and not self._closing:
            kind = ev.answer or parse_answer(dialogue_text or ev.text).kind
            if await self._consent_answer(ev.utterance_id, kind, "voice" if ev.source == "audio" else "text", ev.language):
                return
        if not self._closing:
            self.responder.answer(ev.utterance_id, dialogue_text or ev.text, ev.language, ev.confidence or 1.0, alternatives, avg_logprob)

    def dtmf(self, digit: str) -> None:
        """A key the caller pressed (phone lines, or a native session started with ``keypad``):
        0 asks for a person; 1 and 2 answer a pending clarifying question (yes/no, first/second);
        other keys, and keys with no question pending, are ignored."""
        if self.started is None or self._closing:
            return
        if digit in ("1", "2") and self.capture is not None and self.capture.asking:
            lang = self.language or self._last_language or self.settings.asr.default_language
            # in the finals' chain, so that the end of the session waits for the answer and its thanks
            self._chain(self._consent_answer(f"dtmf:{digit}", "yes" if digit == "1" else "no", "dtmf", lang))
            return
        if digit == "0":
            self.responder.handoff("user_request", self.language or self._last_language or self.settings.asr.default_language)
        elif digit in ("1", "2"):
            self.responder.key(digit)

    async def end(self, reason: str = "client_end", abandon_reply: bool = False) -> None:
        """Flush the last utterance, deliver every final, then ``session_end``.

        ``abandon_reply``: the caller is gone (hung up), so a reply still playing is cut.
        """
        if self._ended:
            return
        self._ended = True
        if abandon_reply:
            self._closing = True
            self.responder.abandon()
        if self.started is not None:
            tail = self._converter.flush()
            if len(tail):
                await self._audio_q.put(tail.samples)
            await self._audio_q.put(None)
            await self._audio_task
            if self._final_chain is not None:
                await self._final_chain
        await self.responder.drain()
        self._closing = True
        await self.emit(SessionEnd(reason))
        await self.outbox.put(None)

    def request_end(self, reason: str) -> None:
        """End the session from inside (handoff, goodbye): flush, then session_end."""
        if self._ended or self._closing:
            return
        self._closing = True
        self.end_reason = reason
        self.spawn(self.end(reason))

    def outbox_put_nowait(self, item) -> None:
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("session %s: outbox full, event dropped", self.id)

    async def close(self) -> None:
        """Abrupt end (the client went away): cancel everything of this session."""
        self._ended = True
        if self.capture is not None:
            self.capture.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.services.scheduler.cancel_partial(self.id)

    async def emit(self, event: ServerEvent | bytes) -> None:
        if self.capture is not None and self.capture.capturing:
            self._observe(event)
        await self.outbox.put(event)

    def _observe(self, event) -> None:
        """Capture hook: a consented call's transcripts, discarded speech and replies (entry, repeat)."""
        if isinstance(event, Transcript) and event.final:
            self.capture.transcript(event.utterance_id, event.text, event.language, event.confidence)
        elif isinstance(event, SpeechDiscarded):
            self.capture.discarded(event.utterance_id, event.reason, self.language or self._last_language or self.settings.asr.default_language)
        elif isinstance(event, Reply):
            self.capture.reply(event.utterance_id, event.dialogue)

    @property
    def closing(self) -> bool:
        """The session is winding down (ending, or the caller hung up): no new replies start."""
        return self._closing

    def in_flight(self) -> list[asyncio.Future]:
        """What the caller is owed now: finals already endpointed (and the replies they start), the
        reply being spoken. A graceful shutdown waits for these (``server.shutdown_grace_s``)."""
        return [t for t in (self._final_chain, self.responder.current) if t is not None and not t.done()]

    @property
    def in_utterance(self) -> bool:
        """The caller is speaking now (an utterance has started and not yet ended)."""
        return self._utt is not None

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` as a task of this session (cancelled by :meth:`close`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ internals
    def _audio_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("session %s: audio processing failed", self.id, exc_info=task.exception())
        self._ended = True
        for item in (ErrorEvent("internal_error", "audio processing failed on the server"), Close(1011, "internal error")):
            try:
                self.outbox.put_nowait(item)
            except asyncio.QueueFull:  # the reserved slots are taken: the reader is gone anyway
                break

    def _next_id(self) -> str:
        self._counter += 1
        return f"u{self._counter}"

    async def _audio_loop(self) -> None:
        loop = asyncio.get_running_loop()
        seg = self._segmenter
        done = False
        while not done:
            chunks = [await self._audio_q.get()]
            while not self._audio_q.empty():
                chunks.append(self._audio_q.get_nowait())
            if chunks[-1] is None:
                done = True
                chunks.pop()
            if chunks:
                samples = np.concatenate(chunks)
                events = await loop.run_in_executor(self.services.vad_pool, seg.push, samples)
            else:
                events = []
            if done:
                events += seg.finish()
            for ev in events:
                await self._on_segment(ev)
            if not done:
                self._maybe_partial()

    async def _on_segment(self, ev: SegmentEvent) -> None:
        if ev.kind == "start":
            self._utt = _Utterance(self._next_id(), ev.t)
            self.stats.utterances += 1
            await self.emit(SpeechStarted(self._utt.id, round(ev.t, 3)))
            if self.responder.barge_in():
                metrics.BARGE_INS.inc()
                log.info("session %s: barge-in at %.2fs", self.id, ev.t)
        elif ev.kind == "pause" and self._utt is not None:
            self._cancel_partial(self._utt)
            self._utt.spec_audio = ev.audio
            self._utt.speculation = self.spawn(self._decode(ev.audio, Priority.FINAL))
            if self.settings.vad.adaptive:
                turn = self.services.turn
                judged = asyncio.get_running_loop().run_in_executor(None, turn.complete, ev.audio) if turn is not None else None
                self.spawn(self._adapt_endpoint(self._utt, ev.pause, self._utt.speculation, judged))
            self.spawn(self._speculate_reply(self._utt, self._utt.speculation))
        elif ev.kind == "resume" and self._utt is not None:
            self._utt.endpoint = "default"  # the segmenter is back on vad.min_silence_ms
            self._drop_speculation(self._utt)
            self.responder.drop_speculation()
        elif ev.kind == "end" and self._utt is not None:
            utt, self._utt = self._utt, None
            utt.closed = True
            self._cancel_partial(utt)
            endpoint_at = time.perf_counter()
            utt.t_endpoint = ev.t_decided
            metrics.ENDPOINTS.labels(self._endpoint_kind(utt, ev)).inc()
            if utt.speculation is not None and not ev.forced:
                result, audio = utt.speculation, utt.spec_audio
            else:
                self._drop_speculation(utt)
                result, audio = self.spawn(self._decode(ev.audio, Priority.FINAL)), ev.audio
            self._chain(self._final(utt, ev, result, audio, endpoint_at))

    async def _decode(self, audio: np.ndarray, priority: Priority):
        if priority is Priority.PARTIAL:
            return await self.services.scheduler.submit(audio, self._decode_language(), self._weights(), priority, key=self.id)
        return await self.services.scheduler.submit(audio, self._decode_language(), self._weights(), priority, hypotheses=self.settings.asr.nbest)

    def _weights(self) -> dict[str, float]:
        return self.settings.asr.language_weights(self._last_language)

    def _decode_language(self) -> str | None:
        return self.language

    async def _adapt_endpoint(self, utt: _Utterance, pause: int, speculation: asyncio.Task, judged: asyncio.Future | None = None) -> None:
        """Adaptive endpointing: once the speculative decode of this pause is in, end the turn
        after ``vad.short_silence_ms`` when its words settle it (the responder would answer
        them straight away), or wait ``vad.long_silence_ms`` after a hesitation, a trailing
        conjunction or dictated digits (:func:`models.dialogue.turns.unfinished`), or when the
        learned turn model (``judged``: its probability of a finished turn, ``vad.turn_model``)
        hears the caller as not finished."""
        await asyncio.wait({speculation} | ({judged} if judged is not None else set()))
        if speculation.cancelled() or utt.closed or utt.speculation is not speculation:
            return  # speech resumed (the segmenter restored the default itself) or the utterance ended
        vad = self.settings.vad
        silence_ms, kind, why = vad.min_silence_ms, "default", None
        rec = speculation.result() if speculation.exception() is None else None
        p_complete = None
        if judged is not None and not judged.cancelled():
            if judged.exception() is None:
                p_complete = judged.result()
            else:
                log.warning("session %s: the turn model failed: %s", self.id, type(judged.exception()).__name__)
        mid_turn = p_complete is not None and p_complete < vad.turn_threshold
        heard = rec is not None and not rec.rejected and rec.text
        why = unfinished(rec.text, rec.language) if heard else None
        if why is None and mid_turn:
            why = f"turn model p={p_complete:.2f}"
        if why is not None:
            silence_ms, kind = max(vad.long_silence_ms, vad.min_silence_ms), "long"
        elif heard and self.responder.would_answer(rec.text, rec.language):
            silence_ms, kind = min(vad.short_silence_ms, vad.min_silence_ms), "short"
        # the segmenter holds the endpoint from the pause on until this decision (vad.long_silence_ms at most)
        if self._segmenter.adapt(pause, silence_ms):
            utt.endpoint, utt.endpoint_pause = kind, pause
            log.debug("session %s: %s endpoint for %s (%s)", self.id, kind, utt.id, why or ("settled" if kind == "short" else "-"))

    def _endpoint_kind(self, utt: _Utterance, ev: SegmentEvent) -> str:
        """The ``dauys_endpoints_total`` label of an end: forced, the silence adaptive endpointing chose
        for the last pause, or ``undecided`` when that pause held the endpoint and no decision came in
        time (vad.long_silence_ms: the speculative decode was late)."""
        if ev.forced:
            return "forced"
        if self._segmenter.hold_windows and utt.endpoint_pause != self._segmenter.pauses:
            return "undecided"
        return utt.endpoint

    async def _speculate_reply(self, utt: _Utterance, speculation: asyncio.Task) -> None:
        """Speculative replies (``dialogue.speculative``): once the speculative decode is in and the
        caller has not resumed, the responder prepares the reply to it (sent only after the endpoint,
        if the final is the same turn). Not while an earlier final is still on its way."""
        await asyncio.wait({speculation})
        if speculation.cancelled() or speculation.exception() is not None or utt.closed or utt.speculation is not speculation:
            return
        if self._final_chain is not None and not self._final_chain.done():
            return
        rec = speculation.result()
        if rec.rejected or not rec.text:
            return
        self.responder.speculate(utt.id, *self._turn_of(rec))

    @staticmethod
    def _turn_of(rec) -> tuple:
        """What the dialogue gets of a recognition: (text, language, confidence, alternatives, avg_logprob)."""
        conf = round(rec.confidence, 3)
        return rec.text, rec.language, conf or 1.0, tuple(getattr(rec, "alternatives", None) or ()), getattr(rec, "avg_logprob", None)

    def _drop_speculation(self, utt: _Utterance) -> None:
        if utt.speculation is not None:
            utt.speculation.cancel()
            utt.speculation = None

    def _cancel_partial(self, utt: _Utterance) -> None:
        if utt.partial_task is not None and not utt.partial_task.done():
            utt.partial_task.cancel()
        self.services.scheduler.cancel_partial(self.id)

    def _maybe_partial(self) -> None:
        utt, seg = self._utt, self._segmenter
        if utt is None or utt.closed or utt.speculation is not None or not seg.talking:
            return  # near a possible endpoint the decoder is kept free for the final
        if utt.partial_task is not None and not utt.partial_task.done():
            return
        speech_s = seg.speech_seconds()
        # adaptive: long utterances cost more to re-decode, so their partials come less often
        interval = max(self.settings.asr.partial_interval_s, 1.5 * utt.last_partial_decode_s)
        if speech_s - utt.last_partial_at < interval:
            return
        utt.last_partial_at = speech_s
        utt.partial_task = self.spawn(self._partial(utt, seg.utterance_audio()))

    async def _partial(self, utt: _Utterance, audio: np.ndarray) -> None:
        try:
            rec = await self.services.scheduler.submit(audio, self._decode_language(), self._weights(), Priority.PARTIAL, key=self.id)
        except QueueFull:
            metrics.PARTIALS_SHED.inc()
            return
        except asyncio.CancelledError:
            return
        except Exception:
            log.warning("session %s: partial decode failed", self.id, exc_info=True)
            return
        if utt.closed or rec.rejected or rec.text == utt.last_partial_text:
            return
        utt.last_partial_decode_s = rec.decode_s
        utt.last_partial_text = rec.text
        self.stats.partials += 1
        await self.emit(Transcript(utt.id, rec.text, False, rec.language, t_start=round(utt.t_start, 3)))

    def _chain(self, coro) -> None:
        """Run ``coro`` after every earlier final has been emitted (finals stay in order)."""
        prev = self._final_chain

        async def run():
            if prev is not None:
                await asyncio.shield(prev)
            await coro

        self._final_chain = self.spawn(run())

    async def _final(self, utt: _Utterance, ev: SegmentEvent, result: asyncio.Task, audio: np.ndarray, endpoint_at: float) -> None:
        try:
            rec = await result
            if self.language is None and rec.language_probs:
                # The decode may have started before the previous final was known (speculation,
                # fast senders); decide the language again with the now-known previous language.
                lang, _, _ = choose_language(rec.language_probs, self._weights(), self.services.asr.whisper_language)
                if lang != rec.language and self.services.asr.whisper_language(lang) != self.services.asr.whisper_language(rec.language):
                    rec = await self.services.scheduler.submit(audio, lang, self._weights(), Priority.FINAL, hypotheses=self.settings.asr.nbest)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("session %s: final decode of %s failed: %s", self.id, utt.id, type(e).__name__)
            await self.emit(ErrorEvent("asr_failed", f"recognition of utterance {utt.id} failed"))
            if ev.t - utt.t_start >= self.settings.session.not_heard_min_s:  # a question: never left in silence
                self.responder.not_heard(utt.id, self.language or self._last_language or self.settings.asr.default_language, "asr_failed")
            return
        if self.capture is not None:
            self.capture.audio(utt.id, audio)  # kept only when the call is being captured
        answer = await self._short_answer(rec, audio)
        if answer is not None:  # a short reply to a clarifying question, understood by scoring the answer words
            kind, word = answer
            rec = dataclasses.replace(rec, text=rec.text if rec.text and not rec.rejected else word, rejected=None)
        if rec.rejected:
            self.stats.discarded += 1
            log.info("session %s: %s discarded (%s, %.2fs audio)", self.id, utt.id, rec.rejected, rec.duration)
            await self.emit(SpeechDiscarded(utt.id, rec.rejected, ev.t))
            if ev.t - utt.t_start >= self.settings.session.not_heard_min_s or self.responder.state.pending is not None:
                # long enough to be a question (the VAD's speech, start to end), or an answer to our
                # clarifying question: the caller must not be left in silence
                self.responder.not_heard(utt.id, self.language or self._last_language or self.settings.asr.default_language, rec.rejected)
            return
        latency = time.perf_counter() - endpoint_at
        self._last_language = rec.language
        self.stats.finals += 1
        metrics.ENDPOINT_TO_FINAL.observe(latency)
        if rec.duration > 0:
            metrics.ASR_RTF.observe(rec.decode_s / rec.duration)
        # the speech ended the confirming silence (vad.min_silence_ms, or what adaptive endpointing
        # chose) before a non-forced endpoint; exact for real-time input
        self.speech_end_at[utt.id] = endpoint_at - ev.silence_s
        log.info(
            "session %s: final %s lang=%s p=%.2f conf=%.2f %.2fs audio, decode %.3fs, endpoint->final %.3fs",
            self.id, utt.id, rec.language, rec.language_probability, rec.confidence, rec.duration, rec.decode_s, latency,
        )
        alternatives = list(getattr(rec, "alternatives", None) or []) if answer is None else []
        await self._deliver_final(
            Transcript(
                utt.id, rec.text, True, rec.language, confidence=round(rec.confidence, 3), t_end=ev.t,
                t_start=round(utt.t_start, 3), forced=ev.forced, t_endpoint=utt.t_endpoint,
                alternatives=[{"text": t, "confidence": round(confidence(lp), 3)} for t, lp in alternatives] or None,
                answer=answer[0] if answer else None,
            ),
            alternatives=tuple(alternatives), avg_logprob=getattr(rec, "avg_logprob", None),
            dialogue_text=answer[1] if answer else None,
        )

    async def _short_answer(self, rec, audio: np.ndarray) -> tuple[str, str] | None:
        """(kind, answer word) when a clarifying question is pending, the utterance is short
        (``asr.short_answer_max_s``) and its transcript is not already a yes/no (or first/second):
        the answer words are scored against the audio (``score_phrases``) and the likeliest taken
        when it leads the next by enough (``yesno.pick_spoken``). None otherwise."""
        pending = self.responder.state.pending
        if pending is None and self.capture is not None and self.capture.asking:  # the consent question: yes or no
            pending = Pending("confirm", (), "", self.language or rec.language or self.settings.asr.default_language)
        asr = self.settings.asr
        score = getattr(self.services.asr, "score_phrases", None)
        if pending is None or score is None or not asr.short_answers or len(audio) > asr.short_answer_max_s * SAMPLE_RATE:
            return None
        choosing = pending.kind == "choose"
        if not rec.rejected and parse_answer(rec.text, choosing=choosing).kind is not None:
            return None  # heard as such already
        candidates = spoken_candidates(pending.language, choosing)
        try:
            scores = await asyncio.get_running_loop().run_in_executor(
                None, score, audio, pending.language, [p for _, p in candidates]
            )
        except Exception as e:
            log.warning("session %s: scoring a short answer failed: %s", self.id, type(e).__name__)
            return None
        picked = pick_spoken(candidates, scores)
        if picked is not None:
            metrics.SHORT_ANSWERS.labels(picked[0]).inc()
        return picked
