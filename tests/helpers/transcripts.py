"""Reading a session's events: transcript normalisation, the finals, the protocol's order guarantees."""

from __future__ import annotations

import re

# whisper-base measured on kk_kscd_ex1 through this pipeline: CER 0.30-0.45 (normalised) depending on
# segmentation; the same clip decoded as Turkish (the failure to guard against) or with broken
# resampling scores 0.85-1.0. 0.55 keeps headroom for thread-timing variation and catches both.
KK_EX1_CER_BOUND = 0.55


def norm(text: str) -> str:
    """Lowercase, drop punctuation, fold the Kazakh letters whisper-base often writes as Russian ones."""
    text = text.lower().translate(str.maketrans("әғқңөұүһі", "агкноууhи"))
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def finals(events):
    return [e for e in events if e["type"] == "transcript" and e["final"]]


def check_order(events):
    """Protocol order guarantees: ready first; for each utterance speech_started < partials < final; finals in order."""
    assert events[0]["type"] == "ready"
    assert events[-1]["type"] == "session_end"
    seen_final = set()
    started = []
    for e in events:
        if e["type"] == "speech_started":
            started.append(e["utterance_id"])
        if e["type"] == "transcript" and e["source"] == "audio":
            assert e["utterance_id"] in started, "transcript before speech_started"
            assert e["utterance_id"] not in seen_final, "partial or second final after the final"
            if e["final"]:
                seen_final.add(e["utterance_id"])
    order = [e["utterance_id"] for e in finals(events) if e["source"] == "audio"]
    assert order == sorted(order, key=lambda u: int(u[1:]))
