"""/metrics after real calls: every latency stage observed, counters for errors, barge-ins, handoffs, sessions."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from models.audio import read_audio
from tests.helpers.audio import clip, espeak
from tests.helpers.server import http_get, make_settings, send_audio

pytestmark = pytest.mark.slow

STAGES = (
    "dauys_endpoint_to_final_seconds",
    "dauys_final_to_reply_seconds",
    "dauys_reply_to_first_audio_seconds",
    "dauys_voice_to_voice_seconds",
    "dauys_asr_rtf",
)


async def scrape(server) -> dict[tuple[str, tuple], float]:
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def delta(after, before, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def until(ws, pred, timeout=60) -> list[dict]:
    events = []
    async with asyncio.timeout(timeout):
        while True:
            m = await ws.recv()
            if isinstance(m, bytes):
                continue
            events.append(json.loads(m))
            if pred(events[-1]):
                return events


async def test_one_spoken_turn_observes_every_latency_stage(make_server):
    server = await make_server()
    before = await scrape(server)
    question = np.concatenate([espeak("Картам бұғатталып қалды", "kk", 140), np.zeros(16000, np.float32)])
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
        await until(ws, lambda e: e["type"] == "audio_end")  # the disclosure
        during = await scrape(server)
        sender = asyncio.ensure_future(send_audio(ws, question))
        events = await until(ws, lambda e: e["type"] == "audio_end" and e["reply_id"] != "disclosure")
        await sender
        await ws.send(json.dumps({"type": "end"}))
        await until(ws, lambda e: e["type"] == "session_end")
    await asyncio.sleep(0.1)
    after = await scrape(server)
    assert any(e["type"] == "transcript" and e["final"] for e in events) and any(e["type"] == "reply" for e in events)
    counts = {name: delta(after, before, name + "_count") for name in STAGES}
    assert all(n >= 1 for n in counts.values()), counts
    sums = {name: delta(after, before, name + "_sum") for name in STAGES}
    # the stages add up: voice-to-voice = the confirming silence + endpoint->final + final->reply + reply->audio (+ scheduling);
    # the confirming silence is vad.min_silence_ms, or the short/long one adaptive endpointing chose, in whole 32 ms VAD windows
    vad = make_settings().vad
    kinds = {k: delta(after, before, "dauys_endpoints_total", silence=k) for k in ("default", "short", "long")}
    assert sum(kinds.values()) == counts["dauys_endpoint_to_final_seconds"], kinds
    ms = {"default": vad.min_silence_ms, "short": vad.short_silence_ms, "long": vad.long_silence_ms}
    silence = sum(n * round(ms[k] / 32) * 0.032 for k, n in kinds.items())
    stages = sums["dauys_endpoint_to_final_seconds"] + sums["dauys_final_to_reply_seconds"] + sums["dauys_reply_to_first_audio_seconds"]
    assert stages + silence - 0.005 <= sums["dauys_voice_to_voice_seconds"] <= stages + silence + 1.0, (sums, kinds)
    assert 0 < sums["dauys_asr_rtf"] < 5, sums
    assert delta(during, before, "dauys_sessions_active") == 1 and delta(after, before, "dauys_sessions_active") == 0
    assert delta(after, before, "dauys_sessions_total", transport="native") == 1
    assert delta(after, before, "dauys_transcripts_total", kind="final", language="kk") >= 1


async def test_errors_barge_ins_handoffs_and_refusals_are_counted(make_server):
    server = await make_server(server={"port": 0, "max_sessions": 1})
    before = await scrape(server)
    speech = read_audio(clip("kk_kscd_ex1.wav")).samples
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk"}))
        await ws.send("{not json")
        await until(ws, lambda e: e["type"] == "audio_end")  # the disclosure (not interruptible)
        async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as refused:  # over max_sessions
            await refused.wait_closed()
        await ws.send(json.dumps({"type": "text", "text": "Депозит пайызы қанша?"}))
        await until(ws, lambda e: e["type"] == "audio_start")
        await send_audio(ws, np.concatenate([speech[: 16000 * 2], np.zeros(16000, np.float32)]))  # the caller speaks over the reply
        await until(ws, lambda e: e["type"] == "audio_end" and e["interrupted"])
        await ws.send(json.dumps({"type": "text", "text": "Операторға қосыңыз"}))
        await until(ws, lambda e: e["type"] == "session_end", timeout=90)
    await asyncio.sleep(0.1)
    after = await scrape(server)
    assert delta(after, before, "dauys_errors_total", code="invalid_json") == 1
    assert delta(after, before, "dauys_barge_ins_total") == 1
    assert delta(after, before, "dauys_handoffs_total", reason="user_request") == 1
    assert delta(after, before, "dauys_sessions_refused_total", reason="capacity") == 1
