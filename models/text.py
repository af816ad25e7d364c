"""Text rules shared by every layer: the one sentence splitter and the one normaliser.

Sentences
---------
:func:`split_sentences` splits text for speech; :class:`SentenceBuffer` gives
the same sentences from text that arrives in pieces (an LLM's stream), and
:func:`sentence_pieces` gives the same cuts as slices of the text that
concatenate back to it (a dialogue engine streams its answer in them).  One
rule serves all three:

- A sentence ends after ``.`` ``!`` ``?`` ``…`` (a run of them, like ``?!`` or
  ``...``, with the closing quotes or brackets after it: ``»`` ``”`` ``"``
  ``)``) when whitespace follows and then an upper-case letter, a digit or an
  opening quote, bracket or dash -- or at the end of the text.
- A blank line always ends a sentence (a paragraph), punctuation or not.
- Never inside numbers and names ("1.5", "09.00", "kaspi.kz": no whitespace
  after the dot), after an abbreviation ("т.б.", "т.е.", "мыс.", "ул.", "г.",
  "мкр.", "etc."; a single dot after a listed word or a dotted short word),
  after an initial ("А. Байтұрсынұлы") or a leading list number ("1.").
- Whitespace inside a sentence is collapsed to single spaces.
- A piece with no letter or digit ("—", "«...»") is attached to the sentence
  before it (without a space); at the very start of the text it is put before
  the next sentence, and alone it is dropped (nothing to say).
- ``max_chars``: a longer sentence is cut at a clause boundary (comma,
  semicolon, colon, dash), else at a space (TTS engines choke on long input).
- ``min_chars``: a shorter sentence is joined to the next one (TTS prosody
  suffers on fragments); the streaming buffer of the pipeline uses
  :data:`MIN_CHARS`.

Where the three splitters this module replaces differed, the rule of
models/tts.py was kept (all existing tests hold with it), as the strictest:
pipeline/sentences.py knew fewer abbreviations (its "мкр" joined the list),
no initials, list numbers or paragraphs, and took any dot run after an
abbreviation for one; models/dialogue/kb.py cut after every end mark followed
by whitespace, whatever came next.  What the others had of their own stays:
the pipeline's joining of short sentences is ``min_chars``, the knowledge
base's pieces that concatenate back are :func:`sentence_pieces`.  One edge
changed: a word-less piece at the very start ("... Сәлем.") was dropped by
the TTS rule; it is now kept before the next sentence, so nothing is lost.

The streaming buffer decides a boundary only once the text after it shows
what follows (the whitespace and the next visible character), and gives a
sentence out once the next one is known to have something to say, so the
sentences are the same however the text is cut into pieces.

A reply is split once: what the splitter cuts is a :class:`Sentence` (a
``str``), which neither the buffer nor :func:`split_sentences` cuts again.
The knowledge-base engine yields the :func:`sentence_pieces` of its answer,
the pipeline's buffer passes them on (and cuts an LLM's stream), and the TTS
router hands each one to its engine as it is; only sentences the buffer
joined (``min_chars``) are plain text, which the router splits for speech,
so that every sentence is still spoken on its own.

Normalisation
-------------
:func:`normalize_language` reduces a language tag to its language ('kk-KZ' ->
'kk'), for the voices and the knowledge base's texts alike.

:func:`normalise` is the folded Cyrillic form used for matching (never
spoken): knowledge-base retrieval, the handoff rule's keywords, yes/no and
first/second answers.  NFKC, lowercase, diacritics stripped, Latin-script
Kazakh/Uzbek transliterated ("kartam bugattaldy" == "картам бұғатталды"),
Kazakh letters folded onto their Russian look-alikes (ә->а, қ->к, ң->н,
і/ы/й->и ...), punctuation dropped, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata

MIN_CHARS = 12
"""The streaming buffer's default ``min_chars``: shorter sentences are joined to the next."""

# --------------------------------------------------------------------------- sentences

_CLOSERS = "\"'»”’)]"
_OPENERS = "«\"'“„‘([—–-"
_END_RUN = re.compile(r"[.!?…]+[" + re.escape(_CLOSERS) + r"]*")
_PARAGRAPH = re.compile(r"\n\s*\n")
_ABBREVIATIONS = frozenset(
    {
        # Kazakh
        "т", "б", "с", "мыс", "ж", "жж", "көш", "қ", "обл", "ш", "сағ", "тг", "бет", "млн", "млрд",
        # Russian
        "г", "гг", "ул", "д", "кв", "пр", "просп", "пер", "им", "тел", "руб", "коп", "тыс", "др", "стр",
        "см", "напр", "е", "п", "проф", "доц", "акад", "ср", "рис", "табл", "мин", "сек", "ч", "р", "пос",
        "корп", "каб", "ок", "прим", "англ", "рус", "каз", "мкр",
        # English and Latin-script Turkic
        "mr", "mrs", "ms", "dr", "prof", "st", "etc", "vs", "no", "approx", "tel", "nr", "vb", "bkz",
    }
)
_DOTTED_ABBREV = re.compile(r"(?:^|[^\w.])\w{1,3}\.\w{1,3}$")  # "т.б", "т.е", "и.о", "e.g"
_LAST_WORD = re.compile(r"(\w+)$")


