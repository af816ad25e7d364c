"""Is a host this machine? The one answer for every check that keeps caller data on the machine."""

from __future__ import annotations

import ipaddress


def is_local_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1; brackets and a zone allowed).
    A name that merely starts with "127." is not local."""
    h = (host or "").strip().lower().strip("[]").split("%")[0]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False
