"""Parsing the streamed model output into speakable text and markers (:class:`ReplyParser`)."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from models.dialogue.llm.prompt import MARKERS

_MARKDOWN_CHARS = str.maketrans("", "", "*_`#~|[]{}\ufffd")  # and undecodable bytes
_BULLET = re.compile(r"(?:[-*+•·–—>]+|\d{1,2}[.)])")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)?")
_URL = re.compile(r"\(?(?:https?://|www\.)[^\s)]*\)?", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b\u200e\u200f\ufeff]")  # not ZWNJ/ZWJ (Uyghur, Persian)
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")
_LONG_WORD = 48


class ReplyParser:
    """Turns raw streamed model text into speakable pieces, and spots the handoff markers.

    Text is released word by word (a word is held until whitespace follows it),
    so a marker or a stop string split across tokens is never spoken.  Markdown
    emphasis/heading/code characters, list bullets and URLs are removed;
    a line break becomes a sentence break.  ``feed`` and ``flush`` return the
    clean text to yield (possibly empty); after a marker or stop string
    ``done`` is true and ``reason`` holds the marker's handoff reason (None
    for a stop string).
    """

    def __init__(self, markers: Mapping[str, str] = MARKERS, stops: Sequence[str] = ()) -> None:
        self._markers = {m.lower(): r for m, r in markers.items()}
        self._marker_re = re.compile("|".join(re.escape(m) for m in markers), re.I) if markers else None
        self._stops = tuple(s for s in stops if s)
        self._buf = ""
        self.done = False
        self.reason: str | None = None
        self.emitted = False
        self._space = False
        self._line_start = True
        self._last = ""

    # -- public ------------------------------------------------------------
    def feed(self, piece: str) -> str:
        if self.done or not piece:
            return ""
        self._buf += piece
        end = self._find_end()
        if end is not None:
            i, reason = end
            text, self._buf = self._buf[:i], ""
            self.done, self.reason = True, reason
            return self._clean(text)
        j = self._safe_len()
        text, self._buf = self._buf[:j], self._buf[j:]
        return self._clean(text)

    def flush(self) -> str:
        """The end of the stream: release what is held (an unfinished marker is dropped)."""
        if self.done:
            return ""
        self.done = True
        text, self._buf = self._buf.rstrip(), ""
        low = text.lower()
        for held in list(self._markers) + [s.lower() for s in self._stops]:
            for n in range(min(len(held) - 1, len(low)), 0, -1):
                if low.endswith(held[:n]):
                    text = text[: len(text) - n]
                    break
        return self._clean(text)

    # -- internals ---------------------------------------------------------
    def _find_end(self) -> tuple[int, str | None] | None:
        best: tuple[int, str | None] | None = None
        if self._marker_re is not None:
            m = self._marker_re.search(self._buf)
            if m:
                best = (m.start(), self._markers[m.group(0).lower()])
        for s in self._stops:
            i = self._buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, None)
        return best

    def _safe_len(self) -> int:
        buf = self._buf
        m = _LAST_SPACE.search(buf)
        j = m.end() if m else 0
        if j == 0 and len(buf) > _LONG_WORD and "[" not in buf:
            j = len(buf)  # a very long run without spaces: do not hold it forever
        low = buf.lower()
        for held in list(self._markers) + [s.lower() for s in self._stops]:
            for n in range(min(len(held) - 1, len(low)), 0, -1):
                if low.endswith(held[:n]):
                    j = min(j, len(buf) - n)
                    break
        return j

    def _clean(self, text: str) -> str:
        out: list[str] = []
        for tok in re.split(r"(\s+)", text):
            if not tok:
                continue
            if tok.isspace():
                if "\n" in tok:
                    if self.emitted and self._last not in ".!?…:;,":
                        out.append(".")
                        self._last = "."
                    self._line_start = True
                if self.emitted:
                    self._space = True
                continue
            word = self._clean_word(tok)
            self._line_start = False
            if not word:
                continue
            if self._space:
                out.append(" ")
                self._space = False
            out.append(word)
            self.emitted = True
            self._last = word[-1]
        return "".join(out)

    def _clean_word(self, tok: str) -> str:
        if self._line_start and _BULLET.fullmatch(tok):
            return ""
        tok = _LINK_TARGET.sub("]", tok)
        tok = _URL.sub("", tok)
        return _CONTROL.sub("", tok.translate(_MARKDOWN_CHARS))
