"""The OpenAI-compatible backend (vLLM, llama.cpp server, TGI, ...): ``/chat/completions`` streamed over SSE, and where caller text may go."""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from models.dialogue.base import Retriever
from models.dialogue.llm.grounding import DialogueError, GenerationInfo, GroundedEngine, LlmConfig, _one_line
from models.errors import ModelError
from models.net import is_local_host

log = logging.getLogger("dauys.dialogue")


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Is ``host`` one of ``allowed``: an exact name, ``*.suffix``, an IP or a CIDR network?"""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        ip = None
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("*.") and ip is None:
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif "/" in entry and ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif host == entry:
            return True
    return False


def check_destination(base_url: str, allowed_hosts: Sequence[str] = (), allow_external: bool = False) -> str:
    """Where caller text would go: "local" (this machine), "allowed" (https to a host of
    ``dialogue.allowed_hosts``) or "external" (only with ``allow_external``); else ModelError.

    Law 230-VIII and the personal-data law: caller text stays on the machine unless the
    operator configured where it may go.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ModelError(f"dialogue.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
    if is_local_host(host):
        return "local"
    if allow_external:
        return "external"
    if parts.scheme != "https":
        raise ModelError(
            f"dialogue.base_url {parts.scheme}://{host}/...: caller text would cross the network unencrypted; "
            "use https (or set dialogue.allow_external = true)"
        )
    if not host_allowed(host, allowed_hosts):
        raise ModelError(
            f"dialogue.base_url host {host!r} is not in dialogue.allowed_hosts: caller text may only leave this machine "
            "for hosts you list there (or set dialogue.allow_external = true)"
        )
    return "allowed"


class OpenAIEngine(GroundedEngine):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, streamed (``stream: true``) over SSE.

    ``base_url`` includes the API prefix, e.g. ``http://127.0.0.1:8000/v1``.
    The key comes from ``api_key`` or the environment variable ``api_key_env``.
    """

    name = "openai"
    MAX_ERROR_BODY = 8192
    MAX_LINE = 1 << 20

    def __init__(
        self,
        base_url: str,
        model: str,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "DAUYS_LLM_API_KEY",
        extra_body: Mapping | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(retriever, config)
        self.redact = redact
        """Applied to every message's text before it is sent (models.privacy.redact from load_dialogue)."""
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"dialogue.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
        if not model:
            raise ModelError("the openai dialogue backend needs dialogue.model (the served model name)")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = (parts.path or "") + "/chat/completions"
        self.model = model
        self.model_id = model
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None) or None
        self.extra_body = dict(extra_body or {})

    def request_body(self, messages: list[dict]) -> dict:
        cfg = self.config
        if self.redact is not None:
            messages = [{**m, "content": self.redact(m["content"])} if isinstance(m.get("content"), str) else m for m in messages]
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
        }
        if cfg.top_p < 1:
            body["top_p"] = cfg.top_p
        body.update(self.extra_body)
        return body

    def _fail(self, what: str) -> DialogueError:
        return DialogueError(f"openai backend at {self.base_url}: {_one_line(what)}")

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        payload = json.dumps(self.request_body(messages), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Content-Length": str(len(payload)),
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=cfg.timeout_s, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=cfg.timeout_s)
        produced = False
        try:
            try:
                conn.request("POST", self._path, body=payload, headers=headers)
                sock = conn.sock  # kept: getresponse() drops conn.sock when the server will close
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                resp = conn.getresponse()
            except socket.timeout:
                raise self._fail(f"no response within {cfg.timeout_s:g} s") from None
            except ConnectionRefusedError:
                raise self._fail("connection refused (is the server running?)") from None
            except (OSError, http.client.HTTPException) as e:
                raise self._fail(f"request failed: {type(e).__name__}: {e}") from None
            if resp.status >= 400:
                raise self._fail(f"HTTP {resp.status}: {self._error_message(resp, sock, deadline)}")
            ctype = resp.getheader("Content-Type", "")
            if "json" in ctype and "event-stream" not in ctype:  # a server that ignored stream: true
                raise self._fail(f"expected a text/event-stream answer, got {ctype}")
            for event in self._events(resp, sock, deadline):
                if event is None:  # the deadline passed
                    self._timed_out(info, produced)
                    return
                if event.strip() == "[DONE]":
                    break
                try:
                    chunk = json.loads(event)
                except json.JSONDecodeError:
                    raise self._fail(f"malformed stream chunk: {event[:80]!r}") from None
                if not isinstance(chunk, dict):
                    raise self._fail(f"malformed stream chunk: {event[:80]!r}")
                if chunk.get("error"):
                    err = chunk["error"]
                    raise self._fail(f"error in stream: {err.get('message', err) if isinstance(err, dict) else err}")
                choices = chunk.get("choices")
                if not isinstance(choices, list):
                    raise self._fail(f"malformed stream chunk (no choices): {event[:80]!r}")
                if not choices:  # e.g. a usage-only chunk
                    continue
                choice = choices[0] if isinstance(choices[0], dict) else {}
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if text:
                    info.tokens += 1
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield text
                if choice.get("finish_reason"):
                    info.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
            else:
                if not info.finish_reason and not produced:
                    raise self._fail("the stream ended before any answer")
            info.finish_reason = info.finish_reason or "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            conn.close()
            info.total_s = time.monotonic() - t0

    def _read(self, resp, sock, deadline: float, n: int) -> bytes | None:
        """Up to n bytes as soon as any arrive; None when the deadline passes first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            sock.settimeout(remaining)
        except OSError:
            pass
        try:
            return resp.read1(n)
        except socket.timeout:
            return None
        except (OSError, http.client.HTTPException) as e:
            raise self._fail(f"stream broken: {type(e).__name__}: {e}") from None

    def _events(self, resp, sock, deadline: float) -> Iterator[str | None]:
        """SSE ``data`` payloads (multi-line data joined), in order; None once the deadline passes."""
        buf = b""
        data: list[str] = []
        while True:
            chunk = self._read(resp, sock, deadline, 65536)
            if chunk is None:
                yield None
                return
            eof = not chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if eof and buf:
                lines.append(buf)
                buf = b""
            if len(buf) > self.MAX_LINE:
                raise self._fail("stream line too long")
            for raw in lines:
                line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
                if not line:
                    if data:
                        yield "\n".join(data)
                        data = []
                    continue
                if line.startswith(":"):
                    continue  # comment / keep-alive
                fieldname, _, value = line.partition(":")
                if fieldname == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
            if eof:
                if data:
                    yield "\n".join(data)
                return

    def _error_message(self, resp, sock, deadline: float) -> str:
        body = b""
        while len(body) < self.MAX_ERROR_BODY:
            chunk = self._read(resp, sock, min(deadline, time.monotonic() + 2.0), self.MAX_ERROR_BODY - len(body))
            if not chunk:
                break
            body += chunk
        text = body.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return _one_line(text) or resp.reason
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            if isinstance(err, dict):
                return _one_line(err.get("message") or err.get("detail") or json.dumps(err, ensure_ascii=False))
            if isinstance(err, str):
                return _one_line(obj.get("message") or err)
            if obj.get("detail"):
                return _one_line(obj["detail"])
        return _one_line(text)
