"""The spoken answer end to end on the real server: reply, marking, handoff, misunderstanding policy."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.dialogue.kb import KnowledgeBase
from server.client import call

pytestmark = pytest.mark.slow

START = json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16000}, "output": {"encoding": "pcm_s16le", "sample_rate": 16000, "pacing": "none"}})


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load(None)


def replies(events):
    return [e for e in events if e["type"] == "reply"]


def assert_marked(ev):
    assert ev["ai_generated"] is True
    p = ev["provenance"]
    assert p["system"].startswith("dauys/") and p["session_id"] and p["reply_id"] == ev["reply_id"]
    assert p["models"]["dialogue"].startswith("kb:demo-bank") and p["models"]["asr"] == "embedded:whisper-base"
    assert p["created"].endswith("Z")


@pytest.mark.parametrize(
    "question, language, entry",
    [
        ("Сәлеметсіз бе, картам бұғатталып қалды", "kk", "card_blocked"),
        ("Здравствуйте, как разблокировать карту?", "ru", "card_blocked"),
        ("Филиалдарыңыз қашан жұмыс істейді?", "kk", "branch_hours"),
        ("Какой курс доллара сегодня?", "ru", "currency_exchange"),
    ],
)
async def test_typed_question_gets_the_knowledge_base_answer_in_its_language(live_server, kb, question, language, entry):
    events = await call(live_server["ws"], None, texts=[question], realtime=False, emit=lambda e: None)
    (rep,) = replies(events)
    assert rep["language"] == language
    assert rep["text"] == kb.by_id[entry].answers[language]
    assert_marked(rep)
    final = next(e for e in events if e["type"] == "transcript" and e["final"])
    assert events.index(final) < events.index(rep)  # transcript before its reply
    assert rep["utterance_id"] == final["utterance_id"]


async def _session(live_server, texts, until="session_end", timeout=30):
    events = []
    async with connect(live_server["ws"]) as ws:
        await ws.send(START)
        for t in texts:
            await ws.send(json.dumps({"type": "text", "text": t}))
        try:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if isinstance(msg, str):
                        events.append(json.loads(msg))
        except ConnectionClosed:
            pass
        return events, ws.close_code


@pytest.mark.parametrize(
    "text, reason",
    [
        ("оператор", "user_request"),
        ("Маманмен сөйлескім келеді", "user_request"),
        ("Соедините с оператором, пожалуйста", "user_request"),
        ("Я не хочу говорить с роботом", "refused_ai"),
        ("Роботпен сөйлескім келмейді", "refused_ai"),
        ("Operator bilan gaplashmoqchiman", "user_request"),
    ],
)
async def test_asking_for_a_human_hands_off_and_ends_the_session(live_server, text, reason):
    events, code = await _session(live_server, [text])
    types = [e["type"] for e in events]
    assert "handoff" in types and types[-1] == "session_end"
    handoff = next(e for e in events if e["type"] == "handoff")
    assert handoff["reason"] == reason and handoff["summary"] and handoff["language"]
    assert events[-1]["reason"] == "handoff" and code == 1000
    rep = replies(events)[-1]
    assert types.index("reply") < types.index("handoff")
    assert_marked(rep)


async def test_gibberish_gets_rephrase_then_handoff(live_server, kb):
    events, _ = await _session(live_server, ["Ыфвапр олдж", "щзхъ фыва"])
    reps = replies(events)
    assert reps[0]["text"] == kb.rephrase("ru")
    handoff = next(e for e in events if e["type"] == "handoff")
    assert handoff["reason"] == "not_understood"
    assert kb.handoff("ru") in reps[1]["text"]
    assert events[-1]["type"] == "session_end" and events[-1]["reason"] == "handoff"


async def test_turns_after_a_handoff_are_not_answered(live_server):
    events, _ = await _session(live_server, ["оператор", "Какой у меня баланс?"])
    assert len(replies(events)) == 1


async def test_goodbye_ends_the_session(live_server):
    events, code = await _session(live_server, ["Рахмет, сау болыңыз"])
    assert events[-1]["type"] == "session_end" and events[-1]["reason"] == "goodbye" and code == 1000


async def test_handoff_summary_redacts_personal_data(live_server):
    events, _ = await _session(live_server, ["Менің ЖСН 900101300126, картам 4400 4301 2345 6789", "оператор"])
    summary = next(e for e in events if e["type"] == "handoff")["summary"]
    assert "900101300126" not in summary and "4301" not in summary and "[IIN]" in summary
