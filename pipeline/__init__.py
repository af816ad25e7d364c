"""The pipeline layer: one call's processing, whatever the transport.

Audio conversions at the edge (``audio``), VAD segmentation (``segmenter``), the
:class:`~pipeline.session.Session` (streaming recognition, finals, typed events out;
``events`` and ``errors`` are the native protocol's messages and codes), the spoken
reply (``replies``: dialogue, sentence splitting in ``sentences``, TTS, paced audio,
barge-in), the rules every backend keeps (``policy``: a human on request, the handoff
record posted by ``webhook``), AI marking of synthesized speech (``watermark``,
``marking``), redaction (``privacy``), typed-text language (``langid``) and whole-file
transcription (``offline``).
"""
