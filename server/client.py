"""`dauys call`: stream an audio file over /v1/voice as a caller would, print every event."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from models.audio import AudioChunk, Encoding, encode_wire, read_audio, resample, write_wav
from pipeline.events import AudioFormat, End, Start, Text


def prepare_audio(path: str | Path, encoding: Encoding, rate: int) -> bytes:
    """The file as the wire format a caller would send (e.g. 8 kHz mu-law for a phone line)."""
    chunk = read_audio(path, 16000)
    return encode_wire(resample(chunk.samples, 16000, rate), encoding)


async def call(
    url: str,
    audio_path: str | None = None,
    *,
    realtime: bool = True,
    texts: list[str] | None = None,
    language: str = "auto",
    encoding: Encoding = Encoding.PCM_S16LE,
    rate: int = 16000,
    frame_ms: int = 20,
    trailing_silence_s: float = 1.0,
    token: str | None = None,
    out: str | None = None,
    emit=None,
    timeout: float = 120.0,
) -> list[dict]:
    """Run one call; returns the events received (each also passed to ``emit``)."""
    events: list[dict] = []
    emit = emit or (lambda ev: print(json.dumps(ev, ensure_ascii=False), flush=True))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    reply_audio: dict[str, bytearray] = {}
    current_audio: str | None = None
    out_format: dict = {}
    async with connect(url, additional_headers=headers, max_size=None, open_timeout=timeout) as ws:
        await ws.send(Start(AudioFormat(encoding, rate, 1), AudioFormat(encoding, rate, 1), language, "realtime" if realtime else "none").to_json())
        ready = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        events.append(ready)
        emit(ready)
        if ready.get("type") != "ready":
            return events

        async def sender():
            for t in texts or []:
                await ws.send(Text(t).to_json())
            if audio_path is not None:
                data = prepare_audio(audio_path, encoding, rate)
                data += encode_wire(np.zeros(int(trailing_silence_s * rate), np.float32), encoding)
                step = encoding.sample_width * rate * frame_ms // 1000
                t0 = time.monotonic()
                for i, off in enumerate(range(0, len(data), step)):
                    await ws.send(data[off : off + step])
                    if realtime:
                        delay = t0 + (i + 1) * frame_ms / 1000 - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
            await ws.send(End().to_json())

        send_task = asyncio.ensure_future(sender())
        try:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if isinstance(msg, bytes):
                        if current_audio is not None:
                            reply_audio.setdefault(current_audio, bytearray()).extend(msg)
                        continue
                    ev = json.loads(msg)
                    events.append(ev)
                    emit(ev)
                    if ev.get("type") == "audio_start":
                        current_audio = ev.get("reply_id")
                        out_format = ev
                    elif ev.get("type") == "audio_end":
                        current_audio = None
        finally:
            send_task.cancel()
    if out and reply_audio:
        from models.audio import decode_wire

        enc = Encoding(out_format.get("encoding", encoding.value))
        sr = int(out_format.get("sample_rate", rate))
        pcm = np.concatenate([decode_wire(bytes(b), enc) for b in reply_audio.values()])
        from pipeline.marking import info_chunk

        prov = {"ai_generated": True, **(out_format.get("provenance") or {}), "replies": list(reply_audio)}
        prov.setdefault("system", "dauys")
        write_wav(out, AudioChunk(pcm, sr), info_chunk(prov))
    elif out:
        print("dauys: no reply audio was received; nothing written to " + out, file=sys.stderr)
    return events
