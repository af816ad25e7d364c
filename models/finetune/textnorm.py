"""Text normalisation for scoring recognition (WER/CER) in Kazakh, Russian, Uzbek and the other Turkic languages.

Both the reference and the hypothesis go through :func:`normalize` before
they are compared, so that differences which do not change what was said
(case, punctuation, look-alike letters typed from the wrong keyboard) are not
counted as errors.  The rules, in order:

1. **Unicode NFC**, and format characters (zero-width spaces and joiners,
   the soft hyphen, BOM: category ``Cf``) removed.
2. **Look-alike letters** in a word that mixes Latin and Cyrillic are put
   into the word's script.  Kazakh and Russian texts are often typed with
   Latin letters that look like Cyrillic ones (``a e o p c x y i h k`` and
   capitals such as ``H K M T B``), Uzbek Latin texts sometimes with
   Cyrillic ones.  A mixed word that contains a letter only Cyrillic has
   (``қ``, ``ж``, ``и`` ...) is Cyrillic: its Latin look-alikes become
   Cyrillic (Latin ``i`` -> Kazakh ``і`` U+0456, ``h`` -> ``һ`` U+04BB,
   ``H`` -> ``Н``, ``a`` -> ``а`` ...).  A mixed word with a letter only
   Latin has (``b``, ``q``, ``ş``, ``g`` ...) is Latin: its Cyrillic
   look-alikes become Latin.  A mixed word made only of look-alikes takes
   the usual script of ``language`` (Cyrillic for kk, ru, ky, tt, ba, ...;
   Latin for the others, Uzbek included).  Words written wholly in one
   script are never changed (an Uzbek hypothesis in Cyrillic stays wrong
   against a Latin reference).  This runs before lower-casing, because case
   matters for the shapes (Latin ``H`` looks like Cyrillic ``Н``, ``h`` like
   ``һ``).
3. **Lower case.**  Python's ``str.lower`` (language-independent), except
   that ``İ`` (dotted capital I) always becomes ``i`` and, for Turkish and
   Azerbaijani, ``I`` becomes dotless ``ı``.  Other Turkic Latin
   orthographies (Uzbek, Kazakh Latin) have no dotless i, so the simple rule
   is right for them; Tatar/Crimean Tatar Latin texts may differ in i/ı
   case-folding, which is not handled.
4. **ё -> е** (Russian and Kazakh texts write both for the same sound;
   Whisper does too).
5. **Apostrophes**: every apostrophe-like mark (``' ‘ ’ ʻ ʼ ` ´ ʹ``)
   between two letters becomes the ASCII apostrophe ``'``, so Uzbek
   ``oʻ gʻ`` (U+02BB), ``o‘`` (U+2018), ``o'`` and the tutuq belgisi
   ``maʼno`` all score alike.  Elsewhere (quotes) they are removed.
6. **Punctuation and symbols** (Unicode categories P* and S*) become spaces;
   hyphenated words split (``қанша-қанша`` -> ``қанша қанша``).  Digits are
   kept as they are: numbers are *not* spelled out, so a reference that
   writes ``2018`` and a hypothesis that writes the words differ.
7. **Whitespace** collapsed to single spaces, ends stripped.

Not done, on purpose: no folding of Kazakh-specific letters to Russian ones
(``қ`` vs ``к``): that difference is a real recognition error.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "CYRILLIC_SCRIPT_LANGUAGES"]

CYRILLIC_SCRIPT_LANGUAGES = frozenset({"kk", "ru", "ky", "tt", "ba", "tg", "mn", "uk", "be", "bg", "sr", "mk", "cv", "sah"})
"""Languages whose usual script is Cyrillic (decides words made only of look-alike letters)."""

# Latin letter -> the Cyrillic letter it looks like (case-sensitive: shapes differ by case).
_LATIN_TO_CYR = {
    "a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "h": "һ", "k": "к",
    "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І", "K": "К", "M": "М", "O": "О", "P": "Р",
    "T": "Т", "X": "Х", "Y": "У",
}
# Cyrillic letter -> Latin look-alike (the inverse, plus a few that only go this way).
_CYR_TO_LAT = {v: k for k, v in _LATIN_TO_CYR.items()}
_CYR_TO_LAT.update({"ј": "j", "Ј": "J", "ѕ": "s", "Ѕ": "S", "ԛ": "q", "ԝ": "w"})

_L2C = str.maketrans(_LATIN_TO_CYR)
_C2L = str.maketrans(_CYR_TO_LAT)

_APOSTROPHES = "'\u2018\u2019\u02bb\u02bc\u0060\u00b4\u02b9\u02bd\u2032"
_APOS_BETWEEN = re.compile(rf"(?<=\w)[{_APOSTROPHES}](?=\w)")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u052f" or "\u1c80" <= ch <= "\u1c8f" or "\u2de0" <= ch <= "\u2dff" or "\ua640" <= ch <= "\ua69f"


def _is_latin(ch: str) -> bool:
    return ("a" <= ch.lower() <= "z") or ("\u00c0" <= ch <= "\u024f" and ch not in "×÷") or "\u1e00" <= ch <= "\u1eff" or ch in "\u0259\u018f"


def _fix_script(word: str, cyrillic_default: bool) -> str:
    """Put the look-alike letters of a mixed-script word into the word's script."""
    if not (any(_is_cyrillic(c) for c in word) and any(_is_latin(c) for c in word)):
        return word  # one script (or neither): left as written
    if any(_is_cyrillic(c) and c not in _CYR_TO_LAT for c in word):
        return word.translate(_L2C)
    if any(_is_latin(c) and c not in _LATIN_TO_CYR for c in word):
        return word.translate(_C2L)
    return word.translate(_L2C) if cyrillic_default else word.translate(_C2L)


def _lower(text: str, language: str) -> str:
    if language in ("tr", "az"):
        text = text.replace("I", "ı")
    return text.replace("İ", "i").lower()


def normalize(text: str, language: str | None = None) -> str:
    """The scoring form of ``text`` in ``language`` (an ISO 639-1 code such as ``kk``; None = no language rules).

    >>> normalize("Алға қарай, бес метр жүр!", "kk")
    'алға қарай бес метр жүр'
    >>> normalize("Ortiq Xoʻjayev toʻliq", "uz")
    "ortiq xo'jayev to'liq"
    """
    lang = (language or "").split("-")[0].split("_")[0].lower()
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    cyr_default = lang in CYRILLIC_SCRIPT_LANGUAGES
    text = _WORD.sub(lambda m: _fix_script(m.group(0), cyr_default), text)
    text = _lower(text, lang)
    text = text.replace("ё", "е")
    text = _APOS_BETWEEN.sub("'", text)
    out = []
    for c in text:
        if c == "'":
            out.append(c)
        elif c in _APOSTROPHES or unicodedata.category(c)[0] in "PSZC":
            out.append(" ")
        else:
            out.append(c)
    text = "".join(out)
    # an ASCII apostrophe that is not between two letters is a quote mark
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())
