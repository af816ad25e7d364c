"""Silero VAD streamed window by window, and the endpointer built on it."""

import numpy as np
import pytest

from models.audio import read_audio
from models.vad import WINDOW, SileroVad
from pipeline.segmenter import Segmenter
from tests.helpers.audio import clip


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


def run(seg, audio, step=320):
    events = []
    for i in range(0, len(audio), step):
        events += seg.push(audio[i : i + step])
    return events + seg.finish()


def test_streaming_vad_matches_faster_whisper_offline(vad):
    from faster_whisper.vad import get_vad_model

    a = read_audio(clip("kk_kscd_ex1.wav")).samples
    a = a[: len(a) // WINDOW * WINDOW]
    offline = get_vad_model()(a.copy()).reshape(-1)
    stream = vad.stream()
    online = np.concatenate([stream.process(a[i : i + 333]) for i in range(0, len(a), 333)])
    assert online.shape == offline.shape
    assert np.abs(online - offline).max() < 1e-3


@pytest.mark.parametrize("kind", ["silence", "white_noise", "hum"])
def test_no_speech_in_silence_noise_and_hum(vad, kind):
    rng = np.random.default_rng(7)
    n = 16000 * 5
    audio = {
        "silence": np.zeros(n, np.float32),
        "white_noise": (0.1 * rng.standard_normal(n)).astype(np.float32),
        "hum": (0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / 16000)).astype(np.float32),
    }[kind]
    assert run(Segmenter(vad.stream()), audio) == []


