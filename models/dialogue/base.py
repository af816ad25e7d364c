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


@dataclass(frozen=True)
class Action:
    kind: Literal["handoff", "end", "not_heard"]
    """``not_heard`` is the pipeline's own request (the recogniser rejected the caller's speech); engines never yield it."""
    reason: str
    """For handoff: user_request, not_understood, policy, ... ; for end: goodbye, ..."""
    data: dict = field(default_factory=dict)


@dataclass
class DialogueState:
    """Per-session counters an engine may read and update (owned by the session)."""

    misunderstood: int = 0
    last_entry: str | None = None


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
