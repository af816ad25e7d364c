"""Logging: text or JSON lines. Messages carry ids and timings, never transcripts, audio or secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

SESSION_ID: ContextVar[str | None] = ContextVar("dauys_session_id", default=None)
"""The session a log line belongs to: set when a Session is created, inherited by the tasks it spawns."""

_SECRETS = (
    (re.compile(r"((?:[?&]|\b)(?:token|api_key|apikey|key|access_token)=)[^&\s\"'#]+", re.I), r"\1[REDACTED]"),
    (re.compile(r"(\bBearer\s+)[^\s\"',;]+", re.I), r"\1[REDACTED]"),
    (re.compile(r"(\bAuthorization:[ \t]*)(?![ \t]|Bearer\b)[^\r\n\"']+", re.I), r"\1[REDACTED]"),
    (re.compile(r"(\bX-Twilio-Signature:[ \t]*)[^\s\"',;]+", re.I), r"\1[REDACTED]"),
)


def redact_secrets(text: str) -> str:
    """``?token=`` values, bearer keys, Authorization and X-Twilio-Signature headers replaced by ``[REDACTED]``."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class SecretFilter(logging.Filter):
    """No API key reaches a log line, whoever logs the URL or the header (defence in depth)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_secrets(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_secrets(logging.Formatter().formatException(record.exc_info))
        return True


class SessionFilter(logging.Filter):
    """Adds ``record.session`` (the current session id, or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session", None) is None:
            record.session = SESSION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        session = getattr(record, "session", None)
        if session is not None:
            out["session"] = session
        if record.exc_info or record.exc_text:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    from pipeline.privacy import RedactingFilter

    handler.addFilter(SessionFilter())
    handler.addFilter(SecretFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "faster_whisper", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
