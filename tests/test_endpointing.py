"""Adaptive endpointing end to end: real espeak-ng speech streamed at real-time pace, the real Silero
VAD, segmenter, session, dialogue and server. The recogniser is a scripted stand-in for a fast one
(a GPU decodes an utterance in some 20 ms): whisper-base on these 2 CPU cores takes 240-400 ms from
the pause, later than a short endpoint could come, and hears espeak-ng's "и" or "оператор" too
unreliably for a test about what happens once the words are known."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.server import send_audio
from tests.helpers.turns import RATE, ScriptedFinals, two_clause_script
from tests.helpers.turns import silence as _silence
from tests.helpers.turns import speech as _speech

pytestmark = pytest.mark.slow


async def _call(make_server, services, audio: np.ndarray, script, adaptive: bool, turn=None, delay_s: float = 0.02) -> list[dict]:
    """One native Russian session: the audio at real-time pace, then the events until it ends
    (``turn``: a learned end-of-turn model in place of the configured none; ``delay_s``: how long each
    final decode takes)."""
    server = await make_server({"scheduler": ScriptedFinals(services.scheduler, script, delay_s), "turn": turn}, vad={"adaptive": adaptive})
    events: list[dict] = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "ru", "output": {"pacing": "none"}}))

        async def read():
            async for m in ws:
                if isinstance(m, str):
                    events.append(json.loads(m))

        reader = asyncio.ensure_future(read())
        while not any(e["type"] == "audio_end" and e["reply_id"] == "disclosure" for e in events):
            await asyncio.sleep(0.02)
        try:
            await send_audio(ws, audio)  # 20 ms frames, real time
            await asyncio.sleep(1.0)
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass  # a handoff ends the session
        await asyncio.wait_for(reader, 60)
    return events


def _finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "transcript" and e["final"] and e["source"] == "audio"]


async def test_a_request_for_a_person_ends_the_turn_after_the_short_silence(make_server, services):
    """Words that settle the turn (a request for a person): the endpoint comes after
    vad.short_silence_ms (200) instead of vad.min_silence_ms (400); the same audio and VAD otherwise."""
    audio = np.concatenate([_speech("Соедините меня с оператором"), _silence(1.5)])
    gaps = {}
    for adaptive in (False, True):
        finals = _finals(await _call(make_server, services, audio, lambda s: "Соедините меня с оператором", adaptive))
        assert len(finals) == 1, finals
        gaps[adaptive] = finals[0]["t_endpoint"] - finals[0]["t_end"]  # the silence after the padded speech end
    assert gaps[False] - gaps[True] == pytest.approx(0.192, abs=0.07), gaps  # 12 - 6 VAD windows of 32 ms


async def test_an_endpoint_no_decision_reached_in_time_is_counted_undecided(make_server, services):
    """A decoder slower than vad.long_silence_ms (900): the pause holds the endpoint that long, then ends
    the turn without adaptive endpointing's decision; dauys_endpoints_total says so ("undecided", not
    "default", which would hide an overloaded decoder among ordinary turns)."""
    from pipeline import metrics

    def count(kind: str) -> float:
        return metrics.REGISTRY.get_sample_value("dauys_endpoints_total", {"silence": kind}) or 0.0

    audio = np.concatenate([_speech("Соедините меня с оператором"), _silence(2.5)])
    before = {k: count(k) for k in ("default", "short", "undecided")}
    finals = _finals(await _call(make_server, services, audio, lambda s: "Соедините меня с оператором", True, delay_s=1.6))
    assert len(finals) == 1, finals
    assert finals[0]["t_endpoint"] - finals[0]["t_end"] > 0.7  # held: not the short silence the words would have earned
    assert {k: count(k) - v for k, v in before.items()} == {"default": 0, "short": 0, "undecided": 1}


async def test_a_pause_after_a_conjunction_does_not_cut_the_question(make_server, services):
    """"Я потерял карту и" + 600 ms + "не знаю что теперь делать": a fixed 400 ms endpoint cuts it
    in two utterances (the first answered on its own); adaptive endpointing waits
    vad.long_silence_ms after the conjunction and hears one question."""
    first, second = _speech("Я потерял карту и"), _speech("не знаю что теперь делать")
    audio = np.concatenate([first, _silence(0.6), second, _silence(1.5)])
    script = two_clause_script("Я потерял карту и", "не знаю что теперь делать", len(first) / RATE, 0.6, len(second) / RATE)

    fixed = _finals(await _call(make_server, services, audio, script, False))
    adaptive = _finals(await _call(make_server, services, audio, script, True))
    assert [f["text"] for f in fixed] == ["Я потерял карту и", "не знаю что теперь делать"], fixed
    assert [f["text"] for f in adaptive] == ["Я потерял карту и не знаю что теперь делать"], adaptive


def _stand_in_turn_model(path, threshold_mean: float) -> None:
    """A Smart Turn-shaped ONNX model (input_features [1, 80, 800] -> probability) whose answer is
    sigmoid(40 * (mean log-mel - threshold_mean)): the more of its 8 s window is speech, the surer
    it is the turn is complete. Made here; the real model cannot be fetched on these machines."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_features"], ["m"], keepdims=1),
            helper.make_node("Sub", ["m", "c"], ["d"]),
            helper.make_node("Mul", ["d", "k"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probability"]),
        ],
        "stand_in_turn",
        [helper.make_tensor_value_info("input_features", TensorProto.FLOAT, ["batch", 80, 800])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1, 1])],
        [helper.make_tensor("c", TensorProto.FLOAT, [], [threshold_mean]), helper.make_tensor("k", TensorProto.FLOAT, [], [40.0])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


async def test_a_learned_turn_model_keeps_a_settled_sounding_clause_from_ending_the_turn(make_server, services, tmp_path):
    """"Я потерял карту" is a question the knowledge base answers at once, so its words end the turn
    after the short silence: the caller, who paused 600 ms before "вчера вечером в большом магазине",
    is cut off. A turn model (vad.turn_model) that hears the turn as unfinished at that pause holds
    it for vad.long_silence_ms, and the caller is heard out. (A stand-in model; see above.)"""
    from models.turn import TurnModel

    first, second = _speech("Я потерял карту"), _speech("вчера вечером в большом магазине")
    audio = np.concatenate([first, _silence(0.6), second, _silence(1.5)])
    script = two_clause_script("Я потерял карту", "вчера вечером в большом магазине", len(first) / RATE, 0.6, len(second) / RATE)

    # the stand-in's threshold: between what it sees at the pause and at the end (first clause + the
    # VAD's 200 ms pad, the whole question)
    _stand_in_turn_model(tmp_path / "probe.onnx", 0.0)
    probe = TurnModel(tmp_path / "probe.onnx")
    at_pause = float(probe.features(np.concatenate([first, _silence(0.2)])).mean())
    at_end = float(probe.features(np.concatenate([first, _silence(0.6), second, _silence(0.2)])).mean())
    assert at_end - at_pause > 0.1
    _stand_in_turn_model(tmp_path / "turn.onnx", (at_pause + at_end) / 2)
    turn = TurnModel(tmp_path / "turn.onnx")
    assert turn.complete(np.concatenate([first, _silence(0.2)])) < 0.5 < turn.complete(audio[: len(audio) - int(1.3 * RATE)])

    without = _finals(await _call(make_server, services, audio, script, True))
    heard_out = _finals(await _call(make_server, services, audio, script, True, turn))
    assert [f["text"] for f in without] == ["Я потерял карту", "вчера вечером в большом магазине"], without
    assert [f["text"] for f in heard_out] == ["Я потерял карту вчера вечером в большом магазине"], heard_out


def test_the_turn_models_input_is_its_authors_preprocessing(tmp_path):
    """models/turn.py prepares audio as Smart Turn's authors do (transformers' WhisperFeatureExtractor,
    chunk_length 8, do_normalize, the last 8 s with zeros in front), without needing transformers."""
    from transformers import WhisperFeatureExtractor

    from models.audio import read_audio
    from models.turn import TurnModel
    from tests.helpers.audio import clip

    _stand_in_turn_model(tmp_path / "turn.onnx", 0.0)
    model = TurnModel(tmp_path / "turn.onnx")
    extractor = WhisperFeatureExtractor(chunk_length=8)
    for audio in (read_audio(clip("kk_kscd_ex2.wav")).samples, np.tile(read_audio(clip("kk_kscd_ex1.wav")).samples, 2)):  # 1.9 s; 10 s
        ref_in = np.zeros(8 * RATE, np.float32)
        tail = audio[-8 * RATE:]
        ref_in[-len(tail):] = tail
        ref = extractor(ref_in, sampling_rate=RATE, return_tensors="np", padding="max_length", max_length=8 * RATE, truncation=True, do_normalize=True).input_features
        got = model.features(audio)
        assert got.shape == ref.shape == (1, 80, 800)
        assert np.abs(got - ref).max() < 1e-3


def test_a_bad_turn_model_is_a_one_line_error_at_start(tmp_path):
    from models.errors import ModelError
    from models.turn import TurnModel

    with pytest.raises(ModelError, match="does not exist"):
        TurnModel(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        TurnModel(tmp_path / "junk.onnx")
