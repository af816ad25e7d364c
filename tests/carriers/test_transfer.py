"""The real transfer at a handoff (server/transfer.py) against local stand-ins that speak the providers'
request formats: Twilio's Calls API (form-encoded POST, HTTP basic auth) and Asterisk ARI's channel
variable resource; then through the call runner, where DTMF 0 on a live call ends in the transfer."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline import metrics
from pipeline.events import Handoff
from server.asterisk_ws import AsteriskWebSocketCodec
from server.codecs import TwilioCodec
from server.transfer import AsteriskTransfer, TwilioTransfer, for_carrier, twiml_dial
from tests.helpers.server import make_settings

SID, TOKEN = "AC" + "1" * 32, "tok-" + uuid.uuid4().hex
CALL_SID = "CA" + "2" * 32
SUMMARY = "reason: user_request; language: kk; topic: card_blocked; caller said: картам бұғатталды"
HANDOFF = Handoff("user_request", "kk", SUMMARY)


class StandIn:
    """A local HTTP server recording every request; answers ``status`` (after ``delay`` s)."""

    def __init__(self, status: int = 200, body: bytes = b"{}", delay: float = 0.0) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                n = int(self.headers.get("Content-Length") or 0)
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(n)})
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    servers = []

    def make(**kw) -> StandIn:
        servers.append(StandIn(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("DAUYS_ARI_USER", "dauys")
    monkeypatch.setenv("DAUYS_ARI_PASSWORD", TOKEN)


def count(carrier: str, result: str) -> float:
    return metrics.REGISTRY.get_sample_value("dauys_transfers_total", {"carrier": carrier, "result": result}) or 0.0


def twilio_codec() -> TwilioCodec:
    codec = TwilioCodec()
    codec.decode(json.dumps({"event": "start", "streamSid": "MZ1", "start": {"callSid": CALL_SID, "customParameters": {}}}))
    return codec


def basic(headers: dict) -> tuple[str, str]:
    scheme, _, blob = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(blob).decode().partition(":")
    return user, password


# ------------------------------------------------------------------------------------ Twilio
async def test_twilio_updates_the_live_call_with_dial_twiml(stand_in, credentials):
    api = stand_in()
    settings = make_settings(transfer={"twilio_to": "+77172000000", "twilio_api_url": api.url})
    before = count("twilio", "ok")
    assert await TwilioTransfer(settings)(twilio_codec(), HANDOFF) is True
    (req,) = api.requests
    assert req["path"] == f"/2010-04-01/Accounts/{SID}/Calls/{CALL_SID}.json"
    assert basic(req["headers"]) == (SID, TOKEN)
    assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(req["body"].decode())
    assert list(form) == ["Twiml"]
    root = ET.fromstring(form["Twiml"][0])
    assert root.tag == "Response" and root[0].tag == "Dial" and root[0][0].tag == "Number" and root[0][0].text == "+77172000000"
    assert count("twilio", "ok") == before + 1


async def test_twilio_sip_target_carries_the_summary_in_a_header(stand_in, credentials):
    api = stand_in()
    settings = make_settings(transfer={"twilio_to": "sip:queue@pbx.example.kz", "twilio_api_url": api.url})
    assert await TwilioTransfer(settings)(twilio_codec(), HANDOFF)
    sip = ET.fromstring(parse_qs(api.requests[0]["body"].decode())["Twiml"][0]).find("Dial/Sip").text
    uri, _, query = sip.partition("?")
    assert uri == "sip:queue@pbx.example.kz" and parse_qs(query)["X-Dauys-Summary"] == [SUMMARY]
    # without send_summary nothing of the caller goes along
    api2 = stand_in()
    quiet = make_settings(transfer={"twilio_to": "sip:queue@pbx.example.kz", "twilio_api_url": api2.url, "send_summary": False})
    assert await TwilioTransfer(quiet)(twilio_codec(), HANDOFF)
    assert "caller" not in parse_qs(api2.requests[0]["body"].decode())["Twiml"][0]


def test_the_sip_header_value_is_ascii_and_bounded_on_a_character_boundary():
    from urllib.parse import unquote

    from server.transfer import sip_header_value

    value = sip_header_value("қ" * 1000)
    assert value.isascii() and len(value) <= 900 and unquote(value) == "қ" * (len(value) // 6)


def test_twiml_escapes_what_it_carries():
    twiml = twiml_dial("sip:a@b", "x</Sip><Redirect>http://evil</Redirect>&")
    sip = ET.fromstring(twiml).find("Dial/Sip")
    assert ET.fromstring(twiml).find("Dial/Redirect") is None and sip.text.startswith("sip:a@b?X-Dauys-Summary=x%3C%2FSip")


async def test_a_failed_transfer_is_counted_and_logged_without_secrets_or_caller_data(stand_in, credentials, caplog):
    api = stand_in(status=401, body=b'{"code": 20003}')
    settings = make_settings(transfer={"twilio_to": "+77172000000", "twilio_api_url": api.url})
    before = count("twilio", "failed")
    with caplog.at_level(logging.INFO, logger="dauys.transfer"):
        assert await TwilioTransfer(settings)(twilio_codec(), HANDOFF) is False
    assert count("twilio", "failed") == before + 1
    text = caplog.text
    assert "HTTP 401" in text and TOKEN not in text and SID not in text and "картам" not in text and "+77172000000" not in text


async def test_a_slow_api_times_out_and_missing_credentials_fail(stand_in, credentials, monkeypatch, caplog):
    api = stand_in(delay=2.0)
    settings = make_settings(transfer={"twilio_to": "+77172000000", "twilio_api_url": api.url, "timeout_s": 0.3})
    t0 = time.monotonic()
    assert await TwilioTransfer(settings)(twilio_codec(), HANDOFF) is False
    assert time.monotonic() - t0 < 1.5
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    api2 = stand_in()
    settings = make_settings(transfer={"twilio_to": "+77172000000", "twilio_api_url": api2.url})
    with caplog.at_level(logging.ERROR, logger="dauys.transfer"):
        assert await TwilioTransfer(settings)(twilio_codec(), HANDOFF) is False
    assert api2.requests == [] and "TWILIO_AUTH_TOKEN is not set" in caplog.text


async def test_nothing_is_sent_where_no_target_is_configured(credentials):
    before = count("twilio", "not_configured")
    assert await TwilioTransfer(make_settings())(twilio_codec(), HANDOFF) is False
    assert count("twilio", "not_configured") == before + 1
    assert for_carrier("native", make_settings()) is None


def test_transfer_settings_are_checked():
    from server.config import ConfigError

    for bad in ({"twilio_to": "12345"}, {"twilio_api_url": "http://api.twilio.com"}, {"asterisk_ari_url": "http://u:p@pbx:8088/ari"},
                {"asterisk_variable": "DAUYS TRANSFER"}):
        with pytest.raises(ConfigError):
            make_settings(transfer=bad)
    from server.config import load_settings

    assert load_settings(environ={"DAUYS_TRANSFER__TWILIO_TO": "+77172000000"}).transfer.twilio_to == "+77172000000"


# ------------------------------------------------------------------------------------ Asterisk
async def test_asterisk_sets_the_summary_then_the_transfer_variable_through_ari(stand_in, credentials):
    ari = stand_in(status=204, body=b"")
    settings = make_settings(transfer={"asterisk_ari_url": ari.url + "/ari", "asterisk_value": "support"})
    codec = AsteriskWebSocketCodec(caller_channel="1761245643.1")
    assert await AsteriskTransfer(settings)(codec, HANDOFF)
    assert [urlsplit(r["path"]).path for r in ari.requests] == ["/ari/channels/1761245643.1/variable"] * 2
    sets = [parse_qs(urlsplit(r["path"]).query) for r in ari.requests]
    assert sets == [{"variable": ["DAUYS_SUMMARY"], "value": [SUMMARY]}, {"variable": ["DAUYS_TRANSFER"], "value": ["support"]}]
    assert all(basic(r["headers"]) == ("dauys", TOKEN) for r in ari.requests)


async def test_asterisk_without_the_callers_channel_sends_nothing(stand_in, credentials):
    ari = stand_in(status=204, body=b"")
    settings = make_settings(transfer={"asterisk_ari_url": ari.url + "/ari"})
    before = count("asterisk", "failed")
    assert await AsteriskTransfer(settings)(AsteriskWebSocketCodec(), HANDOFF) is False
    assert ari.requests == [] and count("asterisk", "failed") == before + 1


# ------------------------------------------------------------------------------------ through the runner
@pytest.fixture
def quiet(services):
    import dataclasses

    return dataclasses.replace(services, tts=None)


async def _run(link, codec, services, settings, transfer):
    import dataclasses

    from server.transport import CallRegistry, CallRunner

    svc = dataclasses.replace(services, settings=settings)
    runner = CallRunner(link, codec, svc, settings, CallRegistry(), transfer=transfer)
    async with asyncio.timeout(60):
        await runner.run()
    return runner


async def test_dtmf_0_on_twilio_transfers_the_live_call_then_closes(quiet, stand_in, credentials):
    from tests.carriers.test_transport import MemoryLink

    api = stand_in()
    settings = make_settings(transfer={"twilio_to": "+77172000000", "twilio_api_url": api.url})
    start = {"event": "start", "streamSid": "MZ1", "start": {"callSid": CALL_SID, "customParameters": {"language": "kk"}}}
    link = MemoryLink([json.dumps(start), json.dumps({"event": "dtmf", "dtmf": {"digit": "0"}})])
    runner = await _run(link, TwilioCodec(), quiet, settings, for_carrier("twilio", settings))
    assert runner.handoff is not None and runner.handoff.reason == "user_request"
    (req,) = api.requests
    assert req["path"].endswith(f"/Calls/{CALL_SID}.json") and "Dial" in parse_qs(req["body"].decode())["Twiml"][0]
    assert link.closed == (1000, "session ended")


async def test_dtmf_0_on_chan_websocket_sets_the_variable_then_hangs_up(quiet, stand_in, credentials):
    from tests.carriers.test_transport import MemoryLink

    ari = stand_in(status=204, body=b"")
    settings = make_settings(transfer={"asterisk_ari_url": ari.url + "/ari"})
    link = MemoryLink([json.dumps({"event": "MEDIA_START", "channel_id": "1.2", "format": "ulaw", "optimal_frame_size": 160,
                                   "channel_variables": {"DAUYS_CALLER": "1761245643.1"}}),
                       b"\xff" * 160, json.dumps({"event": "DTMF_END", "digit": "0"})])
    codec = AsteriskWebSocketCodec()

    async def drain_reports():  # Asterisk's side: QUEUE_DRAINED once asked
        while link.closed is None:
            if '{"command": "REPORT_QUEUE_DRAINED"}' in link.sent:
                link.incoming.put_nowait(json.dumps({"event": "QUEUE_DRAINED"}))
                return
            await asyncio.sleep(0.01)

    helper = asyncio.ensure_future(drain_reports())
    await _run(link, codec, quiet, settings, for_carrier("asterisk", settings))
    helper.cancel()
    assert [parse_qs(urlsplit(r["path"]).query)["variable"] for r in ari.requests] == [["DAUYS_SUMMARY"], ["DAUYS_TRANSFER"]]
    commands = [m for m in link.sent if isinstance(m, str)]
    assert commands[-2:] == ['{"command": "REPORT_QUEUE_DRAINED"}', '{"command": "HANGUP"}']


async def test_chan_websocket_hangs_up_only_after_asterisk_says_the_queue_drained(quiet, stand_in, credentials):
    from tests.carriers.test_transport import MemoryLink

    settings = make_settings()
    link = MemoryLink([json.dumps({"event": "MEDIA_START", "channel_id": "1.2", "format": "ulaw", "optimal_frame_size": 160}),
                       b"\xff" * 160, json.dumps({"event": "DTMF_END", "digit": "0"})])
    drained_at = []

    async def asterisk():  # QUEUE_DRAINED 0.5 s after it was asked for
        while '{"command": "REPORT_QUEUE_DRAINED"}' not in link.sent:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        drained_at.append(len(link.sent))
        link.incoming.put_nowait(json.dumps({"event": "QUEUE_DRAINED"}))

    helper = asyncio.ensure_future(asterisk())
    await _run(link, AsteriskWebSocketCodec(), quiet, settings, for_carrier("asterisk", settings))
    helper.cancel()
    assert drained_at, "REPORT_QUEUE_DRAINED never sent"
    assert link.sent.index('{"command": "HANGUP"}') >= drained_at[0]  # HANGUP went out after QUEUE_DRAINED came


async def test_a_call_dauys_ends_itself_is_marked_done_so_everything_else_goes_to_a_person(quiet, stand_in, credentials):
    from tests.carriers.test_transport import MemoryLink

    ari = stand_in(status=204, body=b"")
    settings = make_settings(transfer={"asterisk_ari_url": ari.url + "/ari"}, server={"max_session_s": 1.0})
    link = MemoryLink([PLAIN_START_WITH_CALLER, b"\xff" * 160])

    async def asterisk():
        while '{"command": "REPORT_QUEUE_DRAINED"}' not in link.sent and "REPORT_QUEUE_DRAINED" not in link.sent:
            await asyncio.sleep(0.01)
        link.incoming.put_nowait("QUEUE_DRAINED")

    helper = asyncio.ensure_future(asterisk())
    before = (count("asterisk", "ok"), count("asterisk", "failed"))
    await _run(link, AsteriskWebSocketCodec(caller_channel="1761245643.1"), quiet, settings, for_carrier("asterisk", settings))
    helper.cancel()
    (req,) = ari.requests
    assert parse_qs(urlsplit(req["path"]).query) == {"variable": ["DAUYS_TRANSFER"], "value": ["done"]}
    assert link.sent[-1] == "HANGUP"
    assert (count("asterisk", "ok"), count("asterisk", "failed")) == before  # not a transfer


PLAIN_START_WITH_CALLER = "MEDIA_START connection_id:c1 channel:WebSocket/dauys/0x1 channel_id:1761245643.2 format:ulaw optimal_frame_size:160 ptime:20"
