"""models/finetune/train.py on a tiny random Whisper: resumable, LoRA merged, served window kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.helpers.paths import CACHE_DIR, SHARED_AUDIO

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")


def _tiny(out, dropout: float = 0.0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=51865, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=448, dropout=dropout,
        decoder_start_token_id=50258, pad_token_id=50257, eos_token_id=50257, bos_token_id=50257,
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    shutil.copy(CACHE_DIR / "models" / "whisper-base-ct2" / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, services):  # services: the embedded model (and its tokenizer.json) is assembled
    return _tiny(tmp_path_factory.mktemp("tiny") / "base")


def _rows():
    rows = [json.loads(line) for line in (SHARED_AUDIO / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = ["kk_kscd_ex2.wav", "kk_kscd_word_bes.wav", "kk_kscd_word_eki.wav", "uz_uzbekvoice_1.wav", "kk_kscd_ex1.wav", "kk_kscd_word_oqy.wav"]
    return [{"audio": str(SHARED_AUDIO / r["file"]), "text": r["text"], "language": r["lang"]} for r in rows if r["file"] in keep]


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_tokens_and_window_rules(tiny):
    from models.finetune.train import Tokens, window_frames

    t = Tokens(tiny)
    seq = t.sequence("бес", "kk")
    assert seq[:4] == [t.sot, t.tok.token_to_id("<|kk|>"), t.transcribe, t.no_ts] and seq[-1] == t.eot
    assert t.tok.decode(seq[4:-1]).strip() == "бес"
    assert t.sequence("бес", "ky")[1] == t.tok.token_to_id("<|kk|>")  # the server decodes ky with the kk token
    with pytest.raises(ValueError):
        t.sequence("x", "xx")
    # the server's rule (models/whisper.py): >= 10 s on CPU, duration + 1 s rounded up, 30 s on CUDA
    assert window_frames(2.0, "cpu") == 1000 and window_frames(12.3, "cpu") == 1400
    assert window_frames(2.0, "cuda") == 3000 and window_frames(40, "cpu") == 3000


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tiny, tmp_path):
    from models.finetune.train import TrainConfig, latest_checkpoint, train

    rows = _rows()
    cfg = dict(base=tiny, method="full", max_steps=5, batch_size=2, learning_rate=1e-3, warmup_steps=1, save_every=2, phone_prob=0.5, seed=3)
    straight = train(TrainConfig(output_dir=tmp_path / "straight", **cfg), rows, progress=False)
    assert straight.steps == 5 and len(straight.losses) == 5

    class Killed(Exception):
        pass

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(TrainConfig(output_dir=tmp_path / "resumed", **cfg), rows, progress=False, on_step=kill_at_3)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-2"
    resumed = train(TrainConfig(output_dir=tmp_path / "resumed", **cfg), rows, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == 5
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    base = _weights_of_base(tiny)
    assert any(not torch.equal(a[k], base[k]) for k in a if k in base)  # it did train

    # different data or settings are refused rather than silently mixed
    with pytest.raises(RuntimeError, match="different settings"):
        train(TrainConfig(output_dir=tmp_path / "resumed", **{**cfg, "learning_rate": 2e-3}), rows, progress=False)


def _weights_of_base(tiny):
    from transformers import WhisperForConditionalGeneration

    return {k: v for k, v in WhisperForConditionalGeneration.from_pretrained(str(tiny)).state_dict().items()}


def test_lora_is_merged_into_a_plain_checkpoint_with_the_full_window(tiny, tmp_path):
    from transformers import WhisperForConditionalGeneration

    from models.finetune.train import TrainConfig, train

    res = train(TrainConfig(base=tiny, output_dir=tmp_path / "lora", method="lora", max_steps=3, batch_size=3, lora_r=4, lora_alpha=8, save_every=0), _rows(), progress=False)
    w = _weights(res.model_dir)
    assert not any("lora" in k for k in w)
    model = WhisperForConditionalGeneration.from_pretrained(str(res.model_dir))
    base = WhisperForConditionalGeneration.from_pretrained(str(tiny))
    assert model.config.max_source_positions == 1500  # trained on 10 s windows, saved for any window
    assert torch.equal(model.model.encoder.embed_positions.weight, base.model.encoder.embed_positions.weight)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")) for n in changed)
    assert (res.model_dir / "tokenizer.json").is_file()
    meta = json.loads((res.model_dir / "dauys_training.json").read_text())
    assert meta["result"]["steps"] == 3 and meta["config"]["method"] == "lora"
    assert np.isfinite(res.final_loss)
