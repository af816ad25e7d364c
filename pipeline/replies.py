"""The spoken answer: final transcript -> dialogue -> reply text -> speech -> paced audio out.

One :class:`Responder` per session.  A reply runs as one cancellable task:
the dialogue engine's generator is stepped in a worker thread, complete
sentences go to TTS (also stepped in a worker thread) while generation goes
on, and audio is sent paced to real time with a short lead, so that barge-in
(the caller speaking) stops it quickly.  Per PROTOCOL.md the `reply` event
(full text) precedes `audio_start`; synthesis of the first sentence
overlaps generation, only the sending waits.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass, field

from models.audio import AudioChunk, OutputConverter
from models.dialogue.base import Action, DialogueState, Turn
from models.text import MIN_CHARS, SentenceBuffer, split_sentences
from models.workers import PoolFull
from pipeline import marking, metrics, watermark
from pipeline.events import AudioEnd, AudioStart, Handoff, Reply
from pipeline.policy import detect_handoff
from pipeline.privacy import redact

log = logging.getLogger("dauys.reply")

FRAME_MS = 40
"""Duration of one binary audio frame sent to the client."""
LEAD_S = 0.3
"""How far ahead of real time audio may be sent (bounds what barge-in cannot take back)."""
_DONE = object()
SYSTEM_ID = 1
"""Watermark system id of Dauys replies."""


@dataclass(frozen=True)
class AudioFrame:
    """Outbox item: audio of one reply (dropped by the writer once that reply is interrupted)."""

    reply_id: str
    data: bytes
    interruptible: bool = True
    """False for audio the caller's voice may not cut (the AI disclosure)."""


@dataclass
class _Prepared:
    """A reply worked out ahead of the endpoint: what the engine yielded, the state it left, and
    the speech of the reply's first sentence (not yet marked: the sending embeds the watermark)."""

    items: list
    state: DialogueState
    first: str | None
    audio: list = field(default_factory=list)


@dataclass
class _Speculation:
    utterance_id: str
    turn: Turn
    version: int
    engine: object
    tts: object
    task: asyncio.Task | None = None
    work_s: list = field(default_factory=lambda: [0.0])
    """Worker seconds spent on it so far (a miss counts them as wasted)."""


class DialogueTimeout(Exception):
    """A dialogue step took longer than ``dialogue.timeout_s`` (waiting for a worker included)."""


_LIST_ITERATOR = type(iter([]))
_RETRY_S = 0.1
"""How long a step refused by a full worker pool waits before it asks again."""


def _step(gen):
    try:
        return next(gen)
    except StopIteration:
        return _DONE


def _observe_first_audio(timing: dict) -> None:
    now = time.perf_counter()
    if timing.get("reply") is not None:
        metrics.REPLY_TO_FIRST_AUDIO.observe(now - timing["reply"])
    if timing.get("speech_end") is not None:
        metrics.VOICE_TO_VOICE.observe(now - timing["speech_end"])
    timing.clear()


def _close(gen) -> None:
    try:
        gen.close()
    except ValueError:  # "generator already executing": a cancelled step still runs in another worker;
        pass  # the generator is closed when it is collected, once that step is over


