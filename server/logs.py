"""Logging: text or JSON lines. Messages carry ids and timings, never transcripts, audio or secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from pipeline.context import SESSION_ID

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


class _Handler(logging.StreamHandler):
    """A stream handler whose write errors (a full disk: ENOSPC, a closed pipe) are counted
    (``dauys_log_errors_total``) and dropped: logging never breaks a call, and a full disk does
    not get a traceback per line written to it."""

    def handleError(self, record: logging.LogRecord) -> None:
        from pipeline import metrics

        metrics.LOG_ERRORS.inc()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = _Handler(sys.stderr)
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


def forget_call(paths: list, call_id: str, dry_run: bool = False) -> tuple[int, set[str]]:
    """Delete a caller's log lines (a data subject's erasure request) from JSON-lines log files.

    ``call_id`` is what the logs name a call by: a Twilio ``callSid``, an AudioSocket
    call UUID, or a Dauys session id. Every line of a session that mentions it, in any
    of ``paths`` (rotated files included), goes: the session's own lines carry its id
    in ``session``. Non-JSON lines are dropped only if they contain ``call_id``. Files
    are rewritten atomically with their permissions kept. Returns (lines removed, sessions).
    """
    import os
    import tempfile
    from pathlib import Path

    call_id = call_id.strip()
    if len(call_id) < 6:
        raise ValueError("a call id is at least 6 characters (a Twilio callSid, an AudioSocket UUID or a session id)")
    files = [Path(p) for p in paths]
    parsed: dict = {}
    sessions: set[str] = set()
    for f in files:
        rows = []
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            obj = obj if isinstance(obj, dict) else None
            rows.append((line, obj))
            if obj is not None and (obj.get("session") == call_id or call_id in str(obj.get("msg", ""))):
                if obj.get("session"):
                    sessions.add(str(obj["session"]))
        parsed[f] = rows
    removed = 0
    for f, rows in parsed.items():
        keep = [line for line, obj in rows if not (call_id in line or (obj is not None and obj.get("session") in sessions))]
        gone = len(rows) - len(keep)
        removed += gone
        if gone and not dry_run:
            fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f".{f.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.writelines(keep)
                os.chmod(tmp, f.stat().st_mode & 0o7777)
                os.replace(tmp, f)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return removed, sessions
