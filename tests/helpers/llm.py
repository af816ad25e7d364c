"""A tiny random causal LM made here, and a fake OpenAI-compatible server (vLLM-like streaming),
for the LLM backend tests.  The fixtures ``tiny_model``, ``ct2_dir`` and ``llm_server`` (conftest.py) use them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models.dialogue.llm import HANDOFF_MARKER, OPERATOR_MARKER

SENTENCES = [
    "Сәлеметсіз бе! Картаны қалай бұғаттауға болады?",
    "Бөлімшелер дүйсенбіден жұмаға дейін жұмыс істейді.",
    "Здравствуйте! Как заблокировать карту в приложении?",
    "Отделения работают с понедельника по пятницу.",
    "Salom! Kartani qanday bloklash mumkin?",
    "You are the voice assistant of a customer-support phone line. Answer only from the passages.",
]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_model(tmp_path_factory):
    """(directory, tokenizer) of a tiny random Llama saved with a BPE tokenizer trained on SENTENCES."""
    try:
        import torch
        import transformers
    except ImportError as e:
        pytest.fail(f"{e}: the LLM backend tests need the llm extra (pip install torch==2.13.0 first for the CPU build, then '.[llm]')")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = tmp_path_factory.mktemp("tiny-llm")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tok.add_tokens([HANDOFF_MARKER, OPERATOR_MARKER])  # one token each, so a logit bias can force them
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(path)
    config = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=4096, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path, fast


def convert_to_ct2(tiny_model, tmp_path_factory):
    """The tiny model converted to CTranslate2 (float32)."""
    from ctranslate2.converters import TransformersConverter

    path, _ = tiny_model
    out = tmp_path_factory.mktemp("tiny-ct2") / "model"
    files = [f for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json") if (path / f).is_file()]
    TransformersConverter(str(path), copy_files=files).convert(str(out), quantization="float32")
    return out


ANSWER = "**Картаны** бұғаттау үшін қосымшада «Карталар» бөлімін ашыңыз.\n- «Бұғаттау» түймесін басыңыз."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked transfer encoding, as vLLM streams

    def log_message(self, *args):
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj) -> None:
        self._chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()) + b"\n\n")

    def _delta(self, text=None, finish=None, role=None):
        delta = {}
        if role:
            delta["role"] = role
        if text is not None:
            delta["content"] = text
        return {"id": "c1", "object": "chat.completion.chunk", "model": "tiny", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        mode = self.path.split("/")[1]
        if not self.path.endswith("/v1/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if mode == "error500":
            return self._json(500, {"error": {"message": "CUDA out of memory\n(try a smaller batch)", "type": "InternalServerError"}})
        problems = []
        if body.get("model") != "tiny-llm":
            problems.append("model")
        if body.get("stream") is not True:
            problems.append("stream")
        msgs = body.get("messages") or []
        if not msgs or msgs[0]["role"] != "system" or msgs[-1]["role"] != "user":
            problems.append("messages")
        if not isinstance(body.get("max_tokens"), int):
            problems.append("max_tokens")
        if problems:
            return self._json(400, {"object": "error", "message": f"bad request: {problems}"})
        if srv.key and self.headers.get("Authorization") != f"Bearer {srv.key}":
            return self._json(401, {"error": {"message": "invalid api key"}})
        if mode == "mute":  # accepts the request, never answers
            srv.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "stall":
            self._chunk(b": keep-alive\n\n")
            srv.release.wait(10)
            return
        if mode == "malformed":
            self._event(self._delta(role="assistant"))
            self._chunk(b"data: {\"choices\": [ broken\n\n")
            srv.release.wait(10)
            return
        text = {"answer": ANSWER, "handoff": "Кешіріңіз. " + HANDOFF_MARKER + " артық мәтін", "slow": ANSWER}[mode]
        self._event(self._delta("", role="assistant"))
        for i in range(0, len(text), 4):  # token-sized pieces; a marker is split across chunks
            self._event(self._delta(text[i : i + 4]))
            if mode == "slow" and i >= 8:
                srv.release.wait(10)  # then stall mid-answer
                return
        self._event(self._delta(finish="stop"))
        self._event(b"[DONE]")
        self._chunk(b"")


def start_llm_server() -> ThreadingHTTPServer:
    """A :class:`Handler` server on 127.0.0.1 in a daemon thread; stop it with :func:`stop_llm_server`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.requests = []
    server.key = None
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server


def stop_llm_server(server: ThreadingHTTPServer) -> None:
    server.release.set()
    server.shutdown()
    server.server_close()


def url(server, mode):
    return f"http://127.0.0.1:{server.server_address[1]}/{mode}/v1"
