"""Shared fixtures: the real models (loaded once), real servers on 127.0.0.1, the tiny LLM.

The plain helpers (clips, espeak, settings, server classes) are in tests/helpers/."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import warnings

import pytest

# The helpers themselves live in tests/helpers/; these names stay importable from here too.
from tests.helpers.audio import clip, espeak, manifest, reference  # noqa: F401
from tests.helpers.paths import CACHE_DIR, ROOT, SHARED_AUDIO  # noqa: F401
from tests.helpers.server import LoadedHub, http_get, make_settings  # noqa: F401


@pytest.fixture(scope="session")
def settings():
    return make_settings()


@pytest.fixture(scope="session")
def services(settings):
    from server.services import load_services

    svc = load_services(settings)
    yield svc
    svc.close()


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
        server = DauysServer(settings, hub=LoadedHub(svc))
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        port = server.port if server._server.sockets else "-"  # read before close (a test may have stopped it)
        if server._loop_lag is not None:
            server._loop_lag.cancel()
        if server._audiosocket is not None:
            server._audiosocket.close()
        server._server.close()
        try:
            # bounded: a connection handler that never returns hung a whole CI run once (after
            # test_a_fault_in_one_session_closes_it_with_1011_and_spares_the_other); it is reported,
            # and the run goes on
            await asyncio.wait_for(server._server.wait_closed(), 60)
        except TimeoutError:
            for task in asyncio.all_tasks():  # where the handlers are stuck
                task.print_stack(file=sys.stderr)
            warnings.warn(f"test server on port {port}: connection handlers still running 60 s after close", stacklevel=1)


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



# ---------------------------------------------------------------------------------------- LLM
# a tiny random causal LM, its CTranslate2 conversion and a fake OpenAI-compatible server
# (tests/helpers/llm.py), for test_llm.py and test_dialogue_backends.py; built once per module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.helpers.llm import make_tiny_model

    return make_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def ct2_dir(tiny_model, tmp_path_factory):
    from tests.helpers.llm import convert_to_ct2

    return convert_to_ct2(tiny_model, tmp_path_factory)


@pytest.fixture
def llm_server():
    from tests.helpers.llm import start_llm_server, stop_llm_server

    server = start_llm_server()
    yield server
    stop_llm_server(server)


QUESTION_KK = "Картам бұғатталып қалды"  # espeak-ng + whisper-base, language fixed: card_blocked (score 0.27)


@pytest.fixture(scope="session")
def question_kk():
    """A spoken Kazakh bank question (espeak-ng, 16 kHz float32), for the end-to-end speech and carrier tests."""
    return espeak(QUESTION_KK, "kk", 140)