def _ends_sentence(text: str, start: int, p_start: int, end: int, nxt: str) -> bool:
    """Does the punctuation run text[p_start:end] end the sentence begun at ``start``,
    given that whitespace and then ``nxt`` (one character) follow it?"""
    if text[p_start:end].rstrip(_CLOSERS) == ".":
        before = text[start:p_start]
        word = _LAST_WORD.search(before)
        if word:
            w = word.group(1)
            if w.lower() in _ABBREVIATIONS or _DOTTED_ABBREV.search(before):
                return False  # "т.б.", "ул.", "мыс."
            if len(w) == 1 and w.isupper():
                return False  # an initial: "А. Байтұрсынұлы"
            if w.isdigit() and before.strip() == w:
                return False  # a list marker: "1. Төлем жасаңыз."
    return nxt.isupper() or nxt.isdigit() or nxt in _OPENERS


def _cuts(text: str, final: bool) -> tuple[list[int], bool]:
    """Where ``text`` is cut into sentence pieces, each cut after the whitespace that
    follows a sentence end; and whether the scan reached a point it cannot decide
    before more text comes (never when ``final``: the text is complete)."""
    cuts: list[int] = []
    start = 0
    events = sorted([(m.start(), m.end(), True) for m in _END_RUN.finditer(text)] + [(m.start(), m.end(), False) for m in _PARAGRAPH.finditer(text)])
    for p_start, end, is_run in events:
        if p_start < start:
            continue  # inside whitespace already cut after
        if not is_run:  # a blank line
            j = len(text) - len(text[end:].lstrip())
            if j == len(text):
                return cuts, not final
            cuts.append(j)
            start = j
            continue
        if end == len(text):
            return cuts, not final
        if not text[end].isspace():
            continue  # "1.5", "10.00", "kaspi.kz", "т.б."
        j = len(text) - len(text[end:].lstrip())
        if j == len(text):
            return cuts, not final
        if _PARAGRAPH.search(text, end, j) or _ends_sentence(text, start, p_start, end, text[j]):
            cuts.append(j)
            start = j
    return cuts, False


class Sentence(str):
    """Text already cut by this module's rule: one sentence, a piece of
    :func:`sentence_pieces` or a sentence given out by :class:`SentenceBuffer`.

    Neither :func:`split_sentences` nor :class:`SentenceBuffer` cuts it again
    (``max_chars`` still applies), so a reply split once where it is made or
    as it streams is passed along to the speech engines as it is.
    """

    __slots__ = ()


def _has_word(s: str) -> bool:
    return any(ch.isalnum() for ch in s)


def sentence_pieces(text: str) -> list[Sentence]:
    """The cuts of :func:`split_sentences` as slices of ``text`` that concatenate back
    to it (each keeps the whitespace after it), without its cleaning: a piece with
    no word in it stays a piece of its own (the buffer attaches it as the splitter does)."""
    bounds = [0, *_cuts(text, final=True)[0], len(text)]
    return [Sentence(text[a:b]) for a, b in zip(bounds, bounds[1:]) if a < b]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """Split a too-long sentence at a clause boundary (comma, semicolon, dash), else a space."""
    out = []
    s = sentence
    while len(s) > max_chars:
        window = s[: max_chars + 1]
        cut = max((window.rfind(p) for p in (", ", "; ", ": ", " — ", " – ")), default=-1)
        if cut >= max_chars // 3:
            cut += 1  # keep the punctuation with the first part
        else:
            cut = window.rfind(" ")
            if cut < max_chars // 3:
                cut = max_chars
        out.append(s[:cut].strip())
        s = s[cut:].strip()
    if s:
        out.append(s)
    return [p for p in out if p]


