"""VAD -> utterances: a streaming endpointer over Silero speech probabilities.

Fed any amount of 16 kHz float32 audio, it returns :class:`SegmentEvent`s:

* ``start`` -- speech confirmed (``vad.min_speech_ms``); ``t`` is where it began;
* ``pause`` -- ``vad.speculative_ms`` of silence: the final decode may start now;
* ``resume`` -- speech came back after a ``pause``: that speculation is void;
* ``end`` -- ``vad.min_silence_ms`` of silence (the endpoint) or the maximum
  utterance length (``forced``); ``audio`` is the utterance with
  ``vad.speech_pad_ms`` of context on both sides.

The endpoint silence can be changed for the utterance in progress, during a
pause (:meth:`Segmenter.adapt`): shorter when what was said is complete,
longer after a hesitation; speech resuming restores ``vad.min_silence_ms``.
With ``hold_ms`` (adaptive endpointing) a pause holds the endpoint until
:meth:`Segmenter.adapt` decides, at most ``hold_ms``: the decision needs the
speculative transcript, and the final waits for that same decode anyway.

Times are seconds of input audio.  Calls block (VAD inference): run them in a
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.vad import RATE, WINDOW, VadStream

WINDOW_S = WINDOW / RATE


@dataclass
class SegmentEvent:
    kind: Literal["start", "pause", "resume", "end"]
    index: int
    """Utterance number within the stream, from 0."""
    t: float
    audio: np.ndarray | None = None
    forced: bool = False
    t_decided: float = 0.0
    """Input time at which the segmenter decided (for `end`: the endpoint decision)."""
    pause: int = 0
    """For `pause`: its number within the stream, to pass to :meth:`Segmenter.adapt`."""
    silence_s: float = 0.0
    """For a non-forced `end`: the silence that confirmed it (``vad.min_silence_ms``, or what :meth:`Segmenter.adapt` set)."""


class Segmenter:
    def __init__(
        self,
        vad: VadStream,
        *,
        threshold: float = 0.5,
        min_speech_ms: int = 96,
        min_silence_ms: int = 400,
        speculative_ms: int = 96,
        speech_pad_ms: int = 200,
        max_utterance_s: float = 20.0,
        hold_ms: int | None = None,
    ) -> None:
        self.vad = vad
        self.threshold = threshold
        self.neg_threshold = max(0.01, threshold - 0.15)
        self.min_speech_windows = max(1, round(min_speech_ms / 1000 / WINDOW_S))
        self.min_silence_windows = max(1, round(min_silence_ms / 1000 / WINDOW_S))
        self.speculative_windows = max(1, min(self.min_silence_windows - 1, round(speculative_ms / 1000 / WINDOW_S)))
        self.pad_windows = round(speech_pad_ms / 1000 / WINDOW_S)
        self.max_windows = int(max_utterance_s / WINDOW_S)
        self.hold_windows = round(hold_ms / 1000 / WINDOW_S) if hold_ms else 0
        """With adaptive endpointing: from a pause on, the endpoint waits this long unless
        :meth:`adapt` decides sooner (the words at the pause are being recognised meanwhile)."""
        self._pending = np.zeros(0, np.float32)
        self._history: list[np.ndarray] = []  # recent windows while idle (pre-roll)
        self._utt: list[np.ndarray] = []  # windows of the current utterance
        self._candidate = 0  # consecutive speech windows while idle
        self._silence = 0  # silence windows in speech
        self._last_speech = 0  # len(self._utt) at the last speech window
        self._preroll = 0  # windows of pre-roll at the head of self._utt
        self._head_t = 0.0
        self._paused = False
        self._pauses = 0  # pauses so far in the stream (SegmentEvent.pause)
        self._end_windows = self.min_silence_windows  # the endpoint silence of the utterance in progress
        self.window_index = 0
        self.last_prob = 0.0
        self.in_speech = False
        self.index = -1
        self.utterance_start_t = 0.0

    @classmethod
    def from_settings(cls, vad: VadStream, s, adaptive: bool = False) -> "Segmenter":
        """The endpointer ``vad.*`` configures; ``adaptive``: the caller calls :meth:`adapt` at each
        pause (a live session with ``vad.adaptive``), so pauses hold the endpoint until it does."""
        return cls(
            vad,
            threshold=s.threshold,
            min_speech_ms=s.min_speech_ms,
            min_silence_ms=s.min_silence_ms,
            speculative_ms=s.speculative_ms,
            speech_pad_ms=s.speech_pad_ms,
            max_utterance_s=s.max_utterance_s,
            hold_ms=max(s.long_silence_ms, s.min_silence_ms) if adaptive else None,
        )

    @property
    def t(self) -> float:
        """Seconds of audio processed."""
        return self.window_index * WINDOW_S

    def utterance_audio(self) -> np.ndarray:
        """The current utterance so far (for partial transcripts)."""
        return np.concatenate(self._utt) if self._utt else np.zeros(0, np.float32)

    @property
    def talking(self) -> bool:
        """In an utterance and the last window was speech (not a possible endpoint)."""
        return self.in_speech and self._silence == 0 and self.last_prob >= self.threshold

    @property
    def pauses(self) -> int:
        """Pauses so far in the stream (the last ``pause`` event's ``pause``)."""
        return self._pauses

    def adapt(self, pause: int, silence_ms: float) -> bool:
        """During pause number ``pause`` (a ``pause`` event's ``pause``), end the utterance after
        ``silence_ms`` of silence in all instead of ``vad.min_silence_ms``; if that much silence has
        already passed, the next window ends it. Ignored (False) once speech resumed or the
        utterance ended. Safe to call from another thread than :meth:`push`'s."""
        if not (self.in_speech and self._paused and self._pauses == pause):
            return False
        self._end_windows = max(self.speculative_windows + 1, round(silence_ms / 1000 / WINDOW_S))
        return True

    def speech_seconds(self) -> float:
        return len(self._utt) * WINDOW_S

    def push(self, samples: np.ndarray) -> list[SegmentEvent]:
        x = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(x) // WINDOW
        self._pending = x[n * WINDOW:]
        if n == 0:
            return []
        windows = x[: n * WINDOW].reshape(n, WINDOW)
        probs = self.vad.process(windows.reshape(-1))
        events: list[SegmentEvent] = []
        for w, p in zip(windows, probs):
            self.last_prob = float(p)
            self._step(w, self.last_prob, events)
            self.window_index += 1
        return events

    def finish(self) -> list[SegmentEvent]:
        """End of stream: an utterance in progress ends (forced)."""
        events: list[SegmentEvent] = []
        if self.in_speech:
            if len(self._pending):
                self._utt.append(self._pending)
            self._pending = np.zeros(0, np.float32)
            events.append(self._end(forced=True, keep_all=True))
        return events

    # ------------------------------------------------------------------
    def _step(self, w: np.ndarray, p: float, events: list[SegmentEvent]) -> None:
        if not self.in_speech:
            self._history.append(w)
            if p >= self.threshold or (self._candidate and p >= self.neg_threshold):
                self._candidate += 1
            else:
                self._candidate = 0
            keep = self.pad_windows + self.min_speech_windows
            if len(self._history) > keep:
                del self._history[: len(self._history) - keep]
            if self._candidate >= self.min_speech_windows:
                self.in_speech = True
                self.index += 1
                self._utt = list(self._history)
                self._preroll = len(self._history)
                self._history = []
                self._silence = 0
                self._last_speech = len(self._utt)
                self._paused = False
                start_window = self.window_index + 1 - self._candidate
                self.utterance_start_t = start_window * WINDOW_S
                self._head_t = (self.window_index + 1 - self._preroll) * WINDOW_S  # time of self._utt[0]
                self._candidate = 0
                events.append(SegmentEvent("start", self.index, self.utterance_start_t))
            return
        self._utt.append(w)
        if p >= self.threshold:
            self._silence = 0
            self._last_speech = len(self._utt)
            if self._paused:
                self._paused = False
                self._end_windows = self.min_silence_windows
                events.append(SegmentEvent("resume", self.index, self.t))
        elif p < self.neg_threshold or self._silence:
            self._silence += 1
        if self._silence >= self._end_windows:
            events.append(self._end(forced=False))
            return
        if self._silence >= self.speculative_windows and not self._paused:
            self._paused = True
            self._pauses += 1
            if self.hold_windows:
                self._end_windows = max(self._end_windows, self.hold_windows)  # until adapt() decides
            events.append(SegmentEvent("pause", self.index, self.t + WINDOW_S, self.utterance_audio(), pause=self._pauses))
        if len(self._utt) >= self.max_windows:
            events.append(self._end(forced=True, keep_all=True))
            # the caller is still talking: the next part starts right away
            self.in_speech = True
            self.index += 1
            self._utt = []
            self._preroll = 0
            self._last_speech = 0
            self.utterance_start_t = self.t + WINDOW_S
            self._head_t = self.utterance_start_t
            events.append(SegmentEvent("start", self.index, self.utterance_start_t))

    def _end(self, forced: bool, keep_all: bool = False) -> SegmentEvent:
        keep = len(self._utt) if keep_all else min(len(self._utt), self._last_speech + self.pad_windows)
        audio = np.concatenate(self._utt[:keep]) if keep else np.zeros(0, np.float32)
        t_end = self.t + WINDOW_S if keep_all else self._head_t + keep * WINDOW_S
        silence_s = 0.0 if forced else round(self._silence * WINDOW_S, 3)
        ev = SegmentEvent("end", self.index, round(t_end, 3), audio, forced, round(self.t + WINDOW_S, 3), silence_s=silence_s)
        # the trailing silence becomes pre-roll for the next utterance
        self._history = self._utt[keep:][-self.pad_windows:] if self.pad_windows else []
        self._utt = []
        self.in_speech = False
        self._silence = 0
        self._paused = False
        self._end_windows = self.min_silence_windows
        self._candidate = 0
        return ev
