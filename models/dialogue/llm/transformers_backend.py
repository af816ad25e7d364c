"""The transformers backend: a local causal LM streamed with ``TextIteratorStreamer``."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping

from models.dialogue.base import Retriever
from models.dialogue.llm.grounding import DialogueError, GenerationInfo, GroundedEngine, LlmConfig, _one_line
from models.dialogue.llm.prompt import PLAIN_STOPS, plain_prompt
from models.errors import ModelError

log = logging.getLogger("dauys.dialogue")


def _dtype_kwarg(transformers) -> str:
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class TransformersEngine(GroundedEngine):
    """A local causal LM through ``transformers`` (``pip install 'dauys[llm]'``)."""

    name = "transformers"

    def __init__(
        self,
        model: str | Path,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        generate_kwargs: Mapping | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(retriever, config)
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise ModelError(
                f"the transformers dialogue backend needs the llm extra: pip install 'dauys[llm]' ({e})"
            ) from None
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if dtype == "auto":
            torch_dtype = "auto" if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        source = str(Path(model).expanduser()) if Path(model).expanduser().exists() else str(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=trust_remote_code, **{_dtype_kwarg(transformers): torch_dtype}
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the dialogue model {model!r} with transformers: {_one_line(e)}") from None
        self.model.to(device)
        self.model.eval()
        self.model_id = str(getattr(self.model.config, "_name_or_path", "") or model)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.stops = () if self.chat_template else PLAIN_STOPS

    def build_prompt(self, messages: list[dict]) -> str:
        if self.chat_template:
            try:
                return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as e:  # e.g. a template without a system role
                if messages and messages[0]["role"] == "system" and len(messages) > 1:
                    log.info("chat template refused a system message (%s); merging it into the user turn", _one_line(e))
                    merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}, *messages[2:]]
                    return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
                raise
        return plain_prompt(messages)

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        from transformers import (
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        torch = self._torch
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        prompt = self.build_prompt(messages)
        inputs = self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=not self.chat_template, return_token_type_ids=False
        ).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        stop = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=cfg.timeout_s)
        kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            max_time=cfg.timeout_s,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancel()]),
        )
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(do_sample=False)
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.eos_token_id
        kwargs.update(self.generate_kwargs)
        result: dict = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **kwargs)
                result["tokens"] = int(out.shape[1] - prompt_len)
            except BaseException as e:  # surfaced in the consumer
                result["error"] = e
                streamer.end()

        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        thread = threading.Thread(target=run, name="dauys-llm-generate", daemon=True)
        thread.start()
        produced = False
        try:
            while True:
                streamer.timeout = max(0.01, deadline - time.monotonic())  # the wait, bounded by what is left
                try:
                    text = next(streamer)
                except StopIteration:
                    break
                except queue.Empty:
                    stop.set()
                    self._timed_out(info, produced)
                    return
                if text:
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield text
                if time.monotonic() > deadline:
                    stop.set()
                    self._timed_out(info, produced)
                    return
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if "error" in result:
                raise DialogueError(f"transformers backend: generation failed: {_one_line(result['error'])}")
            info.tokens = result.get("tokens", 0)
            if not info.finish_reason:
                if info.tokens >= cfg.max_new_tokens:
                    info.finish_reason = "length"
                elif time.monotonic() - t0 >= cfg.timeout_s:
                    info.finish_reason = "timeout"
                else:
                    info.finish_reason = "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            stop.set()
            info.total_s = time.monotonic() - t0
