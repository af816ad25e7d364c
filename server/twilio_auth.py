"""Who may open /v1/twilio: Twilio's request validation (``X-Twilio-Signature``) and the stream secret.

Twilio sends no ``Authorization`` header and its ``<Stream url>`` takes no
query string, so API keys cannot authenticate it. Instead Twilio signs every
request with the account's Auth Token: ``base64(HMAC-SHA1(auth_token, URL +
the POST parameters sorted by name, each name followed by its value))``. The
WebSocket upgrade is a GET, so the signed string is the full URL Twilio
requested (``wss://host/path``). Behind a TLS proxy the server sees another
URL: ``twilio.public_url`` names the one Twilio uses; otherwise it is
rebuilt as ``wss://`` + the ``Host`` header + the request path. Like
Twilio's own validators, the URL is tried with and without its scheme's
default port. The token and signatures never reach a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from server import auth

log = logging.getLogger("dauys.twilio")

SIGNATURE_HEADER = "X-Twilio-Signature"
SECRET_PARAMETER = "secret"
"""The ``<Parameter name=...>`` of ``<Stream>`` carrying ``twilio.stream_secret``."""
REFUSED = (403, "missing or wrong X-Twilio-Signature")


def compute_signature(auth_token: str, url: str, params: Mapping[str, str | Iterable[str]] | None = None) -> str:
    """Twilio's signature of a request to ``url`` with POST ``params`` (none for a WebSocket upgrade).

    Parameters are sorted by name; a repeated parameter contributes each
    distinct value, sorted (as Twilio's helper libraries do).
    """
    data = url
    for name in sorted(params or {}):
        value = params[name]
        values = [value] if isinstance(value, str) else sorted(set(value))
        data += "".join(name + v for v in values)
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its scheme's default port added (none given) or removed."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:  # a bad port
        return [url]
    default = auth.DEFAULT_PORTS.get(u.scheme)
    if default is None or not u.hostname:
        return [url]
    if port is None:
        return [url, urlunsplit(u._replace(netloc=f"{u.netloc}:{default}"))]
    if port == default:
        return [url, urlunsplit(u._replace(netloc=u.netloc.rsplit(":", 1)[0]))]
    return [url]


def signature_ok(auth_token: str, signature: str | None, url: str, params: Mapping | None = None) -> bool:
    """Does ``signature`` sign ``url`` (with or without the default port)? Compared in constant time, every variant."""
    presented = (signature or "").strip().encode("utf-8", "replace")
    ok = False
    for variant in url_variants(url):
        ok |= hmac.compare_digest(presented, compute_signature(auth_token, variant, params).encode())
    return ok


def signed_url(path: str, host: str | None, public_url: str) -> str | None:
    """The URL Twilio requested: ``public_url`` + the request path, else ``wss://`` + Host + path (None without a Host)."""
    if public_url:
        return public_url.rstrip("/") + path
    host = (host or "").strip()
    return f"wss://{host}{path}" if host else None


def _one_header(headers, name: str) -> str | None:
    """The header's value if it was sent exactly once, else None."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


def check(request, remote, settings) -> tuple[int, str] | None:
    """None if this upgrade of /v1/twilio may go on, else (HTTP status, reason).

    With ``twilio.auth_token`` set, a valid ``X-Twilio-Signature`` is required
    (and enough: Twilio cannot present an API key); without one, the rules of
    /v1/voice apply (:func:`server.auth.check`).
    """
    token = settings.twilio.auth_token.get_secret_value()
    if not token:
        s = settings.server
        return auth.check(request.path, request.headers, remote, s.api_keys, s.allow_unauthenticated_remote, s.api_key_hashes, s.allowed_origins)
    url = signed_url(request.path, _one_header(request.headers, "Host"), settings.twilio.public_url)
    signature = _one_header(request.headers, SIGNATURE_HEADER)
    if url is None:
        why = "no (or more than one) Host header"
    elif signature is None:
        why = f"no (or more than one) {SIGNATURE_HEADER}"
    elif signature_ok(token, signature, url):
        return None
    else:
        why = f"{SIGNATURE_HEADER} does not sign {_loggable(url)} (is twilio.public_url the URL Twilio connects to?)"
    log.warning("refused a /v1/twilio upgrade from %s: %s", remote[0] if remote else "-", why)
    return REFUSED


def _loggable(url: str) -> str:
    """``url`` for a log line: query values redacted."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}{auth.redact_path(urlunsplit(('', '', u.path, u.query, '')))}"


def stream_secret_ok(custom_parameters, stream_secret: str) -> bool:
    """Does the ``start`` message's ``customParameters.secret`` equal ``twilio.stream_secret``? (constant time)"""
    if not stream_secret:
        return True
    presented = custom_parameters.get(SECRET_PARAMETER) if isinstance(custom_parameters, dict) else None
    if not isinstance(presented, str):
        return False
    mine = hashlib.sha256(stream_secret.encode()).digest()
    return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "replace")).digest(), mine)


def bind_warnings(settings) -> list[str]:
    """Start-up warnings about how /v1/twilio is protected (nothing secret in them)."""
    s, t = settings.server, settings.twilio
    if t.auth_token.get_secret_value():
        return []
    if s.api_keys or s.api_key_hashes:
        return [
            "API keys are configured but twilio.auth_token is not: Twilio cannot present an API key, so /v1/twilio "
            "answers Twilio 401; if Twilio calls this server, set twilio.auth_token (DAUYS_TWILIO__AUTH_TOKEN)"
        ]
    if s.allow_unauthenticated_remote and not (auth.is_loopback(s.host) or s.host == "localhost"):
        return [
            "twilio.auth_token is not set: /v1/twilio accepts calls from anyone who can reach it; "
            "set twilio.auth_token (DAUYS_TWILIO__AUTH_TOKEN) so only Twilio's signed requests are served"
        ]
    return []
