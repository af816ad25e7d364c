"""Fine-tune a transformers Whisper checkpoint on an operator's rows.

A plain PyTorch loop (no Trainer): what it does is visible and it stays
resumable on a laptop CPU.

* Features are computed exactly as the server computes them
  (faster-whisper's feature extractor on the audio zero-padded to the
  server's encoder window: ``max(10 s, duration + 1 s)`` on CPU), and the
  encoder runs on that window, not on Whisper's fixed 30 s: the model learns
  what it will be served, and a CPU step costs a third.  Batches are bucketed
  by window so padding stays small.
* Targets are ``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|> text<|endoftext|>``,
  the prompt the server decodes with.
* ``method="full"`` trains every weight; with ``freeze_encoder`` only the
  decoder learns, and the encoder's outputs are computed once per example and
  cached (a CPU epoch then costs a fraction: the encoder is most of the work),
  so phone degradation is drawn once per example instead of every epoch;
  ``method="lora"`` trains LoRA adapters (peft) on the attention and MLP
  projections, then merges them, so the result is a plain Whisper
  checkpoint that converts to CTranslate2 like any other.
* Phone-line realism: with ``phone_prob`` > 0 each example is degraded the
  way calls degrade audio (:func:`models.finetune.degrade.phone_degrade`),
  freshly drawn every epoch.
* Checkpoints every ``save_every`` optimiser steps under
  ``output_dir/checkpoints/step-N`` (model or adapter + optimiser, scheduler,
  RNG and data order), the last ``keep_checkpoints`` kept; a new run in the
  same ``output_dir`` resumes from the latest one.
* CUDA is used when present (bf16/fp16 autocast), the CPU otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

log = logging.getLogger("dauys.finetune")

SAMPLE_RATE = 16000
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
PROCESSOR_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
]


@dataclass
class TrainConfig:
    base: Path
    """A transformers Whisper checkpoint (see :func:`models.finetune.convert.rebuild_hf_from_ct2`)."""
    output_dir: Path
    method: Literal["full", "lora"] = "lora"
    epochs: float = 2.0
    max_steps: int = 0
    """Stop after this many optimiser steps (0: ``epochs`` decides)."""
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 0.0
    """0: 1e-5 for full fine-tuning, 1e-3 for LoRA."""
    warmup_steps: int = 10
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    freeze_encoder: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    phone_prob: float = 0.0
    """Probability that an example is phone-degraded (8 kHz, mu-law, band-limit, noise) in an epoch."""
    window_s: float = 0.0
    """Encoder window; 0: the server's rule (30 s on CUDA; on CPU max(10 s, duration + 1 s))."""
    save_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0
    log_every: int = 10

    def lr(self) -> float:
        return self.learning_rate or (1e-3 if self.method == "lora" else 1e-5)


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    epochs_done: float
    examples_seen: int
    final_loss: float
    first_loss: float
    seconds: float
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model_dir"] = str(self.model_dir)
        d.pop("losses")
        return d


# ---------------------------------------------------------------------------
# Examples


def _row_audio(row) -> np.ndarray:
    """16 kHz mono float32 samples of a data row (array in memory or a file)."""
    audio = getattr(row, "audio", None)
    if audio is None and isinstance(row, dict):
        audio = row.get("audio")
    if isinstance(audio, np.ndarray):
        return audio.astype(np.float32, copy=False)
    if hasattr(row, "load_audio"):
        return np.asarray(row.load_audio(), np.float32)
    from models.audio import read_audio

    path = getattr(row, "path", None) or audio
    return read_audio(path).samples


def _field(row, name: str):
    return row.get(name) if isinstance(row, dict) else getattr(row, name)


def window_frames(duration_s: float, device: str, window_s: float = 0.0) -> int:
    """The encoder window (mel frames) the server uses for an utterance of ``duration_s``
    (``window_s`` > 0 overrides it): :func:`models.whisper.encoder_window_frames`."""
    from models.whisper import encoder_window_frames

    return encoder_window_frames(duration_s, device, window_s or None)


