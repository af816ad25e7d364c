"""Per-call context carried by asyncio tasks: the session id log lines belong to.

The pipeline sets it when a :class:`pipeline.session.Session` starts; the server's
log formatter (``server.logs``) reads it. It lives here, below the server, so the
pipeline does not import the edge.
"""

from __future__ import annotations

from contextvars import ContextVar

SESSION_ID: ContextVar[str | None] = ContextVar("dauys_session_id", default=None)
"""The session a log line belongs to: set when a Session is created, inherited by the tasks it spawns."""
