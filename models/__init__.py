"""The models layer: engines loaded once per process and shared by every session.

Whisper (``whisper``) behind the process-wide ASR queue (``scheduler``), Silero VAD
(``vad``), the TTS voices (``tts``) and the dialogue engines (``dialogue/``); where
weights come from and how they are loaded and warmed up (``registry``, ``loader``);
redaction and the is-this-host check at the bottom of the layers (``privacy``, ``net``);
and the operator's offline fine-tuning (``finetune/``).

The engines hold no conversation state.  What is per call is small and owned by the
session: a :class:`~models.vad.VadStream` each (``SileroVad.stream()``), the
:class:`~models.dialogue.base.DialogueState` passed into every ``respond``, and the
scheduler's requests, keyed per session so that a newer partial replaces an older one.
"""
