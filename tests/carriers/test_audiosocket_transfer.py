"""AudioSocket's transfer (server/transfer.py AudioSocketTransfer): the protocol carries no variable, so the
caller's channel is found through AMI (Status with Variables) and the variables are set with Setvar. Tested
against a stand-in manager interface speaking AMI's framing, then DTMF 0 through the runner."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from pipeline import metrics
from pipeline.events import Handoff
from server.codecs import KIND_AUDIO, KIND_DTMF, KIND_HANGUP, KIND_UUID, AudioSocketCodec, frame
from server.transfer import AudioSocketTransfer, for_carrier
from tests.helpers.server import make_settings

CALL = uuid.uuid4()
HANDOFF = Handoff("user_request", "kk", "reason: user_request; caller said: картам")


class StandInAmi:
    """An Asterisk manager interface with a few channels; records every action."""

    def __init__(self, user: str, secret: str, channels: dict[str, str], legacy: bool = False) -> None:
        self.user, self.secret, self.channels, self.legacy = user, secret, channels, legacy
        self.actions: list[dict[str, str]] = []
        self.sessions: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    @staticmethod
    def msg(**fields) -> bytes:
        return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"

    async def handle(self, reader, writer) -> None:
        self.sessions.add(asyncio.current_task())
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode()
                action = dict(line.split(": ", 1) for line in block.strip().split("\r\n"))
                self.actions.append(action)
                aid = action.get("ActionID", "")
                name = action["Action"]
                if name == "Login":
                    ok = action.get("Username") == self.user and action.get("Secret") == self.secret
                    writer.write(self.msg(Response="Success" if ok else "Error", ActionID=aid, Message="Authentication accepted" if ok else "Authentication failed"))
                    writer.write(self.msg(Event="FullyBooted", Privilege="system,all", Status="Fully Booted"))  # unsolicited
                elif name == "Status":
                    head = {"Response": "Success", "ActionID": aid, "Message": "Channel status will follow"}
                    if not self.legacy:
                        head["EventList"] = "start"
                    writer.write(self.msg(**head))
                    for channel, value in self.channels.items():
                        writer.write(self.msg(Event="Status", ActionID=aid, Channel=channel, Uniqueid="1761245643.1", Variable=f"{action['Variables']}={value}"))
                    tail = {"Event": "StatusComplete", "ActionID": aid, "Items": str(len(self.channels))}
                    if not self.legacy:
                        tail["EventList"] = "Complete"
                    writer.write(self.msg(**tail))
                elif name == "Setvar":
                    known = action.get("Channel") in self.channels
                    writer.write(self.msg(Response="Success" if known else "Error", ActionID=aid, Message="Variable Set" if known else "No such channel"))
                elif name == "Logoff":
                    writer.write(self.msg(Response="Goodbye", Message="Thanks for all the fish."))
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def close(self) -> None:
        """Stop, once every manager session has read what the client sent (its Logoff included)."""
        self.server.close()
        if self.sessions:
            await asyncio.wait(self.sessions, timeout=5)


@pytest.fixture
def ami_credentials(monkeypatch):
    monkeypatch.setenv("DAUYS_AMI_USER", "dauys")
    monkeypatch.setenv("DAUYS_AMI_SECRET", "s3cret-" + uuid.uuid4().hex[:6])
    import os

    return os.environ["DAUYS_AMI_USER"], os.environ["DAUYS_AMI_SECRET"]


def codec() -> AudioSocketCodec:
    c = AudioSocketCodec()
    c.decode(frame(KIND_UUID, CALL.bytes))
    return c


def count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("dauys_transfers_total", {"carrier": "audiosocket", "result": result}) or 0.0


@pytest.mark.parametrize("legacy", [False, True])
async def test_the_channel_is_found_by_its_uuid_variable_and_the_variables_set(ami_credentials, legacy):
    ami = StandInAmi(*ami_credentials, {"PJSIP/trunk-00000001": str(CALL), "PJSIP/trunk-00000002": str(uuid.uuid4())}, legacy=legacy)
    port = await ami.start()
    settings = make_settings(transfer={"asterisk_ami_host": "127.0.0.1", "asterisk_ami_port": port})
    before = count("ok")
    assert await AudioSocketTransfer(settings)(codec(), HANDOFF)
    await ami.close()
    names = [a["Action"] for a in ami.actions]
    assert names == ["Login", "Status", "Setvar", "Setvar", "Logoff"]
    assert ami.actions[1]["Variables"] == "DAUYS_UUID"
    sets = [(a["Channel"], a["Variable"], a["Value"]) for a in ami.actions if a["Action"] == "Setvar"]
    assert sets == [("PJSIP/trunk-00000001", "DAUYS_SUMMARY", HANDOFF.summary), ("PJSIP/trunk-00000001", "DAUYS_TRANSFER", "operator")]
    assert count("ok") == before + 1


async def test_no_matching_channel_or_a_refused_login_fails_without_setting_anything(ami_credentials, monkeypatch):
    ami = StandInAmi(*ami_credentials, {"PJSIP/trunk-00000009": str(uuid.uuid4())})
    port = await ami.start()
    settings = make_settings(transfer={"asterisk_ami_host": "127.0.0.1", "asterisk_ami_port": port})
    before = count("failed")
    assert not await AudioSocketTransfer(settings)(codec(), HANDOFF)
    monkeypatch.setenv("DAUYS_AMI_SECRET", "wrong")
    assert not await AudioSocketTransfer(settings)(codec(), HANDOFF)
    await ami.close()
    assert not any(a["Action"] == "Setvar" for a in ami.actions)
    assert count("failed") == before + 2


@pytest.fixture
def quiet(services):
    return dataclasses.replace(services, tts=None)


async def test_dtmf_0_sets_the_variable_then_hangs_up(quiet, ami_credentials):
    from server.transport import CallRegistry, CallRunner
    from tests.carriers.test_transport import MemoryLink

    ami = StandInAmi(*ami_credentials, {"PJSIP/trunk-00000001": str(CALL)})
    port = await ami.start()
    settings = make_settings(transfer={"asterisk_ami_host": "127.0.0.1", "asterisk_ami_port": port})
    link = MemoryLink([frame(KIND_UUID, CALL.bytes) + frame(KIND_AUDIO, b"\x00" * 320) + frame(KIND_DTMF, b"0")])
    svc = dataclasses.replace(quiet, settings=settings)
    async with asyncio.timeout(60):
        await CallRunner(link, AudioSocketCodec(), svc, settings, CallRegistry(), transfer=for_carrier("audiosocket", settings)).run()
    await ami.close()
    assert [a["Variable"] for a in ami.actions if a["Action"] == "Setvar"] == ["DAUYS_SUMMARY", "DAUYS_TRANSFER"]
    assert link.sent == [frame(KIND_HANGUP)]  # then the leg hangs up and the dialplan reads DAUYS_TRANSFER


async def test_the_end_of_a_call_without_handoff_sets_done(ami_credentials):
    ami = StandInAmi(*ami_credentials, {"PJSIP/trunk-00000001": str(CALL)})
    port = await ami.start()
    settings = make_settings(transfer={"asterisk_ami_host": "127.0.0.1", "asterisk_ami_port": port})
    await for_carrier("audiosocket", settings).end(codec())
    quiet = make_settings(transfer={"asterisk_ami_host": "127.0.0.1", "asterisk_ami_port": port, "asterisk_done_value": ""})
    await for_carrier("audiosocket", quiet).end(codec())  # turned off: nothing is sent
    await ami.close()
    assert [(a["Variable"], a["Value"]) for a in ami.actions if a["Action"] == "Setvar"] == [("DAUYS_TRANSFER", "done")]
