"""The handoff rule (Law 230-VIII Art. 16) on its own: requests for a person in kk, ru, uz, en,
misrecognised, in Latin script; and none of the knowledge base's ordinary questions."""

from __future__ import annotations

import pytest

from models.dialogue.kb import KnowledgeBase
from pipeline.policy import detect_handoff, normalise

ASKS = [
    ("оператор", "user_request"),
    ("Операторға қосыңызшы", "user_request"),
    ("аператор керек", "user_request"),  # one letter misheard
    ("опиратормен сөйлескім келеді", "user_request"),
    ("Маманмен сөйлескім келеді", "user_request"),
    ("Соедините с оператором, пожалуйста", "user_request"),
    ("позовите живого человека", "user_request"),
    ("Я не хочу говорить с роботом", "refused_ai"),
    ("Роботпен сөйлескім келмейді", "refused_ai"),
    ("Operator bilan gaplashmoqchiman", "user_request"),
    ("Mutaxassis bilan gaplashsam boʻladimi?", "user_request"),
    ("Robot bilan gaplashmayman", "refused_ai"),
    ("operatorga ulang", "user_request"),
    ("I want to talk to a human", "user_request"),
    ("Can I speak to a real person", "user_request"),
]


@pytest.mark.parametrize("text, reason", ASKS)
def test_requests_for_a_person_hand_off(text, reason):
    intent = detect_handoff(text)
    assert intent is not None and intent.reason == reason, (text, intent)


def test_no_ordinary_question_of_the_knowledge_base_hands_off():
    kb = KnowledgeBase.load(None)
    wrong = [
        (e.id, q, detect_handoff(q))
        for e in kb.entries
        if e.id not in ("operator", "bot_identity")
        for qs in e.questions.values()
        for q in qs
        if detect_handoff(q) is not None
    ]
    assert not wrong


def test_one_normaliser_for_policy_and_retrieval():
    """kk/ru/uz spellings and scripts fold the same way for the handoff rule as for the knowledge base."""
    from models.dialogue.kb import normalise as kb_normalise

    for text in ("Операторға қосыңыз", "operatorga ulang", "Oʻzbekcha yozyapman", "ЖИВОЙ человек!", "Ұялы телефон һәм ёлка"):
        assert normalise(text) == kb_normalise(text)
