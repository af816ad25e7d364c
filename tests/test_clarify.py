"""Answer, confirm, choose, rephrase, hand off: the per-turn decision, yes/no by voice and key.

Issue 12: a caller answered the wrong question is worse off than one asked to
repeat. These tests play callers through the clarifying turns: the engine
alone, typed over the native protocol, keys on a keypad session, on a web
session (ignored) and on a Twilio media stream.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import Encoding, encode_wire, resample
from models.dialogue.base import DialogueState, Turn
from models.dialogue.clarify import Clarifier
from models.dialogue.kb import KbEngine, KnowledgeBase, KnowledgeBaseError
from models.dialogue.yesno import parse_answer
from models.scheduler import Priority

ROOT = Path(__file__).resolve().parent.parent
PIN = "Картаның құпия кодын есімнен шығарып алдым"  # the issue's trap: uncertain, pin_reset is right
PERCENT = "Процент какой?"  # loans or deposits: two close topics


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load(None)


@pytest.fixture(scope="module")
def engine(kb):
    return KbEngine(kb)


def say(engine, text, state, language="kk", dtmf=None):
    out = list(engine.respond([Turn("user", text, language, dtmf=dtmf)], language, state))
    return "".join(x for x in out if isinstance(x, str)), next((x for x in out if not isinstance(x, str)), None)


# --------------------------------------------------------------------------- yes / no


@pytest.mark.parametrize("text, kind", [
    ("Иә", "yes"), ("Иә.", "yes"), ("И-я", "yes"), ("Ия", "yes"), ("иа", "yes"), ("Иә, дұрыс", "yes"), ("Әрине", "yes"),
    ("Да", "yes"), ("Да, конечно", "yes"), ("Ну да", "yes"), ("Верно", "yes"), ("Ha", "yes"), ("Albatta", "yes"), ("Yes", "yes"),
    ("Жоқ", "no"), ("Жох", "no"), ("Жоқ, олай емес", "no"), ("Нет", "no"), ("Нет-нет", "no"), ("Да нет", "no"), ("Не то", "no"),
    ("Yoʻq", "no"), ("Йўқ", "no"), ("Иә... жоқ", "no"),
    ("Не дедіңіз?", None), ("Картамды жоғалттым", None), ("ммм", None), ("", None),
])
def test_yes_and_no_in_kazakh_russian_uzbek(text, kind):
    assert parse_answer(text).kind == kind


def test_choices_keys_and_what_follows_a_no():
    assert parse_answer("Первое", choosing=True).kind == "first"
    assert parse_answer("Екіншісі", choosing=True).kind == "second"
    assert parse_answer("ikkinchisi", choosing=True).kind == "second"
    assert parse_answer("Первое", choosing=False).kind is None  # a confirmation wants yes or no
    assert parse_answer("Нет, я про вклад").rest == "я про вклад"
    assert [parse_answer("", d).kind for d in "12"] == ["yes", "no"]
    assert [parse_answer("", d, choosing=True).kind for d in "12"] == ["first", "second"]
    assert parse_answer("", "5").kind is None and parse_answer("", "#").kind is None


# --------------------------------------------------------------------------- the decision


def test_an_uncertain_question_is_confirmed_and_yes_gets_the_answer(engine, kb):
    state = DialogueState()
    text, action = say(engine, PIN, state)
    assert state.act["act"] == "confirm" and state.act["entries"] == ["pin_reset"] and action is None
    assert text == kb.clarify("confirm", "kk", topic=kb.by_id["pin_reset"].topic["kk"])
    assert kb.by_id["pin_reset"].topic["kk"] in text and "Иә немесе жоқ" in text
    text, _ = say(engine, "Иә", state)
    assert text == kb.answer("pin_reset", "kk") and state.act == {"act": "confirmed", "entry": "pin_reset", "score": 1.0}
    assert state.pending is None and state.misunderstood == 0 and state.last_entry == "pin_reset"


def test_no_asks_to_rephrase_and_a_second_no_hands_off(engine, kb):
    state = DialogueState()
    say(engine, PIN, state)
    text, action = say(engine, "Жоқ", state)
    assert text == kb.rephrase("kk") and action is None and state.misunderstood == 1
    say(engine, PIN, state)
    text, action = say(engine, "Жоқ", state)
    assert text == kb.handoff("kk") and (action.kind, action.reason) == ("handoff", "not_understood")


def test_a_no_followed_by_the_real_question_is_understood(engine, kb):
    state = DialogueState()
    say(engine, PIN, state)
    text, _ = say(engine, "Жоқ, депозит бойынша пайыз қанша?", state)
    assert state.act["act"] in ("answer", "confirm") and (state.act.get("entry") or state.act["entries"][0]) == "deposit_rates"


def test_an_unclear_answer_is_asked_once_more_then_a_person_takes_over(engine, kb):
    state = DialogueState()
    say(engine, PIN, state)
    text, action = say(engine, "ммм", state)
    assert state.act["act"] == "reask" and text.startswith(kb.clarify("reask", "kk")) and kb.by_id["pin_reset"].topic["kk"] in text
    text, action = say(engine, "ааа", state)
    assert text == kb.handoff("kk") and (action.kind, action.reason) == ("handoff", "not_understood")


def test_a_clear_new_question_instead_of_yes_or_no_is_answered(engine, kb):
    state = DialogueState()
    say(engine, PIN, state)
    text, _ = say(engine, "Как разблокировать карту?", state, "ru")
    assert text == kb.answer("card_blocked", "ru") and state.pending is None


def test_two_close_topics_are_offered_and_the_second_is_chosen(engine, kb):
    state = DialogueState()
    text, _ = say(engine, PERCENT, state, "ru")
    assert state.act["act"] == "choose" and set(state.act["entries"]) == {"loan_rates", "deposit_rates"}
    a, b = state.act["entries"]
    assert kb.by_id[a].topic["ru"] in text and kb.by_id[b].topic["ru"] in text and "первое или второе" in text
    text, _ = say(engine, "Второе", state, "ru")
    assert text == kb.answer(b, "ru") and state.act["act"] == "chosen"
    # naming one of the two works too
    state = DialogueState()
    say(engine, PERCENT, state, "ru")
    text, _ = say(engine, "по вкладу", state, "ru")
    assert text == kb.answer("deposit_rates", "ru")


def test_keys_answer_and_the_keypad_hint_is_spoken_on_phone_lines(engine, kb):
    state = DialogueState(keypad=True)
    text, _ = say(engine, PIN, state)
    assert text.endswith(kb.clarify_texts["dtmf_hint"]["kk"])
    text, _ = say(engine, "", state, dtmf="1")
    assert text == kb.answer("pin_reset", "kk")
    state = DialogueState(keypad=True)
    say(engine, PERCENT, state, "ru")
    first = state.act["entries"][0]
    text, _ = say(engine, "", state, "ru", dtmf="1")
    assert text == kb.answer(first, "ru")


def test_clear_questions_are_answered_at_once(engine, kb):
    for text, lang, entry in [("Картам бұғатталып қалды, не істеймін?", "kk", "card_blocked"), ("Какой курс доллара сегодня?", "ru", "currency_exchange")]:
        state = DialogueState()
        said, _ = say(engine, text, state, lang)
        assert said == kb.answer(entry, lang) and state.act["act"] == "answer"


def test_entries_marked_confirm_false_are_never_asked_about(kb):
    # a request for a person must not be met with "did you ask about the operator?"
    assert not kb.by_id["operator"].confirm and not kb.by_id["fraud"].confirm
    scores = np.zeros(len(kb.entries))
    scores[kb.entries.index(kb.by_id["fraud"])] = kb.answer_threshold + 0.01
    scores[kb.entries.index(kb.by_id["card_lost"])] = kb.answer_threshold  # no margin needed
    assert kb.decide(scores)[0] == "answer"
    scores = np.zeros(len(kb.entries))
    scores[kb.entries.index(kb.by_id["thanks"])] = kb.threshold + 0.01  # a weak "thanks" is not answered ("ммм эээ бла бла")
    assert kb.decide(scores)[0] == "none"
    scores = np.zeros(len(kb.entries))
    scores[kb.entries.index(kb.by_id["pin_reset"])] = kb.threshold + 0.01
    assert kb.decide(scores)[0] == "confirm"


# --------------------------------------------------------------------------- knowledge-base format and bad input


def _kb(**over):
    data = {
        "id": "t", "languages": ["kk", "ru"],
        "fallback": {"rephrase": {"kk": "Қайталаңыз.", "ru": "Повторите."}, "handoff": {"kk": "Операторға.", "ru": "Оператору."}},
        "entries": [
            {"id": "card", "topic": {"kk": "карта"}, "questions": {"kk": ["Картам бұғатталды", "Картамды бұғаттан шығарыңыз"]}, "answer": {"kk": "Карта жауабы.", "ru": "Ответ про карту."}},
            {"id": "loan", "questions": {"kk": ["Несие алғым келеді", "Несие пайызы қанша"]}, "answer": {"kk": "Несие жауабы.", "ru": "Ответ про кредит."}},
        ],
    }
    for k, v in over.items():
        data[k] = v
    return KnowledgeBase.from_dict(data)


@pytest.mark.parametrize("over, message", [
    ({"settings": {"answer_threshold": 0.1}}, "settings.answer_threshold: must not be below settings.threshold"),
    ({"settings": {"answer_margin": 1.5}}, "settings.answer_margin: must be a number from 0 up to 1"),
    ({"settings": {"confirm": "yes"}}, "settings.confirm: must be true or false"),
    ({"fallback": {"rephrase": {"kk": "a", "ru": "b"}, "handoff": {"kk": "a", "ru": "b"}, "confirm": {"kk": "{topik} ба?"}}}, "fallback.confirm: 'kk' text has a placeholder other than"),
    ({"fallback": {"rephrase": {"kk": "a", "ru": "b"}, "handoff": {"kk": "a", "ru": "b"}, "confirmm": {"kk": "x"}}}, "unknown field 'confirmm'"),
    ({"entries": []}, "entries: must be a non-empty list"),
    ({"entries": [{"id": "x", "questions": {"kk": ["?!"]}, "answer": {"kk": "a", "ru": "b"}}]}, "empty or non-text question"),
])
def test_bad_clarification_settings_fail_with_one_clear_line(over, message):
    with pytest.raises(KnowledgeBaseError, match=message.replace("(", r"\(").replace("{", r"\{").replace("?", r"\?")):
        _kb(**over)


def test_a_kb_without_the_callers_language_or_topics_still_clarifies_sensibly():
    kb = _kb(settings={"answer_threshold": 0.99})  # confirm everything it understands
    engine = KbEngine(kb)
    state = DialogueState()
    text, _ = say(engine, "Несие керек", state, "uz")  # the KB has no uz; the built-in uz confirmation names the entry by its question
    assert state.act["act"] == "confirm" and text.startswith("Siz «Несие алғым келеді» haqida")
    text, _ = say(engine, "Ha", state, "uz")
    assert text == "Несие жауабы."  # the answer in the KB's default language
    state = DialogueState()
    text, _ = say(engine, "Картам бұғатталды ма", state, "ru")
    # no ru topic and no ru question: the topic in the KB's default language
    assert text == "Правильно ли я понял, вы спрашиваете про карта? Скажите да или нет."
    off = KbEngine(_kb(settings={"confirm": False}))
    state = DialogueState()
    text, _ = say(off, "Несие керек", state)
    assert text == "Несие жауабы." and state.act["act"] == "answer"


def test_nbest_hypotheses_that_agree_lift_the_right_entry(kb):
    garbled = "Катам лук таным калымті"
    alone = kb.scores_for(garbled)
    with_alts = kb.scores_for(garbled, [("Картам блоктанып қалыпты", -0.4), ("Картам блок таным қалыпты", -0.5)], -0.35)
    i = kb.entries.index(kb.by_id["card_blocked"])
    assert with_alts[i] > alone[i] + 0.05
    assert int(np.argmax(with_alts)) == i
    # a hypothesis the recogniser barely believed weighs almost nothing
    unlikely = kb.scores_for(garbled, [("Картам блоктанып қалыпты", -9.0)], -0.35)
    assert abs(unlikely[i] - alone[i]) < 0.01


# --------------------------------------------------------------------------- the LLM backends clarify too


def test_llm_backend_confirms_without_calling_the_model_and_answers_after_yes(kb):
    from models.dialogue.llm import GroundedEngine, LlmConfig

    class Echo(GroundedEngine):
        name = "stand-in"
        seen: list = []

        def stream(self, messages, info=None):
            self.seen.append(messages)
            yield "Жауап."

    eng = Echo(kb.search, LlmConfig(threshold=kb.threshold, clarifier=Clarifier(kb)))
    state = DialogueState()
    history = [Turn("user", PIN, "kk")]
    out = [x for x in eng.respond(history, "kk", state) if isinstance(x, str)]
    assert "".join(out).startswith("Сіз ") and state.act["act"] == "confirm" and not eng.seen
    history += [Turn("assistant", "".join(out), "kk"), Turn("user", "Иә", "kk")]
    out = [x for x in eng.respond(history, "kk", state) if isinstance(x, str)]
    assert "".join(out) == "Жауап." and len(eng.seen) == 1
    system, *turns = eng.seen[0]
    assert turns[-1] == {"role": "user", "content": PIN}  # the model answers the confirmed question, not "Иә"
    assert "[1] Question: " + kb.by_id["pin_reset"].questions["kk"][0] in system["content"]
    # adaptive endpointing asks the backend whether words settle the turn: its clarifier decides
    pending = DialogueState()
    list(eng.respond([Turn("user", PIN, "kk")], "kk", pending))
    assert pending.pending is not None and eng.would_answer("Иә", "kk", pending) and not eng.would_answer("Мен білмеймін", "kk", pending)
    # an answer the recogniser could not make out (an empty turn) re-asks, without the model
    seen = len(eng.seen)
    out = "".join(x for x in eng.respond([Turn("user", PIN, "kk"), Turn("user", "", "kk")], "kk", pending) if isinstance(x, str))
    assert pending.act["act"] == "reask" and out and len(eng.seen) == seen


# --------------------------------------------------------------------------- over the wire


START = {"type": "start", "language": "kk", "audio": {"encoding": "pcm_s16le", "sample_rate": 16000},
         "output": {"encoding": "pcm_s16le", "sample_rate": 16000, "pacing": "none"}}


async def _replies(ws, n, timeout=30):
    out = []
    while len(out) < n:
        ev = json.loads(await asyncio.wait_for(_recv_text(ws), timeout))
        if ev["type"] == "reply":
            out.append(ev)
        assert ev["type"] != "error", ev
    return out


async def _recv_text(ws):
    while True:
        m = await ws.recv()
        if isinstance(m, str):
            return m


def _count(act: str) -> float:
    from pipeline import metrics

    return metrics.DIALOGUE_ACTS.labels(act)._value.get()


async def test_typed_confirmation_over_the_native_protocol_is_marked_like_any_reply(make_server, kb):
    server = await make_server()
    before = (_count("confirm"), _count("confirmed"))
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps(START))
        await ws.send(json.dumps({"type": "text", "text": PIN}))
        (confirm,) = await _replies(ws, 1)
        assert confirm["dialogue"]["act"] == "confirm" and confirm["dialogue"]["entries"] == ["pin_reset"]
        assert confirm["ai_generated"] is True and confirm["provenance"]["models"]["dialogue"].startswith("kb:demo-bank")
        assert "Бір немесе екі" not in confirm["text"]  # a web session has no keypad
        await ws.send(json.dumps({"type": "dtmf", "digit": "1"}))  # ignored: no keypad
        await ws.send(json.dumps({"type": "text", "text": "Иә"}))
        (answer,) = await _replies(ws, 1)
        assert answer["text"] == kb.answer("pin_reset", "kk") and answer["dialogue"]["act"] == "confirmed"
        assert answer["reply_id"] == "r2"  # the key made no reply of its own
    assert (_count("confirm"), _count("confirmed")) == (before[0] + 1, before[1] + 1)  # dauys_dialogue_acts_total{act}


async def test_keypad_session_answers_with_keys_and_bad_keys_are_errors(make_server, kb):
    server = await make_server()
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "dtmf", "digit": "1"}))
        err = json.loads(await _recv_text(ws))
        assert err["type"] == "error" and err["code"] == "dtmf_before_start"
        await ws.send(json.dumps({**START, "keypad": True}))
        await ws.send(json.dumps({"type": "dtmf", "digit": "1"}))  # nothing pending: nothing happens
        await ws.send(json.dumps({"type": "text", "text": PIN}))
        (confirm,) = await _replies(ws, 1)
        assert confirm["reply_id"] == "r1" and confirm["text"].endswith(kb.clarify_texts["dtmf_hint"]["kk"])
        await ws.send(json.dumps({"type": "dtmf", "digit": "12"}))
        err = json.loads(await _recv_text(ws))
        assert err["type"] == "error" and err["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "dtmf", "digit": "2"}))
        (rephrase,) = await _replies(ws, 1)
        assert rephrase["text"] == kb.rephrase("kk") and rephrase["dialogue"]["act"] == "rephrase"


class HeardAs:
    """The real scheduler, except that final decodes come back as ``text`` (a caller whose words are known)."""

    def __init__(self, inner, text: str) -> None:
        self.inner, self.text = inner, text

    async def submit(self, audio, language, allowed, priority, key=None, **kw):
        rec = await self.inner.submit(audio, language, allowed, priority, key, **kw)
        if priority is Priority.FINAL:
            return dataclasses.replace(rec, text=self.text, rejected=None, alternatives=[])
        return rec

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.slow
async def test_twilio_caller_confirms_with_key_1(make_server, services, kb, question_kk):
    server = await make_server(services_with={"scheduler": HeardAs(services.scheduler, PIN)})
    sid = "MZ" + uuid.uuid4().hex
    async with connect(f"ws://127.0.0.1:{server.port}/v1/twilio") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC0", "callSid": "CA0", "streamSid": sid, "tracks": ["inbound"], "customParameters": {"language": "kk"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        mulaw = encode_wire(resample(np.concatenate([question_kk, np.zeros(16000, np.float32)]), 16000, 8000), Encoding.MULAW)
        for seq, off in enumerate(range(0, len(mulaw), 160), 2):
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                                      "media": {"track": "inbound", "payload": base64.b64encode(mulaw[off : off + 160]).decode()}}))
        session = next(iter(server.sessions.values()))
        for _ in range(300):
            if session.responder.state.pending is not None:
                break
            await asyncio.sleep(0.1)
        assert session.responder.state.pending.entries == ("pin_reset",) and session.responder.state.keypad
        await ws.send(json.dumps({"event": "dtmf", "streamSid": sid, "sequenceNumber": "999", "dtmf": {"track": "inbound_track", "digit": "1"}}))
        for _ in range(300):
            if session.responder.state.act and session.responder.state.act["act"] == "confirmed":
                break
            await asyncio.sleep(0.1)
        assert session.responder.state.act == {"act": "confirmed", "entry": "pin_reset", "score": 1.0}
        assert session.responder.history[-1].text == kb.answer("pin_reset", "kk")
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "1000", "streamSid": sid, "stop": {"accountSid": "AC0", "callSid": "CA0"}}))


@pytest.fixture(scope="module")
def question_kk():
    from tests.helpers.audio import espeak

    return espeak("Картамның құпия кодын ұмытып қалдым", "kk", 150)



@pytest.mark.slow
async def test_a_key_pressed_while_the_question_is_spoken_cuts_it_short(make_server, kb):
    server = await make_server()
    start = {**START, "keypad": True, "output": {"encoding": "pcm_s16le", "sample_rate": 16000}}  # real-time pacing
    events = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps(start))

        async def until(pred, timeout=60):
            while True:
                ev = json.loads(await asyncio.wait_for(_recv_text(ws), timeout))
                events.append(ev)
                if pred(ev):
                    return ev

        await until(lambda e: e["type"] == "audio_end" and e["reply_id"] == "disclosure")
        await ws.send(json.dumps({"type": "text", "text": PIN}))
        await until(lambda e: e["type"] == "audio_start" and e["reply_id"] == "r1")
        await ws.send(json.dumps({"type": "dtmf", "digit": "1"}))
        end = await until(lambda e: e["type"] == "audio_end" and e["reply_id"] == "r1")
        assert end["interrupted"] is True  # the confirmation was cut short by the key
        answer = await until(lambda e: e["type"] == "reply" and e["reply_id"] == "r2")
        assert answer["text"] == kb.answer("pin_reset", "kk") and answer["dialogue"]["act"] == "confirmed"


# --------------------------------------------------------------------------- short spoken answers


@pytest.mark.parametrize("lang, word, kind", [("kk", "Иә", "yes"), ("kk", "Жоқ", "no"), ("ru", "Да", "yes"), ("ru", "Нет", "no")])
def test_scoring_the_answer_words_hears_yes_and_no_that_free_recognition_garbles(services, lang, word, kind):
    from models.dialogue.yesno import spoken_candidates
    from tests.helpers.audio import espeak

    audio = np.concatenate([np.zeros(4800, np.float32), espeak(word, f"{lang}+m3", 170), np.zeros(8000, np.float32)])
    cands = spoken_candidates(lang, choosing=False)
    scores = services.asr.score_phrases(audio, lang, [p for _, p in cands])
    ranked = sorted(zip(scores, [k for k, _ in cands]), reverse=True)
    from models.dialogue.yesno import SHORT_ANSWER_MARGIN

    assert ranked[0][1] == kind and ranked[0][0] - ranked[1][0] >= SHORT_ANSWER_MARGIN[kind]


async def test_a_spoken_yes_to_a_confirmation_gets_the_answer(make_server, kb):
    """Typed question, spoken "иә" (espeak-ng, a voice the defaults were not chosen on): the answer."""
    from tests.helpers.audio import espeak

    server = await make_server()
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps(START))
        await ws.send(json.dumps({"type": "text", "text": PIN}))
        (confirm,) = await _replies(ws, 1)
        assert confirm["dialogue"]["act"] == "confirm"
        audio = np.concatenate([np.zeros(8000, np.float32), espeak("Иә", "kk+f3", 135), np.zeros(16000, np.float32)])
        data = encode_wire(audio, Encoding.PCM_S16LE)
        for i in range(0, len(data), 3200):
            await ws.send(data[i : i + 3200])
        events = []
        while True:
            ev = json.loads(await asyncio.wait_for(_recv_text(ws), 60))
            events.append(ev)
            if ev["type"] == "reply":
                break
        final = next(e for e in events if e["type"] == "transcript" and e["final"])
        assert final.get("answer") == "yes" or final["text"].strip(" .!").lower() in ("иә", "ия")
        assert ev["text"] == kb.answer("pin_reset", "kk") and ev["dialogue"]["act"] == "confirmed"


@pytest.mark.parametrize("seed", [1028, 1054, 1062])
async def test_a_no_through_the_phone_leg_is_never_taken_for_a_yes(make_server, kb, seed):
    """The benchmark's phone calls whose "жоқ" (espeak-ng kk+f3, the phone leg, 8 kHz mu-law) was
    once scored "иә" (by less than 1): a yes needs a larger lead than a no."""
    sys_path = str(ROOT / "scripts")
    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    import bench_understanding as bu

    class Args:
        split, answers, max_turns, reply_timeout = "test", "voice", 4, 30

    caller = bu.Caller("", bu.Item("", "kk", None, "test", seed - 1000), "phone", Args())
    data = caller.audio("Жоқ") + bytes([0xFF]) * 8000  # + 1 s of mu-law silence
    server = await make_server()
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({**START, "audio": {"encoding": "mulaw", "sample_rate": 8000}}))
        await ws.send(json.dumps({"type": "text", "text": PIN}))
        (confirm,) = await _replies(ws, 1)
        for i in range(0, len(data), 1600):
            await ws.send(data[i : i + 1600])
        (reply,) = await _replies(ws, 1, timeout=60)
        assert reply["dialogue"]["act"] in ("rephrase", "reask") and reply["text"] != kb.answer("pin_reset", "kk")
