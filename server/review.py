"""The review page's back end: a WebSocket at /v1/review for operators (capture.operator_key_hashes).

The page itself (``/review``, server/web/review.html) is static and holds no data; it opens
``/v1/review?token=KEY`` (browsers cannot set headers on a WebSocket; the access log never
shows query values). JSON messages, one answer each::

    {"type": "list"}                                   -> {"type": "utterances", "items": [...]} lowest confidence first
    {"type": "audio", "call": C, "utterance": U}       -> {"type": "audio", "call": C, "utterance": U} then one binary WAV frame
    {"type": "save", "call": C, "utterance": U,
     "status": "confirmed|corrected|not_speech|opt_out|pending", "text": "..."} -> {"type": "saved", "item": {...}}

Errors: {"type": "error", "code": "bad_request" | "not_found", "message": ...}. Store calls
(decryption, FLAC decoding, writing) run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus

from websockets.exceptions import ConnectionClosed

from pipeline.capture import CaptureStore, safe_id, wav_from_flac
from server import auth

log = logging.getLogger("dauys.review")

REVIEW_WS_PATH = "/v1/review"
LIST_LIMIT = 1000


def check(request, settings, capture) -> tuple[int, str] | None:
    """None if this upgrade to /v1/review may go on, else (HTTP status, reason)."""
    hashes = settings.capture.operator_key_hashes
    if capture is None or not hashes:
        return (HTTPStatus.FORBIDDEN, "review is closed: it needs capture.enabled and capture.operator_key_hashes")
    if not auth.origin_ok(request.headers, list(settings.server.allowed_origins)):
        return (HTTPStatus.FORBIDDEN, "origin not allowed (server.allowed_origins)")
    if not auth.key_ok(auth.presented_key(request.path, request.headers), [], hashes):
        return (HTTPStatus.UNAUTHORIZED, "missing or wrong operator key")
    return None


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


async def _answer(store: CaptureStore, msg: dict) -> list[str | bytes]:
    kind = msg.get("type")
    if kind == "list":
        items = await asyncio.to_thread(store.for_review, LIST_LIMIT)
        return [json.dumps({"type": "utterances", "items": [u.to_dict() for u in items]}, ensure_ascii=False)]
    call, utt = msg.get("call"), msg.get("utterance")
    if not isinstance(call, str) or not isinstance(utt, str) or not safe_id(call) or not safe_id(utt):
        return [_error("bad_request", "call and utterance ids are needed")]
    if kind == "audio":
        try:
            wav = await asyncio.to_thread(lambda: wav_from_flac(store.audio(call, utt)))
        except FileNotFoundError:
            return [_error("not_found", "no such utterance")]
        except Exception as e:  # noqa: BLE001 - a corrupted file
            return [_error("corrupted", f"the audio cannot be read: {type(e).__name__}")]
        return [json.dumps({"type": "audio", "call": call, "utterance": utt}), wav]
    if kind == "save":
        status, text = msg.get("status"), msg.get("text")
        if text is not None and not isinstance(text, str):
            return [_error("bad_request", "text must be a string")]
        try:
            item = await asyncio.to_thread(store.review, call, utt, status, text)
        except FileNotFoundError:
            return [_error("not_found", "no such utterance")]
        except ValueError as e:
            return [_error("bad_request", str(e))]
        log.info("review: %s/%s marked %s", call, utt, status)
        return [json.dumps({"type": "saved", "item": item.to_dict()}, ensure_ascii=False)]
    return [_error("bad_request", "type must be list, audio or save")]


async def handle(ws, store: CaptureStore, max_frame_bytes: int) -> None:
    try:
        async for raw in ws:
            if isinstance(raw, bytes) or len(raw) > max_frame_bytes:
                await ws.send(_error("bad_request", "send JSON text messages"))
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                await ws.send(_error("bad_request", "send JSON objects"))
                continue
            for out in await _answer(store, msg):
                await ws.send(out)
    except ConnectionClosed:
        pass
