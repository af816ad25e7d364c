"""Plain HTTP on the WebSocket port: health, readiness, metrics and the web demo."""

from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.datastructures import Headers
from websockets.http11 import Response

from pipeline.metrics import REGISTRY

WEB_DIR = Path(__file__).parent / "web"


def response(status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status.value, status.phrase, headers, body)


def text(status: HTTPStatus, body: str) -> Response:
    return response(status, body.encode(), "text/plain; charset=utf-8")


def too_many(retry_after_s: int, body: str) -> Response:
    """HTTP 429 with ``Retry-After`` (seconds)."""
    return response(HTTPStatus.TOO_MANY_REQUESTS, body.encode(), "text/plain; charset=utf-8", {"Retry-After": str(max(1, int(retry_after_s)))})


def as_json(status: HTTPStatus, obj) -> Response:
    return response(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json")


def static(path: str) -> Response | None:
    """Serve a file of the demo (``/`` is index.html); None if there is no such file."""
    name = {"/": "index.html", "/index.html": "index.html", "/review": "review.html"}.get(path) or path.removeprefix("/web/")
    if "/" in name or name.startswith(".") or not name:
        return None
    file = WEB_DIR / name
    if not file.is_file():
        return None
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return response(HTTPStatus.OK, file.read_bytes(), ctype, {"Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'"})


def metrics() -> Response:
    return response(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
