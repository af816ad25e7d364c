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

Modules: :mod:`.prompt` (the prompt), :mod:`.parse` (the output parser),
:mod:`.grounding` (the shared core), :mod:`.transformers_backend`,
:mod:`.ct2_backend`, :mod:`.openai_backend`.
"""

from __future__ import annotations

from models.dialogue.llm.ct2_backend import Ct2Engine
from models.dialogue.llm.grounding import DialogueError, GenerationInfo, GroundedEngine, LlmConfig
from models.dialogue.llm.openai_backend import OpenAIEngine, check_destination, host_allowed, url_host
from models.dialogue.llm.parse import ReplyParser
from models.dialogue.llm.prompt import DEFAULT_HANDOFF, DEFAULT_REPHRASE, HANDOFF_MARKER, LANGUAGE_NAMES, MARKERS, OPERATOR_MARKER, PLAIN_STOPS, SYSTEM_PROMPT, plain_prompt
from models.dialogue.llm.transformers_backend import TransformersEngine

__all__ = [
    "DEFAULT_HANDOFF",
    "DEFAULT_REPHRASE",
    "HANDOFF_MARKER",
    "LANGUAGE_NAMES",
    "MARKERS",
    "OPERATOR_MARKER",
    "PLAIN_STOPS",
    "SYSTEM_PROMPT",
    "Ct2Engine",
    "DialogueError",
    "GenerationInfo",
    "GroundedEngine",
    "LlmConfig",
    "OpenAIEngine",
    "ReplyParser",
    "TransformersEngine",
    "check_destination",
    "host_allowed",
    "plain_prompt",
    "url_host",
]
