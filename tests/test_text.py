"""models.text: the one sentence splitter, its streaming buffer and the one normaliser."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.text import MIN_CHARS, Sentence, SentenceBuffer, normalise, normalize_language, sentence_pieces, split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        # abbreviations (kk, ru, en)
        ("Мкр. Самал, үй 5. Келіңіз!", ["Мкр. Самал, үй 5.", "Келіңіз!"]),
        ("Ул. Абая, т.е. центр. Ждём вас.", ["Ул. Абая, т.е. центр.", "Ждём вас."]),
        ("Bring your ID, passport etc. We are open.", ["Bring your ID, passport etc. We are open."]),
        # numbers
        ("Ставка 3.5 процента. Всё.", ["Ставка 3.5 процента.", "Всё."]),
        ("Сағат 10:00-де. 2024 жылы ашылды.", ["Сағат 10:00-де.", "2024 жылы ашылды."]),
        # ellipses
        ("Подождите... Соединяю.", ["Подождите...", "Соединяю."]),
        ("Ну... ладно.", ["Ну... ладно."]),
        # "?!" and other runs
        ("Правда?! Не может быть!!", ["Правда?!", "Не может быть!!"]),
        ("Рас па?! Иә.", ["Рас па?!", "Иә."]),
        # kk / ru / uz punctuation: guillemets, dashes, the Uzbek apostrophes
        ("Ол «Иә!» деді. Жақсы.", ["Ол «Иә!» деді.", "Жақсы."]),
        ("«Иә!» — деді ол.", ["«Иә!»", "— деді ол."]),  # a dash after the end opens a sentence
        ("Rahmat! — dedi u. Oʻzbekiston goʻzal.", ["Rahmat!", "— dedi u.", "Oʻzbekiston goʻzal."]),
        ("Kartangiz bloklandi. Qoʻngʻiroq qiling!", ["Kartangiz bloklandi.", "Qoʻngʻiroq qiling!"]),
        # a lower-case word after the dot does not start a sentence
        ("Это т. е. важно. да.", ["Это т. е. важно. да."]),
        # word-less pieces: attached, carried forward, or dropped
        ("... Сәлем.", ["... Сәлем."]),
        ("...", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_min_chars_joins_short_sentences_to_the_next():
    text = "Иә. Картаңыз бұғатталды. Рахмет!"
    assert split_sentences(text) == ["Иә.", "Картаңыз бұғатталды.", "Рахмет!"]
    assert split_sentences(text, min_chars=MIN_CHARS) == ["Иә. Картаңыз бұғатталды.", "Рахмет!"]
    assert split_sentences("Иә.", min_chars=MIN_CHARS) == ["Иә."]  # the end of the text is given out whatever its length


def test_sentence_pieces_concatenate_back_with_the_same_cuts():
    text = "  Один.  Два!\nТри?\n\nчетыре… «Пять» — ... 1. Шесть. "
    pieces = sentence_pieces(text)
    assert "".join(pieces) == text
    assert pieces == ["  Один.  ", "Два!\n", "Три?\n\n", "четыре… ", "«Пять» — ... ", "1. Шесть. "]
    assert split_sentences(text) == ["Один.", "Два!", "Три?", "четыре…", "«Пять» — ...", "1. Шесть."]
    assert sentence_pieces("Рахмет! —") == ["Рахмет! ", "—"] and split_sentences("Рахмет! —") == ["Рахмет!—"]
    assert sentence_pieces("") == [] and sentence_pieces("   ") == ["   "]


def test_the_buffer_gives_a_sentence_once_the_next_one_has_begun():
    buf = SentenceBuffer(min_chars=0)
    assert buf.feed("Сәлеметсіз бе!") == []  # the end of the stream or more text?
    assert buf.feed(" ") == []
    assert buf.feed("«") == []  # an opener: a new sentence, but maybe a word-less one
    assert buf.feed("Иә") == ["Сәлеметсіз бе!"]
    assert buf.feed("» деді") == []
    assert buf.flush() == ["«Иә» деді"]
    assert buf.flush() == []


# Texts built from the pieces the rules are about, so that random texts hit them often.
_ATOMS = [
    "Сәлем", "сәлем", "карта", "Карта", "т.б.", "т.е.", "ул.", "мкр.", "г.", "А.", "1.", "3.5", "10:00", "kaspi.kz",
    "Oʻzbek", "goʻzal", "etc.", "Mr.", "Иә", "жоқ", ".", "!", "?", "?!", "...", "…", "«", "»", "„", "“", "(", ")",
    "—", "-", ",", ":", " ", " ", " ", " ", "\n", "\n\n", "  ",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ATOMS), max_size=40), st.integers(0, 2**32 - 1), st.sampled_from([0, MIN_CHARS]))
def test_the_buffer_gives_the_same_sentences_however_the_text_is_cut(atoms, seed, min_chars):
    text = "".join(atoms)
    whole = split_sentences(text, min_chars=min_chars)
    # char by char
    buf = SentenceBuffer(min_chars)
    out = [s for ch in text for s in buf.feed(ch)] + buf.flush()
    assert out == whole
    # random deltas, as an LLM streams them
    rng = random.Random(seed)
    buf = SentenceBuffer(min_chars)
    out, i = [], 0
    while i < len(text):
        j = i + rng.randint(1, 8)
        out += buf.feed(text[i:j])
        i = j
    assert out + buf.flush() == whole
    # nothing lost or reordered but whitespace and a leading word-less piece
    kept = "".join("".join(whole).split())
    assert kept in "".join(text.split())
    pieces = sentence_pieces(text)
    assert "".join(pieces) == text
    buf = SentenceBuffer(min_chars)
    assert [s for p in pieces for s in buf.feed(p)] + buf.flush() == whole  # the engine's pieces, passed on


def test_split_is_idempotent_on_its_sentences():
    text = "Төлем, аударым т.б. қызметтер бар. Мекенжай: А. Байтұрсынұлы көшесі, 5. Келіңіз! «Рахмет!» Ол кетті."
    for s in split_sentences(text):
        assert split_sentences(str(s)) == [s]


# --------------------------------------------------------------------------- split once, passed along


def test_what_is_cut_is_a_sentence_and_is_not_cut_again():
    text = "Иә. Картаңыз бұғатталды. Қосымшада ашуға болады!"
    assert all(type(s) is Sentence for s in split_sentences(text))
    assert all(type(p) is Sentence for p in sentence_pieces(text))
    joined = split_sentences(text, min_chars=MIN_CHARS)
    assert joined == ["Иә. Картаңыз бұғатталды.", "Қосымшада ашуға болады!"]
    assert type(joined[0]) is str and type(joined[1]) is Sentence  # two sentences: split again for speech
    two = Sentence("Бір. Екі.")
    assert split_sentences(two) == ["Бір. Екі."] and split_sentences(str(two)) == ["Бір.", "Екі."]
    assert split_sentences(Sentence("  ")) == []
    assert split_sentences(Sentence("Бір екі үш төрт бес"), max_chars=10) == ["Бір екі үш", "төрт бес"]


def test_the_buffer_passes_pieces_on_with_the_same_sentences():
    text = "Картаңызды бұғаттаңыз. Иә. Содан кейін 1. пунктті оқыңыз... Қош болыңыз! —"
    for min_chars in (0, MIN_CHARS):
        buf = SentenceBuffer(min_chars)
        out = [s for p in sentence_pieces(text) for s in buf.feed(p)] + buf.flush()
        assert out == split_sentences(text, min_chars=min_chars)
    buf = SentenceBuffer(0)
    assert buf.feed(Sentence("Бір. Екі. ")) == [] and buf.feed(Sentence("Үш.")) == ["Бір. Екі."] and buf.flush() == ["Үш."]


def test_the_router_hands_a_sentence_to_its_engine_as_it_is():
    from models.tts import TtsRouter

    class Engine:
        name, model_id, languages, sample_rate = "fake", "fake", ("kk",), 16000

        def __init__(self):
            self.sentences = []

        def model_id_for(self, language):
            return "fake"

        def synthesize_sentence(self, sentence, language=None, config=None):
            self.sentences.append(sentence)
            return []

    engine = Engine()
    router = TtsRouter({"kk": engine})
    list(router.synthesize("Бір. Екі.", "kk"))
    list(router.synthesize(Sentence("Үш. Төрт."), "kk"))
    assert engine.sentences == ["Бір.", "Екі.", "Үш. Төрт."]


# --------------------------------------------------------------------------- normalisation


def test_normalise_folds_scripts_case_and_punctuation():
    assert normalise("Картам БҰҒАТТАЛДЫ!") == normalise("kartam bugattaldy") == "картам бугатталди"
    assert normalise("Oʻzbekiston") == normalise("O'zbekiston") == normalise("Ўзбекистон")
    assert normalise("Ещё раз, пожалуйста…") == "еше раз пожалуиста"
    assert normalise("  Иә!!  ") == normalise("иә") == "иа"
    assert normalise("Пин-код_123") == "пин код 123"
    assert normalise("...") == "" and normalise("") == ""


def test_normalise_is_idempotent():
    for text in ("Қалайсыз?", "Shotymdağy aqşa", "Kartam oʻgʻirlandi", "ЖИВОЙ человек!"):
        assert normalise(normalise(text)) == normalise(text)


def test_normalize_language():
    assert [normalize_language(x) for x in ("kk", "kk-KZ", "uz_Latn", " RU ", None)] == ["kk", "kk", "uz", "ru", ""]