class SentenceBuffer:
    """Feed text pieces as they stream (an LLM's deltas); get complete sentences out.

    ``feed`` returns the sentences completed so far, ``flush`` the rest at the end
    of the stream.  The sentences are those of :func:`split_sentences` with the
    same ``min_chars``, however the text was cut into pieces.
    """

    def __init__(self, min_chars: int = MIN_CHARS) -> None:
        self._min = min_chars
        self._text = ""
        """Text after the last cut (its sentence end not decided yet)."""
        self._held: str | None = None
        """The last complete sentence, given out once the next one is known to have words."""
        self._joined = False
        """Is the held text two sentences or more (``min_chars``)?  Then it is no :class:`Sentence`."""
        self._lead = ""
        """Word-less pieces at the start of the stream, put before the first sentence."""

    def _give(self, out: list[str]) -> None:
        out.append(self._held if self._joined else Sentence(self._held))
        self._held, self._joined = None, False

    def _take(self, piece: str, out: list[str]) -> None:
        s = " ".join(piece.split())
        if not _has_word(s):
            if self._held is not None:
                self._held += s
            else:
                self._lead = f"{self._lead} {s}".strip()
            return
        if self._lead:
            s, self._lead = f"{self._lead} {s}", ""
        if self._held is not None and len(self._held) < self._min:
            self._held += " " + s
            self._joined = True
            return
        if self._held is not None:
            self._give(out)
        self._held = s

    def _scan(self, final: bool) -> list[str]:
        out: list[str] = []
        cuts, _ = _cuts(self._text, final)
        a = 0
        for b in cuts:
            self._take(self._text[a:b], out)
            a = b
        self._text = self._text[a:]
        if final:
            self._take(self._text, out)
            self._text = ""
        return out

    def feed(self, piece: str) -> list[str]:
        out: list[str] = []
        if isinstance(piece, Sentence) and not self._text:
            self._take(piece, out)  # cut where it was made: taken as it is
            return out
        self._text += piece
        out = self._scan(final=False)
        if self._held is not None and len(self._held) >= self._min and _has_word(self._text):
            self._give(out)  # the next sentence has words: nothing more joins this one
        return out

    def flush(self) -> list[str]:
        out = self._scan(final=True)
        if self._held is not None:
            self._give(out)
        self._lead = ""
        return out


def split_sentences(text: str, max_chars: int | None = None, min_chars: int = 0) -> list[str]:
    """Split text for speech, sentence by sentence (the rule: this module's docstring).

    Sentences longer than ``max_chars`` are cut at a clause boundary; shorter than
    ``min_chars`` are joined to the next.  A :class:`Sentence` is not split again.
    The sentences are :class:`Sentence` but for those ``min_chars`` joined and
    the parts of those ``max_chars`` cut.
    """
    if isinstance(text, Sentence):
        out: list[str] = [Sentence(" ".join(text.split()))] if _has_word(text) else []
    else:
        buf = SentenceBuffer(min_chars)
        out = buf.feed(text) + buf.flush()
    if max_chars:
        out = [piece for s in out for piece in _cut_long(s, max_chars)]
    return out


# --------------------------------------------------------------------------- normalisation

_PRE = str.maketrans({
    "ў": "о", "ş": "ш", "ç": "ч", "ı": "i", "ё": "е", "’": "", "'": "", "ʻ": "", "ʼ": "", "‘": "", "`": "", "´": "",
})
_LAT_DIGRAPHS = [("shch", "ш"), ("sh", "ш"), ("ch", "ч"), ("zh", "ж"), ("kh", "х"), ("gh", "г"), ("ts", "ц"), ("ya", "я"), ("yu", "ю")]
_LAT_SINGLE = str.maketrans({
    "a": "а", "b": "б", "c": "с", "d": "д", "e": "е", "f": "ф", "g": "г", "h": "х", "i": "и", "j": "ж", "k": "к",
    "l": "л", "m": "м", "n": "н", "o": "о", "p": "п", "q": "к", "r": "р", "s": "с", "t": "т", "u": "у", "v": "в",
    "w": "у", "x": "х", "y": "и", "z": "з",
})
# Kazakh (and Uzbek Cyrillic) letters onto Russian look-alikes, the vowels that
# recognisers and Latin spellings confuse (ы/і/и/й) onto one, signs dropped.
_FOLD = str.maketrans({
    "ә": "а", "ғ": "г", "қ": "к", "ң": "н", "ө": "о", "ұ": "у", "ү": "у", "һ": "х", "і": "и", "ы": "и", "й": "и",
    "ҳ": "х", "щ": "ш", "э": "е", "ъ": None, "ь": None,
})
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """The folded Cyrillic form used for matching (never spoken)."""
    t = unicodedata.normalize("NFKC", text).lower().translate(_PRE)
    # strip diacritics (Latin á ǵ ń ó ú ä ö ü ñ ğ ū; Cyrillic й ё)
    t = "".join(c for c in unicodedata.normalize("NFD", t) if not unicodedata.combining(c))
    if re.search(r"[a-z]", t):
        for lat, cyr in _LAT_DIGRAPHS:
            t = t.replace(lat, cyr)
        t = t.translate(_LAT_SINGLE)
    t = t.translate(_FOLD)
    return " ".join(_NON_WORD.sub(" ", t).split())


def normalize_language(language: str | None) -> str:
    """A language code's language: 'kk-KZ', 'kk_KZ', 'KK' -> 'kk'; None -> ''."""
    return re.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]