class Responder:
    def __init__(self, session) -> None:
        self.session = session
        self.services = session.services
        self.settings = session.settings
        self.history: list[Turn] = []
        self.state = DialogueState()
        self.current: asyncio.Task | None = None
        self._queued: list[asyncio.Task] = []
        """Reply tasks in the order they were started (the disclosure first), until each is done."""
        self.current_id: str | None = None
        self.current_interruptible = True
        """May the caller's voice cut the reply in progress? (Not the AI disclosure.)"""
        self.interrupted: set[str] = set()
        self._counter = 0
        self.speaking = False
        self.finished: str | None = None
        """Set to 'handoff' or 'end' once the conversation is over."""
        self._wm_key = watermark.key_seed(self.settings.compliance.watermark_key.get_secret_value())
        self._version = 0
        """Counts replies started: a speculation made before a reply started is void."""
        self._speculation: _Speculation | None = None

    # ------------------------------------------------------------------
    def provenance(self, reply_id: str, models: dict[str, str]) -> dict:
        """The provenance of a reply and its audio (PROTOCOL.md): the one marking.provenance writes
        into files, with the session, the reply and, where the call was asked, the consent."""
        capture = getattr(self.session, "capture", None)
        return marking.provenance(
            models, self.settings.compliance.classification(), session_id=self.session.id, reply_id=reply_id,
            **({"consent": capture.record()} if capture is not None else {}),
        )

    def _tts_id(self, language: str) -> str | None:
        return self.services.tts.model_id_for(language) if self.services.tts is not None else None

    def _next_reply_id(self) -> str:
        self._counter += 1
        return f"r{self._counter}"

    def interruptible(self) -> bool:
        return self.current is not None and not self.current.done() and self.current_interruptible

    def barge_in(self) -> bool:
        """The caller started speaking: stop the reply in progress. True if one was stopped."""
        if not self.interruptible():
            return False
        self.interrupted.add(self.current_id)
        self.current.cancel()
        return True

    def would_answer(self, text: str, language: str) -> bool:
        """Whether ``text`` (what the caller said so far) settles their turn: a request for a person,
        or what the dialogue engine answers without asking more (``would_answer``, where it has one).
        Adaptive endpointing ends such a turn sooner. Never raises."""
        if detect_handoff(text) is not None:
            return True
        check = getattr(self.services.dialogue, "would_answer", None)
        if check is None:
            return False
        try:
            return bool(check(text, language, self.state))
        except Exception as e:  # a backend's fault must not stop the call
            log.warning("session %s: would_answer failed: %s", self.session.id, type(e).__name__)
            return False

    # ------------------------------------------------------------------ speculative replies
    def speculate(
        self, utterance_id: str, text: str, language: str, confidence: float = 1.0,
        alternatives: tuple[tuple[str, float], ...] = (), avg_logprob: float | None = None,
    ) -> bool:
        """Prepare the reply to a speculative transcript (the caller paused; the endpoint is not
        confirmed yet): run the dialogue on a copy of the state and synthesise the first sentence,
        sending nothing. :meth:`answer` uses it if its turn is the same, else it is dropped.
        Only when ``dialogue.speculative`` is on, the engine says answering is cheap
        (``speculative``), nothing is being said or prepared, and the turn is not a request for
        a person. True if a speculation started."""
        engine = self.services.dialogue
        if (
            not self.settings.dialogue.speculative or not getattr(engine, "speculative", False) or self.finished is not None
            or self.session.closing or self._unfinished() or not text
            or detect_handoff(text) is not None
        ):
            return False
        self.drop_speculation()
        turn = Turn("user", text, language, confidence, alternatives=tuple(alternatives), avg_logprob=avg_logprob)
        spec = _Speculation(utterance_id, turn, self._version, engine, self.services.tts)
        spec.task = self.session.spawn(self._prepare(spec, language))
        self._speculation = spec
        return True

    def drop_speculation(self) -> None:
        """The speculative transcript is void (speech resumed): discard what was prepared."""
        spec, self._speculation = self._speculation, None
        if spec is not None:
            spec.task.cancel()
            self._count_miss(spec)

    def _count_miss(self, spec: _Speculation) -> None:
        metrics.SPECULATIVE_REPLIES.labels("miss").inc()
        metrics.SPECULATIVE_WASTED.inc(spec.work_s[0])

    def _claim_speculation(self, utterance_id: str, turn: Turn) -> _Speculation | None:
        """The speculation prepared for exactly this turn, if still valid (else it is dropped)."""
        spec, self._speculation = self._speculation, None
        if spec is None:
            return None
        if (
            spec.utterance_id == utterance_id and spec.turn == turn and spec.version == self._version
            and spec.engine is self.services.dialogue and spec.tts is self.services.tts and not spec.task.cancelled()
        ):
            metrics.SPECULATIVE_REPLIES.labels("hit").inc()
            return spec
        spec.task.cancel()
        self._count_miss(spec)
        return None

    async def _prepare(self, spec: _Speculation, language: str) -> _Prepared | None:
        """The speculation's work: the whole dialogue turn (cheap engines only), then the first
        sentence's speech. None if the engine failed (the real reply handles that)."""
        loop = asyncio.get_running_loop()
        state = copy.deepcopy(self.state)
        state.act = None
        history = list(self.history) + [spec.turn]

        def run_dialogue():
            t = time.perf_counter()
            try:
                return list(spec.engine.respond(history, language, state))
            finally:
                spec.work_s[0] += time.perf_counter() - t

        try:
            items = await loop.run_in_executor(self.services.dialogue_pool, run_dialogue)
        except Exception as e:
            log.debug("session %s: speculative reply failed: %s", self.session.id, type(e).__name__)
            return None
        buf = SentenceBuffer()
        sentences = [x for item in items if isinstance(item, str) for x in buf.feed(item)] + list(buf.flush())
        prepared = _Prepared(items, state, sentences[0] if sentences else None)
        if prepared.first is not None and spec.tts is not None:

            def run_tts():
                t = time.perf_counter()
                try:
                    return list(spec.tts.synthesize(prepared.first, language))
                finally:
                    spec.work_s[0] += time.perf_counter() - t

            try:
                prepared.audio = await loop.run_in_executor(self.services.tts_pool, run_tts)
            except Exception as e:  # the real reply synthesises it again (and falls back as it does)
                log.debug("session %s: speculative synthesis failed: %s", self.session.id, type(e).__name__)
                prepared.first = None
        return prepared

    def abandon(self) -> None:
        """The caller is gone (hung up, cut off): stop the reply in progress, the disclosure
        included, since nobody hears it (a kk + ru disclosure would otherwise hold the call ~10 s)."""
        if self.current is not None and not self.current.done():
            self.interrupted.add(self.current_id)
            self.current.cancel()

    async def drain(self) -> None:
        if self.current is not None:
            await asyncio.gather(self.current, return_exceptions=True)

    def answer(
        self, utterance_id: str, text: str, language: str, confidence: float = 1.0,
        alternatives: tuple[tuple[str, float], ...] = (), avg_logprob: float | None = None,
    ) -> None:
        """Answer a final transcript (``alternatives``: the recogniser's other hypotheses with their
        average log-probabilities, ``avg_logprob`` the best's; replies run in order)."""
        speech_end = self.session.speech_end_at.pop(utterance_id, None)
        turn = Turn("user", text, language, confidence, alternatives=tuple(alternatives), avg_logprob=avg_logprob)
        spec = self._claim_speculation(utterance_id, turn)
        self._start_reply(utterance_id, text, language, None, turn, speech_end, spec)

    def key(self, digit: str) -> bool:
        """A key the caller pressed answers the pending clarifying question (1 = yes or the first,
        2 = no or the second) in its language, cutting the question short if it is still being
        spoken. False, and nothing happens, when no question is pending."""
        if self.state.pending is None or self.finished is not None:
            return False
        language = self.state.pending.language
        if self.barge_in():
            metrics.BARGE_INS.inc()
        self._start_reply(f"dtmf:{digit}", "", language, None, Turn("user", "", language, dtmf=digit))
        return True

    def not_heard(self, utterance_id: str, language: str, reason: str) -> None:
        """The caller spoke and nothing could be recognised (``reason``: the recogniser's rejection):
        ask them to repeat, a misunderstood turn (enough of them hand off), never silence. While a
        clarifying question waits for its answer, the engine puts it again instead (once, then a
        person takes over), as for any answer it cannot make out."""
        self._start_reply(utterance_id, "", language, Action("not_heard", reason))

    def say(self, utterance_id: str, text: str, language: str, act: dict) -> None:
        """Say a fixed text in answer to ``utterance_id`` (e.g. thanks for a consent answer), after the
        replies before it; not added to the dialogue's history. ``act`` is the reply's ``dialogue``."""
        self._start_reply(utterance_id, "", language, Action("say", text, dict(act)))

    def handoff(self, reason: str, language: str, cause: str = "dtmf") -> None:
        """Hand the call to a human now (e.g. DTMF 0 on a phone line); ``cause`` stands in for the utterance id."""
        self._start_reply(cause, "", language, Action("handoff", reason))

    def _start_reply(
        self, utterance_id, text: str, language: str, action: Action | None, turn: Turn | None = None, speech_end: float | None = None,
        spec: _Speculation | None = None,
    ) -> None:
        """Replies run one after another, in order; only the caller's voice (barge-in) or a
        forced action (DTMF operator request) cuts the one in progress. ``spec``: this turn's
        reply, prepared speculatively."""
        if spec is None:
            self.drop_speculation()
        self._version += 1
        previous = self.current
        if action is not None and action.kind not in ("not_heard", "say") and self.interruptible():
            self.interrupted.add(self.current_id)
            previous.cancel()
        self.current_id = self._next_reply_id()
        self.current_interruptible = True
        earlier = self._unfinished()  # every reply still to finish before this one, not only the last
        self.current = self.session.spawn(self._answer(earlier, self.current_id, utterance_id, text, language, action, turn, speech_end, spec))
        self._queued = earlier + [self.current]

    def _unfinished(self) -> list[asyncio.Task]:
        return [t for t in self._queued if not t.done()]

    def disclose(self, text: str | list[tuple[str, str]], language: str | None = None) -> None:
        """Speak the AI disclosure: the first audio of the session, not interruptible.

        ``text`` is one text in ``language``, or a list of (language, text) spoken in order
        as one reply (an ``auto`` session: kk, then ru)."""
        parts = [(language, text)] if isinstance(text, str) else list(text)
        self._version += 1
        self.current_id = "disclosure"
        self.current_interruptible = False
        self.current = self.session.spawn(self._speak_only("disclosure", parts, interruptible=False))
        self._queued = self._unfinished() + [self.current]

    # ------------------------------------------------------------------
    async def _speak_only(self, reply_id: str, parts: list[tuple[str, str]], interruptible: bool = True) -> None:
        sentences: asyncio.Queue = asyncio.Queue()
        for lang, text in parts:
            for s in split_sentences(text, min_chars=MIN_CHARS):
                sentences.put_nowait((s, lang))
        sentences.put_nowait(None)
        started = asyncio.get_running_loop().create_future()
        started.set_result(None)
        tts_ids = list(dict.fromkeys(self._tts_id(lang) for lang, _ in parts))
        tts_id = tts_ids[0] if len(tts_ids) == 1 else "+".join(str(t) for t in tts_ids)
        await self._speak(reply_id, sentences, parts[0][0], started, {"tts": tts_id}, interruptible=interruptible)

    async def _answer(
        self, previous, reply_id: str, utterance_id, text: str, language: str, action: Action | None, turn: Turn | None, speech_end: float | None = None,
        spec: _Speculation | None = None,
    ) -> None:
        if previous:
            # one reply at a time, in order: wait for every earlier one still running (a queued reply cut by
            # barge-in no longer holds the next one back behind the disclosure); asyncio.wait, not gather:
            # cancelling this reply must not cancel those before it (the AI disclosure is not interruptible)
            await asyncio.wait(set(previous))
        prepared = None
        if spec is not None:  # this turn's reply, prepared at the caller's pause (usually done by now)
            try:  # bounded: a speculation stuck in the engine must not hold the reply (asyncio.timeout, not
                # wait_for: on 3.11 wait_for swallows a cancel that lands as the awaited task finishes)
                async with asyncio.timeout(self.settings.dialogue.timeout_s):
                    prepared = await asyncio.shield(spec.task)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling() or self.session.ended:
                    raise  # this reply itself was cancelled (or the session closed, cancelling both)
            except Exception:  # failed or timed out: the engine answers afresh (under its own bound)
                spec.task.cancel()
                prepared = None
        if self.finished is not None or (self.session.closing and (action is None or action.kind in ("not_heard", "say"))):
            return  # handed off or said goodbye: later turns are not answered
        if action is not None and action.kind == "not_heard" and self.state.pending is not None:
            action, turn = None, Turn("user", "", language)  # an unheard answer: the clarifier re-asks
        if turn is not None:
            if turn.dtmf is not None and self.state.pending is None:
                return  # the question the key answered was settled meanwhile
            self.history.append(turn)
        self.state.act = None
        loop = asyncio.get_running_loop()
        engine = self.services.dialogue
        sentences: asyncio.Queue = asyncio.Queue()
        may_send = loop.create_future()
        models = {"asr": self.services.asr.model_id, "dialogue": engine.model_id, "tts": self._tts_id(language)}
        timing = {"speech_end": speech_end}  # perf_counter() marks for the latency metrics
        ready = {prepared.first: prepared.audio} if prepared is not None and prepared.first is not None else None
        # a task of the session: closing it cancels the speech directly, whatever this reply is waiting on
        speaker = self.session.spawn(self._speak(reply_id, sentences, language, may_send, models, timing, ready=ready))
        intent = detect_handoff(text) if action is None else None
        t0 = time.perf_counter()
        pieces: list[str] = []
        hold = {"armed": True, "task": None, "utterance": utterance_id, "language": language, "reply_id": f"{reply_id}-hold"}
        """session.hold ("one moment"): said at most once, before the first text, if it is slow in coming."""
        try:
            buf = SentenceBuffer()
            if intent is not None:
                action = Action("handoff", intent.reason)
                self.state.pending = None
            if action is not None and action.kind == "not_heard":
                self.state.misunderstood += 1
                limit = getattr(engine, "max_misunderstood", None)
                if limit is not None and self.state.misunderstood >= limit:
                    action = Action("handoff", "not_understood", {"misunderstood": self.state.misunderstood, "not_heard": action.reason})
            if action is not None and action.kind == "say":
                gen = iter([action.reason])
                self.state.act = dict(action.data)
                action = None
            elif action is not None and action.kind == "not_heard":
                gen = iter([self.settings.session.not_heard_text(language)])
                self.state.act = {"act": "not_heard", "reason": action.reason}
                action = None
            elif action is not None and action.kind == "handoff":
                gen = iter([self.settings.session.handoff_text(language)])
                self.state.act = {"act": "handoff", "reason": action.reason}
            elif prepared is not None:  # the engine's turn, worked out on a copy of the state
                self.state = prepared.state
                gen = iter(prepared.items)
            else:
                gen = engine.respond(list(self.history), language, self.state)
            inline = prepared is not None or isinstance(gen, _LIST_ITERATOR)  # fixed texts need no worker
            while True:
                try:
                    item = _step(gen) if inline else await self._dialogue_step(gen, hold)
                except Exception as e:  # a failing or hung backend must not leave the caller in silence
                    timed_out = isinstance(e, DialogueTimeout)
                    reason = "dialogue_timeout" if timed_out else "dialogue_error"
                    if timed_out:
                        metrics.DIALOGUE_TIMEOUTS.inc()
                        self._close_later(gen)
                    log.error("session %s: dialogue backend %s: %s", self.session.id, "timed out" if timed_out else "failed", str(e).splitlines()[0] if str(e) else type(e).__name__)
                    handoff_text = self.settings.session.handoff_text(language)
                    pieces.append((" " if pieces else "") + handoff_text)
                    for s in buf.feed(" " + handoff_text):
                        await sentences.put(s)
                    action = Action("handoff", reason)
                    self.state.act = {"act": "handoff", "reason": reason}
                    break
                if item is _DONE:
                    break
                if isinstance(item, Action):
                    action = item
                    continue
                pieces.append(item)
                for s in buf.feed(item):
                    await sentences.put(s)
            for s in buf.flush():
                await sentences.put(s)
            await sentences.put(None)
            reply_text = "".join(pieces).strip()
            if hold["task"] is not None:  # "one moment" is being said: the answer follows it
                await asyncio.gather(hold["task"], return_exceptions=True)
            self.history.append(Turn("assistant", reply_text, language))
            timing["reply"] = time.perf_counter()
            metrics.FINAL_TO_REPLY.observe(timing["reply"] - t0)
            await self.session.emit(
                Reply(utterance_id, reply_id, reply_text, language, provenance=self.provenance(reply_id, models), dialogue=self.state.act)
            )
            if self.state.act:
                metrics.DIALOGUE_ACTS.labels(self.state.act.get("act", "other")).inc()
            may_send.set_result(None)
            await speaker
        except asyncio.CancelledError:
            speaker.cancel()
            if hold["task"] is not None:
                hold["task"].cancel()
            await asyncio.gather(speaker, *([hold["task"]] if hold["task"] is not None else []), return_exceptions=True)
            if "gen" in locals():  # stops an LLM's generation thread
                self._close_later(gen)
            if may_send.done() and reply_id in self.interrupted and not self.session.closing:
                # the caller spoke over "connecting you to an operator" (or the goodbye): the barge-in
                # cuts the sentence, not the decision, which the reply already announced
                event = self._conclude(action, language)
                if event is not None:
                    self.session.outbox_put_nowait(event)
            raise
        event = self._conclude(action, language)
        if event is not None:
            await self.session.emit(event)

    def _conclude(self, action: Action | None, language: str) -> Handoff | None:
        """What a reply's action does once it is said: a handoff (the signed record, the end of the
        call; returns the ``handoff`` event to send, which the session's end waits for) or a goodbye."""
        if action is not None and action.kind == "handoff" and self.finished is None:
            self.finished = "handoff"
            summary = self.summary(language, action)
            from pipeline import webhook

            webhook.notify_handoff(self.settings, self.session, action.reason, language, summary)  # off the call's path
            self.session.request_end("handoff")  # its end() drains this reply first: the event goes before session_end
            return Handoff(action.reason, language, summary)
        if action is not None and action.kind == "end" and self.finished is None:
            self.finished = "end"
            self.session.request_end("goodbye")
        return None

    async def _dialogue_step(self, gen, hold: dict):
        """One step of the engine's generator in the dialogue pool, bounded by ``dialogue.timeout_s``
        (waiting for a free worker included; raises :class:`DialogueTimeout`). While the first text is
        slow in coming (``session.hold_after_s``: busy workers, a slow backend) the caller hears
        ``session.hold`` once, so a wait is never silence."""
        loop = asyncio.get_running_loop()
        pool = self.services.dialogue_pool
        t0 = loop.time()
        deadline = t0 + self.settings.dialogue.timeout_s
        hold_at = t0 + self.settings.session.hold_after_s if hold["armed"] and self.settings.session.hold_text(hold["language"]) else None
        while True:
            try:
                fut = loop.run_in_executor(pool, _step, gen)
                break
            except PoolFull:  # every worker busy and the queue full: wait outside it
                if hold_at is not None and loop.time() >= hold_at:
                    self._hold(hold)
                if loop.time() >= deadline:
                    raise DialogueTimeout(f"no dialogue worker free within {self.settings.dialogue.timeout_s:g} s") from None
                await asyncio.sleep(_RETRY_S)
        try:
            if hold_at is not None and hold["task"] is None:
                done, _ = await asyncio.wait({fut}, timeout=max(0.0, min(hold_at, deadline) - loop.time()))
                if not done:
                    self._hold(hold)
            # asyncio.timeout_at, not wait_for: on 3.11 wait_for returns the step's result and swallows the
            # session's cancel when both land at once, and the reply then waits forever on a closed outbox
            async with asyncio.timeout_at(deadline):
                item = await fut
        except TimeoutError:
            raise DialogueTimeout(f"no reply within dialogue.timeout_s = {self.settings.dialogue.timeout_s:g} s") from None
        if isinstance(item, str):
            hold["armed"] = False  # the answer has begun
        return item

    def _hold(self, hold: dict) -> None:
        """Say ``session.hold`` ("one moment") as a reply of its own (``dialogue.act`` hold), once per reply."""
        if hold["task"] is not None or not hold["armed"]:
            return
        hold["armed"] = False
        language = hold["language"]
        text = self.settings.session.hold_text(language)
        reply_id = hold["reply_id"]
        metrics.HOLD_NOTICES.inc()

        async def say() -> None:
            models = {"tts": self._tts_id(language)}
            await self.session.emit(Reply(hold["utterance"], reply_id, text, language, provenance=self.provenance(reply_id, models), dialogue={"act": "hold"}))
            await self._speak_only(reply_id, [(language, text)])

        hold["task"] = self.session.spawn(say())

    def _close_later(self, gen) -> None:
        """Close a generator whose step timed out, once that step is over (best effort)."""
        if not hasattr(gen, "close"):
            return
        try:
            asyncio.get_running_loop().run_in_executor(self.services.dialogue_pool, _close, gen)
        except (PoolFull, RuntimeError):
            pass

    async def _speak(
        self, reply_id: str, sentences: asyncio.Queue, language: str, may_send: asyncio.Future, models: dict, timing: dict | None = None,
        interruptible: bool = True, ready: dict | None = None,
    ) -> None:
        """Synthesise sentences as they come; send paced audio once ``may_send`` is set
        (``interruptible``: whether the caller's voice may cut it, carried by every frame;
        ``ready``: speech already synthesised, by sentence, used once instead of synthesising it)."""
        out_fmt = self.session.started.output
        conv = OutputConverter(out_fmt.encoding, out_fmt.sample_rate)
        frame_bytes = out_fmt.encoding.sample_width * out_fmt.sample_rate * FRAME_MS // 1000
        pending = bytearray()
        started = False
        sent_s = 0.0
        t_start = 0.0
        tts = self.services.tts
        pool = self.services.tts_pool
        marking: dict = {"embedder": None}

        def mark_step(gen):
            """The next chunk of speech, watermarked (every synthesised sample) and in the output format."""
            chunk = _step(gen)
            if chunk is _DONE:
                return _DONE
            out = bytearray()
            embedder = marking["embedder"]
            if embedder is None or embedder.rate != chunk.rate:
                start_s = 0.0
                if embedder is not None:  # the voice changed rate mid-reply: keep the carrier in phase
                    out += conv.convert(AudioChunk(embedder.flush(), embedder.rate))
                    start_s = embedder.position / embedder.rate
                embedder = marking["embedder"] = watermark.Embedder(chunk.rate, self._payload(reply_id), start_s=start_s, key=self._wm_key)
            out += conv.convert(AudioChunk(embedder.process(chunk.samples), chunk.rate))
            return bytes(out)
        if tts is None:  # no speech engine: the reply stays text only
            while await sentences.get() is not None:
                pass
            return
        failed = False
        try:
            while True:
                sentence = await sentences.get()
                if sentence is None or failed:
                    if sentence is not None:  # the speech failed: the rest of the text is not spoken
                        continue
                    break
                sentence, lang = sentence if isinstance(sentence, tuple) else (sentence, language)  # (text, language): the disclosure
                done = ready.pop(sentence, None) if ready and lang == language else None
                gen = iter(done) if done is not None else tts.synthesize(sentence, lang)
                while True:
                    try:  # synthesis, watermark and conversion off the event loop (a sentence's marking takes tens of ms)
                        data = await self._tts_step(pool, mark_step, gen)
                    except Exception as e:  # no voice could say it (no fallback, or the fallback failed too)
                        metrics.TTS_FAILURES.inc()
                        log.error("session %s: speech of reply %s failed: %s", self.session.id, reply_id, str(e).splitlines()[0] if str(e) else type(e).__name__)
                        failed = True
                        break
                    if data is _DONE:
                        break
                    pending += data
                    if not may_send.done():
                        continue
                    if not started:
                        started = True
                        t_start = time.monotonic()
                        await self._audio_start(reply_id, out_fmt, models, interruptible)
                    sent_s = await self._send_paced(reply_id, pending, frame_bytes, out_fmt, t_start, sent_s, final=False, timing=timing, interruptible=interruptible)
            embedder = marking["embedder"]
            if embedder is not None:  # the embedder lags by < 24 ms: the reply's last samples
                pending += conv.convert(AudioChunk(embedder.flush(), embedder.rate), last=True)
            await may_send
            if not started:
                started = True
                t_start = time.monotonic()
                await self._audio_start(reply_id, out_fmt, models, interruptible)
            sent_s = await self._send_paced(reply_id, pending, frame_bytes, out_fmt, t_start, sent_s, final=True, timing=timing, interruptible=interruptible)
            self.speaking = False
            await self.session.emit(AudioEnd(reply_id, failed))  # a failed speech ends marked as interrupted
        except asyncio.CancelledError:
            self.speaking = False
            if started:
                self.interrupted.add(reply_id)
                self.session.outbox_put_nowait(AudioEnd(reply_id, True))
            raise

    async def _tts_step(self, pool, fn, *args):
        """One synthesis step in the TTS pool; while its queue is full, wait and ask again (each
        step is bounded by the engine's own timeout, so the wait is too)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await loop.run_in_executor(pool, fn, *args)
            except PoolFull:
                await asyncio.sleep(_RETRY_S)

    async def _audio_start(self, reply_id: str, out_fmt, models: dict, interruptible: bool = True) -> None:
        # never start talking over a caller who is speaking (a reply to an earlier utterance
        # can be ready while the next one is under way): wait for their pause. The disclosure
        # (not interruptible) is the first audio of the session and does not wait.
        while self.session.in_utterance and interruptible:
            await asyncio.sleep(0.02)
        self.speaking = True
        await self.session.emit(
            AudioStart(
                reply_id, out_fmt.encoding.value, out_fmt.sample_rate, watermark=watermark.format_payload(self._payload(reply_id)),
                provenance=self.provenance(reply_id, models),
            )
        )

    def _payload(self, reply_id: str) -> int:
        """The watermark payload of a reply: the system id and a hash of session and reply ids."""
        return watermark.payload_for(SYSTEM_ID, f"{self.session.id}:{reply_id}")

    async def _send_paced(
        self, reply_id, pending: bytearray, frame_bytes: int, out_fmt, t_start: float, sent_s: float, final: bool, timing: dict | None = None,
        interruptible: bool = True,
    ) -> float:
        bytes_per_s = out_fmt.encoding.sample_width * out_fmt.sample_rate
        paced = self.session.started.pacing == "realtime"
        while len(pending) >= frame_bytes or (final and pending):
            ahead = sent_s - (time.monotonic() - t_start)
            if paced and ahead > LEAD_S:
                await asyncio.sleep(ahead - LEAD_S)
            frame = bytes(pending[:frame_bytes])
            del pending[:frame_bytes]
            await self.session.emit(AudioFrame(reply_id, frame, interruptible))
            if sent_s == 0.0 and timing:  # the reply's first audio is on its way
                _observe_first_audio(timing)
            sent_s += len(frame) / bytes_per_s
        return sent_s

    def summary(self, language: str, action: Action) -> str:
        said = [t.text for t in self.history if t.role == "user"][-3:]
        topic = self.state.last_entry or "-"
        return redact(f"reason: {action.reason}; language: {language}; topic: {topic}; caller said: " + " | ".join(said))
