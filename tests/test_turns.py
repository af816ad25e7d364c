"""End-of-turn cues in the words: models.dialogue.turns.unfinished."""

import pytest

from models.dialogue.turns import unfinished


@pytest.mark.parametrize(
    "text, language, why",
    [
        ("Картамды бұғаттап тастадым, және", "kk", "conjunction"),
        ("Несие алғым келеді, бірақ", "kk", "conjunction"),
        ("Я хотел узнать про", "ru", "conjunction"),
        ("Карта заблокирована, потому", "ru", "conjunction"),
        ("Kartamni ochib bering va", "uz", "conjunction"),
        ("Скажите, ну", "ru", "hesitation"),
        ("Яғни", "kk", "hesitation"),
        ("Эээ", "ru", "hesitation"),
        ("Менің картам...", "kk", "hesitation"),
        ("Мой номер 8 701", "ru", "number"),
        ("Номер восемь семь", "ru", "number"),
        ("Нөмірім сегіз жеті", "kk", "number"),
    ],
)
def test_unfinished_turns(text, language, why):
    assert unfinished(text, language) == why


@pytest.mark.parametrize(
    "text, language",
    [
        ("Баланс қанша?", "kk"),
        ("Картамды ашып бере аласыз ба?", "kk"),  # a question particle ends a turn
        ("Какой у меня баланс?", "ru"),
        ("А это что?", "ru"),  # a question word too
        ("Kartam bloklandi", "uz"),
        ("Депозит бойынша пайыз қанша", "kk"),
        ("Мне нужно пять", "ru"),  # one number word is an answer, not dictation
        ("", "kk"),
    ],
)
def test_finished_or_unknown_turns(text, language):
    assert unfinished(text, language) is None


def test_an_unknown_language_uses_every_list():
    assert unfinished("Картамды бұғаттап тастадым, және", None) == "conjunction"
    assert unfinished("I wanted to ask about", "xx") == "conjunction"
