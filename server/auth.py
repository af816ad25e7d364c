"""Who may open /v1/voice and /v1/twilio: the browser origin, API keys (constant time), else loopback only;
who may see internals (/metrics, /readyz details); throttling of failed authentications; sessions per key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

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
    bearer = bearer_key(headers)
    if bearer is not None:
        return bearer
    basic = basic_password(headers)
    if basic is not None:  # platforms that can send only HTTP basic auth (Asterisk's websocket_client.conf)
        return basic
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


def client_address(remote, headers) -> str:
    """The client's IP address: the peer's, or, when the peer is a reverse proxy on this
    machine (loopback) that sends ``X-Forwarded-For``, the address that proxy saw (the
    header's last entry: the one the proxy appended; earlier ones are the client's word)."""
    host = str(remote[0] if isinstance(remote, (tuple, list)) else remote or "").split("%")[0]
    forwarded = headers.get("X-Forwarded-For", "") if is_loopback(host) else ""
    if forwarded.strip():
        last = forwarded.split(",")[-1].strip()
        if last.startswith("[") and "]" in last:  # [v6]:port
            last = last[1 : last.index("]")]
        elif last.count(":") == 1:  # v4:port
            last = last.partition(":")[0]
        return last or "unknown"
    return host or "unknown"


def bearer_key(headers) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def basic_password(headers) -> str | None:
    """The password of ``Authorization: Basic`` (any user name): an API key from a platform that can send
    only basic auth, e.g. Asterisk's ``websocket_client.conf`` ``username``/``password``."""
    auth = headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return password if sep else None


def trusted(remote, headers, s) -> bool:
    """May this request see internals (/metrics, the detail of /readyz)?

    Loopback clients may (not a proxy's relayed callers: ``X-Forwarded-For`` names someone
    else), and so may requests with a valid ``Authorization: Bearer`` key (``s``: the server
    settings). A key in the URL (``?token=``) does not count here.
    """
    if is_loopback(client_address(remote, headers)):
        return True
    key = bearer_key(headers)
    return key is not None and bool(s.api_keys or s.api_key_hashes) and key_ok(key, s.api_keys, s.api_key_hashes)


def ip_allowed(host, networks: list[str]) -> bool:
    """Is the address ``host`` (an IPv4-mapped IPv6 address counts as IPv4) in one of ``networks``?"""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


MAX_TRACKED_CLIENTS = 10_000
"""Client addresses the failed-authentication throttle remembers (least recently failed forgotten first)."""


def _client_bucket(ip: str) -> str:
    """IPv6 clients are counted by /64 (one host usually holds a whole /64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(addr.ipv4_mapped or ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class FailThrottle:
    """Failed authentications per client address in fixed windows: after ``limit`` failures
    within ``window_s`` of the first, the address is refused (right key or not) until that
    window ends. Memory is bounded: at most ``max_clients`` addresses are remembered."""

    def __init__(self, limit: int, window_s: float, max_clients: int = MAX_TRACKED_CLIENTS, clock=time.monotonic) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._fails: OrderedDict[str, tuple[float, int]] = OrderedDict()  # bucket -> (window start, failures)

    def retry_after(self, ip: str) -> int | None:
        """Seconds until ``ip`` may try again, or None if it may now."""
        if self.limit <= 0:
            return None
        bucket = _client_bucket(ip)
        entry = self._fails.get(bucket)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window_s - self.clock()
        if left <= 0:
            del self._fails[bucket]
            return None
        return max(1, math.ceil(left)) if count >= self.limit else None

    def failed(self, ip: str) -> None:
        if self.limit <= 0:
            return
        bucket, now = _client_bucket(ip), self.clock()
        start, count = self._fails.pop(bucket, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._fails[bucket] = (start, count + 1)  # most recent last
        while len(self._fails) > self.max_clients:
            self._fails.popitem(last=False)

    def __len__(self) -> int:
        return len(self._fails)
