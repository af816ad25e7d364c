"""LLM dialogue backends grounded by knowledge-base retrieval.

Three backends share one grounding and parsing core (:class:`GroundedEngine`):

- :class:`TransformersEngine`: a local causal LM through ``transformers``
  (the ``llm`` extra), streamed with ``TextIteratorStreamer``;
- :class:`Ct2Engine`: a CTranslate2 ``Generator`` over a converted model
  directory, streamed step by step with incremental detokenisation;
- :class:`OpenAIEngine`: any OpenAI-compatible ``/chat/completions``
  endpoint (vLLM, llama.cpp server, TGI, ...) with ``stream: true`` over
  Server-Sent Events, standard library only.

Each turn: the last user turn is sent to the retriever; if the best passage
scores below ``threshold`` the model is not called at all (the caller is asked
to rephrase, and after ``max_misunderstood`` such turns handed off, like the
KB engine); otherwise the top-k passages and the recent conversation go into
a grounded prompt (:data:`SYSTEM_PROMPT`), the model's output is streamed
through :class:`ReplyParser` (markdown, list bullets and URLs stripped; the
``[HANDOFF]`` / ``[OPERATOR]`` markers become an :class:`Action`), and
generation is bounded by ``max_new_tokens`` and a wall-clock ``timeout_s``.

Engines hold no per-session state; ``respond`` is a blocking generator that
the session steps in a worker thread, and closing it stops generation.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import queue
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from models.dialogue.base import Action, DialogueState, Passage, Retriever, Turn
from models.errors import ModelError
from models.net import is_local_host

log = logging.getLogger("dauys.dialogue")

__all__ = [
    "Ct2Engine",
    "DialogueError",
    "GenerationInfo",
    "GroundedEngine",
    "LANGUAGE_NAMES",
    "LlmConfig",
    "MARKERS",
    "OpenAIEngine",
    "ReplyParser",
    "SYSTEM_PROMPT",
    "TransformersEngine",
]


class DialogueError(RuntimeError):
    """A dialogue backend failed while answering (server down, HTTP error, malformed stream, timeout).

    The message is one line and says what failed and where."""


# ---------------------------------------------------------------------------
# Grounding: the prompt
# ---------------------------------------------------------------------------

HANDOFF_MARKER = "[HANDOFF]"
"""The model says this (and nothing else) when the passages do not contain the answer."""
OPERATOR_MARKER = "[OPERATOR]"
"""The model says this (and nothing else) when the caller asks for a human."""
MARKERS: dict[str, str] = {HANDOFF_MARKER: "not_understood", OPERATOR_MARKER: "user_request"}
"""Marker -> handoff reason."""

LANGUAGE_NAMES: dict[str, str] = {
    "kk": "Kazakh (Cyrillic script)",
    "ru": "Russian",
    "uz": "Uzbek (Latin script)",
    "ky": "Kyrgyz (Cyrillic script)",
    "tr": "Turkish",
    "az": "Azerbaijani (Latin script)",
    "tt": "Tatar (Cyrillic script)",
    "tk": "Turkmen (Latin script)",
    "ba": "Bashkir (Cyrillic script)",
    "ug": "Uyghur (Arabic script)",
    "crh": "Crimean Tatar (Latin script)",
    "en": "English",
}
"""The language named in the prompt, with the script the TTS voices expect."""

SYSTEM_PROMPT = """\
You are the voice assistant of a customer-support phone line. Everything you write is spoken aloud to the caller. \
The caller's words come from speech recognition and may contain recognition errors: read them charitably.

Rules:
1. Answer ONLY with facts from the knowledge-base passages below. Do not use any other knowledge. Never guess or invent numbers, prices, dates, names or procedures.
2. Reply in {language} only, even if the passages or the caller use another language.
3. Be brief: one to three short spoken sentences. Plain text only: no markdown, no lists, no headings, no links or URLs, no emoji.
4. If the passages do not contain the answer, reply with exactly {handoff_marker} and nothing else.
5. If the caller asks for a human, an operator or a live agent, reply with exactly {operator_marker} and nothing else.

