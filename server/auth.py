"""Who may open /v1/voice and /v1/twilio: the browser origin, API keys (constant time), else loopback only."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import parse_qsl, parse_qs, urlencode, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def is_loopback(remote) -> bool:
    host = remote[0] if isinstance(remote, (tuple, list)) else remote
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def hash_key(key: str) -> str:
    """The ``server.api_key_hashes`` entry for ``key``: ``sha256:<hex>`` of the stripped key."""
    return "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()


def presented_key(path: str, headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    token = parse_qs(urlsplit(path).query).get("token")
    return token[0] if token else None


def _digests(keys: list[str], hashes: list[str]) -> list[bytes]:
    return [hashlib.sha256(k.strip().encode()).digest() for k in keys] + [bytes.fromhex(h.partition(":")[2]) for h in hashes]


def key_ok(presented: str | None, keys: list[str], hashes: list[str] = ()) -> bool:
    """Is ``presented`` one of ``keys`` or does its sha256 match one of ``hashes``?

    Every configured key is compared, always, as a 32-byte digest with
    :func:`hmac.compare_digest`: the time taken depends neither on which key
    matched, nor on how much of a key was right, nor on the keys' lengths.
    """
    digests = _digests(keys, list(hashes))
    mine = hashlib.sha256((presented or "").strip().encode()).digest()
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(mine, d)
    return ok and presented is not None


def _origin_key(scheme: str, host: str, port: int | None) -> str:
    port = port if port is not None else DEFAULT_PORTS.get(scheme)
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def origin_ok(headers, allowed: list[str]) -> bool:
    """Cross-site WebSocket hijacking guard.

    No ``Origin`` header (telephony platforms, `dauys call`, server-side
    clients): allowed. A browser's ``Origin`` is allowed when it is the
    server's own (its host and port equal the ``Host`` the browser connected
    to: the web demo, or a page behind the same reverse proxy), when it is in
    ``allowed`` (``server.allowed_origins``), or when ``allowed`` holds ``*``.
    """
    origin = headers.get("Origin")
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    try:
        o = urlsplit(origin)
        if o.scheme not in ("http", "https") or not o.hostname:
            return False  # "null" (sandboxed frames, file://) and junk
        mine = _origin_key(o.scheme, o.hostname, o.port)
        host = headers.get("Host", "")
        h = urlsplit("//" + host.strip())
        theirs = _origin_key(o.scheme, h.hostname or "", h.port)
    except ValueError:  # a bad port in either
        return False
    return bool(host) and mine == theirs


def check(path: str, headers, remote, keys: list[str], allow_remote: bool, key_hashes: list[str] = (), allowed_origins: list[str] = ()) -> tuple[int, str] | None:
    """None if allowed, else (HTTP status, reason)."""
    if not origin_ok(headers, list(allowed_origins)):
        return (403, "origin not allowed (server.allowed_origins)")
    if keys or key_hashes:
        return None if key_ok(presented_key(path, headers), keys, key_hashes) else (401, "missing or wrong API key")
    if is_loopback(remote) or allow_remote:
        return None
    return (403, "no API keys are configured, so only loopback clients are served")


def redact_path(path: str) -> str:
    """A request path fit for a log line: every query value replaced (``?token=`` carries a key)."""
    u = urlsplit(path)
    if not u.query:
        return u.path
    pairs = parse_qsl(u.query, keep_blank_values=True)
    return u.path + "?" + (urlencode([(k, "[REDACTED]") for k, _ in pairs], safe="[]") if pairs else "[REDACTED]")
