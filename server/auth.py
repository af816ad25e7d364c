"""Who may open /v1/voice: API keys (constant-time), else loopback only."""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs, urlsplit


def is_loopback(remote) -> bool:
    host = remote[0] if isinstance(remote, (tuple, list)) else remote
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def presented_key(path: str, headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    token = parse_qs(urlsplit(path).query).get("token")
    return token[0] if token else None


def key_ok(presented: str | None, keys: list[str]) -> bool:
    if presented is None:
        return False
    ok = False
    for k in keys:  # compare against every key: time does not depend on which matched
        ok |= hmac.compare_digest(presented.encode(), k.encode())
    return ok


def check(path: str, headers, remote, keys: list[str], allow_remote: bool) -> tuple[int, str] | None:
    """None if allowed, else (HTTP status, reason)."""
    if keys:
        return None if key_ok(presented_key(path, headers), keys) else (401, "missing or wrong API key")
    if is_loopback(remote) or allow_remote:
        return None
    return (403, "no API keys are configured, so only loopback clients are served")