def test_sentence_is_cut_into_utterances_with_pad(vad):
    speech = read_audio(clip("kk_kscd_ex1.wav")).samples
    audio = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    events = run(Segmenter(vad.stream(), min_silence_ms=400, speech_pad_ms=200), audio)
    kinds = [e.kind for e in events if e.kind in ("start", "end")]
    assert kinds and kinds[0] == "start" and kinds[-1] == "end"
    assert kinds == ["start", "end"] * (len(kinds) // 2)
    starts = [e for e in events if e.kind == "start"]
    ends = [e for e in events if e.kind == "end"]
    # speech begins ~0.2 s into the clip, i.e. ~1.2 s into the stream
    assert 1.0 < starts[0].t < 1.5
    assert 5.3 < ends[-1].t < 6.5
    for e in ends:
        assert not e.forced
        assert e.t_decided >= e.t  # decided after the (padded) end
        assert len(e.audio) > 0.3 * 16000
    # every `pause` (speculation point) is followed by `resume` or `end` of the same utterance
    for i, e in enumerate(events):
        if e.kind == "pause":
            assert events[i + 1].kind in ("resume", "end") and events[i + 1].index == e.index


def test_long_speech_is_forced_into_pieces(vad):
    speech = read_audio(clip("uz_uzbekvoice_1.wav")).samples[: 16000 * 9]
    events = run(Segmenter(vad.stream(), max_utterance_s=3.0, min_silence_ms=2000, speculative_ms=1000), speech)
    ends = [e for e in events if e.kind == "end"]
    assert len(ends) >= 2
    assert any(e.forced for e in ends)
    assert all(len(e.audio) <= 3.0 * 16000 + WINDOW for e in ends)


def test_finish_flushes_speech_in_progress(vad):
    speech = read_audio(clip("kk_kscd_ex2.wav")).samples
    seg = Segmenter(vad.stream())
    events = seg.push(speech[: int(1.2 * 16000)])  # cut mid-word
    assert any(e.kind == "start" for e in events)
    tail = seg.finish()
    assert len(tail) == 1 and tail[0].kind == "end" and tail[0].forced


class _ScriptedVad:
    """Speech probabilities by window, as scripted (1 = speech, 0 = silence)."""

    def __init__(self, probs):
        self.probs = list(probs)

    def process(self, samples):
        n = len(samples) // WINDOW
        out, self.probs = self.probs[:n], self.probs[n:]
        return np.array(out + [0.0] * (n - len(out)), np.float32)


def _windows(seg, n):
    events = []
    for _ in range(n):
        events += seg.push(np.zeros(WINDOW, np.float32))
    return events


def test_adapt_shortens_or_lengthens_the_endpoint_of_the_utterance_in_progress():
    # 10 windows of speech, then silence; 32 ms windows: speculative at 3 (96 ms), end at 12 (400 ms rounded)
    def seg():
        return Segmenter(_ScriptedVad([1.0] * 10 + [0.0] * 60), min_speech_ms=96, min_silence_ms=400, speculative_ms=96, speech_pad_ms=0)

    plain = seg()
    events = _windows(plain, 40)
    pause = next(e for e in events if e.kind == "pause")
    end = next(e for e in events if e.kind == "end")
    assert pause.pause == 1 and end.silence_s == pytest.approx(12 * 0.032)

    short = seg()
    events = _windows(short, 14)  # 10 speech + 4 silence: paused
    pause = next(e for e in events if e.kind == "pause")
    assert short.adapt(pause.pause, 200)  # 6 windows: already past 4, ends after 2 more
    events = _windows(short, 2)
    assert [e.kind for e in events] == ["end"] and events[0].silence_s == pytest.approx(6 * 0.032)
    assert events[0].t_decided < end.t_decided

    long_ = seg()
    events = _windows(long_, 14)
    assert long_.adapt(next(e for e in events if e.kind == "pause").pause, 1000)
    events = _windows(long_, 40)
    ends = [e for e in events if e.kind == "end"]
    assert len(ends) == 1 and ends[0].silence_s == pytest.approx(31 * 0.032)


def test_adapt_is_void_once_speech_resumes_and_for_another_pause():
    # speech, a 5-window pause, speech again, then silence
    seg = Segmenter(_ScriptedVad([1.0] * 10 + [0.0] * 5 + [1.0] * 10 + [0.0] * 40), min_speech_ms=96, min_silence_ms=400, speculative_ms=96, speech_pad_ms=0)
    events = _windows(seg, 14)
    first = next(e for e in events if e.kind == "pause")
    events = _windows(seg, 8)  # speech resumed
    assert "resume" in [e.kind for e in events]
    assert not seg.adapt(first.pause, 100)  # a stale speculation changes nothing
    events = _windows(seg, 6)
    second = next(e for e in events if e.kind == "pause")
    assert second.pause == first.pause + 1
    assert seg.adapt(second.pause, 1000)
    events = _windows(seg, 10)
    assert not [e for e in events if e.kind == "end"]  # extended past 400 ms
    seg2 = Segmenter(_ScriptedVad([1.0] * 10 + [0.0] * 5 + [1.0] * 10 + [0.0] * 40), min_speech_ms=96, min_silence_ms=400, speculative_ms=96, speech_pad_ms=0)
    ev = _windows(seg2, 14)
    assert seg2.adapt(next(e for e in ev if e.kind == "pause").pause, 1000)
    ev = _windows(seg2, 8 + 16)  # the resume restored 400 ms: the second pause ends after 12 windows
    assert [e.silence_s for e in ev if e.kind == "end"] == [pytest.approx(12 * 0.032)]


def test_a_hold_keeps_the_endpoint_open_until_adapt_decides():
    """Adaptive endpointing: from the pause on, the endpoint waits (at most hold_ms) for the words."""
    def seg():
        return Segmenter(_ScriptedVad([1.0] * 10 + [0.0] * 60), min_speech_ms=96, min_silence_ms=400, speculative_ms=96, speech_pad_ms=0, hold_ms=900)

    late = seg()
    events = _windows(late, 10 + 20)  # 20 silent windows: past 400 ms, no end while undecided
    pause = next(e for e in events if e.kind == "pause")
    assert not [e for e in events if e.kind == "end"]
    assert late.adapt(pause.pause, 400)  # decided late: ends at the next window
    events = _windows(late, 1)
    assert [e.kind for e in events] == ["end"] and events[0].silence_s == pytest.approx(21 * 0.032)

    undecided = seg()
    events = _windows(undecided, 10 + 40)  # nobody decides: the hold itself ends it
    assert [e.silence_s for e in events if e.kind == "end"] == [pytest.approx(28 * 0.032)]  # round(900 / 32)
