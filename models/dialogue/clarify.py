"""Decide per turn: answer, confirm, offer two topics, ask to rephrase, hand off.

A caller answered the wrong question is worse off than one asked to repeat.
So the knowledge base's match is answered straight away only when it is
clearly the best (``settings.answer_threshold`` and ``answer_margin``); a
plausible but uncertain match is put to the caller ("Сіз картаның бұғатталуы
туралы сұрап тұрсыз ба? Иә немесе жоқ деп айтыңыз"), two close matches are
offered side by side, and a weak one is asked again in other words; the
knowledge base's ``max_misunderstood`` misunderstood turns hand the call to a
person. The caller's answer to a clarifying question comes by voice (yes/no,
first/second in kk, ru, uz, en: :mod:`models.dialogue.yesno`) or, on phone
lines, by key (1 and 2). Something that is neither is asked once more, unless
it is itself a clear new question, which is then answered; still unclear, a
person takes over.

Used by every dialogue engine: the knowledge-base engine speaks the chosen
entry's answer, the LLM engines generate one grounded on it. Pure logic over
:class:`~models.dialogue.kb.KnowledgeBase` scores; the per-call memory lives
in :class:`~models.dialogue.base.DialogueState` (``pending``).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.dialogue.base import Action, DialogueState, Pending, Turn
from models.dialogue.kb import Entry, KnowledgeBase
from models.dialogue.yesno import parse_answer
from models.text import normalise

NAMING_LETTERS = 6
"""Fewest letters of a reply that names one of two offered topics ("по вкладу", "несие")."""
MAX_ASKS = 2
"""A clarifying question is put at most this many times (once, and once again after an unclear answer)."""


@dataclass
class Outcome:
    """What to do with a turn: answer ``entry`` (to ``question``), or say ``text`` (then ``action``)."""

    act: str
    """answer, confirmed, chosen (an entry is answered); confirm, choose, reask, rephrase, handoff."""
    entry: Entry | None = None
    question: str = ""
    score: float = 0.0
    text: str = ""
    action: Action | None = None


class Clarifier:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def step(self, turn: Turn | None, language: str, state: DialogueState) -> Outcome:
        """The outcome of the caller's latest turn (``state`` updated, ``state.act`` set)."""
        if turn is None:
            return self._misunderstood("", language, state, 0.0)
        if state.pending is not None:
            return self._resolve(turn, language, state)
        return self._question(turn.text, language, state, turn.alternatives, turn.avg_logprob)

    def would_answer(self, text: str, state: DialogueState) -> bool:
        """Whether ``text`` settles the turn without more words: a clear answer to the pending
        clarifying question (yes/no, first/second), or a question answered straight away.
        For adaptive endpointing (the caller is done); changes no state."""
        if not text.strip():
            return False
        if state.pending is not None:
            return parse_answer(text, choosing=state.pending.kind == "choose").kind is not None
        return self.kb.decide(self.kb.scores_for(text))[0] == "answer"

    # ------------------------------------------------------------------
    def _question(self, text: str, language: str, state: DialogueState, alternatives=(), avg_logprob=None) -> Outcome:
        kb = self.kb
        if not text.strip():
            return self._misunderstood(text, language, state, 0.0)
        act, picks, score, margin = kb.decide(kb.scores_for(text, alternatives, avg_logprob))
        if act == "answer":
            return self._answer(kb.entries[picks[0]], text, state, score, "answer", margin)
        if act == "none":
            return self._misunderstood(text, language, state, score)
        ids = tuple(kb.entries[i].id for i in picks)
        state.pending = Pending(act, ids, text, language)  # type: ignore[arg-type]
        state.act = {"act": act, "entries": list(ids), "score": round(score, 4), "margin": round(margin, 4)}
        return Outcome(act, question=text, score=score, text=self._clarifying(state.pending, language, state.keypad))

    def _clarifying(self, p: Pending, language: str, keypad: bool) -> str:
        kb = self.kb
        if p.kind == "confirm":
            return kb.clarify("confirm", language, keypad, topic=kb.topic(p.entries[0], language))
        return kb.clarify("choose", language, keypad, a=kb.topic(p.entries[0], language), b=kb.topic(p.entries[1], language))

    def _answer(self, entry: Entry, question: str, state: DialogueState, score: float, act: str, margin: float | None = None) -> Outcome:
        state.misunderstood = 0
        state.pending = None
        state.last_entry = entry.id
        state.act = {"act": act, "entry": entry.id, "score": round(score, 4)}
        if margin is not None:
            state.act["margin"] = round(margin, 4)
        return Outcome(act, entry=entry, question=question, score=score)

    def _misunderstood(self, text: str, language: str, state: DialogueState, score: float) -> Outcome:
        kb = self.kb
        state.pending = None
        state.misunderstood += 1
        if state.misunderstood >= kb.max_misunderstood:
            state.act = {"act": "handoff", "reason": "not_understood", "score": round(score, 4)}
            action = Action("handoff", "not_understood", {"misunderstood": state.misunderstood, "question": text})
            return Outcome("handoff", question=text, score=score, text=kb.handoff(language), action=action)
        state.act = {"act": "rephrase", "score": round(score, 4)}
        return Outcome("rephrase", question=text, score=score, text=kb.rephrase(language))

    def _resolve(self, turn: Turn, language: str, state: DialogueState) -> Outcome:
        """The caller's reply to a confirmation or a choice: yes / first / second answers the
        entry; no asks again (or takes what followed the no as the question); a clear new
        question is answered; anything else re-asks once, then hands off."""
        kb = self.kb
        p = state.pending
        reply = parse_answer(turn.text, turn.dtmf, choosing=p.kind == "choose")
        chosen = None
        if reply.kind == "yes" and p.kind == "confirm":
            chosen = p.entries[0]
        elif reply.kind in ("first", "second") and p.kind == "choose":
            chosen = p.entries[0 if reply.kind == "first" else 1]
        elif reply.kind is None and p.kind == "choose" and turn.text.strip():
            chosen = self._named(turn.text, p.entries)
        if chosen is not None:
            return self._answer(kb.by_id[chosen], p.question, state, 1.0, "confirmed" if p.kind == "confirm" else "chosen")
        if reply.kind == "no":
            state.pending = None
            if reply.rest and kb.decide(kb.scores_for(reply.rest))[0] != "none":
                return self._question(reply.rest, language, state)  # "нет, я про вклад"
            return self._misunderstood(p.question, language, state, 0.0)
        if turn.text.strip():
            # not an answer: a clear new question is answered as such
            act, picks, score, margin = kb.decide(kb.scores_for(turn.text, turn.alternatives, turn.avg_logprob))
            if act == "answer":
                return self._answer(kb.entries[picks[0]], turn.text, state, score, "answer", margin)
        if p.asked < MAX_ASKS:
            p.asked += 1
            state.act = {"act": "reask", "entries": list(p.entries)}
            return Outcome("reask", question=p.question, text=kb.clarify("reask", language) + " " + self._clarifying(p, language, state.keypad))
        # asked twice and still unclear: a person takes over
        state.misunderstood = max(state.misunderstood, kb.max_misunderstood - 1)
        return self._misunderstood(p.question, language, state, 0.0)

    def _named(self, text: str, entries: tuple[str, ...]) -> str | None:
        """Which of the offered entries the caller's words name, when one clearly does: words
        enough to say so (a misheard "нет" such as "Лип" names nothing), a score at least
        ``answer_threshold`` and ``choose_margin`` above the other."""
        kb = self.kb
        if len(normalise(text).replace(" ", "")) < NAMING_LETTERS:
            return None
        scores = kb.scores_for(text)
        idx = {e.id: i for i, e in enumerate(kb.entries)}
        a, b = (float(scores[idx[e]]) for e in entries)
        if max(a, b) >= kb.answer_threshold and abs(a - b) >= kb.choose_margin:
            return entries[0] if a > b else entries[1]
        return None
