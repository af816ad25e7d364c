"""Language of typed text, by the letters each Turkic orthography uses.

Typed input has no audio for Whisper's language identification; the scripts
of the configured languages separate them well enough for routing a reply.
"""

from __future__ import annotations

import re

_CYRILLIC = re.compile(r"[\u0400-\u04FF]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F\u0259]")


def detect_text_language(text: str, allowed: list[str], default: str) -> str:
    low = text.lower()
    guess: list[str] = []
    if _CYRILLIC.search(low):
        if any(c in low for c in "қғұһі"):
            guess = ["kk", "tt"]
        elif "җ" in low or "ә" in low:
            guess = ["tt", "kk"]
        elif any(c in low for c in "ңөү"):
            guess = ["ky", "kk", "tt"]
        elif any(c in low for c in "ўқғҳ"):
            guess = ["uz"]
        else:
            guess = ["ru", "kk"]
    elif _LATIN.search(low):
        if "ə" in low:
            guess = ["az", "tr"]
        elif re.search(r"[og][ʻ'‘’`]", low) or "sh" in low and "ı" not in low:
            guess = ["uz"]
        elif any(c in low for c in "ığşçöü"):
            guess = ["tr", "az", "uz"]
        else:
            guess = ["en", "uz", "tr"]
    for g in guess:
        if g in allowed:
            return g
    return default
