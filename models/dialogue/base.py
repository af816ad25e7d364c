"""The dialogue engine interface shared by the knowledge-base engine and the LLM backends.

An engine is loaded once per process and holds no per-session state: the
session passes the whole conversation each turn.  ``respond`` is a blocking
generator (LLMs compute, HTTP streams); the session steps it in a worker
thread and starts speaking at the first complete sentence.  It yields reply
text pieces (any size: tokens, words or whole sentences; concatenated they
are the reply) and at most one :class:`Action`, after the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    language: str
    confidence: float = 1.0
    """ASR confidence of a user turn (1.0 for typed text)."""
    alternatives: tuple[tuple[str, float], ...] = ()
    """Other recognition hypotheses of a spoken user turn (n-best), best first: (text, average
    token log-probability); ``text`` itself is the best. Empty for typed text or a single hypothesis."""
    avg_logprob: float | None = None
    """The recogniser's average token log-probability of ``text`` (None for typed text)."""
    dtmf: str | None = None
    """A key the caller pressed on a phone line ('1', '2', ...) instead of speaking; ``text`` is empty."""


@dataclass(frozen=True)
class Action:
    kind: Literal["handoff", "end", "not_heard", "say"]
    """``not_heard`` and ``say`` are the pipeline's own requests (the recogniser rejected the caller's speech;
    a fixed text such as thanks for a consent answer, in ``reason``); engines never yield them."""
    reason: str
    """For handoff: user_request, not_understood, policy, ... ; for end: goodbye, ..."""
    data: dict = field(default_factory=dict)


@dataclass
class Pending:
    """A clarifying question awaiting the caller's answer (owned by the session's state)."""

    kind: Literal["confirm", "choose"]
    entries: tuple[str, ...]
    """confirm: the one entry asked about; choose: the two offered, in the order offered."""
    question: str
    """What the caller said that led to the clarification (to answer it once confirmed)."""
    language: str
    asked: int = 1
    """How many times the question has been put (a re-ask after an unclear answer adds one)."""


@dataclass
class DialogueState:
    """Per-session state an engine may read and update (owned by the session)."""

    misunderstood: int = 0
    last_entry: str | None = None
    pending: Pending | None = None
    """A confirmation or choice put to the caller, until they answer it."""
    keypad: bool = False
    """The caller can press keys (a phone line): clarifying questions mention 1 and 2."""
    act: dict | None = None
    """What the engine did on the last turn, for the reply event and benchmarks: {act, entry, score, ...};
    set by the engine on every turn it answers (None: the engine does not report it)."""


@runtime_checkable
class DialogueEngine(Protocol):
    name: str
    """Backend name: kb, transformers, ctranslate2, openai."""
    model_id: str
    """What provenance records (the KB file's id/version, or the model name)."""

    def respond(self, history: list[Turn], language: str, state: DialogueState) -> Iterator[str | Action]:
        """Yield the reply to the last user turn of ``history``, in ``language``."""
        ...


@dataclass(frozen=True)
class Passage:
    """A knowledge-base entry retrieved for a question (grounding for LLM backends)."""

    id: str
    question: str
    """The best-matching example question."""
    answer: str
    """The entry's answer in the requested language."""
    score: float
    """Similarity, 0..1."""
    action: str | None = None


class Retriever(Protocol):
    def __call__(self, text: str, language: str, k: int) -> list[Passage]: ...
