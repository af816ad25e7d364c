"""Dialogue engines: conversation history and language in, reply text streamed out, plus actions."""

from models.dialogue.base import Action, DialogueEngine, Turn

__all__ = ["Action", "DialogueEngine", "Turn"]
