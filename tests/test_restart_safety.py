"""Restarts during load: SIGTERM drains the calls in progress (no final already endpointed is lost),
and a model switch (SIGHUP's hot switch) changes nothing for calls in progress."""

from __future__ import annotations

import asyncio
import json
import signal

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.server import ServeProcess, make_settings, send_audio

pytestmark = pytest.mark.slow

CALLERS = 4


async def _caller(url: str, speech: np.ndarray, sent: asyncio.Event, events: list, realtime: bool = False):
    """One call: the question, a second of silence (its endpoint), then listen until the server closes."""
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk"}))
        async for m in ws:
            if isinstance(m, bytes):
                continue
            ev = json.loads(m)
            events.append(ev)
            if ev["type"] == "ready":
                break
        await send_audio(ws, speech, realtime=realtime)
        sent.set()
        try:
            async for m in ws:
                if not isinstance(m, bytes):
                    events.append(json.loads(m))
        except ConnectionClosed:
            pass
        return ws.close_code


async def test_sigterm_during_calls_drains_them_and_loses_no_endpointed_final(question_kk):
    env = {"DAUYS_SERVER__SHUTDOWN_GRACE_S": "60", "DAUYS_SESSION__SPOKEN_DISCLOSURE": "false"}
    server = await asyncio.to_thread(ServeProcess, env=env)
    speech = np.concatenate([question_kk, np.zeros(16000, np.float32)])
    try:
        sent = [asyncio.Event() for _ in range(CALLERS)]
        events = [[] for _ in range(CALLERS)]
        calls = [asyncio.ensure_future(_caller(server.ws, speech, sent[i], events[i])) for i in range(CALLERS)]
        await asyncio.gather(*(e.wait() for e in sent))
        # every caller's question has been sent with the silence that endpoints it; let the VAD see it
        async with asyncio.timeout(30):
            while sum(any(e["type"] == "speech_started" for e in ev) for ev in events) < CALLERS:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(*calls), 120)
        assert codes == [1001] * CALLERS
        for ev in events:
            started = [e["utterance_id"] for e in ev if e["type"] == "speech_started"]
            decided = [e["utterance_id"] for e in ev if (e["type"] == "transcript" and e["final"]) or e["type"] == "speech_discarded"]
            assert started and decided == started, ev  # no endpointed utterance lost its final
            finals = [e for e in ev if e["type"] == "transcript" and e["final"]]
            replies = {e["utterance_id"]: e["reply_id"] for e in ev if e["type"] == "reply"}
            ends = {e["reply_id"]: e["interrupted"] for e in ev if e["type"] == "audio_end"}
            for f in finals:  # and its reply was spoken to the end
                assert ends.get(replies.get(f["utterance_id"])) is False, ev
        assert await asyncio.to_thread(server.stop, 30) == 0
    finally:
        await asyncio.to_thread(server.kill)


async def test_a_model_switch_during_calls_changes_nothing_for_them(question_kk):
    from server.app import DauysServer

    settings = make_settings(server={"port": 0}, session={"spoken_disclosure": False})
    server = DauysServer(settings)
    await server.start()
    try:
        old = await server.hub.wait(180)
        assert old is not None, server.hub.error
        url = f"ws://127.0.0.1:{server.port}/v1/voice"
        speech = np.concatenate([question_kk, np.zeros(16000, np.float32)])
        line = np.concatenate([np.zeros(8000, np.float32), speech, speech])  # two questions, real time

        async def alone() -> list[str]:  # one call, the same line, nothing switching
            ev, done = [], asyncio.Event()
            task = asyncio.ensure_future(_caller(url, line, done, ev, realtime=True))
            await done.wait()
            async with asyncio.timeout(60):
                while len([e for e in ev if e["type"] == "transcript" and e["final"]]) < 2 or not any(e["type"] == "audio_end" for e in ev[-3:]):
                    await asyncio.sleep(0.1)
            for s in list(server.sessions.values()):
                await s.end()
            await task
            return [e["text"] for e in ev if e["type"] == "transcript" and e["final"]]

        control = await alone()
        sent = [asyncio.Event() for _ in range(CALLERS)]
        events = [[] for _ in range(CALLERS)]
        calls = [asyncio.ensure_future(_caller(url, line, sent[i], events[i], realtime=True)) for i in range(CALLERS)]
        async with asyncio.timeout(60):  # the calls are under way: their first questions are being heard
            while sum(any(e["type"] == "speech_started" for e in ev) for ev in events) < CALLERS:
                await asyncio.sleep(0.05)
        switched = await server.switch_asr(settings.asr.model_copy(update={"beam_size": 2}))
        new = server.hub.services
        assert new is not old and new.settings.asr.beam_size == 2
        live = list(server.sessions.values())
        assert len(live) == CALLERS and all(s.services is old for s in live)  # the calls keep their generation
        await asyncio.gather(*(e.wait() for e in sent))
        for s in live:
            await s.end()
        codes = await asyncio.wait_for(asyncio.gather(*calls), 120)
        assert codes == [1000] * CALLERS
        for ev in events:
            started = [e["utterance_id"] for e in ev if e["type"] == "speech_started"]
            finals = [e for e in ev if e["type"] == "transcript" and e["final"]]
            assert len(started) >= 2 and len(finals) == len(started), ev  # nothing lost across the switch
            assert [f["text"] for f in finals] == control  # heard exactly as without a switch
            replies = [e for e in ev if e["type"] == "reply"]
            assert len(replies) == len(finals) and all(r["provenance"]["models"]["asr"] == old.asr.model_id for r in replies)
        # a new call gets the new generation; the old one is retired once its calls are over
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "language": "kk"}))
            await ws.recv()
            assert [s.services for s in server.sessions.values()] == [new]
        assert switched == new.asr.model_id
        async with asyncio.timeout(30):
            while server.hub.retired:
                await asyncio.sleep(0.2)
    finally:
        await server.stop()
