"""The grounded prompt: markers, language names, the system prompt, fallback texts, the plain prompt format."""

from __future__ import annotations

from typing import Mapping, Sequence

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


PLAIN_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def plain_prompt(messages: Sequence[dict]) -> str:
    """The prompt for a model without a chat template: ``Role: text`` blocks, then ``Assistant:``."""
    parts = [f"{PLAIN_LABELS.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


PLAIN_STOPS = ("\nUser:", "\nSystem:", "\nAssistant:")
