"""A real transfer to a human at a handoff: each carrier's own way of moving the live call.

When the session hands off (a spoken request, DTMF 0, the misunderstanding
policy, a failing backend) the call runner lets the handoff message play, then
calls the carrier's transfer (below) before it ends the call as before:

* Twilio: the live call is updated through the REST API, ``POST
  {transfer.twilio_api_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``
  with the form field ``Twiml=<Response><Dial>...</Dial></Response>`` (HTTP
  basic auth: the account SID and auth token, from the environment variables
  named by ``transfer.twilio_account_sid_env`` / ``twilio_auth_token_env``).
  Twilio stops the media stream and dials ``transfer.twilio_to`` (an E.164
  number or a ``sip:`` address; a SIP address carries the handoff summary in
  an ``X-Dauys-Summary`` header).
* Asterisk (chan_websocket): the variable ``transfer.asterisk_variable`` is set
  to ``transfer.asterisk_value`` (and ``transfer.asterisk_summary_variable`` to
  the summary) on the caller's channel through ARI, ``POST
  {transfer.asterisk_ari_url}/channels/{id}/variable?variable=...&value=...``,
  then the leg hangs up and the dialplan after ``Dial()`` reads the variable.
* Asterisk (AudioSocket): the protocol carries no variable, so the same
  variables are set through the manager interface (AMI, ``transfer.asterisk_ami_host``):
  ``Status`` with ``Variables`` finds the one channel whose
  ``transfer.asterisk_uuid_variable`` holds the call's AudioSocket UUID, then
  ``Setvar``; then the leg hangs up (0x00) and the dialplan after ``AudioSocket()``
  reads the variable.
* FreeSWITCH (mod_audio_stream): over the event socket (ESL),
  ``uuid_setvar <uuid> dauys_summary ...`` then ``uuid_transfer <uuid>
  {transfer.freeswitch_dest}``; a call that ends otherwise gets ``uuid_kill``.
* Telnyx: Call Control ``POST {transfer.telnyx_api_url}/v2/calls/{call_control_id}/actions/transfer``
  ``{"to": transfer.telnyx_to, "custom_headers": [X-Dauys-Summary]}`` with the
  API key from ``transfer.telnyx_api_key_env``.
* Vonage: none (its transfer needs the application's JWT): the NCCO goes on.

Nothing is sent anywhere unless its target is configured; credentials come
only from the environment and, like the summary and the target, never reach a
log line.  A transfer that fails (or takes longer than ``transfer.timeout_s``)
is logged with its reason only, counted in
``dauys_transfers_total{carrier,result}``, and the call ends as it would have
without one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode, urlsplit
from xml.sax.saxutils import escape

from prometheus_client import Counter

from models.net import is_local_host
from pipeline import metrics
from pipeline.events import Handoff

log = logging.getLogger("dauys.transfer")

TRANSFERS = Counter(
    "dauys_transfers_total", "Calls transferred to a human at a handoff, by carrier and result (ok, failed, not_configured)",
    ["carrier", "result"], registry=metrics.REGISTRY,
)
SUMMARY_CHARS = 400
"""The handoff summary as carried in a SIP header or a channel variable: at most this many characters."""
SUMMARY_HEADER = "X-Dauys-Summary"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class TransferError(Exception):
    """Why a transfer failed, in words fit for a log line (no personal data, no secrets)."""


def _credential(env_name: str) -> str:
    value = os.environ.get(env_name, "").strip() if env_name else ""
    if not value:
        raise TransferError(f"environment variable {env_name or '(none named)'} is not set")
    return value


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _request(url: str, body: bytes | None, headers: dict, timeout: float) -> int:
    handlers = [urllib.request.ProxyHandler({})] if is_local_host(urlsplit(url).hostname) else []
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body if body is not None else b"", headers=headers, method="POST")
    try:
        with opener.open(req, timeout=timeout) as r:
            r.read(65536)
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def post(url: str, body: bytes | None, headers: dict, timeout: float, what: str) -> None:
    """POST from a worker thread; :class:`TransferError` unless a 2xx comes back."""
    try:
        status = await asyncio.to_thread(_request, url, body, headers, timeout)
    except Exception as e:  # network errors, timeouts, TLS: the kind only
        raise TransferError(f"{what}: {type(e).__name__}") from None
    if not 200 <= status < 300:
        raise TransferError(f"{what}: HTTP {status}")


def short_summary(handoff: Handoff) -> str:
    return " ".join(handoff.summary.split())[:SUMMARY_CHARS]


SIP_HEADER_CHARS = 900
"""A SIP header carries the summary percent-encoded (UTF-8), cut to this many characters on a
character boundary (Twilio allows 1024 bytes of custom headers in all)."""


def sip_header_value(summary: str, limit: int = SIP_HEADER_CHARS) -> str:
    out, n = [], 0
    for ch in summary:
        piece = quote(ch, safe="")
        if n + len(piece) > limit:
            break
        out.append(piece)
        n += len(piece)
    return "".join(out)


# ------------------------------------------------------------------------------------ carriers
class Transfer:
    """The interface: ``await transfer(codec, handoff)`` -> True once the carrier has taken the call."""

    carrier = ""

    def __init__(self, settings) -> None:
        self.t = settings.transfer

    def configured(self) -> bool:
        raise NotImplementedError

    async def send(self, codec, handoff: Handoff) -> None:
        raise NotImplementedError

    def handoff_variables(self, handoff: Handoff) -> list[tuple[str, str]]:
        """The Asterisk variables a handoff sets: the summary first, the transfer flag last."""
        variables = [(self.t.asterisk_variable, self.t.asterisk_value)]
        if self.t.send_summary and self.t.asterisk_summary_variable:
            variables.insert(0, (self.t.asterisk_summary_variable, short_summary(handoff)))
        return variables

    async def set_variables(self, codec, variables: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    async def end_variables(self, codec) -> None:
        """A call Dauys ends without a handoff (a goodbye, the time limit): ``asterisk_variable`` =
        ``asterisk_done_value``, so a dialplan can send every other case (a handoff, or a failed
        transfer) to a person. Best effort: logged, never counted as a transfer."""
        if not self.configured() or not self.t.asterisk_done_value:
            return
        try:
            async with asyncio.timeout(self.t.timeout_s):
                await self.set_variables(codec, [(self.t.asterisk_variable, self.t.asterisk_done_value)])
        except (TransferError, TimeoutError) as e:
            log.warning("call %s: %s variable at the end of the call not set: %s", getattr(codec, "call_id", None), self.carrier, e or "timed out")

    async def __call__(self, codec, handoff: Handoff) -> bool:
        if not self.configured():
            TRANSFERS.labels(self.carrier, "not_configured").inc()
            return False
        call = getattr(codec, "call_id", None)
        try:
            async with asyncio.timeout(self.t.timeout_s):
                await self.send(codec, handoff)
        except TransferError as e:
            problem = str(e)
        except TimeoutError:
            problem = f"no answer within {self.t.timeout_s:g} s"
        except Exception as e:  # a bug must not keep the call from ending
            problem = type(e).__name__
            log.exception("call %s: %s transfer failed", call, self.carrier)
        else:
            TRANSFERS.labels(self.carrier, "ok").inc()
            log.info("call %s: transferred (%s)", call, self.carrier)
            return True
        TRANSFERS.labels(self.carrier, "failed").inc()
        log.error("call %s: %s transfer failed: %s; the call ends without it", call, self.carrier, problem)
        return False


def twiml_dial(to: str, summary: str | None) -> str:
    """``<Response><Dial>`` to a number or a ``sip:`` address (which carries the summary as a header)."""
    if to.startswith("sip:"):
        uri = to
        if summary:
            uri += ("&" if "?" in uri else "?") + f"{SUMMARY_HEADER}={sip_header_value(summary)}"
        target = f"<Sip>{escape(uri)}</Sip>"
    else:
        target = f"<Number>{escape(to)}</Number>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{target}</Dial></Response>'


class TwilioTransfer(Transfer):
    """Update the live call with ``<Dial>`` TwiML (Twilio's Call resource, form-encoded)."""

    carrier = "twilio"

    def configured(self) -> bool:
        return bool(self.t.twilio_to)

    async def send(self, codec, handoff: Handoff) -> None:
        call_sid = getattr(codec, "call_sid", None)
        if not isinstance(call_sid, str) or not _SAFE_ID.match(call_sid):
            raise TransferError("the call's CallSid is not known")
        sid = _credential(self.t.twilio_account_sid_env)
        token = _credential(self.t.twilio_auth_token_env)
        url = f"{self.t.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{quote(sid, safe='')}/Calls/{quote(call_sid, safe='')}.json"
        summary = short_summary(handoff) if self.t.send_summary else None
        body = urlencode({"Twiml": twiml_dial(self.t.twilio_to, summary)}).encode()
        headers = {"Authorization": basic_auth(sid, token), "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "dauys-transfer"}
        await post(url, body, headers, self.t.timeout_s, "Twilio Calls API")


class AsteriskTransfer(Transfer):
    """Set the transfer variable (and the summary) on the caller's channel through ARI."""

    carrier = "asterisk"

    def configured(self) -> bool:
        return bool(self.t.asterisk_ari_url)

    async def send(self, codec, handoff: Handoff) -> None:
        await self.set_variables(codec, self.handoff_variables(handoff))

    async def set_variables(self, codec, variables: list[tuple[str, str]]) -> None:
        channel = getattr(codec, "caller_channel", None)
        if not isinstance(channel, str) or not _SAFE_ID.match(channel):
            raise TransferError("the caller's channel id is not known (dial string v(caller=${UNIQUEID}) or Set(__DAUYS_CALLER=${UNIQUEID}))")
        user = _credential(self.t.asterisk_ari_user_env)
        password = _credential(self.t.asterisk_ari_password_env)
        headers = {"Authorization": basic_auth(user, password), "User-Agent": "dauys-transfer"}
        base = f"{self.t.asterisk_ari_url.rstrip('/')}/channels/{quote(channel, safe='')}/variable?"
        for name, value in variables:
            await post(base + urlencode({"variable": name, "value": value}), None, headers, self.t.timeout_s, "ARI channel variable")

    async def end(self, codec) -> None:
        await self.end_variables(codec)


class TelnyxTransfer(Transfer):
    """Call Control ``POST {telnyx_api_url}/v2/calls/{call_control_id}/actions/transfer`` (JSON, bearer key)."""

    carrier = "telnyx"

    def configured(self) -> bool:
        return bool(self.t.telnyx_to)

    async def send(self, codec, handoff: Handoff) -> None:
        call = getattr(codec, "call_id", None)
        if not isinstance(call, str) or not _SAFE_ID.match(call):
            raise TransferError("the call's call_control_id is not known")
        key = _credential(self.t.telnyx_api_key_env)
        body: dict = {"to": self.t.telnyx_to}
        if self.t.send_summary:
            body["custom_headers"] = [{"name": SUMMARY_HEADER, "value": sip_header_value(short_summary(handoff))}]
        url = f"{self.t.telnyx_api_url.rstrip('/')}/v2/calls/{quote(call, safe='')}/actions/transfer"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json", "User-Agent": "dauys-transfer"}
        await post(url, json.dumps(body, ensure_ascii=False).encode(), headers, self.t.timeout_s, "Telnyx transfer")


# ------------------------------------------------------------------------------------ Asterisk AMI (AudioSocket)
class AmiClient:
    """The Asterisk Manager Interface: ``Key: Value`` lines, a blank line ends a message; every action
    carries an ``ActionID`` its ``Response`` (and the events of a list) repeat. One connection per transfer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._n = 0

    @classmethod
    async def connect(cls, host: str, port: int, user: str, secret: str) -> "AmiClient":
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            raise TransferError(f"AMI: {type(e).__name__}") from None
        client = cls(reader, writer)
        banner = await reader.readline()
        if not banner.startswith(b"Asterisk Call Manager"):
            raise TransferError("AMI: not an Asterisk Call Manager")
        await client.action("Login", Username=user, Secret=secret)
        return client

    async def read(self) -> dict[str, list[str]]:
        msg: dict[str, list[str]] = {}
        try:
            while True:
                line = (await self.reader.readline()).decode("utf-8", "replace")
                if not line:
                    raise TransferError("AMI: connection closed")
                line = line.rstrip("\r\n")
                if not line:
                    if msg:
                        return msg
                    continue
                key, _, value = line.partition(":")
                msg.setdefault(key.strip(), []).append(value.strip())
        except (ConnectionError, ValueError):
            raise TransferError("AMI: malformed reply") from None

    async def action(self, name: str, **fields: str) -> list[dict[str, list[str]]]:
        """Send an action; its response, then (for a list) its events up to the list's end."""
        self._n += 1
        action_id = f"dauys-{self._n}"
        lines = [f"Action: {name}", f"ActionID: {action_id}"] + [f"{k}: {v}" for k, v in fields.items()]
        if any("\r" in v or "\n" in v for v in lines):
            raise TransferError("AMI: a field cannot span lines")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        out: list[dict[str, list[str]]] = []
        listing = False
        while True:
            msg = await self.read()
            if msg.get("ActionID", [""])[0] != action_id:
                continue  # unsolicited events
            if "Response" in msg:
                if msg["Response"][0] not in ("Success", "Follows"):
                    raise TransferError(f"AMI: {name} answered {msg.get('Message', ['?'])[0][:60]!r}")
                listing = msg.get("EventList", [""])[0].lower() == "start" or "will follow" in msg.get("Message", [""])[0]
                if not listing:
                    return [msg]
            elif listing:
                if msg.get("EventList", [""])[0].lower() == "complete" or msg.get("Event", [""])[0].endswith("Complete"):
                    return out
                out.append(msg)

    async def close(self) -> None:
        try:
            self.writer.write(b"Action: Logoff\r\n\r\n")
            self.writer.close()
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            pass


class AudioSocketTransfer(Transfer):
    """AudioSocket cannot carry a variable: through AMI, find the channel whose ``asterisk_uuid_variable``
    is this call's AudioSocket UUID (``Status`` with ``Variables``), then ``Setvar`` on it."""

    carrier = "audiosocket"

    def configured(self) -> bool:
        return bool(self.t.asterisk_ami_host)

    async def send(self, codec, handoff: Handoff) -> None:
        await self.set_variables(codec, self.handoff_variables(handoff))

    async def end(self, codec) -> None:
        await self.end_variables(codec)

    async def set_variables(self, codec, variables: list[tuple[str, str]]) -> None:
        call = getattr(codec, "call_id", None)
        if not isinstance(call, str) or not _SAFE_ID.match(call):
            raise TransferError("the call's AudioSocket UUID is not known")
        user = _credential(self.t.asterisk_ami_user_env)
        secret = _credential(self.t.asterisk_ami_secret_env)
        client = await AmiClient.connect(self.t.asterisk_ami_host, self.t.asterisk_ami_port, user, secret)
        try:
            wanted = f"{self.t.asterisk_uuid_variable}={call}".lower()
            channels = [
                ev["Channel"][0] for ev in await client.action("Status", Variables=self.t.asterisk_uuid_variable)
                if "Channel" in ev and any(v.lower() == wanted for v in ev.get("Variable", []))
            ]
            if len(channels) != 1:
                raise TransferError(f"AMI: {len(channels)} channels have {self.t.asterisk_uuid_variable} = this call's UUID")
            for name, value in variables:
                await client.action("Setvar", Channel=channels[0], Variable=name, Value=value)
        finally:
            await client.close()


# ------------------------------------------------------------------------------------ FreeSWITCH ESL
class EslClient:
    """The inbound event socket (mod_event_socket): ``auth``, then ``api`` commands, each answered by an
    ``api/response`` whose body starts ``+OK`` or ``-ERR``. One connection per transfer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, password: str) -> "EslClient":
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            raise TransferError(f"event socket: {type(e).__name__}") from None
        client = cls(reader, writer)
        headers, _ = await client.read()
        if headers.get("Content-Type") != "auth/request":
            raise TransferError("event socket: no auth/request")
        writer.write(f"auth {password}\n\n".encode())
        headers, _ = await client.read()
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise TransferError("event socket: authentication refused")
        return client

    async def read(self) -> tuple[dict[str, str], str]:
        """One message: its headers, and its body (Content-Length bytes)."""
        headers: dict[str, str] = {}
        try:
            while True:
                line = (await self.reader.readline()).decode("utf-8", "replace")
                if not line:
                    raise TransferError("event socket: connection closed")
                line = line.rstrip("\n")
                if not line:
                    if headers:
                        break
                    continue
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            n = int(headers.get("Content-Length", "0") or 0)
            body = (await self.reader.readexactly(n)).decode("utf-8", "replace") if n > 0 else ""
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            raise TransferError("event socket: malformed reply") from None
        return headers, body

    async def api(self, command: str) -> str:
        if "\n" in command or "\r" in command:
            raise TransferError("event socket: a command cannot span lines")
        self.writer.write(f"api {command}\n\n".encode())
        while True:
            headers, body = await self.read()
            if headers.get("Content-Type") == "api/response":
                break  # events or notices in between are skipped
        if not body.startswith("+OK"):
            raise TransferError(f"event socket: {command.split()[0]} answered {body.strip()[:60]!r}")
        return body

    async def close(self) -> None:
        try:
            self.writer.write(b"exit\n\n")
            self.writer.close()
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            pass


class FreeSwitchTransfer(Transfer):
    """``uuid_setvar`` the summary, then ``uuid_transfer`` the caller's channel (ESL); at other ends ``uuid_kill``."""

    carrier = "freeswitch"

    def configured(self) -> bool:
        return bool(self.t.freeswitch_dest and self.t.freeswitch_esl_host)

    async def _session(self, codec, commands: list[str]) -> None:
        uuid_ = getattr(codec, "call_id", None)
        if not isinstance(uuid_, str) or not _SAFE_ID.match(uuid_):
            raise TransferError("the channel's uuid is not known (start metadata {\"uuid\": \"${uuid}\"})")
        password = _credential(self.t.freeswitch_esl_password_env)
        client = await EslClient.connect(self.t.freeswitch_esl_host, self.t.freeswitch_esl_port, password)
        try:
            for command in commands:
                await client.api(command.format(uuid=uuid_))
        finally:
            await client.close()

    async def send(self, codec, handoff: Handoff) -> None:
        commands = []
        if self.t.send_summary and self.t.freeswitch_summary_variable:
            commands.append(f"uuid_setvar {{uuid}} {self.t.freeswitch_summary_variable} {short_summary(handoff).replace('{', '(').replace('}', ')')}")
        commands.append(f"uuid_transfer {{uuid}} {self.t.freeswitch_dest}")
        await self._session(codec, commands)

    async def end(self, codec) -> None:
        """The call ends without a handoff: hang the parked channel up (best effort, logged)."""
        if not self.configured():
            return
        try:
            async with asyncio.timeout(self.t.timeout_s):
                await self._session(codec, ["uuid_kill {uuid}"])
        except (TransferError, TimeoutError) as e:
            log.warning("call %s: uuid_kill failed: %s", getattr(codec, "call_id", None), e or "timed out")


def for_carrier(carrier: str, settings) -> Transfer | None:
    """The transfer of ``carrier`` (None where it has none)."""
    cls = {
        "twilio": TwilioTransfer, "asterisk": AsteriskTransfer, "audiosocket": AudioSocketTransfer,
        "freeswitch": FreeSwitchTransfer, "telnyx": TelnyxTransfer,
    }.get(carrier)
    return cls(settings) if cls is not None else None
