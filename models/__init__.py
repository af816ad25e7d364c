"""Engines loaded once per process and shared by all sessions (no per-session state)."""
