"""Speech of fixed texts, synthesised once: the disclosure, "please repeat", the handoff sentence,
the knowledge base's answers and clarifying questions.

The router asks :class:`SpeechCache` before it synthesises a sentence.  Only sentences of the
texts registered with :meth:`SpeechCache.allow` are kept (what the operator wrote, never what a
caller or an LLM said), keyed by the voice that speaks them (its provenance id), the language,
the synthesis settings and the sentence (16-bit samples: what every output format carries at
most), least recently used first out past ``max_bytes``.  The audio is kept unmarked: the reply's sender embeds the watermark with that reply's own payload, so
every reply is marked as it would be without the cache.  Registering a new set of texts (a new
knowledge base) drops the sentences no longer in it; a new voice has a new provenance id, so
nothing it did not say is ever served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from models.audio import AudioChunk
from models.text import MIN_CHARS, split_sentences


def _norm(sentence: str) -> str:
    return " ".join(str(sentence).split())


class SpeechCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._allowed: frozenset[str] = frozenset()
        self._items: OrderedDict[tuple, tuple[tuple[np.ndarray, int], ...]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, texts: Iterable[str], max_chars: int | None = None) -> int:
        """Keep the sentences of ``texts`` from now on (as the reply path and the router split
        them), and only those; sentences kept before that are no longer among them are dropped.
        Returns how many sentences are allowed."""
        allowed = set()
        for text in texts:
            for min_chars in (0, MIN_CHARS):  # a reply joins sentences shorter than MIN_CHARS; a disclosure too
                allowed.update(_norm(s) for s in split_sentences(text, max_chars, min_chars))
        with self._lock:
            self._allowed = frozenset(allowed)
            for key in [k for k in self._items if k[3] not in self._allowed]:
                self._drop(key)
        return len(allowed)

    def allowed(self, sentence: str) -> bool:
        return _norm(sentence) in self._allowed

    def has(self, voice: str, language: str, config, sentence: str) -> bool:
        return (voice, language, config, _norm(sentence)) in self._items

    def get(self, voice: str, language: str, config, sentence: str) -> list[AudioChunk] | None:
        key = (voice, language, config, _norm(sentence))
        with self._lock:
            item = self._items.get(key)
            if item is None:
                if key[3] in self._allowed:
                    self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
        return [AudioChunk(pcm.astype(np.float32) / 32767.0, rate) for pcm, rate in item]

    def put(self, voice: str, language: str, config, sentence: str, chunks: list[AudioChunk]) -> bool:
        """Keep ``chunks`` (the sentence's whole speech) if the sentence is allowed and fits."""
        key = (voice, language, config, _norm(sentence))
        if key[3] not in self._allowed or not chunks:
            return False
        item = tuple((np.round(np.clip(c.samples, -1.0, 1.0) * 32767.0).astype(np.int16), c.rate) for c in chunks)
        size = sum(pcm.nbytes for pcm, _ in item)
        if size > self.max_bytes:
            return False
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = item
            self.bytes += size
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._items)))
        return True

    def _drop(self, key) -> None:
        item = self._items.pop(key)
        self.bytes -= sum(pcm.nbytes for pcm, _ in item)

    def __len__(self) -> int:
        return len(self._items)
