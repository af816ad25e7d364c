"""Rules that hold whatever the dialogue backend: the caller can always reach a human.

Law No. 230-VIII, Art. 16: users may refuse to interact with the AI.  Asking
for an operator, or saying one does not want to talk to a robot, in Kazakh,
Russian, Uzbek or English, always hands the call over -- checked before any
dialogue engine sees the turn, and tolerant of recognition errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz import fuzz

from models.text import normalise  # one normaliser for the handoff rule and for retrieval

# (phrase, reason). Phrases are written naturally; they are normalised at import.
_PHRASES: list[tuple[str, str]] = [
    # operator / a person
    ("оператор", "user_request"),
    ("операторға қосыңыз", "user_request"),
    ("маманмен сөйлескім келеді", "user_request"),
    ("адаммен сөйлескім келеді", "user_request"),
    ("тірі адаммен", "user_request"),
    ("маманға қосыңызшы", "user_request"),
    ("соедините с оператором", "user_request"),
    ("переключите на оператора", "user_request"),
    ("позовите оператора", "user_request"),
    ("живой человек", "user_request"),
    ("живым человеком", "user_request"),
    ("живого человека", "user_request"),
    ("поговорить с человеком", "user_request"),
    ("поговорить с сотрудником", "user_request"),
    ("позовите специалиста", "user_request"),
    ("operator", "user_request"),
    ("mutaxassis bilan", "user_request"),
    ("odam bilan gaplashmoqchiman", "user_request"),
    ("real person", "user_request"),
    ("human agent", "user_request"),
    ("talk to a human", "user_request"),
    ("representative", "user_request"),
    # refusing the AI (Art. 16)
    ("роботпен сөйлескім келмейді", "refused_ai"),
    ("роботпен сөйлеспеймін", "refused_ai"),
    ("жасанды интеллектпен сөйлескім келмейді", "refused_ai"),
    ("не хочу говорить с роботом", "refused_ai"),
    ("не хочу разговаривать с роботом", "refused_ai"),
    ("не хочу с роботом", "refused_ai"),
    ("не хочу общаться с ботом", "refused_ai"),
    ("robot bilan gaplashmayman", "refused_ai"),
    ("robot bilan gaplashishni xohlamayman", "refused_ai"),
    ("don't want to talk to a robot", "refused_ai"),
    ("do not want to talk to a machine", "refused_ai"),
]
_NORMALISED = [(normalise(p), r) for p, r in _PHRASES]
_OPERATOR_WORDS = {normalise(w) for w in ("оператор", "операторға", "оператора", "оператором", "операторы", "operatorni", "operatorga")}


@dataclass(frozen=True)
class HandoffIntent:
    reason: str
    """user_request or refused_ai."""
    matched: str


def detect_handoff(text: str, threshold: float = 88.0) -> HandoffIntent | None:
    """A request for a human, or a refusal of the AI, in ``text`` (ASR errors tolerated)."""
    norm = normalise(text)
    if not norm:
        return None
    words = norm.split()
    # the bare word, also misrecognised by one letter ("аператор", "опиратор")
    for w in words:
        if w in _OPERATOR_WORDS or (len(w) >= 7 and fuzz.ratio(w[:8], "оператор") >= 85):
            return HandoffIntent("user_request", w)
    best: tuple[float, HandoffIntent | None] = (0.0, None)
    for phrase, reason in _NORMALISED:
        if len(phrase) < 6:
            continue
        score = fuzz.partial_ratio(phrase, norm) if len(norm) >= len(phrase) else fuzz.ratio(phrase, norm)
        # refusals outrank plain requests when both match
        if score >= threshold and (score, reason == "refused_ai") > (best[0], best[1] is not None and best[1].reason == "refused_ai"):
            best = (score, HandoffIntent(reason, phrase))
    return best[1]
