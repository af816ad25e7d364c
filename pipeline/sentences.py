"""Sentence splitting for speech: speak the first sentence while the rest is generated.

Splits after . ! ? … (and runs of them, with closing quotes/brackets) followed
by whitespace and an upper-case letter, digit or opening quote; never inside
numbers ("1.5", "10:00") or after common Kazakh/Russian abbreviations
("т.б.", "т.е.", "мкр.").
"""

from __future__ import annotations

import re

_ABBREV = {
    "т", "б", "е", "д", "п", "г", "гг", "ул", "мкр", "пр", "им", "тел", "руб", "тг", "млн", "млрд", "тыс",
    "др", "стр", "см", "напр", "мыс", "ж", "жж", "көш", "etc", "mr", "mrs", "dr", "no", "vs",
}
_END = re.compile(r"[.!?…]+[\"'»”)\]]*")
_MIN_CHARS = 12
"""Shorter pieces are joined to the next sentence (TTS prosody suffers on fragments)."""


def _is_boundary(text: str, end: int) -> bool:
    """Is the punctuation run ending at ``end`` a sentence end? (``end`` = index after it)."""
    rest = text[end:]
    if not rest:
        return False  # unknown yet: more text may follow
    if not rest[0].isspace():
        return False  # "1.5", "kaspi.kz"
    nxt = rest.lstrip()
    if not nxt:
        return False
    word = re.search(r"(\w+)[.!?…]*[\"'»”)\]]*$", text[:end])
    if word and text[end - 1] == "." and word.group(1).lower() in _ABBREV:
        return False
    return nxt[0].isupper() or nxt[0].isdigit() or nxt[0] in "«\"'“(—-"


class SentenceBuffer:
    """Feed text pieces as they stream; get complete sentences out."""

    def __init__(self, min_chars: int = _MIN_CHARS) -> None:
        self._buf = ""
        self._min = min_chars

    def feed(self, piece: str) -> list[str]:
        self._buf += piece
        out: list[str] = []
        pos = 0
        for m in _END.finditer(self._buf):
            if _is_boundary(self._buf, m.end()):
                candidate = self._buf[pos : m.end()].strip()
                if len(candidate) >= self._min:
                    out.append(candidate)
                    pos = m.end()
        self._buf = self._buf[pos:]
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    @classmethod
    def split_all(cls, text: str, min_chars: int = _MIN_CHARS) -> list[str]:
        b = cls(min_chars)
        return b.feed(text) + b.flush()


def split_sentences(text: str) -> list[str]:
    return SentenceBuffer.split_all(text)
