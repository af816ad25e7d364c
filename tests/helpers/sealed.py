"""What "encrypted at rest" means for a capture file, checked on the file itself.

A Fernet token is url-safe base64 text, so a plaintext marker such as ``fLaC`` can turn up
in it by chance (it did once in a 20-call capture: a flaky test). The check is therefore on
the token: the whole file is one Fernet token (version byte 0x80) that the operator's key
opens, and a stranger's key does not; what it opens to is FLAC audio or JSON."""
from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken


def assert_sealed(data: bytes, fernet: Fernet, path: str = "") -> bytes:
    """Assert ``data`` is a capture file sealed with ``fernet``; return its plaintext."""
    try:
        raw = base64.urlsafe_b64decode(data)
    except (binascii.Error, ValueError):
        raise AssertionError(f"{path}: not a Fernet token (not base64)") from None
    assert raw[:1] == b"\x80", f"{path}: not a Fernet token (version byte {raw[:1]!r})"
    try:
        Fernet(Fernet.generate_key()).decrypt(data)
    except InvalidToken:
        pass
    else:  # pragma: no cover - would mean the file is not encrypted with a secret key
        raise AssertionError(f"{path}: opened with a stranger's key")
    plain = fernet.decrypt(data)
    assert plain.startswith((b"fLaC", b"{")), f"{path}: plaintext is neither FLAC nor JSON"
    return plain