Knowledge-base passages:
{passages}"""
"""The grounded system prompt (English: see docs/llm.md for why). Placeholders:
``{language}``, ``{language_code}``, ``{handoff_marker}``, ``{operator_marker}``, ``{passages}``."""

DEFAULT_REPHRASE: dict[str, str] = {
    "kk": "Кешіріңіз, сұрағыңызды түсінбедім. Басқаша айтып көріңізші.",
    "ru": "Извините, я не понял вопрос. Пожалуйста, сформулируйте его иначе.",
    "uz": "Kechirasiz, savolingizni tushunmadim. Iltimos, boshqacha aytib bering.",
    "ky": "Кечириңиз, сурооңузду түшүнгөн жокмун. Башкача айтып бериңизчи.",
    "tr": "Özür dilerim, sorunuzu anlayamadım. Lütfen başka bir şekilde söyler misiniz?",
    "az": "Bağışlayın, sualınızı başa düşmədim. Zəhmət olmasa, başqa cür deyin.",
    "tt": "Гафу итегез, соравыгызны аңламадым. Зинһар, башкачарак әйтегез.",
    "en": "Sorry, I did not understand the question. Could you say it another way?",
}
DEFAULT_HANDOFF: dict[str, str] = {
    "kk": "Сізді операторға қосып жатырмын, күте тұрыңыз.",
    "ru": "Соединяю вас с оператором, пожалуйста, подождите.",
    "uz": "Sizni operatorga ulayapman, iltimos, kuting.",
    "en": "Connecting you to an operator, please hold.",
}


def _by_language(texts: Mapping[str, str], language: str) -> str:
    return texts.get(language) or texts.get("ru") or texts.get("en") or next(iter(texts.values()), "")


@dataclass(frozen=True)
class LlmConfig:
    """Grounding and generation settings shared by the three backends (the ``[dialogue]`` section)."""

    top_k: int = 3
    """Passages put into the prompt."""
    threshold: float = 0.3
    """Below this best-passage score (0..1) the model is not called: the caller is asked to rephrase."""
    max_misunderstood: int = 2
    """Consecutive not-understood turns before a handoff (reason not_understood)."""
    history_turns: int = 6
    """Recent conversation turns in the prompt (the last user turn included)."""
    max_new_tokens: int = 160
    timeout_s: float = 20.0
    """Wall-clock bound of one reply: no text by then is a DialogueError, text is cut there."""
    temperature: float = 0.2
    """0 = greedy."""
    top_p: float = 1.0
    max_passage_chars: int = 800
    """Each passage answer is cut to this many characters in the prompt."""
    rephrase: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REPHRASE))
    """What is said when the question is not understood, by language."""
    handoff_text: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HANDOFF))
    """What is said before a handoff, by language (pass session.handoff)."""
    system_prompt: str = SYSTEM_PROMPT
    system_role: bool = True
    """False: put the instructions into the first user message (for models whose template has no system role)."""
    follow_passage_actions: bool = True
    """After a grounded answer, yield the best passage's action (handoff/end), as the KB engine does."""
    clarifier: Any = None
    """A :class:`models.dialogue.clarify.Clarifier` over the knowledge base: the model answers only
    once the caller's question is understood (confirmed or chosen where unsure), as the KB engine
    does. None: the plain ``threshold`` rule (rephrase below it, answer above)."""

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.max_new_tokens < 1 or self.timeout_s <= 0 or self.history_turns < 1:
            raise ValueError("top_k, max_new_tokens, history_turns must be >= 1 and timeout_s > 0")


@dataclass
class GenerationInfo:
    """What one generation did (filled while streaming; read after)."""

    tokens: int = 0
    """New tokens generated (OpenAI backend: content chunks received)."""
    finish_reason: str = ""
    """stop | length | timeout | cancelled"""
    first_token_s: float | None = None
    total_s: float = 0.0


# ---------------------------------------------------------------------------
# Parsing the streamed output
# ---------------------------------------------------------------------------

_MARKDOWN_CHARS = str.maketrans("", "", "*_`#~|[]{}\ufffd")  # and undecodable bytes
_BULLET = re.compile(r"(?:[-*+•·–—>]+|\d{1,2}[.)])")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)?")
_URL = re.compile(r"\(?(?:https?://|www\.)[^\s)]*\)?", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b\u200e\u200f\ufeff]")  # not ZWNJ/ZWJ (Uyghur, Persian)
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")
_LONG_WORD = 48


