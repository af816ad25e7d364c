"""The review page in headless Chromium against a real in-process server: list (lowest confidence first),
play, edit, save, reload shows the edit; and its WebSocket refuses wrong or missing operator keys."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from models.audio import AudioChunk, write_wav
from pipeline.capture import CaptureStore, CaptureWriter, fernet_from_env, make_key
from server.auth import hash_key
from tests.helpers.browser import CDP, Browser, chromium

pytestmark = pytest.mark.slow

OPERATOR_KEY = "operator-key-0123456789-secret"
KEY_ENV = "DAUYS_TEST_CAPTURE_KEY"

PROBE = r"""(() => ({
  state: document.body.dataset.state || null,
  rows: Array.from(document.querySelectorAll('tr.utt')).map(tr => ({
    call: tr.dataset.call, utterance: tr.dataset.utterance, status: tr.dataset.status,
    conf: tr.querySelector('td.conf').textContent, text: tr.querySelector('input.text').value,
    verdict: tr.querySelector('select.status').value })),
  review: window.reviewState || null,
  player: (document.getElementById('player') || {}).dataset ? document.getElementById('player').dataset.utterance || null : null,
  href: location.href,
  status: (document.getElementById('status') || {}).textContent || '',
}))()"""


@pytest.fixture
def filled(tmp_path):
    store = CaptureStore(tmp_path / "capture", fernet_from_env(KEY_ENV, {KEY_ENV: make_key()}))
    store.check_writable()
    t = np.arange(16000) / 16000
    for call, utts in {"callaaaa": [("u1", 0.81), ("u2", 0.22)], "callbbbb": [("u1", 0.55)]}.items():
        store.write_call(call, {"session_id": call, "started": datetime.now(timezone.utc).isoformat()})  # within retention
        for i, (utt, conf) in enumerate(utts):
            store.write_utterance(call, utt, (0.2 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32),
                                  {"text": f"мәтін {call[-1]}{utt}", "language": "kk", "confidence": conf, "created": "2026-12-04T10:00:01Z"})
    writer = CaptureWriter(store)
    yield writer
    writer.close()


async def _review_server(make_server, writer):
    return await make_server(
        services_with={"capture": writer},
        capture={"enabled": True, "dir": str(writer.store.root), "key_env": KEY_ENV, "operator_key_hashes": [hash_key(OPERATOR_KEY)]},
    )


async def test_review_page_lists_plays_edits_saves_and_reload_shows_the_edit(make_server, filled, tmp_path):
    exe = chromium()
    server = await _review_server(make_server, filled)
    base = f"http://127.0.0.1:{server.port}"
    wav = tmp_path / "mic.wav"
    write_wav(wav, AudioChunk(np.zeros(1600, np.float32), 16000))
    profile = tmp_path / "profile"
    profile.mkdir()
    browser = Browser(exe, profile, wav)
    try:
        async with connect(browser.devtools_url(), max_size=None, ping_interval=None, open_timeout=30) as ws:
            cdp = CDP(ws)
            try:
                session = await cdp.attach_page()

                async def until(pred, what):
                    deadline, snap = time.monotonic() + 30, None
                    while time.monotonic() < deadline:
                        try:
                            snap = await cdp.evaluate(session, PROBE)
                        except AssertionError:
                            snap = None
                        if snap and pred(snap):
                            return snap
                        await asyncio.sleep(0.2)
                    raise AssertionError(f"{what}: not reached; page {json.dumps(snap, ensure_ascii=False)}; errors {cdp.page_errors()}")

                async def open_page():
                    nav = await cdp.send("Page.navigate", {"url": f"{base}/review"}, session)
                    assert not nav.get("errorText"), nav
                    await until(lambda s: s["review"] is not None, "the page")
                    await cdp.evaluate(session, "document.getElementById('key').focus()")
                    await cdp.send("Input.insertText", {"text": OPERATOR_KEY}, session)
                    await cdp.evaluate(session, "document.getElementById('connect').click()")
                    return await until(lambda s: s["state"] == "ready" and len(s["rows"]) == 3, "three rows")

                snap = await open_page()
                assert [(r["call"], r["utterance"], r["conf"]) for r in snap["rows"]] == [
                    ("callaaaa", "u2", "0.22"), ("callbbbb", "u1", "0.55"), ("callaaaa", "u1", "0.81")]
                assert OPERATOR_KEY not in snap["href"]

                await cdp.evaluate(session, "document.querySelector('tr.utt button.play').click()")
                snap = await until(lambda s: s["review"]["played"] >= 1, "the first row's audio playing")
                assert snap["player"] == "callaaaa/u2" and abs(snap["review"]["audioSeconds"] - 1.0) < 0.05

                await cdp.evaluate(session, "(() => { const i = document.querySelector('tr.utt input.text'); i.focus(); i.select(); })()")
                await cdp.send("Input.insertText", {"text": "түзетілген мәтін"}, session)
                snap = await until(lambda s: s["rows"][0]["verdict"] == "corrected", "the edit to mark the row corrected")
                await cdp.evaluate(session, "document.querySelector('tr.utt button.save').click()")
                await until(lambda s: s["review"]["saved"] == 1, "the save")
                # mark the next one "rights reserved (opt-out)"
                await cdp.evaluate(session, "(() => { const tr = document.querySelectorAll('tr.utt')[1]; tr.querySelector('select.status').value = 'opt_out'; tr.querySelector('button.save').click(); })()")
                await until(lambda s: s["review"]["saved"] == 2, "the second save")

                snap = await open_page()  # reload: what is shown comes from the server's files
                rows = {(r["call"], r["utterance"]): r for r in snap["rows"]}
                assert rows[("callaaaa", "u2")]["text"] == "түзетілген мәтін" and rows[("callaaaa", "u2")]["status"] == "corrected"
                assert rows[("callbbbb", "u1")]["status"] == "opt_out"
                assert snap["rows"][0]["utterance"] == "u1" and snap["rows"][0]["call"] == "callaaaa"  # the unreviewed one first now
                assert not cdp.page_errors(), cdp.page_errors()
            finally:
                cdp.reader.cancel()
    finally:
        browser.close()
    store = filled.store
    assert store.utterance("callaaaa", "u2").final_text == "түзетілген мәтін"
    assert store.utterance("callbbbb", "u1").status == "opt_out"


async def test_review_socket_needs_the_operator_key(make_server, filled):
    server = await _review_server(make_server, filled)
    url = f"ws://127.0.0.1:{server.port}/v1/review"
    for bad in ("", "?token=wrong-key-0123456789abcdef"):
        with pytest.raises(InvalidStatus) as e:
            async with connect(url + bad):
                pass
        assert e.value.response.status_code == 401
    async with connect(url, additional_headers={"Authorization": f"Bearer {OPERATOR_KEY}"}) as ws:
        await ws.send(json.dumps({"type": "save", "call": "../x", "utterance": "u1", "status": "confirmed"}))
        assert json.loads(await ws.recv())["code"] == "bad_request"
        await ws.send(json.dumps({"type": "audio", "call": "callaaaa", "utterance": "u9"}))
        assert json.loads(await ws.recv())["code"] == "not_found"
    closed = await make_server(services_with={"capture": filled}, capture={"enabled": True, "dir": str(filled.store.root), "key_env": KEY_ENV})
    with pytest.raises(InvalidStatus) as e:
        async with connect(f"ws://127.0.0.1:{closed.port}/v1/review?token={OPERATOR_KEY}"):
            pass
    assert e.value.response.status_code == 403
