"""The new carriers end to end through the real server on 127.0.0.1 (routing, admission, the shared
runner and Pacer): a chan_websocket peer playing Asterisk's side, four calls at once, with the
inter-frame timing of the outgoing audio measured; and the admission rules of the new paths."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.slow

START = "MEDIA_START connection_id:c{n} channel:WebSocket/dauys/0x{n} channel_id:1761245643.{n} format:slin16 optimal_frame_size:640 ptime:20"


async def asterisk_call(url: str, n: int, frames_wanted: int, deadline_s: float) -> list[float]:
    """One chan_websocket call: MEDIA_START, then 20 ms of silence every 20 ms (the caller listening);
    returns the arrival times of the binary media Dauys sends."""
    arrivals: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(START.format(n=n))

        async def rx():
            async for msg in ws:
                if isinstance(msg, bytes):
                    assert len(msg) == 640, len(msg)
                    arrivals.append(time.monotonic())

        reader = asyncio.ensure_future(rx())
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < deadline_s and len(arrivals) < frames_wanted:
            await ws.send(b"\x00" * 640)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
        reader.cancel()
    return arrivals


async def test_four_concurrent_chan_websocket_calls_get_evenly_paced_audio(make_server):
    server = await make_server()
    url = f"ws://127.0.0.1:{server.port}/v1/asterisk?language=kk"
    results = await asyncio.gather(*(asterisk_call(url, n, 200, 60) for n in range(4)))
    for arrivals in results:
        assert len(arrivals) >= 150, len(arrivals)  # the spoken AI disclosure, at least 3 s of it
        gaps = np.diff(arrivals[10:150]) * 1000
        assert abs(np.median(gaps) - 20.0) < 1.5, np.median(gaps)
        assert np.percentile(np.abs(gaps - 20.0), 90) < 8.0, np.percentile(np.abs(gaps - 20.0), 90)
        assert gaps.max() < 250, gaps.max()  # generous: the CPU is shared; a real gap would be seconds
    await asyncio.sleep(0.5)
    assert not server.sessions  # every call ended when its peer closed


async def test_new_paths_are_admitted_like_the_native_one(make_server):
    server = await make_server(server={"api_keys": ["k" * 20], "host": "127.0.0.1"})
    for path in ("/v1/asterisk", "/v1/freeswitch", "/v1/telnyx", "/v1/vonage"):
        with pytest.raises(InvalidStatus) as e:
            async with connect(f"ws://127.0.0.1:{server.port}{path}"):
                pass
        assert e.value.response.status_code == 401, path
        async with connect(f"ws://127.0.0.1:{server.port}{path}?token={'k' * 20}") as ws:
            await ws.send(json.dumps({"event": "nope"}))
            await ws.close()
    # Asterisk's websocket_client.conf can send only basic auth: the password is the key
    import base64

    def basic(password: str) -> dict:
        return {"Authorization": "Basic " + base64.b64encode(f"asterisk:{password}".encode()).decode()}

    async with connect(f"ws://127.0.0.1:{server.port}/v1/asterisk", additional_headers=basic("k" * 20)) as ws:
        await ws.close()
    with pytest.raises(InvalidStatus) as e:
        async with connect(f"ws://127.0.0.1:{server.port}/v1/asterisk", additional_headers=basic("wrong-key-wrong-key")):
            pass
    assert e.value.response.status_code == 401


def _telnyx_start() -> list:
    return [json.dumps({"event": "connected", "version": "1.0.0"}),
            json.dumps({"event": "start", "sequence_number": "1", "stream_id": "S1", "start": {
                "call_control_id": "v3:abc", "custom_parameters": {"language": "kk"}, "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})]


def _telnyx_media() -> str:
    import base64

    return json.dumps({"event": "media", "media": {"track": "inbound", "payload": base64.b64encode(b"\xff" * 160).decode()}})


def _telnyx_audio(msg) -> int | None:
    import base64

    if isinstance(msg, str) and json.loads(msg)["event"] == "media":
        return len(base64.b64decode(json.loads(msg)["media"]["payload"]))
    return None


def _fs_audio(msg) -> int | None:
    import base64

    if isinstance(msg, str) and json.loads(msg).get("type") == "streamAudio":
        return len(base64.b64decode(json.loads(msg)["data"]["audioData"]))
    return None


CARRIERS = {
    # path: (opening messages, one 20 ms caller frame, the size of an outgoing audio message or None, its expected size)
    "/v1/telnyx": (_telnyx_start(), _telnyx_media(), _telnyx_audio, 160),
    "/v1/vonage": ([json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "language": "kk", "call_uuid": "u1"})],
                   b"\x00" * 640, lambda m: len(m) if isinstance(m, bytes) else None, 640),
    "/v1/freeswitch": ([json.dumps({"uuid": "f1", "language": "kk", "rate": 8000})], b"\x00" * 320, _fs_audio, 320),
}


@pytest.mark.parametrize("path", list(CARRIERS))
async def test_each_cloud_and_freeswitch_carrier_speaks_paced_20_ms_audio(make_server, path):
    opening, frame, audio_size, size = CARRIERS[path]
    server = await make_server()
    arrivals: list[float] = []
    async with connect(f"ws://127.0.0.1:{server.port}{path}", max_size=None) as ws:
        for m in opening:
            await ws.send(m)

        async def rx():
            async for msg in ws:
                n = audio_size(msg)
                if n is not None:
                    assert n == size, (path, n)
                    arrivals.append(time.monotonic())

        reader = asyncio.ensure_future(rx())
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 30 and len(arrivals) < 120:
            await ws.send(frame)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
        reader.cancel()
    assert len(arrivals) >= 120, (path, len(arrivals))
    gaps = np.diff(arrivals[20:120]) * 1000  # past the lead sent ahead at the start
    assert abs(np.median(gaps) - 20.0) < 1.5 and gaps.max() < 250, (path, np.median(gaps), gaps.max())
    await asyncio.sleep(0.5)
    assert not server.sessions


@pytest.mark.parametrize("path,opening", [
    ("/v1/vonage?language=ru", [json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000"})]),
    ("/v1/telnyx?language=ru", [json.dumps({"event": "start", "stream_id": "S", "start": {"call_control_id": "c", "media_format": {"encoding": "PCMA", "sample_rate": 8000}}})]),
    ("/v1/asterisk?language=ru", ["MEDIA_START connection_id:c channel:WebSocket/x channel_id:1.1 format:alaw optimal_frame_size:160 ptime:20"]),
    ("/v1/freeswitch?language=ru&rate=16000", [json.dumps({"uuid": "u"})]),
])
async def test_the_url_names_the_language_when_the_platform_does_not(make_server, path, opening):
    server = await make_server()
    async with connect(f"ws://127.0.0.1:{server.port}{path}") as ws:
        for m in opening:
            await ws.send(m)
        for _ in range(100):
            started = [s.started for s in server.sessions.values() if s.started is not None]
            if started:
                break
            await asyncio.sleep(0.02)
        assert [s.language for s in started] == ["ru"], path
        await ws.close()
