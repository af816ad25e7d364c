"""A caller's log lines can be deleted by call id (personal-data law: erasure on request).

Two real Twilio calls on `dauys serve --log-format json`; `dauys forget-call <callSid> LOG`
removes every line of the first call's session and keeps the second call's lines.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.helpers.paths import ROOT
from tests.helpers.server import ServeProcess


async def _twilio_call(url: str, call_sid: str) -> None:
    sid = "MZ" + uuid.uuid4().hex
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC0", "callSid": call_sid, "streamSid": sid, "tracks": ["inbound"],
            "customParameters": {"language": "kk"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        silence = base64.b64encode(bytes([0xFF]) * 160).decode()  # mu-law silence
        for seq in range(2, 27):
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid, "media": {"track": "inbound", "payload": silence}}))
        await ws.send(json.dumps({"event": "stop", "streamSid": sid, "stop": {"accountSid": "AC0", "callSid": call_sid}}))
        async with asyncio.timeout(30):
            async for _ in ws:
                pass


@pytest.mark.slow
async def test_forget_call_removes_one_calls_lines_from_json_logs(tmp_path):
    srv = ServeProcess("--log-format", "json")
    try:
        url = srv.ws.replace("/v1/voice", "/v1/twilio")
        first, second = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
        await _twilio_call(url, first)
        await _twilio_call(url, second)
        await asyncio.sleep(0.5)
    finally:
        srv.stop()
    log = tmp_path / "dauys.log"
    log.write_text("".join(srv.err), encoding="utf-8")
    lines = [json.loads(x) for x in srv.err if x.strip()]
    sessions = {}
    for call in (first, second):
        (sid,) = {x["session"] for x in lines if call in x["msg"] and x.get("session")}
        sessions[call] = sid
        assert sum(1 for x in lines if x.get("session") == sid) >= 3  # started, call lines, closed

    dry = subprocess.run([sys.executable, "-m", "server", "forget-call", first, str(log), "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0 and "would remove" in dry.stdout
    assert log.read_text(encoding="utf-8") == "".join(srv.err)  # a dry run changes nothing

    done = subprocess.run([sys.executable, "-m", "server", "forget-call", first, str(log)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    kept = log.read_text(encoding="utf-8")
    assert first not in kept and sessions[first] not in kept
    after = [json.loads(x) for x in kept.splitlines() if x.strip()]
    assert sum(1 for x in after if x.get("session") == sessions[second]) >= 3
    assert any(second in x["msg"] for x in after)
    assert len(after) == len(lines) - int(done.stdout.split("removed ")[1].split()[0])
    # nothing more to remove: exit 1
    again = subprocess.run([sys.executable, "-m", "server", "forget-call", first, str(log)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 1


def test_forget_call_spans_rotated_files_and_keeps_permissions(tmp_path):
    from server.logs import forget_call

    a, b = tmp_path / "dauys.log.1", tmp_path / "dauys.log"
    a.write_text(
        json.dumps({"msg": "call CAxyz123456 connected", "session": "sess-0001"}) + "\n"
        + json.dumps({"msg": "other", "session": "sess-0002"}) + "\nplain text line\n",
        encoding="utf-8",
    )
    b.write_text(json.dumps({"msg": "final u1 (kk)", "session": "sess-0001"}) + "\n" + json.dumps({"msg": "x", "session": "sess-0002"}) + "\n", encoding="utf-8")
    b.chmod(0o640)
    removed, sessions = forget_call([a, b], "CAxyz123456")
    assert removed == 2 and sessions == {"sess-0001"}
    assert "sess-0001" not in a.read_text() + b.read_text() and "plain text line" in a.read_text()
    assert (b.stat().st_mode & 0o777) == 0o640
    assert not list(tmp_path.glob(".*.tmp"))
    np.testing.assert_equal(forget_call([a, b], "sess-0002")[0], 2)  # by session id too
