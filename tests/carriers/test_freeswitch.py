"""FreeSWITCH mod_audio_stream (server/freeswitch.py) without a socket, and the event-socket transfer
(server/transfer.py) against a stand-in ESL server speaking mod_event_socket's auth/api framing."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.audio import Encoding
from pipeline import metrics
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, Dtmf, Handoff, Start
from pipeline.replies import AudioFrame
from server.codecs import Audio, CallId, CallStart, Hangup, Refuse
from server.freeswitch import FreeSwitchCodec
from server.transfer import FreeSwitchTransfer, for_carrier
from tests.carriers.test_codecs import EVENTS, FUZZ, JSON, valid
from tests.helpers.server import make_settings

CALL = str(uuid.uuid4())
HANDOFF = Handoff("user_request", "kk", "reason: user_request; caller said: {карта}\nбұғатталды")


def meta(**kw) -> str:
    return json.dumps({"uuid": CALL, **kw})


def test_metadata_starts_the_call_and_audio_frames_go_out_as_stream_audio():
    codec = FreeSwitchCodec("auto", rate=8000)
    pcm16 = AudioFormat(Encoding.PCM_S16LE, 16000, 1)
    assert codec.decode(meta(language="KK", rate=16000)) == [CallId(CALL), CallStart(Start(pcm16, pcm16, "kk", keypad=True), language_fallback=True)]
    assert codec.decode(b"\x01\x00" * 320) == [Audio(b"\x01\x00" * 320)]
    assert codec.decode(json.dumps({"event": "dtmf", "digit": "0"})) == [Dtmf("0")]
    assert codec.decode('{"dtmf":"5"}') == [Dtmf("5")]  # the comma-free form of bind_digit_action
    out = codec.encode(AudioFrame("r1", b"\x02" * 1000))
    assert len(out) == 1
    msg = json.loads(out[0])
    assert msg["type"] == "streamAudio" and msg["data"]["audioDataType"] == "raw" and msg["data"]["sampleRate"] == 16000
    assert base64.b64decode(msg["data"]["audioData"]) == b"\x02" * 640
    (tail,) = codec.encode(AudioEnd("r1", False))
    assert base64.b64decode(json.loads(tail)["data"]["audioData"]) == b"\x02" * 360 + b"\x00" * 280
    codec.encode(AudioFrame("r2", b"\x03" * 10))
    assert codec.encode(AudioEnd("r2", True)) == [] and codec.flush() == []  # barge-in: the held-back tail is dropped
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.decode(json.dumps({"event": "stop"})) == [Hangup()] and codec.eof() == [Hangup()]


def test_audio_without_metadata_starts_at_the_url_rate_and_a_secret_is_required_when_set():
    codec = FreeSwitchCodec("ru", rate=16000)
    (call, start, audio) = codec.decode(b"\x00\x00" * 10)
    assert call == CallId(None) and start.start.audio.sample_rate == 16000 and start.start.language == "ru" and audio == Audio(b"\x00\x00" * 10)
    locked = FreeSwitchCodec(secret="s3cret")
    assert isinstance(locked.decode(meta())[-1], Refuse)
    assert locked.decode(b"\x00" * 10) == [] and locked.eof() == []  # nothing after the refusal
    assert isinstance(FreeSwitchCodec(secret="s3cret").decode(b"\x00" * 10)[-1], Refuse)
    assert isinstance(FreeSwitchCodec(secret="s3cret").decode(meta(secret="s3cret"))[-1], CallStart)


def test_protocol_errors():
    for message, code in {"nope": "invalid_json", "[1]": "invalid_json", '{"event": "dtmf"}': "invalid_message", '{"event": "x"}': "unknown_type"}.items():
        (err,) = FreeSwitchCodec().decode(message)
        assert isinstance(err, ProtocolError) and err.code == code, (message, err)
    codec = FreeSwitchCodec()
    codec.decode(meta())
    (err,) = codec.decode(meta())
    assert err.code == "already_started"
    assert FreeSwitchCodec().decode(json.dumps({"uuid": "../../etc x"}))[0] == CallId(None)


FS_MESSAGES = st.fixed_dictionaries({}, optional={"event": st.sampled_from(["dtmf", "stop", "start", "x"]) | JSON, "uuid": JSON, "digit": JSON,
                                                  "rate": st.sampled_from([8000, 16000, 44100, True, "16000"]) | JSON, "language": JSON, "secret": JSON})


@FUZZ
@given(st.lists(FS_MESSAGES.map(json.dumps) | st.text(max_size=50) | st.binary(max_size=300), max_size=10),
       st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 333), AudioEnd("r9", True)]), max_size=10))
def test_freeswitch_decode_never_raises_and_encode_gives_stream_audio(messages, items):
    codec = FreeSwitchCodec()
    for message in messages:
        valid(codec.decode(message))
    valid(codec.eof())
    for item in items:
        for out in codec.encode(item):
            assert json.loads(out)["type"] == "streamAudio"
    assert codec.rate in (8000, 16000)


# ------------------------------------------------------------------------------------ the event socket
class StandInEsl:
    """mod_event_socket's inbound side: auth/request, auth, then api commands answered +OK (or -ERR)."""

    def __init__(self, password: str, fail: str | None = None) -> None:
        self.password, self.fail = password, fail
        self.commands: list[str] = []
        self.auth: list[str] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer) -> None:
        writer.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                block = await reader.readuntil(b"\n\n")
                line = block.decode().strip()
                if line.startswith("auth "):
                    self.auth.append(line[5:])
                    ok = line[5:] == self.password
                    writer.write(b"Content-Type: command/reply\nReply-Text: " + (b"+OK accepted" if ok else b"-ERR invalid") + b"\n\n")
                    if not ok:
                        writer.close()
                        return
                elif line.startswith("api "):
                    self.commands.append(line[4:])
                    body = b"-ERR No such channel!\n" if self.fail and line[4:].startswith(self.fail) else b"+OK\n"
                    writer.write(b"Content-Type: text/event-plain\nContent-Length: 2\n\nxx")  # an event in between is skipped
                    writer.write(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body)
                elif line == "exit":
                    writer.write(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def esl_password(monkeypatch):
    password = "ClueCon-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("DAUYS_ESL_PASSWORD", password)
    return password


def started_codec() -> FreeSwitchCodec:
    codec = FreeSwitchCodec()
    codec.decode(meta())
    return codec


def count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("dauys_transfers_total", {"carrier": "freeswitch", "result": result}) or 0.0


async def test_handoff_sets_the_summary_and_transfers_over_the_event_socket(esl_password):
    esl = StandInEsl(esl_password)
    port = await esl.start()
    settings = make_settings(transfer={"freeswitch_dest": "operator XML default", "freeswitch_esl_port": port})
    before = count("ok")
    assert await FreeSwitchTransfer(settings)(started_codec(), HANDOFF)
    esl.close()
    assert esl.auth == [esl_password]
    setvar, transfer = esl.commands
    assert setvar.startswith(f"uuid_setvar {CALL} dauys_summary reason: user_request; caller said: (карта) бұғатталды")
    assert transfer == f"uuid_transfer {CALL} operator XML default"
    assert count("ok") == before + 1


async def test_a_refused_password_or_an_err_reply_fails_the_transfer(esl_password, monkeypatch):
    esl = StandInEsl(esl_password, fail="uuid_transfer")
    port = await esl.start()
    settings = make_settings(transfer={"freeswitch_dest": "operator", "freeswitch_esl_port": port, "send_summary": False})
    before = count("failed")
    assert not await FreeSwitchTransfer(settings)(started_codec(), HANDOFF)
    assert esl.commands == [f"uuid_transfer {CALL} operator"]
    monkeypatch.setenv("DAUYS_ESL_PASSWORD", "wrong")
    assert not await FreeSwitchTransfer(settings)(started_codec(), HANDOFF)
    assert not await FreeSwitchTransfer(settings)(FreeSwitchCodec(), HANDOFF)  # no uuid: nothing sent
    esl.close()
    assert count("failed") == before + 3 and len(esl.commands) == 1


async def test_a_call_ending_without_handoff_is_killed(esl_password):
    esl = StandInEsl(esl_password)
    port = await esl.start()
    settings = make_settings(transfer={"freeswitch_dest": "operator", "freeswitch_esl_port": port})
    await for_carrier("freeswitch", settings).end(started_codec())
    esl.close()
    assert esl.commands == [f"uuid_kill {CALL}"]


def test_destinations_are_checked():
    from server.config import ConfigError

    for bad in ("operator\napi uuid_kill all", "a b c d", "op;rm"):
        with pytest.raises(ConfigError):
            make_settings(transfer={"freeswitch_dest": bad})
    assert make_settings(transfer={"freeswitch_dest": " 1000  XML  default "}).transfer.freeswitch_dest == "1000 XML default"


@pytest.fixture
def quiet(services):
    import dataclasses

    return dataclasses.replace(services, tts=None)


async def test_dtmf_0_through_the_runner_transfers_the_channel(quiet, esl_password):
    import dataclasses

    from server.transport import CallRegistry, CallRunner
    from tests.carriers.test_transport import MemoryLink

    esl = StandInEsl(esl_password)
    port = await esl.start()
    settings = make_settings(transfer={"freeswitch_dest": "operator XML default", "freeswitch_esl_port": port})
    link = MemoryLink([meta(language="kk"), b"\x00" * 320, json.dumps({"event": "dtmf", "digit": "0"})])
    svc = dataclasses.replace(quiet, settings=settings)
    async with asyncio.timeout(60):
        await CallRunner(link, FreeSwitchCodec(), svc, settings, CallRegistry(), transfer=for_carrier("freeswitch", settings)).run()
    esl.close()
    assert esl.commands[-1] == f"uuid_transfer {CALL} operator XML default" and link.closed == (1000, "session ended")
