"""Shared fixtures: the real audio clips, the real models (loaded once), real servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = Path(os.environ.get("DAUYS_SHARED_AUDIO", ROOT.parent / "shared" / "audio"))
CACHE_DIR = Path(os.environ.get("DAUYS_TEST_CACHE", Path(tempfile.gettempdir()) / "dauys-test-cache"))


def manifest() -> list[dict]:
    return [json.loads(line) for line in (SHARED_AUDIO / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def clip(name: str) -> Path:
    path = SHARED_AUDIO / name
    if not path.is_file():
        pytest.fail(f"shared clip {path} is missing (set DAUYS_SHARED_AUDIO)")
    return path


def reference(name: str) -> str:
    return next(r["text"] for r in manifest() if r["file"] == name)


def espeak(text: str, voice: str, rate_wpm: int = 150) -> np.ndarray:
    """Speech from espeak-ng (Debian package espeak-ng), 16 kHz float32: the benches' helper, scripts/benchlib/espeak.py."""
    from scripts.benchlib.espeak import EspeakMissing
    from scripts.benchlib.espeak import espeak as speak

    try:
        return speak(text, voice, rate_wpm)
    except EspeakMissing:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng); .ci/run installs it")


def make_settings(**sections):
    from server.config import load_settings

    layer = {"asr": {"cache_dir": str(CACHE_DIR), "download": False}}
    for section, values in sections.items():
        layer.setdefault(section, {}).update(values)
    return load_settings(cli=layer, environ={})


@pytest.fixture(scope="session")
def settings():
    return make_settings()


@pytest.fixture(scope="session")
def services(settings):
    from server.services import load_services

    svc = load_services(settings)
    yield svc
    svc.close()


class _LoadedHub:
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


@pytest.fixture
async def make_server(services):
    """Start an in-process DauysServer on 127.0.0.1:0 with setting overrides; stopped after the test.

    ``services_with`` (e.g. ``{"tts": stand_in}``) replaces parts of the shared services; the
    sessions then also see the overridden settings (without it they see the shared services' own)."""
    from server.app import DauysServer

    started = []

    async def make(services_with: dict | None = None, **sections):
        sections = dict(sections)
        sections["server"] = {"port": 0, **sections.get("server", {})}
        settings = make_settings(**sections)
        svc = dataclasses.replace(services, settings=settings, **services_with) if services_with else services
        server = DauysServer(settings, hub=_LoadedHub(svc))
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        if server._audiosocket is not None:
            server._audiosocket.close()
        server._server.close()
        await server._server.wait_closed()


@pytest.fixture(scope="session")
def live_server():
    """The real `dauys serve` command in a subprocess on a free port (the way users run it)."""
    env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    url = None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on http://" in line:
            url = line.split("listening on ")[1].split()[0].rstrip("/")
        if "dauys: ready" in line:
            break
    if url is None or proc.poll() is not None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    log_lines: list[str] = []

    def pump():
        for line in proc.stdout:
            log_lines.append(line)

    import threading

    threading.Thread(target=pump, daemon=True).start()
    yield {"http": url, "ws": url.replace("http://", "ws://") + "/v1/voice", "log": log_lines, "proc": proc}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
