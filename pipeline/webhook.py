"""The handoff record reaches the human: a signed POST to ``compliance.handoff_webhook``.

On every handoff (a spoken request, DTMF 0, the misunderstanding policy, a
failing backend; any transport) the server POSTs one JSON object:

    {"event": "handoff", "id": "<uuid, the same on every try>",
     "session_id": "...", "carrier_call_id": "CA... | AudioSocket UUID | null",
     "transport": "native | twilio | audiosocket | asterisk_ws | freeswitch | telnyx | vonage", "language": "kk",
     "reason": "user_request", "summary": "<redacted>", "timestamp": "2026-...Z"}

signed with HMAC-SHA256 over the raw body bytes with
``compliance.handoff_webhook_secret``: header ``X-Dauys-Signature:
sha256=<hex>``, and ``X-Dauys-Timestamp: <unix seconds>`` (the body's
``timestamp`` is signed; receivers reject old ones).  Sent from a worker
thread (urllib), tried ``handoff_webhook_tries`` times (network errors, 429
and 5xx; backoff ``handoff_webhook_backoff_s``, doubled), never delaying or
breaking the call.  Failures are logged without the body or the URL's path
and query, and counted in ``dauys_handoff_webhook_total``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from models.net import is_local_host
from pipeline import metrics

log = logging.getLogger("dauys.webhook")

_pending: set[asyncio.Task] = set()
"""Deliveries in flight (they outlive the call that started them)."""


def sign(secret: str, body: bytes) -> str:
    """The ``X-Dauys-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def handoff_record(session, reason: str, language: str, summary: str) -> dict:
    return {
        "event": "handoff",
        "id": str(uuid.uuid4()),
        "session_id": session.id,
        "carrier_call_id": getattr(session, "carrier_call_id", None),
        "transport": getattr(session, "transport", "native"),
        "language": language,
        "reason": reason,
        "summary": summary,  # already redacted (Responder.summary)
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def notify_handoff(settings, session, reason: str, language: str, summary: str) -> asyncio.Task | None:
    """Start delivering the handoff record (if a webhook is configured); returns at once."""
    c = settings.compliance
    if not c.handoff_webhook:
        return None
    body = json.dumps(handoff_record(session, reason, language, summary), ensure_ascii=False).encode("utf-8")
    task = asyncio.ensure_future(deliver(c, body, session.id))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return task


def _post(url: str, body: bytes, headers: dict, timeout: float) -> int:
    handlers = [urllib.request.ProxyHandler({})] if is_local_host(urlsplit(url).hostname) else []  # no proxy to this machine
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(req, timeout=timeout) as r:
            r.read(65536)
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def deliver(c, body: bytes, session_id: str) -> bool:
    """POST ``body`` with up to ``c.handoff_webhook_tries`` tries; True once a 2xx came back."""
    secret = c.handoff_webhook_secret.get_secret_value()
    host = urlsplit(c.handoff_webhook).hostname
    for attempt in range(1, c.handoff_webhook_tries + 1):
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "dauys-handoff-webhook",
            "X-Dauys-Timestamp": str(int(time.time())),
            "X-Dauys-Signature": sign(secret, body),
        }
        try:
            status = await asyncio.to_thread(_post, c.handoff_webhook, body, headers, c.handoff_webhook_timeout_s)
            problem = None if 200 <= status < 300 else f"HTTP {status}"
            retry = status == 429 or status >= 500
        except Exception as e:  # network errors, timeouts, TLS: the reason only, never the body
            problem, retry = type(e).__name__, True
        if problem is None:
            metrics.HANDOFF_WEBHOOK.labels("delivered").inc()
            log.info("session %s: handoff record delivered to %s (try %d)", session_id, host, attempt)
            return True
        if not retry or attempt == c.handoff_webhook_tries:
            metrics.HANDOFF_WEBHOOK.labels("failed").inc()
            log.error("session %s: handoff record not delivered to %s after %d tries: %s", session_id, host, attempt, problem)
            return False
        metrics.HANDOFF_WEBHOOK.labels("retried").inc()
        log.warning("session %s: handoff webhook try %d failed (%s); retrying", session_id, attempt, problem)
        await asyncio.sleep(c.handoff_webhook_backoff_s * 2 ** (attempt - 1))
    return False


async def drain(timeout: float) -> None:
    """Wait (up to ``timeout``) for deliveries in flight, e.g. at shutdown."""
    if _pending:
        await asyncio.wait(list(_pending), timeout=timeout)