class ReplyParser:
    """Turns raw streamed model text into speakable pieces, and spots the handoff markers.

    Text is released word by word (a word is held until whitespace follows it),
    so a marker or a stop string split across tokens is never spoken.  Markdown
    emphasis/heading/code characters, list bullets and URLs are removed;
    a line break becomes a sentence break.  ``feed`` and ``flush`` return the
    clean text to yield (possibly empty); after a marker or stop string
    ``done`` is true and ``reason`` holds the marker's handoff reason (None
    for a stop string).
    """

    def __init__(self, markers: Mapping[str, str] = MARKERS, stops: Sequence[str] = ()) -> None:
        self._markers = {m.lower(): r for m, r in markers.items()}
        self._marker_re = re.compile("|".join(re.escape(m) for m in markers), re.I) if markers else None
        self._stops = tuple(s for s in stops if s)
        self._buf = ""
        self.done = False
        self.reason: str | None = None
        self.emitted = False
        self._space = False
        self._line_start = True
        self._last = ""

    # -- public ------------------------------------------------------------
    def feed(self, piece: str) -> str:
        if self.done or not piece:
            return ""
        self._buf += piece
        end = self._find_end()
        if end is not None:
            i, reason = end
            text, self._buf = self._buf[:i], ""
            self.done, self.reason = True, reason
            return self._clean(text)
        j = self._safe_len()
        text, self._buf = self._buf[:j], self._buf[j:]
        return self._clean(text)

    def flush(self) -> str:
        """The end of the stream: release what is held (an unfinished marker is dropped)."""
        if self.done:
            return ""
        self.done = True
        text, self._buf = self._buf.rstrip(), ""
        low = text.lower()
        for held in list(self._markers) + [s.lower() for s in self._stops]:
            for n in range(min(len(held) - 1, len(low)), 0, -1):
                if low.endswith(held[:n]):
                    text = text[: len(text) - n]
                    break
        return self._clean(text)

    # -- internals ---------------------------------------------------------
    def _find_end(self) -> tuple[int, str | None] | None:
        best: tuple[int, str | None] | None = None
        if self._marker_re is not None:
            m = self._marker_re.search(self._buf)
            if m:
                best = (m.start(), self._markers[m.group(0).lower()])
        for s in self._stops:
            i = self._buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, None)
        return best

    def _safe_len(self) -> int:
        buf = self._buf
        m = _LAST_SPACE.search(buf)
        j = m.end() if m else 0
        if j == 0 and len(buf) > _LONG_WORD and "[" not in buf:
            j = len(buf)  # a very long run without spaces: do not hold it forever
        low = buf.lower()
        for held in list(self._markers) + [s.lower() for s in self._stops]:
            for n in range(min(len(held) - 1, len(low)), 0, -1):
                if low.endswith(held[:n]):
                    j = min(j, len(buf) - n)
                    break
        return j

    def _clean(self, text: str) -> str:
        out: list[str] = []
        for tok in re.split(r"(\s+)", text):
            if not tok:
                continue
            if tok.isspace():
                if "\n" in tok:
                    if self.emitted and self._last not in ".!?…:;,":
                        out.append(".")
                        self._last = "."
                    self._line_start = True
                if self.emitted:
                    self._space = True
                continue
            word = self._clean_word(tok)
            self._line_start = False
            if not word:
                continue
            if self._space:
                out.append(" ")
                self._space = False
            out.append(word)
            self.emitted = True
            self._last = word[-1]
        return "".join(out)

    def _clean_word(self, tok: str) -> str:
        if self._line_start and _BULLET.fullmatch(tok):
            return ""
        tok = _LINK_TARGET.sub("]", tok)
        tok = _URL.sub("", tok)
        return _CONTROL.sub("", tok.translate(_MARKDOWN_CHARS))


# ---------------------------------------------------------------------------
# The shared core
# ---------------------------------------------------------------------------


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _passage_action(passage: Passage) -> Action | None:
    """The KB entry's action as an Action: ``handoff`` / ``end``, optionally ``KIND:REASON``.

    Default reasons are the KB engine's: handoff -> user_request, end -> goodbye."""
    act = (passage.action or "").strip().lower()
    if not act:
        return None
    kind, _, reason = act.partition(":")
    if kind == "handoff":
        return Action("handoff", reason or "user_request", {"entry": passage.id})
    if kind == "end":
        return Action("end", reason or "goodbye", {"entry": passage.id})
    return None


