"""The web demo in a real browser: headless Chromium with a fake microphone (a WAV of a spoken Kazakh
question), driven over the Chrome DevTools Protocol against the real `dauys serve` subprocess.

Chromium is a Debian package (`apt-get install chromium`; scripts/install_system_deps.sh installs it).
No Playwright/Selenium: CDP is spoken directly over a WebSocket with the `websockets` library.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import AudioChunk, write_wav
from models.dialogue.kb import KnowledgeBase
from tests.helpers.audio import espeak
from tests.helpers.browser import CDP, Browser, chromium
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow

QUESTION_KK = "Картам бұғатталып қалды"  # the kk question for KB entry card_blocked
POLL_TIMEOUT_S = 60.0
SCREENSHOT = ROOT / "artifacts" / "web_demo.png"
PAGE_STATE = ROOT / "artifacts" / "web_demo.json"  # what the page showed (transcripts, replies, stats)

# Everything the test looks at, read from the page in one Runtime.evaluate.
PROBE = r"""(() => {
  const q = (s) => Array.from(document.querySelectorAll(s));
  const s = window.dauysStats || null;
  return {
    state: document.body.dataset.state || null,
    mic: document.body.dataset.mic || null,
    disclosure: (document.getElementById('disclosure') || {}).textContent || '',
    finals: q('.final-transcript').map(e => ({ text: (e.querySelector('.text') || e).textContent, lang: e.lang })),
    replies: q('.reply').map(e => ({
      text: (e.querySelector('.text') || e).textContent,
      badge: !!(e.querySelector('.ai-badge') ||
                (e.previousElementSibling && e.previousElementSibling.classList.contains('ai-badge'))),
      lang: e.lang,
    })),
    errors: q('.error-event, .client-error').map(e => e.textContent),
    log: q('#log > *').map(e => e.className + ': ' + e.textContent).slice(-40),
    stats: s && { framesSent: s.framesSent, audioFramesReceived: s.audioFramesReceived,
                  audioPlayedSeconds: s.audioPlayedSeconds,
                  eventTypes: s.events.map(e => e.type) },
  };
})()"""


def _missing(snap: dict | None, expected_answer: str) -> list[str]:
    """Conditions that do not hold yet (empty: all hold)."""
    if not snap:
        return ["page not loaded"]
    miss = []
    if snap["state"] != "ready":
        miss.append(f"body[data-state] is {snap['state']!r}, not 'ready'")
    if "жасанды интеллект" not in snap["disclosure"].lower():
        miss.append("disclosure banner lacks the server's disclosure text")
    if not snap["finals"]:
        miss.append("no .final-transcript")
    if not any(r["badge"] and r["text"].strip() for r in snap["replies"]):
        miss.append("no .reply with an AI badge")
    elif not any(r["badge"] and expected_answer in r["text"] for r in snap["replies"]):
        miss.append("no AI-badged .reply with the card_blocked answer")
    st = snap["stats"] or {}
    if not st.get("framesSent", 0) > 50:
        miss.append(f"framesSent {st.get('framesSent')} <= 50")
    if not st.get("audioFramesReceived", 0) > 0:
        miss.append("no reply audio frames received")
    if not st.get("audioPlayedSeconds", 0) > 0.5:
        miss.append(f"audioPlayedSeconds {st.get('audioPlayedSeconds')} <= 0.5")
    return miss


async def test_web_demo_in_headless_chromium(live_server, tmp_path):
    exe = chromium()
    expected = KnowledgeBase.load(None).by_id["card_blocked"].answers["kk"]

    # The fake microphone: silence, the question, silence, then "иә" for the case the question is
    # put to the caller to confirm first (README, Understanding), silence (Chromium loops the file).
    rate = 16000
    speech = espeak(QUESTION_KK, "kk", 140)
    yes = espeak("Иә", "kk", 140)
    audio = np.concatenate([
        np.zeros(int(1.5 * rate), np.float32), speech, np.zeros(3 * rate, np.float32), yes, np.zeros(6 * rate, np.float32),
    ])
    wav = tmp_path / "mic.wav"
    write_wav(wav, AudioChunk(audio.astype(np.float32), rate))  # 16-bit PCM WAV

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    url = f"{live_server['http']}/?autostart=1&lang=kk"
    browser = Browser(exe, profile, wav)
    cdp = None
    snap = None
    screenshot_error = None
    t0 = time.monotonic()
    try:
        async with connect(browser.devtools_url(), max_size=None, ping_interval=None, open_timeout=30) as ws:
            cdp = CDP(ws)
            try:
                session = await cdp.attach_page()
                nav = await cdp.send("Page.navigate", {"url": url}, session)
                assert not nav.get("errorText"), f"navigation to {url} failed: {nav}"

                deadline = time.monotonic() + POLL_TIMEOUT_S
                while True:
                    try:
                        snap = await cdp.evaluate(session, PROBE)
                    except AssertionError:
                        snap = None  # page still loading (context swapped mid-navigation)
                    errors = cdp.page_errors() + (snap["errors"] if snap else [])
                    if errors:
                        break  # fail fast below with the page state
                    if not _missing(snap, expected) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                try:
                    shot = await cdp.send("Page.captureScreenshot", {"format": "png"}, session)
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
                except Exception as e:  # noqa: BLE001 - reported below; the page state matters more
                    screenshot_error = e
            finally:
                cdp.reader.cancel()
    finally:
        browser.close()
    elapsed = time.monotonic() - t0
    if snap is not None:
        PAGE_STATE.parent.mkdir(parents=True, exist_ok=True)
        PAGE_STATE.write_text(json.dumps({"elapsed_s": round(elapsed, 1), **snap}, ensure_ascii=False, indent=1), encoding="utf-8")

    context = (f"after {elapsed:.1f} s; page state:\n{json.dumps(snap, ensure_ascii=False, indent=1)}\n"
               f"server log tail:\n{''.join(live_server['log'][-30:])}")
    page_errors = cdp.page_errors() + (snap["errors"] if snap else [])
    assert not page_errors, f"page errors: {page_errors}\n{context}"
    missing = _missing(snap, expected)
    assert not missing, f"not met: {missing}\n{context}"
    assert screenshot_error is None, f"screenshot failed: {screenshot_error!r}"
    assert SCREENSHOT.stat().st_size > 10_000
    # The final transcript is Kazakh (the session language is fixed by ?lang=kk).
    assert all(f["lang"] == "kk" for f in snap["finals"]), snap["finals"]


KEY = "web-demo-key-0123456789-secret"

KEY_PROBE = r"""(() => ({
  loaded: !!window.dauysStats,
  href: location.href,
  historyLength: history.length,
  state: document.body.dataset.state || null,
  keyField: !!document.querySelector('input#key[type=password]'),
  stored: JSON.stringify(Object.assign({}, sessionStorage)) + JSON.stringify(Object.assign({}, localStorage)),
  disclosure: (document.getElementById('disclosure') || {}).textContent || '',
  events: (window.dauysStats || { events: [] }).events.map(e => e.type),
  log: Array.from(document.querySelectorAll('#log > *')).map(e => e.textContent),
}))()"""


async def test_web_demo_takes_the_key_from_a_password_field_never_from_the_page_address(make_server, tmp_path):
    """A keyed server; the page is opened with the key in its address (a bookmark of the old demo):
    the key leaves the address bar and the history at once and is not used; typed into the key
    field, it connects; nothing is stored unless asked."""
    exe = chromium()
    server = await make_server(server={"api_keys": [KEY]})
    base = f"http://127.0.0.1:{server.port}"
    wav = tmp_path / "mic.wav"
    write_wav(wav, AudioChunk(np.zeros(16000, np.float32), 16000))
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(exe, profile, wav)
    try:
        async with connect(browser.devtools_url(), max_size=None, ping_interval=None, open_timeout=30) as ws:
            cdp = CDP(ws)
            try:
                session = await cdp.attach_page()

                async def probe_until(pred, what: str) -> dict:
                    deadline = time.monotonic() + POLL_TIMEOUT_S
                    snap = None
                    while time.monotonic() < deadline:
                        try:
                            snap = await cdp.evaluate(session, KEY_PROBE)
                        except AssertionError:
                            snap = None  # mid-navigation
                        if snap and pred(snap):
                            return snap
                        await asyncio.sleep(0.3)
                    raise AssertionError(f"{what} not reached; page: {snap}; errors: {cdp.page_errors()}")

                nav = await cdp.send("Page.navigate", {"url": f"{base}/?lang=kk&token={KEY}"}, session)
                assert not nav.get("errorText"), nav
                snap = await probe_until(lambda s: s["loaded"] and s["state"] == "idle", "the idle page")  # app.js has run
                assert KEY not in snap["href"] and snap["href"] == f"{base}/?lang=kk", snap["href"]
                assert snap["keyField"], "no password field #key"
                history = await cdp.send("Page.getNavigationHistory", session=session)
                # (each entry's userTypedURL, what was typed into the address bar, is the browser's own record; no page can change it)
                assert all(KEY not in e["url"] for e in history["entries"]), history
                assert snap["historyLength"] == len(history["entries"]) <= 2  # replaced, not pushed
                assert any("not used" in line for line in snap["log"]), snap["log"]
                await asyncio.sleep(1.0)
                assert (await cdp.evaluate(session, KEY_PROBE))["state"] == "idle"  # the address's key did not connect

                await cdp.evaluate(session, "document.getElementById('key').focus()")
                await cdp.send("Input.insertText", {"text": KEY}, session)
                await cdp.evaluate(session, "document.getElementById('connect').click()")
                snap = await probe_until(lambda s: s["state"] == "ready" and "ready" in s["events"], "a session on the keyed server")
                assert "жасанды интеллект" in snap["disclosure"].lower()
                assert KEY not in snap["href"] and KEY not in snap["stored"], snap
                history = await cdp.send("Page.getNavigationHistory", session=session)
                assert all(KEY not in e["url"] for e in history["entries"]), history
                assert not cdp.page_errors(), cdp.page_errors()
            finally:
                cdp.reader.cancel()
    finally:
        browser.close()
