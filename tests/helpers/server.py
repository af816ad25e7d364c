"""Servers for tests: settings, in-process servers sharing the loaded models, `dauys serve`
as a subprocess, and small clients (HTTP GET, collecting WebSocket events)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers.paths import CACHE_DIR, ROOT


def make_settings(**sections):
    from server.config import load_settings

    layer = {"asr": {"cache_dir": str(CACHE_DIR), "download": False}}
    for section, values in sections.items():
        layer.setdefault(section, {}).update(values)
    return load_settings(cli=layer, environ={})


class LoadedHub:
    """A ModelHub whose models are already loaded (shared across in-process test servers)."""

    def __init__(self, services) -> None:
        self.services = services
        self.error = None
        self.ready = True

    async def wait(self, timeout):
        return self.services

    def start(self):
        return None

    def close(self):
        pass


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def collect(ws, until, timeout=60):
    """(events, {reply_id: bytes}) until ``until(event)``."""
    events, audio, current = [], {}, None
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if isinstance(msg, bytes):
                audio.setdefault(current, bytearray()).extend(msg)
                continue
            ev = json.loads(msg)
            events.append(ev)
            if ev["type"] == "audio_start":
                current = ev["reply_id"]
            if until(ev):
                break
    return events, audio


class ServerThread:
    """A DauysServer on its own event loop in a daemon thread (real sockets on 127.0.0.1).

    Keeping the server's loop apart from the client's lets the tests look at exactly the
    server's asyncio tasks (``tasks()``), and lets blocking clients drive it."""

    def __init__(self, services, **sections) -> None:
        from server.app import DauysServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dauys-test-server", daemon=True)
        self.thread.start()
        server = {"port": 0, **sections.pop("server", {})}
        self.settings = make_settings(server=server, **sections)
        self.services = dataclasses.replace(services, settings=self.settings) if sections or server else services
        self.server = DauysServer(self.settings, hub=LoadedHub(self.services))
        self.call(self.server.start())

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def tasks(self) -> set[asyncio.Task]:
        async def snapshot():
            return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

        return self.call(snapshot())

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str = "/v1/voice") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        try:
            self.call(self.server.stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


class ServeProcess:
    """`dauys serve --port 0` in a subprocess, the way users run it; stdout and stderr collected."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        full_env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.url = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.out.append(line)
            if "listening on http://" in line:
                self.url = line.split("listening on ")[1].split()[0].rstrip("/")
            if "dauys: ready" in line:
                break
        if self.url is None or self.proc.poll() is not None:
            self.kill()
            pytest.fail("server did not start:\n" + "".join(self.out + self.err))
        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True).start()
        self.ws = self.url.replace("http://", "ws://") + "/v1/voice"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()
            time.sleep(0.1)  # let the reader threads take the last lines


async def send_audio(ws, samples16k, encoding=None, rate: int = 16000, realtime: bool = True, frame_ms: int = 20, log=None) -> None:
    """Stream 16 kHz float32 ``samples16k`` to a native session as ``encoding`` (default pcm_s16le)
    at ``rate``, in ``frame_ms`` frames: at real-time pace on absolute monotonic deadlines, or as
    fast as the socket takes them (``realtime=False``). ``log`` collects (send time, seconds sent)."""
    from models.audio import Encoding, encode_wire, resample

    encoding = encoding or Encoding.PCM_S16LE
    data = encode_wire(resample(samples16k, 16000, rate), encoding)
    step = encoding.sample_width * rate * frame_ms // 1000
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(data), step)):
        await ws.send(data[off : off + step])
        if log is not None:
            log.append((time.monotonic(), (off + step) / (encoding.sample_width * rate)))
        if realtime:
            delay = t0 + (i + 1) * frame_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

