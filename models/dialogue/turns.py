"""Has the caller finished their turn? Cues in the words heard so far.

The endpointer waits ``vad.min_silence_ms`` of silence before it calls an
utterance finished. Silence alone is a poor judge: "Картамды бұғаттап
тастадым, және..." pauses after a conjunction and is not finished, while
"Баланс қанша?" is complete the moment it is said. :func:`unfinished` reads
the transcript of the speech so far (the speculative decode at the first
pause) and says why the caller is probably not done:

* ``hesitation``: the last word is a filler (ммм, э-э, яғни, ну, вот, ...);
* ``conjunction``: the last word joins a clause that has not come yet
  (және, бірақ, себебі, и, но, что, потому что, va, lekin, ...);
* ``number``: the caller is dictating digits (the last word is a number), and
  the pause between groups of digits is not the end of the number.

Whether a complete sentence is also *understood* (worth answering at once) is
the dialogue engine's call (``would_answer``), not this module's.
"""

from __future__ import annotations

import re

from models.text import normalise, normalize_language

# Written as spoken; folded by :func:`models.text.normalise` like the transcripts
# (Kazakh letters to their Russian look-alikes, Uzbek Latin to Cyrillic).
_HESITATIONS = {
    "kk": "ммм мм м эээ ээ э ааа аа а ыыы ыы енді яғни әлгі анау мынау сосын",
    "ru": "ммм мм м эээ ээ э эм ааа аа а ну вот значит короче типа",
    "uz": "ммм мм м эээ ээ э ааа аа а hmm hm endi anu haligi",
    "en": "um umm uh uhh er erm hmm well so like",
}
# Words that open a clause (conjunctions, prepositions): a turn does not end on them.
# Question particles and question words are left out: "... аласыз ба?", "Это что?" end turns.
_CONJUNCTIONS = {
    "kk": "және мен пен бен менен немесе бірақ алайда себебі өйткені сондықтан егер ал яки",
    "ru": "и а но или чтобы потому поэтому если когда который которая которое которые либо также тоже "
          "для на в во с со по о об обо у к ко от из за при без про через",
    "uz": "va ham hamda lekin ammo yoki chunki agar uchun bilan",
    "en": "and but or because that so if when which who where to of for with about in on at from the a an",
}
_NUMBER_WORDS = {
    "kk": "нөл бір екі үш төрт бес алты жеті сегіз тоғыз он жиырма отыз қырық елу алпыс жетпіс сексен тоқсан жүз мың",
    "ru": "ноль один одна два две три четыре пять шесть семь восемь девять десять одиннадцать двенадцать тринадцать "
          "четырнадцать пятнадцать шестнадцать семнадцать восемнадцать девятнадцать двадцать тридцать сорок пятьдесят "
          "шестьдесят семьдесят восемьдесят девяносто сто двести триста тысяча",
    "uz": "nol bir ikki uch to'rt besh olti yetti sakkiz to'qqiz o'n yigirma o'ttiz qirq ellik yuz ming",
    "en": "zero oh one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand",
}


def _table(words: dict[str, str]) -> dict[str, frozenset[str]]:
    """Folded word sets by language, and under ``"*"`` all of them (a language not listed)."""
    table = {lang: frozenset(normalise(w) for w in text.split()) for lang, text in words.items()}
    table["*"] = frozenset().union(*table.values())
    return table


HESITATIONS = _table(_HESITATIONS)
CONJUNCTIONS = _table(_CONJUNCTIONS)
NUMBER_WORDS = _table(_NUMBER_WORDS)
_DIGITS = re.compile(r"\d[\d\s\-]*$")
_TRAILING_DASH = re.compile(r"(\.\.\.|…|[-–—,:])\s*$")


def _sets(table: dict[str, frozenset[str]], language: str | None) -> frozenset[str]:
    return table.get(normalize_language(language), table["*"])


def unfinished(text: str, language: str | None) -> str | None:
    """Why the caller has probably not finished (``hesitation``, ``conjunction``,
    ``number``), or None when nothing in the words says so."""
    raw = text.strip()
    if not raw:
        return None
    if _DIGITS.search(raw):
        return "number"
    words = normalise(raw).split()
    if not words:
        return None
    last = words[-1]
    if last in _sets(HESITATIONS, language):
        return "hesitation"
    if last in _sets(CONJUNCTIONS, language):
        return "conjunction"
    if last in _sets(NUMBER_WORDS, language) and (len(words) >= 2 and words[-2] in _sets(NUMBER_WORDS, language)):
        return "number"  # two number words in a row: digits being dictated
    if _TRAILING_DASH.search(raw):
        return "hesitation"  # Whisper writes a trailing pause as "..." or a dash
    return None
