"""Machine-readable AI marking for files: provenance in a WAV LIST/INFO chunk.

Law No. 230-VIII Art. 21: synthetic results carry a machine-readable mark.
On the wire every `reply`/`audio_start` carries ``ai_generated`` and
``provenance``; files Dauys writes (``dauys say``, ``dauys call --out``) carry
the same JSON in the INFO ``ICMT`` field, with ``ISFT`` naming the system and
``IKEY`` = ``ai-generated`` -- fields any WAV tool shows.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime, timezone
from pathlib import Path

from models import __version__

DEFAULT_CLASSIFICATION = {"risk_class": "minimum", "autonomy": "low"}
"""The Art. 17 record of the default settings (``compliance.risk_class`` / ``compliance.autonomy``)."""


def provenance(models: dict, compliance: dict | None = None, **extra) -> dict:
    """The provenance object; ``compliance`` is the Art. 17 record (``compliance.classification()``
    of the settings; default: the default settings' risk class and autonomy)."""
    if compliance is None:
        compliance = dict(DEFAULT_CLASSIFICATION)
    return {
        "ai_generated": True,
        "system": f"dauys/{__version__}",
        "models": models,
        "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "compliance": compliance,
        **extra,
    }


def _sub(key: bytes, text: str) -> bytes:
    data = text.encode("utf-8") + b"\x00"
    if len(data) % 2:
        data += b"\x00"
    return key + struct.pack("<I", len(data)) + data


def info_chunk(prov: dict) -> bytes:
    """A RIFF ``LIST``/``INFO`` chunk carrying the provenance."""
    body = b"INFO" + _sub(b"ISFT", prov.get("system", "dauys")) + _sub(b"IKEY", "ai-generated") + _sub(b"ICMT", json.dumps(prov, ensure_ascii=False))
    return b"LIST" + struct.pack("<I", len(body)) + body


def read_info(path: str | Path) -> dict[str, str]:
    """The INFO fields of a WAV file (empty if none)."""
    data = Path(path).read_bytes()
    out: dict[str, str] = {}
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return out
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"LIST" and body[:4] == b"INFO":
            p = 4
            while p + 8 <= len(body):
                sid, ssize = body[p : p + 4].decode("ascii", "replace"), struct.unpack("<I", body[p + 4 : p + 8])[0]
                out[sid] = body[p + 8 : p + 8 + ssize].rstrip(b"\x00").decode("utf-8", "replace")
                p += 8 + ssize + (ssize % 2)
        pos += 8 + size + (size % 2)
    return out


def read_provenance(path: str | Path) -> dict | None:
    cmt = read_info(path).get("ICMT")
    try:
        return json.loads(cmt) if cmt else None
    except ValueError:
        return None
