"""The caller's answer to a clarifying question: yes, no, the first or the second, by voice or key.

Kazakh, Russian, Uzbek (Latin and Cyrillic) and English, in the knowledge
base's folded form (``normalise``: "иә" and "ия" and "iya" alike), tolerant of
how whisper writes a short answer ("Иә.", "И-я", "Жох", "Нет-нет"). On phone
lines the keypad answers too: 1 = yes (or the first), 2 = no (or the second).

A bare "не" is not a no (in Kazakh it means "what": "Не дедіңіз?"); "не то", "не так" are.
Conservative by design: an answer that holds a "no" word anywhere among its
first words is a no ("да нет", "иә... жоқ, жоқ"), since a no only costs a
rephrase while a wrong yes makes the caller hear an answer to another
question.  What follows the yes/no word is returned as ``rest`` ("нет, я про
вклад" -> no, rest "я про вклад"): the engine treats it as a new question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.text import normalise

_YES = [
    # kk
    "иә", "иа", "ия", "ие", "ийә", "иәә", "әрине", "дұрыс", "дәл солай", "солай", "рас", "иә дұрыс", "жарайды", "әә иә",
    # ru
    "да", "ага", "угу", "конечно", "верно", "правильно", "точно", "так точно", "именно", "ну да", "да да", "да-да",
    # uz
    "ha", "xa", "ҳа", "ha'a", "albatta", "to'g'ri", "тўғри", "шундай", "shunday", "xuddi shunday",
    # en
    "yes", "yeah", "yep", "correct",
]
_NO = [
    # kk
    "жоқ", "жох", "жоғ", "жок", "емес", "қате", "олай емес", "жоқ жоқ",
    # ru
    "нет", "неа", "нету", "неверно", "неправильно", "не то", "не так", "нет нет", "не-не",
    # uz
    "yo'q", "yoq", "йўқ", "emas", "noto'g'ri", "нотўғри",
    # en
    "nope", "wrong",
]
_FIRST = ["бірінші", "біріншісі", "біріншіні", "бір", "первое", "первый", "первая", "первую", "первого", "один", "birinchi", "birinchisi", "bir", "first", "one"]
_SECOND = ["екінші", "екіншісі", "екіншіні", "екі", "второе", "второй", "вторая", "вторую", "второго", "два", "ikkinchi", "ikkinchisi", "ikki", "second", "two"]
_FILLERS = {normalise(w) for w in ("ну", "вот", "э", "эм", "ммм", "а", "әә", "ой", "ой-ой", "так", "енді", "мм", "хм", "уже", "ал", "mm", "well")}

_KEYS = {"1": ("yes", "first"), "2": ("no", "second")}
LOOK = 3
"""How many words from the start of the answer are searched for the yes/no word."""


def _set(words: list[str]) -> set[str]:
    return {normalise(w) for w in words if normalise(w)}


_YES_SET, _NO_SET, _FIRST_SET, _SECOND_SET = _set(_YES), _set(_NO), _set(_FIRST), _set(_SECOND)
_MULTI = sorted(
    [(tuple(p.split()), kind) for kind, s in (("no", _NO_SET), ("yes", _YES_SET), ("first", _FIRST_SET), ("second", _SECOND_SET)) for p in s if " " in p],
    key=lambda x: -len(x[0]),
)


@dataclass(frozen=True)
class CallerAnswer:
    kind: Literal["yes", "no", "first", "second"] | None
    """None: the caller said neither (a new question, or something unclear)."""
    rest: str = ""
    """The (normalised) words after the answer word(s): a new question when there is one."""


def _word_kind(word: str) -> str | None:
    if word in _NO_SET:
        return "no"
    if word in _YES_SET:
        return "yes"
    if word in _FIRST_SET or word.startswith(("перв", "биринш", "birinch")):
        return "first"
    if word in _SECOND_SET or word.startswith(("втор", "екинш", "иккинч")):
        return "second"
    return None


def parse_answer(text: str, dtmf: str | None = None, choosing: bool = False) -> CallerAnswer:
    """What the caller answered to a confirmation (``choosing=False``: yes/no) or a choice
    between two topics (``choosing=True``: first/second, or no). A key press wins over text."""
    if dtmf:
        pair = _KEYS.get(dtmf.strip()[:1])
        return CallerAnswer(pair[1] if choosing else pair[0]) if pair else CallerAnswer(None)
    words = [w for w in normalise(text).split() if w not in _FILLERS]
    if not words:
        return CallerAnswer(None)
    # "и я" / "не не": a recogniser's split of one short answer
    if len(words) >= 2 and words[0] + words[1] in (_YES_SET | _NO_SET) and words[0] not in (_YES_SET | _NO_SET):
        words = [words[0] + words[1]] + words[2:]
    found: list[tuple[int, int, str]] = []  # (start, end, kind)
    i = 0
    while i < min(len(words), LOOK):
        for phrase, kind in _MULTI:
            if tuple(words[i : i + len(phrase)]) == phrase:
                found.append((i, i + len(phrase), kind))
                i += len(phrase)
                break
        else:
            kind = _word_kind(words[i])
            if kind is not None:
                found.append((i, i + 1, kind))
            i += 1
    if not found:
        return CallerAnswer(None)
    kinds = {k for _, _, k in found}
    end = max(e for _, e, _ in found)
    rest = " ".join(words[end:])
    if "no" in kinds:  # "да нет", "иә... жоқ": a no anywhere wins (a no costs a rephrase, a wrong yes a wrong answer)
        return CallerAnswer("no", rest)
    if choosing:
        picks = kinds & {"first", "second"}
        return CallerAnswer(picks.pop() if len(picks) == 1 else None, rest)
    if kinds == {"yes"}:
        return CallerAnswer("yes", rest)
    return CallerAnswer(None, rest)


SPOKEN: dict[str, dict[str, str]] = {
    "kk": {"yes": "Иә.", "no": "Жоқ.", "first": "Біріншісі.", "second": "Екіншісі."},
    "ru": {"yes": "Да.", "no": "Нет.", "first": "Первое.", "second": "Второе."},
    "uz": {"yes": "Ha.", "no": "Yoʻq.", "first": "Birinchisi.", "second": "Ikkinchisi."},
    "en": {"yes": "Yes.", "no": "No.", "first": "The first.", "second": "The second."},
}
"""The answer words a short reply is scored against when free recognition did not yield one."""


def spoken_candidates(language: str, choosing: bool) -> list[tuple[str, str]]:
    """(kind, phrase) a short reply to a confirmation (yes, no) or a choice (first, second, no) may be."""
    words = SPOKEN.get(language) or SPOKEN["ru"]
    kinds = ("first", "second", "no") if choosing else ("yes", "no")
    return [(k, words[k]) for k in kinds]


SHORT_ANSWER_MARGIN = {"yes": 4.0, "first": 4.0, "second": 4.0, "no": 1.0}
"""Log-probability lead the likeliest answer word needs over the next (``pick_spoken``), by what
it would mean. Asymmetric because a wrong yes makes the caller hear another question's answer while
a wrong no costs a rephrase. Chosen on espeak-ng "иә"/"жоқ"/"да"/"нет" in the tuning voices (kk, ru
at 150 wpm), 12 takes each with random padding, a third clean and the rest through the phone leg:
a Kazakh "жоқ" was scored "иә" by up to 3.02, a right "иә" led by 5.48 or more (a Russian "да" by
3.39 or more: two of twelve are asked again). The understanding benchmark's first phone run, with a
yes lead of 1.0, answered 7 of 136 calls wrongly through such yeses."""


def pick_spoken(candidates: list[tuple[str, str]], scores: list[float]) -> tuple[str, str] | None:
    """The candidate (kind, phrase) whose score leads the next by its kind's ``SHORT_ANSWER_MARGIN``, else None."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if scores[order[0]] - scores[order[1]] < SHORT_ANSWER_MARGIN[candidates[order[0]][0]]:
        return None
    return candidates[order[0]]