class GroundedEngine:
    """Retrieval, prompt, threshold and marker handling shared by the LLM backends.

    Subclasses set ``name``/``model_id`` and implement :meth:`stream`.
    """

    name = "llm"
    model_id = ""
    stops: tuple[str, ...] = ()
    """Raw-text stop strings (the plain prompt format's next-turn labels)."""

    def __init__(self, retriever: Retriever, config: LlmConfig | None = None) -> None:
        self.retriever = retriever
        self.config = config or LlmConfig()
        self._lock = threading.Lock()
        self.generations = 0
        """How many times the model was called (process-wide count)."""

    @property
    def max_misunderstood(self) -> int:
        """Misunderstood turns in a row after which the call is handed off."""
        return self.config.max_misunderstood

    # -- prompt --------------------------------------------------------------
    def language_name(self, language: str) -> str:
        return LANGUAGE_NAMES.get(language, language)

    def system_text(self, language: str, passages: Sequence[Passage]) -> str:
        cfg = self.config
        blocks = []
        for i, p in enumerate(passages, 1):
            answer = p.answer.strip()
            if len(answer) > cfg.max_passage_chars:
                answer = answer[: cfg.max_passage_chars].rstrip() + "…"
            blocks.append(f"[{i}] Question: {p.question.strip()}\nAnswer: {answer}")
        return cfg.system_prompt.format(
            language=self.language_name(language),
            language_code=language,
            handoff_marker=HANDOFF_MARKER,
            operator_marker=OPERATOR_MARKER,
            passages="\n\n".join(blocks) if blocks else "(none)",
        )

    def build_messages(self, history: Sequence[Turn], language: str, passages: Sequence[Passage]) -> list[dict]:
        """Chat messages: the grounded system message, then the last ``history_turns`` turns.

        Consecutive turns of one role are merged and the conversation starts with
        the user, so strict-alternation templates (Mistral, Gemma) accept it."""
        turns: list[dict] = []
        for t in list(history)[-self.config.history_turns :]:
            text = t.text.strip()
            if not text:
                continue
            if turns and turns[-1]["role"] == t.role:
                turns[-1]["content"] += "\n" + text
            else:
                turns.append({"role": t.role, "content": text})
        while turns and turns[0]["role"] != "user":
            turns.pop(0)
        system = self.system_text(language, passages)
        if self.config.system_role:
            return [{"role": "system", "content": system}, *turns]
        if turns:
            turns[0] = {"role": "user", "content": system + "\n\n" + turns[0]["content"]}
            return turns
        return [{"role": "user", "content": system}]

    def retrieve(self, text: str, language: str) -> list[Passage]:
        passages = list(self.retriever(text, language, self.config.top_k))
        passages.sort(key=lambda p: p.score, reverse=True)
        return passages[: self.config.top_k]

    # -- the turn ------------------------------------------------------------
    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        """Raw model text for ``messages``, bounded by max_new_tokens and timeout_s; closing it stops generation."""
        raise NotImplementedError

    def respond(self, history: list[Turn], language: str, state: DialogueState) -> Iterator[str | Action]:
        user = next((t for t in reversed(history) if t.role == "user"), None)
        if user is None or (not user.text.strip() and user.dtmf is None):
            return
        clarifier = self.config.clarifier
        if clarifier is not None:
            outcome = clarifier.step(user, language, state)
            if outcome.entry is None:  # a clarifying question, a rephrase or a handoff: the knowledge base's own words
                if outcome.text:
                    yield outcome.text
                if outcome.action is not None:
                    yield outcome.action
                return
            # understood (perhaps after "yes"): the model answers the question, grounded on that entry first
            passages = [p for p in self.retrieve(outcome.question, language) if p.id != outcome.entry.id]
            best = clarifier.kb.passage(outcome.entry, language, outcome.score)
            passages = [best, *passages][: self.config.top_k]
            if user.text != outcome.question:
                history = [Turn("user", outcome.question, language) if t is user else t for t in history]
        else:
            if not user.text.strip():
                return
            passages = self.retrieve(user.text, language)
            best = passages[0] if passages else None
            if best is None or best.score < self.config.threshold:
                yield from self._not_understood(language, state, "below_threshold", best)
                return
        messages = self.build_messages(history, language, passages)
        parser = ReplyParser(MARKERS, self.stops)
        info = GenerationInfo()
        with self._lock:
            self.generations += 1
        gen = self.stream(messages, info)
        try:
            for raw in gen:
                text = parser.feed(raw)
                if text:
                    yield text
                if parser.done:
                    info.finish_reason = info.finish_reason or "stop"
                    break
            else:
                text = parser.flush()
                if text:
                    yield text
        finally:
            gen.close()
        log.debug(
            "%s: %d tokens, %s, first %.2fs, total %.2fs, best %s %.2f",
            self.name, info.tokens, info.finish_reason or "stop", info.first_token_s or -1, info.total_s, best.id, best.score,
        )
        if parser.reason is not None:
            handoff = _by_language(self.config.handoff_text, language)
            if handoff:
                yield (" " if parser.emitted else "") + handoff
            yield Action("handoff", parser.reason, {"source": "model", "entry": best.id})
            return
        if not parser.emitted:
            yield from self._not_understood(language, state, "empty_reply", best)
            return
        state.misunderstood = 0
        state.last_entry = best.id
        if self.config.follow_passage_actions:
            action = _passage_action(best)
            if action is not None:
                yield action

    def _not_understood(self, language: str, state: DialogueState, why: str, best: Passage | None) -> Iterator[str | Action]:
        state.misunderstood += 1
        data = {"source": why, "misunderstood": state.misunderstood, "best": best.id if best else None}
        if state.misunderstood >= self.config.max_misunderstood:
            text = _by_language(self.config.handoff_text, language)
            if text:
                yield text
            yield Action("handoff", "not_understood", data)
            return
        yield _by_language(self.config.rephrase, language)

    def _timed_out(self, info: GenerationInfo, produced: bool) -> None:
        """The wall clock ran out: text so far stands (cut), none at all is an error."""
        info.finish_reason = "timeout"
        if not produced:
            raise DialogueError(f"{self.name} backend: no reply within {self.config.timeout_s:g} s ({self.model_id})")
        log.warning("%s: reply cut at timeout_s=%g", self.name, self.config.timeout_s)


