"""The shared core of the LLM backends: settings, generation info, retrieval, thresholds and markers (:class:`GroundedEngine`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from models.dialogue.base import Action, DialogueState, Passage, Retriever, Turn
from models.dialogue.llm.parse import ReplyParser
from models.dialogue.llm.prompt import DEFAULT_HANDOFF, DEFAULT_REPHRASE, HANDOFF_MARKER, LANGUAGE_NAMES, MARKERS, OPERATOR_MARKER, SYSTEM_PROMPT, _by_language

log = logging.getLogger("dauys.dialogue")


class DialogueError(RuntimeError):
    """A dialogue backend failed while answering (server down, HTTP error, malformed stream, timeout).

    The message is one line and says what failed and where."""


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

    def would_answer(self, text: str, language: str, state: DialogueState) -> bool:
        """Whether ``text`` settles the turn (adaptive endpointing): the clarifier's call; without
        one the backend does not know its own confidence before it answers, so no."""
        clarifier = self.config.clarifier
        return clarifier.would_answer(text, state) if clarifier is not None else False

    def respond(self, history: list[Turn], language: str, state: DialogueState) -> Iterator[str | Action]:
        user = next((t for t in reversed(history) if t.role == "user"), None)
        clarifier = self.config.clarifier
        unheard_answer = clarifier is not None and state.pending is not None  # an empty turn: the answer was not made out
        if user is None or (not user.text.strip() and user.dtmf is None and not unheard_answer):
            return
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
