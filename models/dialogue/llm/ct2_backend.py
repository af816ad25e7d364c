"""The CTranslate2 backend: a ``Generator`` over a converted model directory, streamed step by step."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from models.dialogue.base import Retriever
from models.dialogue.llm.grounding import DialogueError, GenerationInfo, GroundedEngine, LlmConfig, _one_line
from models.dialogue.llm.prompt import PLAIN_STOPS, plain_prompt
from models.errors import ModelError

log = logging.getLogger("dauys.dialogue")


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class _Ct2Tokenizer:
    """The tokenizer beside a CTranslate2 model: transformers' AutoTokenizer, or tokenizers + jinja2."""

    def __init__(self, model_dir: Path, kind: str) -> None:
        self.hf = None
        if kind in ("auto", "transformers"):
            try:
                from transformers import AutoTokenizer
            except ImportError:
                if kind == "transformers":
                    raise ModelError("tokenizer='transformers' needs the llm extra: pip install 'dauys[llm]'") from None
            else:
                try:
                    self.hf = AutoTokenizer.from_pretrained(str(model_dir))
                except (OSError, ValueError) as e:
                    if kind == "transformers" or not (model_dir / "tokenizer.json").is_file():
                        raise ModelError(f"cannot load the tokenizer in {model_dir}: {_one_line(e)}") from None
        if self.hf is not None:
            self.template = getattr(self.hf, "chat_template", None) or None
            self.bos_token = self.hf.bos_token
            self.eos_token = self.hf.eos_token
            self.special = {}
            return
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{model_dir} has no tokenizer.json (copy it in when converting: copy_files=['tokenizer.json', ...])")
        self.tok = Tokenizer.from_file(str(path))
        cfg: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            p = model_dir / name
            if p.is_file():
                cfg.update(json.loads(p.read_text(encoding="utf-8")))
        self.special = {k: _token_str(v) for k, v in cfg.items() if k.endswith("_token") and _token_str(v) is not None}
        self.bos_token = self.special.get("bos_token")
        self.eos_token = self.special.get("eos_token")
        template_file = model_dir / "chat_template.jinja"
        self.template = template_file.read_text(encoding="utf-8") if template_file.is_file() else cfg.get("chat_template")
        if isinstance(self.template, list):  # named templates: take the default
            self.template = next((t["template"] for t in self.template if t.get("name") == "default"), None)
        self._jinja = None
        if self.template:
            try:
                import jinja2
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError:
                log.warning("jinja2 is not installed: %s's chat template is ignored (plain prompt format)", model_dir)
                self.template = None
            else:

                def raise_exception(message):
                    raise jinja2.exceptions.TemplateError(message)

                def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
                env.filters["tojson"] = tojson
                env.globals["raise_exception"] = raise_exception
                env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
                self._jinja = env.from_string(self.template)

    def apply_template(self, messages: list[dict]) -> str:
        if self.hf is not None:
            return self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._jinja.render(messages=messages, add_generation_prompt=True, **self.special)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if self.hf is not None:
            return list(self.hf(text, add_special_tokens=add_special_tokens)["input_ids"])
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def ids_to_tokens(self, ids: list[int]) -> list[str]:
        if self.hf is not None:
            return list(self.hf.convert_ids_to_tokens(ids))
        return [self.tok.id_to_token(i) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        if self.hf is not None:
            i = self.hf.convert_tokens_to_ids(token)
            return None if i is None or i == self.hf.unk_token_id and token != self.hf.unk_token else i
        return self.tok.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        if self.hf is not None:
            return self.hf.decode(ids, skip_special_tokens=True)
        return self.tok.decode(ids, skip_special_tokens=True)


class Ct2Engine(GroundedEngine):
    """A CTranslate2 ``Generator`` over a converted model directory (tokenizer files beside ``model.bin``)."""

    name = "ctranslate2"

    def __init__(
        self,
        model_dir: str | Path,
        retriever: Retriever,
        config: LlmConfig | None = None,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        device_index: int = 0,
        inter_threads: int = 1,
        intra_threads: int = 0,
        tokenizer: str = "auto",
        end_tokens: Sequence[str] | None = None,
    ) -> None:
        super().__init__(retriever, config)
        import ctranslate2

        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "model.bin").is_file():
            raise ModelError(
                f"{model_dir} is not a CTranslate2 model directory (no model.bin); convert one with "
                "ct2-transformers-converter --model MODEL --output_dir DIR --copy_files tokenizer.json tokenizer_config.json"
            )
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        try:
            self.generator = ctranslate2.Generator(
                str(model_dir), device=device, device_index=device_index, compute_type=compute_type,
                inter_threads=inter_threads, intra_threads=intra_threads,
            )
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the CTranslate2 model in {model_dir}: {_one_line(e)}") from None
        self.tokenizer = _Ct2Tokenizer(model_dir, tokenizer)
        self.model_id = model_dir.name
        self.chat_template = bool(self.tokenizer.template)
        self.stops = () if self.chat_template else PLAIN_STOPS
        ends = list(end_tokens or [])
        if not ends:
            if self.tokenizer.eos_token:
                ends.append(self.tokenizer.eos_token)
            gen_cfg = model_dir / "generation_config.json"
            if gen_cfg.is_file():
                eos = json.loads(gen_cfg.read_text(encoding="utf-8")).get("eos_token_id")
                for i in eos if isinstance(eos, list) else [eos] if eos is not None else []:
                    tok = self.tokenizer.ids_to_tokens([int(i)])[0]
                    if tok and tok not in ends:
                        ends.append(tok)
        self.end_tokens = ends
        self._end_ids = {i for i in (self.tokenizer.token_to_id(t) for t in ends) if i is not None}

    def build_prompt(self, messages: list[dict]) -> str:
        if self.chat_template:
            try:
                return self.tokenizer.apply_template(messages)
            except Exception as e:
                if messages and messages[0]["role"] == "system" and len(messages) > 1:
                    log.info("chat template refused a system message (%s); merging it into the user turn", _one_line(e))
                    merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}, *messages[2:]]
                    return self.tokenizer.apply_template(merged)
                raise
        return plain_prompt(messages)

    def prompt_tokens(self, messages: list[dict]) -> list[str]:
        ids = self.tokenizer.encode(self.build_prompt(messages), add_special_tokens=not self.chat_template)
        return self.tokenizer.ids_to_tokens(ids)

    def stream(self, messages: list[dict], info: GenerationInfo | None = None) -> Iterator[str]:
        cfg = self.config
        info = info if info is not None else GenerationInfo()
        tokens = self.prompt_tokens(messages)
        steps: queue.Queue = queue.Queue()
        closed = threading.Event()

        def on_step(step) -> bool:
            steps.put(step)
            return closed.is_set()

        kwargs = dict(
            max_length=cfg.max_new_tokens,
            beam_size=1,
            include_prompt_in_result=False,
            callback=on_step,
            asynchronous=True,
        )
        if cfg.temperature > 0:
            kwargs.update(sampling_temperature=cfg.temperature, sampling_topk=0, sampling_topp=cfg.top_p)
        else:
            kwargs.update(sampling_topk=1)
        if self.end_tokens:
            kwargs["end_token"] = list(self.end_tokens)
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        try:
            async_results = self.generator.generate_batch([tokens], **kwargs)
        except (RuntimeError, ValueError) as e:
            raise DialogueError(f"ctranslate2 backend: generation failed: {_one_line(e)}") from None

        def wait() -> None:  # ends the step queue (and carries a failure) once the batch is done
            try:
                for r in async_results:
                    r.result()
            except Exception as e:
                steps.put(e)
            steps.put(None)

        threading.Thread(target=wait, name="dauys-ct2-generate", daemon=True).start()
        ids: list[int] = []
        prefix = read = 0
        produced = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._timed_out(info, produced)
                    return
                try:
                    step = steps.get(timeout=remaining)
                except queue.Empty:
                    self._timed_out(info, produced)
                    return
                if step is None:
                    break
                if isinstance(step, Exception):
                    raise DialogueError(f"ctranslate2 backend: generation failed: {_one_line(step)}")
                if step.token_id in self._end_ids:
                    info.finish_reason = "stop"
                    break
                info.tokens += 1
                ids.append(step.token_id)
                # incremental detokenisation (vLLM's prefix/read offsets): stable under
                # byte-level BPE partial characters and SentencePiece leading spaces
                before = self.tokenizer.decode(ids[prefix:read])
                now = self.tokenizer.decode(ids[prefix:])
                if len(now) > len(before) and not now.endswith("\ufffd"):
                    piece = now[len(before):]
                    prefix, read = read, len(ids)
                    if not produced:
                        info.first_token_s = time.monotonic() - t0
                    produced = True
                    yield piece
                if step.is_last:
                    break
            tail = self.tokenizer.decode(ids[prefix:])[len(self.tokenizer.decode(ids[prefix:read])):]
            if tail:  # what was held back for an incomplete character
                yield tail
            if not info.finish_reason:
                info.finish_reason = "length" if info.tokens >= cfg.max_new_tokens else "stop"
        except GeneratorExit:
            info.finish_reason = info.finish_reason or "cancelled"
            raise
        finally:
            closed.set()
            info.total_s = time.monotonic() - t0