PLAIN_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def plain_prompt(messages: Sequence[dict]) -> str:
    """The prompt for a model without a chat template: ``Role: text`` blocks, then ``Assistant:``."""
    parts = [f"{PLAIN_LABELS.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


PLAIN_STOPS = ("\nUser:", "\nSystem:", "\nAssistant:")


def _dtype_kwarg(transformers) -> str:
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


# ---------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------


class TransformersEngine(GroundedEngine):
    """A local causal LM through ``transformers`` (``pip install 'dauys[llm]'``)."""

    name = "transformers"

    def __init__(
        self,
        model: str | Path,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        generate_kwargs: Mapping | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(retriever, config)
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise ModelError(
                f"the transformers dialogue backend needs the llm extra: pip install 'dauys[llm]' ({e})"
            ) from None
        self._torch = torch
        self._transformers = transformers
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if dtype == "auto":
            torch_dtype = "auto" if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        source = str(Path(model).expanduser()) if Path(model).expanduser().exists() else str(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=trust_remote_code, **{_dtype_kwarg(transformers): torch_dtype}
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the dialogue model {model!r} with transformers: {_one_line(e)}") from None
        self.model.to(device)
        self.model.eval()
        self.model_id = str(getattr(self.model.config, "_name_or_path", "") or model)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.stops = () if self.chat_template else PLAIN_STOPS

    def build_prompt(self, messages: list[dict]) -> str:
        if self.chat_template:
            try:
                return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as e:  # e.g. a template without a system role
                if messages and messages[0]["role"] == "system" and len(messages) > 1:
                    log.info("chat template refused a system message (%s); merging it into the user turn", _one_line(e))
                    merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}, *messages[2:]]
                    return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
                raise
        return plain_prompt(messages)

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        torch = self._torch
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        prompt = self.build_prompt(messages)
        inputs = self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=not self.chat_template, return_token_type_ids=False
        ).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        stop = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=cfg.timeout_s)
        kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            max_time=cfg.timeout_s,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancel()]),
        )
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(do_sample=False)
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.eos_token_id
        kwargs.update(self.generate_kwargs)
        result: dict = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **kwargs)
                result["tokens"] = int(out.shape[1] - prompt_len)
            except BaseException as e:  # surfaced in the consumer
                result["error"] = e
                streamer.end()

        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        thread = threading.Thread(target=run, name="dauys-llm-generate", daemon=True)
        thread.start()
        produced = False
        try:
            while True:
                streamer.timeout = max(0.01, deadline - time.monotonic())  # the wait, bounded by what is left
                try:
                    text = next(streamer)
                except StopIteration:
                    break
                except queue.Empty:
                    stop.set()
                    self._timed_out(info, produced)
                    return
                if text:
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield text
                if time.monotonic() > deadline:
                    stop.set()
                    self._timed_out(info, produced)
                    return
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if "error" in result:
                raise DialogueError(f"transformers backend: generation failed: {_one_line(result['error'])}")
            info.tokens = result.get("tokens", 0)
            if not info.finish_reason:
                if info.tokens >= cfg.max_new_tokens:
                    info.finish_reason = "length"
                elif time.monotonic() - t0 >= cfg.timeout_s:
                    info.finish_reason = "timeout"
                else:
                    info.finish_reason = "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            stop.set()
            info.total_s = time.monotonic() - t0


