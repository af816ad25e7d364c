"""Dialogue engines: conversation history and language in, reply text streamed out, plus actions."""

from __future__ import annotations

import logging
import os

from models.dialogue.base import Action, DialogueEngine, DialogueState, Passage, Turn

__all__ = ["Action", "DialogueEngine", "DialogueState", "Passage", "Turn", "load_dialogue"]

log = logging.getLogger("dauys.dialogue")


def load_dialogue(settings) -> DialogueEngine:
    """The engine ``dialogue.backend`` names, grounded by the operator's knowledge base."""
    from models.dialogue.clarify import Clarifier
    from models.dialogue.kb import KbEngine, KnowledgeBase
    from models.errors import ModelError

    try:
        kb = KnowledgeBase.load(settings.knowledge_base)
    except (OSError, ValueError) as e:
        raise ModelError(f"knowledge base: {str(e).splitlines()[0]}") from None
    if settings.backend == "kb":
        return KbEngine(kb)
    from models.dialogue import llm

    config = llm.LlmConfig(
        top_k=settings.top_k,
        threshold=kb.threshold,
        max_misunderstood=kb.max_misunderstood,
        max_new_tokens=settings.max_new_tokens,
        timeout_s=settings.timeout_s,
        temperature=settings.temperature,
        rephrase=dict(kb.rephrase_texts),
        handoff_text=dict(kb.handoff_texts),
        clarifier=Clarifier(kb),
    )
    if not settings.model:
        raise ModelError(f"dialogue.backend = {settings.backend!r} needs dialogue.model")
    if settings.model.startswith("catalog:") and settings.backend != "openai":
        from models.store import model_store

        if settings.backend != "transformers":
            raise ModelError(
                f"dialogue.model {settings.model!r}: catalog LLMs are transformers checkpoints: use dialogue.backend = \"transformers\", "
                "or serve the model with vLLM and use the openai backend"
            )
        settings = settings.model_copy(update={"model": str(model_store(settings).path_for(settings.model, kind="llm"))})
    if settings.backend == "transformers":
        return llm.TransformersEngine(settings.model, kb.search, config, device=settings.device)
    if settings.backend == "ctranslate2":
        return llm.Ct2Engine(settings.model, kb.search, config, device=settings.device, inter_threads=settings.workers)
    if not settings.base_url:
        raise ModelError("dialogue.backend = 'openai' needs dialogue.base_url (e.g. http://127.0.0.1:8000/v1)")
    where = llm.check_destination(settings.base_url, settings.allowed_hosts, settings.allow_external)
    if where != "local":
        log.warning(
            "dialogue: the openai backend sends caller text to %s, outside this machine (%s); personal data is %s",
            llm.url_host(settings.base_url), "dialogue.allowed_hosts" if where == "allowed" else "dialogue.allow_external = true",
            "redacted first (dialogue.redact_pii)" if settings.redact_pii else "NOT redacted (dialogue.redact_pii = false)",
        )
    from models.privacy import redact

    return llm.OpenAIEngine(
        settings.base_url, settings.model, kb.search, config,
        api_key=os.environ.get(settings.api_key_env), redact=redact if settings.redact_pii else None,
    )