class Tokens:
    """The decoder prompt and target ids, from the checkpoint's tokenizer.json."""

    def __init__(self, model_dir: Path, language_aliases: dict[str, str] | None = None) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        tid = self.tok.token_to_id
        self.sot, self.transcribe, self.no_ts, self.eot = (
            tid("<|startoftranscript|>"),
            tid("<|transcribe|>"),
            tid("<|notimestamps|>"),
            tid("<|endoftext|>"),
        )
        if None in (self.sot, self.transcribe, self.no_ts, self.eot):
            raise ValueError(f"{model_dir}/tokenizer.json is not a multilingual Whisper tokenizer")
        self.aliases = dict(language_aliases or {"ky": "kk"})

    def sequence(self, text: str, language: str) -> list[int]:
        lang = self.tok.token_to_id(f"<|{self.aliases.get(language, language)}|>")
        if lang is None:
            raise ValueError(f"the tokenizer has no language token for {language!r}")
        ids = self.tok.encode(" " + text.strip(), add_special_tokens=False).ids
        return [self.sot, lang, self.transcribe, self.no_ts] + ids + [self.eot]


class Examples:
    """Rows -> (mel features, decoder ids) batches, bucketed by encoder window."""

    def __init__(self, rows: Sequence, tokens: Tokens, n_mels: int, device: str, cfg: TrainConfig, max_target: int = 448) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self.rows = list(rows)
        self.tokens = tokens
        self.features = FeatureExtractor(feature_size=n_mels)
        self.cfg = cfg
        self.audio: list[np.ndarray] = []
        self.ids: list[list[int]] = []
        self.frames: list[int] = []
        for row in self.rows:
            audio = _row_audio(row)
            ids = tokens.sequence(_field(row, "text"), _field(row, "language"))
            if len(ids) > max_target:
                raise ValueError(f"row {_field(row, 'id') if hasattr(row, 'id') or isinstance(row, dict) else ''}: transcript longer than {max_target} tokens")
            self.audio.append(audio)
            self.ids.append(ids)
            self.frames.append(window_frames(len(audio) / SAMPLE_RATE, device, cfg.window_s))

    def __len__(self) -> int:
        return len(self.rows)

    def epoch_batches(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """Index batches for ``epoch``: shuffled, each from one window bucket, batches shuffled."""
        rng = random.Random(seed * 1_000_003 + epoch)
        buckets: dict[int, list[int]] = {}
        for i, f in enumerate(self.frames):
            buckets.setdefault(f, []).append(i)
        batches = []
        for f in sorted(buckets):
            idx = buckets[f]
            rng.shuffle(idx)
            batches += [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
        rng.shuffle(batches)
        return batches

    def mel(self, i: int, rng: np.random.Generator | None) -> np.ndarray:
        audio = self.audio[i]
        if rng is not None and self.cfg.phone_prob > 0 and rng.random() < self.cfg.phone_prob:
            from models.finetune.degrade import phone_degrade

            audio = phone_degrade(audio, rng)
        from models.whisper import log_mel

        return log_mel(self.features, audio, self.frames[i])

    def encoded(self, batch: list[int], encode: Callable, seed: int):
        """Cached encoder outputs of ``batch`` (frozen encoder): computed once per example."""
        import torch

        if not hasattr(self, "_cache"):
            self._cache: dict[int, object] = {}
        todo = [i for i in batch if i not in self._cache]
        if todo:
            feats = torch.from_numpy(np.stack([self.mel(i, np.random.default_rng([seed, i, 7])) for i in todo]).astype(np.float32))
            with torch.no_grad():
                hidden = encode(feats, self.frames[todo[0]])
            for i, h in zip(todo, hidden):
                self._cache[i] = h.to("cpu", torch.float16)
        return torch.stack([self._cache[i] for i in batch]).float()

    def collate(self, batch: list[int], rng: np.random.Generator | None, features: bool = True):
        import torch

        frames = self.frames[batch[0]]
        feats = torch.from_numpy(np.stack([self.mel(i, rng) for i in batch]).astype(np.float32)) if features else None
        longest = max(len(self.ids[i]) for i in batch) - 1
        dec = torch.full((len(batch), longest), self.tokens.eot, dtype=torch.long)
        labels = torch.full((len(batch), longest), -100, dtype=torch.long)
        for r, i in enumerate(batch):
            seq = self.ids[i]
            dec[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            labels[r, : len(seq) - 1] = torch.tensor(seq[1:])
        return feats, dec, labels, frames


# ---------------------------------------------------------------------------
# The encoder window


class EncoderWindow:
    """Run the HF Whisper encoder on fewer than 1500 positions (the server's trimmed window).

    transformers' encoder insists on ``max_source_positions * 2`` mel frames
    and adds its whole (frozen, sinusoidal) position table.  For a shorter
    window we swap in the table's first rows and the matching config value;
    :meth:`restore` puts the full table back before anything is saved.
    """

    def __init__(self, model) -> None:
        import torch

        self.encoder = model.get_encoder()
        self.configs = {id(c): c for c in (model.config, self.encoder.config)}.values()
        self.full = self.encoder.embed_positions.weight.detach().clone()
        self.full_positions = self.full.shape[0]
        self.current = self.full_positions
        self._torch = torch

    def set(self, frames: int) -> None:
        positions = frames // 2
        if positions == self.current:
            return
        if positions > self.full_positions:
            raise ValueError(f"window of {frames} frames exceeds the model's {self.full_positions * 2}")
        emb = self._torch.nn.Embedding(positions, self.full.shape[1]).to(self.encoder.conv1.weight.device)
        with self._torch.no_grad():
            emb.weight.copy_(self.full[:positions].to(emb.weight.device, emb.weight.dtype))
        emb.requires_grad_(False)
        self.encoder.embed_positions = emb
        self.encoder.max_source_positions = positions
        for c in self.configs:
            c.max_source_positions = positions
        self.current = positions

    def restore(self) -> None:
        self.set(self.full_positions * 2)


# ---------------------------------------------------------------------------
# Checkpoints


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = Path(output_dir) / "checkpoints"
    found = []
    for p in root.glob("step-*"):
        if (p / "state.pt").is_file():
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                pass
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    ck = _checkpoints(output_dir)
    return ck[-1][1] if ck else None


def _copy_processor_files(src: Path, dst: Path) -> None:
    for name in PROCESSOR_FILES:
        f = Path(src) / name
        if f.is_file() and not (Path(dst) / name).exists():
            shutil.copy2(f, Path(dst) / name)


# ---------------------------------------------------------------------------


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device")
    return device


def train(cfg: TrainConfig, rows: Sequence, *, progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Fine-tune ``cfg.base`` on ``rows`` (objects or dicts with text, language and audio/path).

    Writes the merged, ready-to-convert checkpoint to ``output_dir/model`` and
    returns a :class:`TrainResult`.  Resumes from the latest checkpoint in
    ``output_dir`` when one exists and was made with the same settings.
    """
    import torch
    from transformers import WhisperForConditionalGeneration, get_linear_schedule_with_warmup

    if not rows:
        raise ValueError("no training rows")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    fingerprint = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("output_dir", "save_every", "keep_checkpoints", "num_threads", "log_every", "device", "epochs", "max_steps")}
    fingerprint["rows"] = len(rows)

    model = WhisperForConditionalGeneration.from_pretrained(str(cfg.base), torch_dtype=torch.float32)
    model.config.use_cache = False
    window = EncoderWindow(model)
    tokens = Tokens(cfg.base)
    examples = Examples(rows, tokens, model.config.num_mel_bins, device, cfg, model.config.max_target_positions)

    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_targets
        if cfg.freeze_encoder:  # adapters on the decoder only (a regex: peft matches it against full module names)
            targets = r".*decoder\.layers\.\d+\.((self_attn|encoder_attn)\.)?(%s)$" % "|".join(cfg.lora_targets)
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")
        model = get_peft_model(model, lcfg)
        if cfg.freeze_encoder:
            for n, p in model.named_parameters():
                if ".encoder." in n:
                    p.requires_grad_(False)
    elif cfg.freeze_encoder:
        model.model.encoder.requires_grad_(False)
    model.to(device)
    encoder = model.get_encoder()
    if cfg.freeze_encoder:
        encoder.eval()  # no dropout in what is cached
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    log.info("training %d of %d parameters (%s) on %s", n_train, sum(p.numel() for p in model.parameters()), cfg.method, device)

    steps_per_epoch = math.ceil(math.ceil(len(examples) / cfg.batch_size) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    opt = torch.optim.AdamW(params, lr=cfg.lr(), weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, total_steps // 2), total_steps)

    step, micro, epoch, pos, resumed = 0, 0, 0, 0, 0
    losses: list[float] = []
    ck = latest_checkpoint(out)
    if ck is not None:
        state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise RuntimeError(f"{ck} was made with different settings or data; use a new output_dir or delete {out / 'checkpoints'}")
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        saved = torch.load(ck / "trainable.pt", map_location="cpu")
        with torch.no_grad():
            for n, t in saved.items():
                trainable[n].copy_(t.to(trainable[n].device))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, pos, losses = state["step"], state["epoch"], state["pos"], state["losses"]
        random.setstate(state["py_rng"])
        torch.set_rng_state(state["torch_rng"])
        resumed = step
        log.info("resumed from %s (step %d)", ck, step)

    use_amp = device == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="fine-tune", unit="step", dynamic_ncols=True)

    def save_checkpoint() -> None:
        d = out / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True, exist_ok=True)
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(trainable, d / "trainable.pt")
        torch.save(
            {"fingerprint": fingerprint, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "epoch": epoch, "pos": pos, "losses": losses, "py_rng": random.getstate(), "torch_rng": torch.get_rng_state()},
            d / "state.pt.tmp",
        )
        (d / "state.pt.tmp").rename(d / "state.pt")
        for _, old in _checkpoints(out)[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    model.train()
    if cfg.freeze_encoder:
        encoder.eval()
    examples_seen = 0
    running = 0.0
    while step < total_steps:
        batches = examples.epoch_batches(epoch, cfg.batch_size, cfg.seed)
        if pos >= len(batches):
            epoch, pos = epoch + 1, 0
            continue
        batch = batches[pos]
        rng = np.random.default_rng([cfg.seed, epoch, pos])
        if cfg.freeze_encoder:
            _, dec, labels, frames = examples.collate(batch, None, features=False)

            def encode(feats, frames):
                window.set(frames)
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                    return encoder(feats.to(device)).last_hidden_state.float()

            hidden = examples.encoded(batch, encode, cfg.seed).to(device)
            inputs = {"encoder_outputs": (hidden,)}
        else:
            feats, dec, labels, frames = examples.collate(batch, rng)
            window.set(frames)
            inputs = {"input_features": feats.to(device)}
        with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
            outp = model(**inputs, decoder_input_ids=dec.to(device), labels=labels.to(device))
        loss = outp.loss / cfg.grad_accum
        scaler.scale(loss).backward()
        running += float(loss.detach())
        examples_seen += len(batch)
        micro += 1
        pos += 1
        if micro % cfg.grad_accum:
            continue
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        losses.append(running)
        if on_step:
            on_step(step, running)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", epoch=epoch)
        elif step % cfg.log_every == 0:
            log.info("step %d/%d loss %.3f", step, total_steps, running)
        running = 0.0
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            window.restore()
            save_checkpoint()
    if bar is not None:
        bar.close()
    window.restore()

    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    model.eval()
    if cfg.method == "lora":
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.to("cpu").save_pretrained(str(final))
    _copy_processor_files(Path(cfg.base), final)
    epochs_done = step * cfg.grad_accum * cfg.batch_size / len(examples)
    result = TrainResult(
        model_dir=final,
        steps=step,
        epochs_done=round(epochs_done, 3),
        examples_seen=examples_seen,
        final_loss=float(np.mean(losses[-5:])) if losses else float("nan"),
        first_loss=float(np.mean(losses[:5])) if losses else float("nan"),
        seconds=time.perf_counter() - t0,
        resumed_from=resumed,
        losses=losses,
    )
    (final / "dauys_training.json").write_text(json.dumps({"config": fingerprint, "result": result.to_dict()}, indent=2, ensure_ascii=False), encoding="utf-8")
    return result