# ---------------------------------------------------------------------------
# CTranslate2
# ---------------------------------------------------------------------------


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class _Ct2Tokenizer:
    """The tokenizer beside a CTranslate2 model: transformers' AutoTokenizer, or tokenizers + jinja2."""

    def __init__(self, model_dir: Path, kind: str) -> None:
        self.hf = None
        if kind in ("auto", "transformers"):
            try:
                from transformers import AutoTokenizer
            except ImportError:
                if kind == "transformers":
                    raise ModelError("tokenizer='transformers' needs the llm extra: pip install 'dauys[llm]'") from None
            else:
                try:
                    self.hf = AutoTokenizer.from_pretrained(str(model_dir))
                except (OSError, ValueError) as e:
                    if kind == "transformers" or not (model_dir / "tokenizer.json").is_file():
                        raise ModelError(f"cannot load the tokenizer in {model_dir}: {_one_line(e)}") from None
        if self.hf is not None:
            self.template = getattr(self.hf, "chat_template", None) or None
            self.bos_token = self.hf.bos_token
            self.eos_token = self.hf.eos_token
            self.special = {}
            return
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{model_dir} has no tokenizer.json (copy it in when converting: copy_files=['tokenizer.json', ...])")
        self.tok = Tokenizer.from_file(str(path))
        cfg: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            p = model_dir / name
            if p.is_file():
                cfg.update(json.loads(p.read_text(encoding="utf-8")))
        self.special = {k: _token_str(v) for k, v in cfg.items() if k.endswith("_token") and _token_str(v) is not None}
        self.bos_token = self.special.get("bos_token")
        self.eos_token = self.special.get("eos_token")
        template_file = model_dir / "chat_template.jinja"
        self.template = template_file.read_text(encoding="utf-8") if template_file.is_file() else cfg.get("chat_template")
        if isinstance(self.template, list):  # named templates: take the default
            self.template = next((t["template"] for t in self.template if t.get("name") == "default"), None)
        self._jinja = None
        if self.template:
            try:
                import jinja2
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError:
                log.warning("jinja2 is not installed: %s's chat template is ignored (plain prompt format)", model_dir)
                self.template = None
            else:

                def raise_exception(message):
                    raise jinja2.exceptions.TemplateError(message)

                def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
                env.filters["tojson"] = tojson
                env.globals["raise_exception"] = raise_exception
                env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
                self._jinja = env.from_string(self.template)

    def apply_template(self, messages: list[dict]) -> str:
        if self.hf is not None:
            return self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._jinja.render(messages=messages, add_generation_prompt=True, **self.special)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if self.hf is not None:
            return list(self.hf(text, add_special_tokens=add_special_tokens)["input_ids"])
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def ids_to_tokens(self, ids: list[int]) -> list[str]:
        if self.hf is not None:
            return list(self.hf.convert_ids_to_tokens(ids))
        return [self.tok.id_to_token(i) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        if self.hf is not None:
            i = self.hf.convert_tokens_to_ids(token)
            return None if i is None or i == self.hf.unk_token_id and token != self.hf.unk_token else i
        return self.tok.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        if self.hf is not None:
            return self.hf.decode(ids, skip_special_tokens=True)
        return self.tok.decode(ids, skip_special_tokens=True)


class Ct2Engine(GroundedEngine):
    """A CTranslate2 ``Generator`` over a converted model directory (tokenizer files beside ``model.bin``)."""

    name = "ctranslate2"

    def __init__(
        self,
        model_dir: str | Path,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        device_index: int = 0,
        inter_threads: int = 1,
        intra_threads: int = 0,
        tokenizer: str = "auto",
        end_tokens: Sequence[str] | None = None,
    ) -> None:
        super().__init__(retriever, config)
        import ctranslate2

        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "model.bin").is_file():
            raise ModelError(
                f"{model_dir} is not a CTranslate2 model directory (no model.bin); convert one with "
                "ct2-transformers-converter --model MODEL --output_dir DIR --copy_files tokenizer.json tokenizer_config.json"
            )
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        try:
            self.generator = ctranslate2.Generator(
                str(model_dir), device=device, device_index=device_index, compute_type=compute_type,
                inter_threads=inter_threads, intra_threads=intra_threads,
            )
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the CTranslate2 model in {model_dir}: {_one_line(e)}") from None
        self.tokenizer = _Ct2Tokenizer(model_dir, tokenizer)
        self.model_id = model_dir.name
        self.chat_template = bool(self.tokenizer.template)
        self.stops = () if self.chat_template else PLAIN_STOPS
        ends = list(end_tokens or [])
        if not ends:
            if self.tokenizer.eos_token:
                ends.append(self.tokenizer.eos_token)
            gen_cfg = model_dir / "generation_config.json"
            if gen_cfg.is_file():
                eos = json.loads(gen_cfg.read_text(encoding="utf-8")).get("eos_token_id")
                for i in eos if isinstance(eos, list) else [eos] if eos is not None else []:
                    tok = self.tokenizer.ids_to_tokens([int(i)])[0]
                    if tok and tok not in ends:
                        ends.append(tok)
        self.end_tokens = ends
        self._end_ids = {i for i in (self.tokenizer.token_to_id(t) for t in ends) if i is not None}

    def build_prompt(self, messages: list[dict]) -> str:
        if self.chat_template:
            try:
                return self.tokenizer.apply_template(messages)
            except Exception as e:
                if messages and messages[0]["role"] == "system" and len(messages) > 1:
                    log.info("chat template refused a system message (%s); merging it into the user turn", _one_line(e))
                    merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}, *messages[2:]]
                    return self.tokenizer.apply_template(merged)
                raise
        return plain_prompt(messages)

    def prompt_tokens(self, messages: list[dict]) -> list[str]:
        ids = self.tokenizer.encode(self.build_prompt(messages), add_special_tokens=not self.chat_template)
        return self.tokenizer.ids_to_tokens(ids)

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        tokens = self.prompt_tokens(messages)
        steps: queue.Queue = queue.Queue()
        closed = threading.Event()

        def on_step(step) -> bool:
            steps.put(step)
            return closed.is_set()

        kwargs = dict(
            max_length=cfg.max_new_tokens,
            beam_size=1,
            include_prompt_in_result=False,
            callback=on_step,
            asynchronous=True,
        )
        if cfg.temperature > 0:
            kwargs.update(sampling_temperature=cfg.temperature, sampling_topk=0, sampling_topp=cfg.top_p)
        else:
            kwargs.update(sampling_topk=1)
        if self.end_tokens:
            kwargs["end_token"] = list(self.end_tokens)
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        try:
            async_results = self.generator.generate_batch([tokens], **kwargs)
        except (RuntimeError, ValueError) as e:
            raise DialogueError(f"ctranslate2 backend: generation failed: {_one_line(e)}") from None

        def wait() -> None:  # ends the step queue (and carries a failure) once the batch is done
            try:
                for r in async_results:
                    r.result()
            except Exception as e:
                steps.put(e)
            steps.put(None)

        threading.Thread(target=wait, name="dauys-ct2-generate", daemon=True).start()
        ids: list[int] = []
        prefix = read = 0
        produced = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._timed_out(info, produced)
                    return
                try:
                    step = steps.get(timeout=remaining)
                except queue.Empty:
                    self._timed_out(info, produced)
                    return
                if step is None:
                    break
                if isinstance(step, Exception):
                    raise DialogueError(f"ctranslate2 backend: generation failed: {_one_line(step)}")
                if step.token_id in self._end_ids:
                    info.finish_reason = "stop"
                    break
                info.tokens += 1
                ids.append(step.token_id)
                # incremental detokenisation (vLLM's prefix/read offsets): stable under
                # byte-level BPE partial characters and SentencePiece leading spaces
                before = self.tokenizer.decode(ids[prefix:read])
                now = self.tokenizer.decode(ids[prefix:])
                if len(now) > len(before) and not now.endswith("\ufffd"):
                    piece = now[len(before):]
                    prefix, read = read, len(ids)
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield piece
                if step.is_last:
                    break
            tail = self.tokenizer.decode(ids[prefix:])[len(self.tokenizer.decode(ids[prefix:read])):]
            if tail:  # what was held back for an incomplete character
                yield tail
            if not info.finish_reason:
                info.finish_reason = "length" if info.tokens >= cfg.max_new_tokens else "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            closed.set()
            info.total_s = time.monotonic() - t0


