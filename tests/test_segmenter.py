"""Silero VAD streamed window by window, and the endpointer built on it."""

import numpy as np
import pytest

from models.vad import WINDOW, SileroVad
from pipeline.audio import read_audio
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