# ---------------------------------------------------------------------------
# OpenAI-compatible HTTP (vLLM, llama.cpp server, ...)
# ---------------------------------------------------------------------------


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Is ``host`` one of ``allowed``: an exact name, ``*.suffix``, an IP or a CIDR network?"""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        ip = None
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("*.") and ip is None:
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif "/" in entry and ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif host == entry:
            return True
    return False


def check_destination(base_url: str, allowed_hosts: Sequence[str] = (), allow_external: bool = False) -> str:
    """Where caller text would go: "local" (this machine), "allowed" (https to a host of
    ``dialogue.allowed_hosts``) or "external" (only with ``allow_external``); else ModelError.

    Law 230-VIII and the personal-data law: caller text stays on the machine unless the
    operator configured where it may go.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ModelError(f"dialogue.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
    if is_local_host(host):
        return "local"
    if allow_external:
        return "external"
    if parts.scheme != "https":
        raise ModelError(
            f"dialogue.base_url {parts.scheme}://{host}/...: caller text would cross the network unencrypted; "
            "use https (or set dialogue.allow_external = true)"
        )
    if not host_allowed(host, allowed_hosts):
        raise ModelError(
            f"dialogue.base_url host {host!r} is not in dialogue.allowed_hosts: caller text may only leave this machine "
            "for hosts you list there (or set dialogue.allow_external = true)"
        )
    return "allowed"


class OpenAIEngine(GroundedEngine):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, streamed (``stream: true``) over SSE.

    ``base_url`` includes the API prefix, e.g. ``http://127.0.0.1:8000/v1``.
    The key comes from ``api_key`` or the environment variable ``api_key_env``.
    """

    name = "openai"
    MAX_ERROR_BODY = 8192
    MAX_LINE = 1 << 20

    def __init__(
        self,
        base_url: str,
        model: str,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "DAUYS_LLM_API_KEY",
        extra_body: Mapping | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(retriever, config)
        self.redact = redact
        """Applied to every message's text before it is sent (models.privacy.redact from load_dialogue)."""
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"dialogue.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
        if not model:
            raise ModelError("the openai dialogue backend needs dialogue.model (the served model name)")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = (parts.path or "") + "/chat/completions"
        self.model = model
        self.model_id = model
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None) or None
        self.extra_body = dict(extra_body or {})

    def request_body(self, messages: list[dict]) -> dict:
        cfg = self.config
        if self.redact is not None:
            messages = [{**m, "content": self.redact(m["content"])} if isinstance(m.get("content"), str) else m for m in messages]
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
        }
        if cfg.top_p < 1:
            body["top_p"] = cfg.top_p
        body.update(self.extra_body)
        return body

    def _fail(self, what: str) -> DialogueError:
        return DialogueError(f"openai backend at {self.base_url}: {_one_line(what)}")

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        payload = json.dumps(self.request_body(messages), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Content-Length": str(len(payload)),
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=cfg.timeout_s, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=cfg.timeout_s)
        produced = False
        try:
            try:
                conn.request("POST", self._path, body=payload, headers=headers)
                sock = conn.sock  # kept: getresponse() drops conn.sock when the server will close
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                resp = conn.getresponse()
            except socket.timeout:
                raise self._fail(f"no response within {cfg.timeout_s:g} s") from None
            except ConnectionRefusedError:
                raise self._fail("connection refused (is the server running?)") from None
            except (OSError, http.client.HTTPException) as e:
                raise self._fail(f"request failed: {type(e).__name__}: {e}") from None
            if resp.status >= 400:
                raise self._fail(f"HTTP {resp.status}: {self._error_message(resp, sock, deadline)}")
            ctype = resp.getheader("Content-Type", "")
            if "json" in ctype and "event-stream" not in ctype:  # a server that ignored stream: true
                raise self._fail(f"expected a text/event-stream answer, got {ctype}")
            for event in self._events(resp, sock, deadline):
                if event is None:  # the deadline passed
                    self._timed_out(info, produced)
                    return
                if event.strip() == "[DONE]":
                    break
                try:
                    chunk = json.loads(event)
                except json.JSONDecodeError:
                    raise self._fail(f"malformed stream chunk: {event[:80]!r}") from None
                if not isinstance(chunk, dict):
                    raise self._fail(f"malformed stream chunk: {event[:80]!r}")
                if chunk.get("error"):
                    err = chunk["error"]
                    raise self._fail(f"error in stream: {err.get('message', err) if isinstance(err, dict) else err}")
                choices = chunk.get("choices")
                if not isinstance(choices, list):
                    raise self._fail(f"malformed stream chunk (no choices): {event[:80]!r}")
                if not choices:  # e.g. a usage-only chunk
                    continue
                choice = choices[0] if isinstance(choices[0], dict) else {}
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if text:
                    info.tokens += 1
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield text
                if choice.get("finish_reason"):
                    info.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
            else:
                if not info.finish_reason and not produced:
                    raise self._fail("the stream ended before any answer")
            info.finish_reason = info.finish_reason or "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            conn.close()
            info.total_s = time.monotonic() - t0

    def _read(self, resp, sock, deadline: float, n: int) -> bytes | None:
        """Up to n bytes as soon as any arrive; None when the deadline passes first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            sock.settimeout(remaining)
        except OSError:
            pass
        try:
            return resp.read1(n)
        except socket.timeout:
            return None
        except (OSError, http.client.HTTPException) as e:
            raise self._fail(f"stream broken: {type(e).__name__}: {e}") from None

    def _events(self, resp, sock, deadline: float) -> Iterator[str | None]:
        """SSE ``data`` payloads (multi-line data joined), in order; None once the deadline passes."""
        buf = b""
        data: list[str] = []
        while True:
            chunk = self._read(resp, sock, deadline, 65536)
            if chunk is None:
                yield None
                return
            eof = not chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if eof and buf:
                lines.append(buf)
                buf = b""
            if len(buf) > self.MAX_LINE:
                raise self._fail("stream line too long")
            for raw in lines:
                line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
                if not line:
                    if data:
                        yield "\n".join(data)
                        data = []
                    continue
                if line.startswith(":"):
                    continue  # comment / keep-alive
                fieldname, _, value = line.partition(":")
                if fieldname == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
            if eof:
                if data:
                    yield "\n".join(data)
                return

    def _error_message(self, resp, sock, deadline: float) -> str:
        body = b""
        while len(body) < self.MAX_ERROR_BODY:
            chunk = self._read(resp, sock, min(deadline, time.monotonic() + 2.0), self.MAX_ERROR_BODY - len(body))
            if not chunk:
                break
            body += chunk
        text = body.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return _one_line(text) or resp.reason
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            if isinstance(err, dict):
                return _one_line(err.get("message") or err.get("detail") or json.dumps(err, ensure_ascii=False))
            if isinstance(err, str):
                return _one_line(obj.get("message") or err)
            if obj.get("detail"):
                return _one_line(obj["detail"])
        return _one_line(text)
