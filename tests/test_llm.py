"""LLM dialogue backends (models/dialogue/llm/), on real engines.

- transformers: a tiny randomly initialised Llama with a byte-level BPE
  tokenizer trained here on Kazakh/Russian/Uzbek sentences (no hub access),
  streamed through the real generate() + TextIteratorStreamer path;
- ctranslate2: the same model converted with TransformersConverter;
- openai: a real HTTP server on 127.0.0.1 speaking the streaming
  chat-completions format (SSE), which checks what the client sends.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from models.dialogue.base import Action, DialogueEngine, DialogueState, Passage, Turn
from models.dialogue.llm import (
    DEFAULT_HANDOFF,
    DEFAULT_REPHRASE,
    HANDOFF_MARKER,
    OPERATOR_MARKER,
    Ct2Engine,
    DialogueError,
    GenerationInfo,
    LlmConfig,
    OpenAIEngine,
    ReplyParser,
    TransformersEngine,
    plain_prompt,
)
from tests.helpers.llm import ANSWER, url

# ---------------------------------------------------------------------------
# A small knowledge base and a real (character-trigram) retriever over it
# ---------------------------------------------------------------------------

KB = [
    {
        "id": "block_card",
        "q": {"kk": "Картаны қалай бұғаттауға болады?", "ru": "Как заблокировать карту?", "uz": "Kartani qanday bloklash mumkin?"},
        "a": {
            "kk": "Картаны бұғаттау үшін қосымшада «Карталар» бөлімін ашып, «Бұғаттау» түймесін басыңыз.",
            "ru": "Чтобы заблокировать карту, откройте раздел «Карты» в приложении и нажмите «Заблокировать».",
            "uz": "Kartani bloklash uchun ilovada «Kartalar» bo'limini oching va «Bloklash» tugmasini bosing.",
        },
    },
    {
        "id": "hours",
        "q": {"kk": "Бөлімшелер қашан жұмыс істейді?", "ru": "Когда работают отделения?", "uz": "Filiallar qachon ishlaydi?"},
        "a": {
            "kk": "Бөлімшелер дүйсенбіден жұмаға дейін сағат тоғыздан алтыға дейін жұмыс істейді.",
            "ru": "Отделения работают с понедельника по пятницу с девяти до шести.",
            "uz": "Filiallar dushanbadan jumagacha soat to'qqizdan oltigacha ishlaydi.",
        },
    },
    {
        "id": "goodbye",
        "q": {"kk": "Рахмет, сау болыңыз", "ru": "Спасибо, до свидания", "uz": "Rahmat, xayr"},
        "a": {"kk": "Сау болыңыз!", "ru": "До свидания!", "uz": "Xayr!"},
        "action": "end",
    },
]


def _trigrams(s: str) -> set[str]:
    s = f"  {' '.join(s.lower().split())} "
    return {s[i : i + 3] for i in range(len(s) - 2)}


def retriever(text: str, language: str, k: int) -> list[Passage]:
    q = _trigrams(text)
    scored = []
    for e in KB:
        question = e["q"].get(language) or e["q"]["ru"]
        t = _trigrams(question)
        score = len(q & t) / max(1, len(q | t))
        scored.append(Passage(e["id"], question, e["a"].get(language) or e["a"]["ru"], score, e.get("action")))
    scored.sort(key=lambda p: p.score, reverse=True)
    return scored[:k]


def user(text: str, language: str = "kk") -> Turn:
    return Turn("user", text, language)


def run(engine, history, language="kk", state=None):
    state = state if state is not None else DialogueState()
    texts, actions = [], []
    for item in engine.respond(history, language, state):
        (actions if isinstance(item, Action) else texts).append(item)
    return texts, actions, state


# ---------------------------------------------------------------------------
# The parser (pure)
# ---------------------------------------------------------------------------


def parse(pieces, stops=()):
    p = ReplyParser(stops=stops)
    out = [p.feed(x) for x in pieces]
    out.append(p.flush())
    return "".join(out), p.reason, p


def test_parser_marker_split_across_pieces_is_never_spoken():
    text, reason, _ = parse(["Кешіріңіз", ", бұл тур", "алы ақпарат жоқ. [HAN", "DOFF", "] and more text"])
    assert reason == "not_understood"
    assert text == "Кешіріңіз, бұл туралы ақпарат жоқ."
    text, reason, _ = parse(["[oper", "ator]"])
    assert (text, reason) == ("", "user_request")
    text, reason, _ = parse(["Жауап.", OPERATOR_MARKER])  # glued to the text
    assert (text, reason) == ("Жауап.", "user_request")


def test_parser_strips_markdown_bullets_and_urls():
    raw = "## Карта\n\n**Картаны** бұғаттау үшін:\n- қосымшаны *ашыңыз*\n- `Бұғаттау` басыңыз\n1. [сайт](https://bank.kz/block) немесе https://bank.kz қараңыз"
    pieces = [raw[i : i + 3] for i in range(0, len(raw), 3)]  # token-sized pieces
    text, reason, _ = parse(pieces)
    assert reason is None
    assert text == "Карта. Картаны бұғаттау үшін: қосымшаны ашыңыз. Бұғаттау басыңыз. сайт немесе қараңыз"
    for ch in "*#`[]()":
        assert ch not in text
    assert "http" not in text
    # undecodable bytes and control characters from a byte-level model are not spoken
    text, _, _ = parse(["Сәл\ufffd", "ем\x00 бе", "\x10 "])
    assert text == "Сәлем бе"


def test_parser_streams_word_by_word_and_drops_an_unfinished_marker():
    p = ReplyParser()
    assert p.feed("Сәлеметсіз") == ""  # a word is held until it ends
    assert p.feed(" бе! Қалай") == "Сәлеметсіз бе!"
    assert p.feed(" көмектесе") == " Қалай"
    assert p.flush() == " көмектесе"
    text, reason, _ = parse(["Жауап бар [HANDO"])  # cut by max_new_tokens mid-marker
    assert (text, reason) == ("Жауап бар", None)


def test_parser_stop_strings_end_the_reply():
    text, reason, p = parse(["Жауап осы.\nUs", "er: тағы сұрақ"], stops=("\nUser:",))
    assert text == "Жауап осы." and reason is None and p.done


# ---------------------------------------------------------------------------
# The prompt
# ---------------------------------------------------------------------------


def test_build_messages_grounds_the_prompt_in_the_passages_and_language():
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", retriever, LlmConfig(history_turns=5))
    history = [
        user("Сәлем"),
        Turn("assistant", "Сәлеметсіз бе!", "kk"),
        user("бір сұрақ"),
        Turn("assistant", "Иә?", "kk"),
        user("Картаны"),
        user("қалай бұғаттауға болады?"),  # two user turns in a row (the first answer was interrupted)
    ]
    passages = retriever("Картаны қалай бұғаттауға болады?", "kk", 3)
    msgs = engine.build_messages(history, "kk", passages)
    system = msgs[0]
    assert system["role"] == "system"
    assert "Kazakh" in system["content"] and "ONLY" in system["content"]
    assert HANDOFF_MARKER in system["content"] and OPERATOR_MARKER in system["content"]
    for p in passages:
        assert p.question in system["content"] and p.answer in system["content"]
    assert system["content"].index(passages[0].answer) < system["content"].index(passages[1].answer)
    # last 5 turns, starting with the user, same-role turns merged
    assert msgs[1:] == [
        {"role": "user", "content": "бір сұрақ"},
        {"role": "assistant", "content": "Иә?"},
        {"role": "user", "content": "Картаны\nқалай бұғаттауға болады?"},
    ]
    ru = engine.build_messages([user("Как заблокировать карту?", "ru")], "ru", passages)
    assert "Reply in Russian only" in ru[0]["content"]
    uz = engine.build_messages([user("Kartani qanday bloklash mumkin?", "uz")], "uz", passages)
    assert "Uzbek (Latin script)" in uz[0]["content"]
    merged = OpenAIEngine("http://127.0.0.1:9/v1", "m", retriever, LlmConfig(system_role=False))
    msgs = merged.build_messages([user("Сәлем")], "kk", passages)
    assert [m["role"] for m in msgs] == ["user"] and msgs[0]["content"].endswith("\n\nСәлем")
    assert plain_prompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == "System: S\n\nUser: U\n\nAssistant:"


# ---------------------------------------------------------------------------
# A tiny random causal LM (the tiny_model fixture: conftest.py, made by tests.helpers.llm)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf_engine(tiny_model):
    path, _ = tiny_model
    return TransformersEngine(path, retriever, LlmConfig(max_new_tokens=24, temperature=0, timeout_s=30))


def test_transformers_engine_streams_grounded_text(tf_engine, tiny_model):
    _, tokenizer = tiny_model
    assert isinstance(tf_engine, DialogueEngine)
    assert tf_engine.name == "transformers" and tf_engine.model_id and tf_engine.device == "cpu"
    history = [user("Картаны қалай бұғаттауға болады?")]
    passages = tf_engine.retrieve(history[-1].text, "kk")
    prompt = tf_engine.build_prompt(tf_engine.build_messages(history, "kk", passages))
    # the chat template was applied, with the passages and the language instruction
    assert prompt.startswith("<s><|system|>\n") and prompt.endswith("<|user|>\nКартаны қалай бұғаттауға болады?</s>\n<|assistant|>\n")
    assert KB[0]["a"]["kk"] in prompt and "Reply in Kazakh" in prompt

    info = GenerationInfo()
    raw = list(tf_engine.stream(tf_engine.build_messages(history, "kk", passages), info))
    assert raw and "".join(raw).strip()
    assert 1 <= info.tokens <= 24 and info.finish_reason in ("length", "stop")
    assert info.first_token_s is not None and info.first_token_s < info.total_s  # streamed, not at the end
    # the streamed pieces are exactly what a plain greedy generate() of at most 24 tokens decodes to
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = tf_engine.model.generate(input_ids=ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] - ids.shape[1] == info.tokens
    assert "".join(raw) == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    before = tf_engine.generations
    texts, actions, state = run(tf_engine, history)
    assert tf_engine.generations == before + 1
    assert texts and "".join(texts).strip() and not actions
    assert "".join(texts) not in DEFAULT_REPHRASE.values()
    assert state.misunderstood == 0 and state.last_entry == "block_card"
    for ch in "*#`[]":
        assert ch not in "".join(texts)


def test_transformers_max_new_tokens_bounds_generation(tiny_model):
    path, _ = tiny_model
    engine = TransformersEngine(path, retriever, LlmConfig(max_new_tokens=3, temperature=0.7))
    info = GenerationInfo()
    msgs = engine.build_messages([user("Картаны қалай?")], "kk", retriever("Картаны қалай?", "kk", 3))
    pieces = list(engine.stream(msgs, info))
    assert info.tokens <= 3
    assert info.finish_reason in ("length", "stop")
    assert pieces or info.finish_reason == "stop"


def test_transformers_closing_the_stream_stops_generation(tiny_model):
    path, _ = tiny_model
    engine = TransformersEngine(path, retriever, LlmConfig(max_new_tokens=4000, temperature=0.8, timeout_s=60))
    msgs = engine.build_messages([user("Картаны қалай?")], "kk", retriever("Картаны қалай?", "kk", 3))
    info = GenerationInfo()
    gen = engine.stream(msgs, info)
    next(gen)
    gen.close()  # barge-in: the session drops the reply
    assert info.finish_reason == "cancelled"
    deadline = time.monotonic() + 1.5  # 4000 tokens would take several seconds more
    while any(t.name == "dauys-llm-generate" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "dauys-llm-generate" for t in threading.enumerate())


def test_transformers_timeout_without_text_is_an_error(tiny_model):
    from transformers import LogitsProcessor, LogitsProcessorList

    class Slow(LogitsProcessor):  # a model that takes 1.5 s per token
        def __call__(self, input_ids, scores):
            time.sleep(1.5)
            return scores

    path, _ = tiny_model
    engine = TransformersEngine(
        path, retriever, LlmConfig(max_new_tokens=50, timeout_s=0.4, temperature=0),
        generate_kwargs={"logits_processor": LogitsProcessorList([Slow()])},
    )
    t0 = time.monotonic()
    with pytest.raises(DialogueError, match=r"transformers backend: no reply within 0.4 s"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert time.monotonic() - t0 < 1.2


def test_transformers_handoff_marker_becomes_an_action(tiny_model):
    path, tokenizer = tiny_model
    handoff_id = tokenizer.convert_tokens_to_ids(HANDOFF_MARKER)
    operator_id = tokenizer.convert_tokens_to_ids(OPERATOR_MARKER)
    # force the model to say the marker: a real logits processor in real generate()
    for token_id, reason in ((handoff_id, "not_understood"), (operator_id, "user_request")):
        engine = TransformersEngine(
            path, retriever, LlmConfig(max_new_tokens=40, temperature=0), generate_kwargs={"sequence_bias": {(token_id,): 100.0}}
        )
        t0 = time.monotonic()
        texts, actions, state = run(engine, [user("Картаны қалай бұғаттауға болады?")])
        assert actions == [Action("handoff", reason, {"source": "model", "entry": "block_card"})]
        assert "".join(texts) == DEFAULT_HANDOFF["kk"]
        assert "[" not in "".join(texts)
        assert time.monotonic() - t0 < 10


def test_below_threshold_does_not_call_the_model_and_hands_off_after_max(tf_engine):
    before = tf_engine.generations
    state = DialogueState()
    off_topic = [user("Ауа райы ертең қандай болады?")]
    assert retriever(off_topic[0].text, "kk", 1)[0].score < tf_engine.config.threshold
    texts, actions, state = run(tf_engine, off_topic, state=state)
    assert texts == [DEFAULT_REPHRASE["kk"]] and not actions and state.misunderstood == 1
    texts, actions, state = run(tf_engine, off_topic, "ru", state=state)
    assert texts == [DEFAULT_HANDOFF["ru"]]
    assert actions and actions[0].kind == "handoff" and actions[0].reason == "not_understood"
    assert state.misunderstood == 2
    assert tf_engine.generations == before  # the model was never called
    # a configured rephrase text, in the caller's language
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", retriever, LlmConfig(rephrase={"uz": "Qaytadan ayting."}, max_misunderstood=3))
    texts, actions, _ = run(engine, [user("ob-havo", "uz")], "uz")
    assert texts == ["Qaytadan ayting."] and not actions


# ---------------------------------------------------------------------------
# CTranslate2
# ---------------------------------------------------------------------------


def test_ct2_engine_streams_and_stops(ct2_dir, tiny_model):
    _, tokenizer = tiny_model
    engine = Ct2Engine(ct2_dir, retriever, LlmConfig(max_new_tokens=12, temperature=0))
    assert engine.name == "ctranslate2" and engine.model_id == "model" and engine.device == "cpu"
    assert isinstance(engine, DialogueEngine)
    history = [user("Картаны қалай бұғаттауға болады?")]
    msgs = engine.build_messages(history, "kk", engine.retrieve(history[-1].text, "kk"))
    prompt = engine.build_prompt(msgs)
    assert prompt == tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert KB[0]["a"]["kk"] in prompt

    info = GenerationInfo()
    pieces = list(engine.stream(msgs, info))
    assert pieces and 1 <= info.tokens <= 12 and info.finish_reason in ("length", "stop")
    if info.finish_reason == "length":
        assert info.tokens == 12
    assert len(pieces) > 1  # token by token
    assert info.first_token_s < info.total_s
    # incremental detokenisation gives exactly the full decode of a plain greedy generate_batch()
    (ref,) = engine.generator.generate_batch(
        [engine.prompt_tokens(msgs)], max_length=12, sampling_topk=1, include_prompt_in_result=False, end_token=["</s>"]
    )
    assert "".join(pieces) == tokenizer.decode(ref.sequences_ids[0], skip_special_tokens=True)
    assert info.tokens == len(ref.sequences_ids[0])

    # an end token stops generation: make the greedy first token an end token
    stopper = Ct2Engine(ct2_dir, retriever, LlmConfig(max_new_tokens=12, temperature=0), end_tokens=[ref.sequences[0][0]])
    info = GenerationInfo()
    assert list(stopper.stream(msgs, info)) == [] and info.tokens == 0 and info.finish_reason == "stop"

    # closing the stream early (barge-in) stops it without hanging
    gen = engine.stream(msgs, info := GenerationInfo())
    next(gen)
    t0 = time.monotonic()
    gen.close()
    assert info.finish_reason == "cancelled" and time.monotonic() - t0 < 2

    texts, actions, state = run(engine, history)
    assert "".join(texts).strip() and not actions and state.last_entry == "block_card"


def test_ct2_tokenizers_fallback_matches_transformers(ct2_dir):
    """Without transformers (tokenizers + jinja2 only) the prompt and its tokens are the same."""
    a = Ct2Engine(ct2_dir, retriever, LlmConfig(max_new_tokens=6, temperature=0), tokenizer="transformers")
    b = Ct2Engine(ct2_dir, retriever, LlmConfig(max_new_tokens=6, temperature=0), tokenizer="tokenizers")
    assert a.tokenizer.hf is not None and b.tokenizer.hf is None
    history = [Turn("assistant", "Сәлеметсіз бе!", "kk"), user("Картаны қалай бұғаттауға болады?"), ]
    msgs = a.build_messages(history, "kk", retriever(history[-1].text, "kk", 3))
    assert a.build_prompt(msgs) == b.build_prompt(msgs)
    assert a.prompt_tokens(msgs) == b.prompt_tokens(msgs)
    assert a.end_tokens == b.end_tokens == ["</s>"]
    assert "".join(a.stream(msgs)) == "".join(b.stream(msgs))


def test_ct2_missing_model_is_a_clear_error(tmp_path):
    from models.errors import ModelError

    with pytest.raises(ModelError, match="not a CTranslate2 model directory"):
        Ct2Engine(tmp_path, retriever)


# ---------------------------------------------------------------------------
# OpenAI-compatible HTTP: a real streaming server on 127.0.0.1 (llm_server: conftest.py, tests.helpers.llm)
# ---------------------------------------------------------------------------

SPOKEN = "Картаны бұғаттау үшін қосымшада «Карталар» бөлімін ашыңыз. «Бұғаттау» түймесін басыңыз."


def test_openai_engine_streams_a_grounded_answer(llm_server, monkeypatch):
    llm_server.key = "sk-test-123"
    monkeypatch.setenv("DAUYS_TEST_LLM_KEY", "sk-test-123")
    engine = OpenAIEngine(url(llm_server, "answer"), "tiny-llm", retriever, LlmConfig(max_new_tokens=50), api_key_env="DAUYS_TEST_LLM_KEY")
    assert isinstance(engine, DialogueEngine) and engine.name == "openai" and engine.model_id == "tiny-llm"
    history = [user("Сәлем"), Turn("assistant", "Сәлеметсіз бе!", "kk"), user("Картаны қалай бұғаттауға болады?")]
    state = DialogueState(misunderstood=1)
    texts, actions, state = run(engine, history, state=state)
    assert "".join(texts) == SPOKEN
    assert len(texts) > 3  # streamed as it came
    assert not actions and state.misunderstood == 0 and state.last_entry == "block_card"
    (req,) = llm_server.requests
    assert req["path"] == "/answer/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    body = req["body"]
    assert body["stream"] is True and body["max_tokens"] == 50 and body["model"] == "tiny-llm"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert KB[0]["a"]["kk"] in body["messages"][0]["content"] and "Kazakh" in body["messages"][0]["content"]


def test_openai_engine_without_a_key_is_refused_by_a_server_that_wants_one(llm_server):
    llm_server.key = "sk-test-123"
    engine = OpenAIEngine(url(llm_server, "answer"), "tiny-llm", retriever, api_key_env="DAUYS_TEST_NO_SUCH_VAR")
    with pytest.raises(DialogueError, match="HTTP 401: invalid api key"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert "Authorization" not in llm_server.requests[0]["headers"]


def test_openai_handoff_marker_and_passage_action(llm_server):
    engine = OpenAIEngine(url(llm_server, "handoff"), "tiny-llm", retriever)
    texts, actions, _ = run(engine, [user("Как заблокировать карту?", "ru")], "ru")
    assert "".join(texts) == "Кешіріңіз. " + DEFAULT_HANDOFF["ru"]
    assert actions == [Action("handoff", "not_understood", {"source": "model", "entry": "block_card"})]
    # an answered KB entry with an action (goodbye -> end), as the KB engine does
    engine = OpenAIEngine(url(llm_server, "answer"), "tiny-llm", retriever)
    texts, actions, _ = run(engine, [user("Рахмет, сау болыңыз")])
    assert texts and actions == [Action("end", "goodbye", {"entry": "goodbye"})]
    # below the threshold no request is made at all
    n = len(llm_server.requests)
    texts, actions, state = run(engine, [user("Ауа райы ертең қандай болады?")])
    assert texts == [DEFAULT_REPHRASE["kk"]] and len(llm_server.requests) == n and state.misunderstood == 1


def test_openai_http_500_is_a_one_line_error(llm_server):
    engine = OpenAIEngine(url(llm_server, "error500"), "tiny-llm", retriever)
    t0 = time.monotonic()
    with pytest.raises(DialogueError) as e:
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert "HTTP 500" in str(e.value) and "CUDA out of memory (try a smaller batch)" in str(e.value)
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 2
    engine = OpenAIEngine(url(llm_server, "answer"), "wrong-model", retriever)
    with pytest.raises(DialogueError, match=r"HTTP 400: bad request: \['model'\]"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])


def test_openai_connection_refused_is_quick():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "tiny-llm", retriever, LlmConfig(timeout_s=10))
    t0 = time.monotonic()
    with pytest.raises(DialogueError, match="connection refused"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert time.monotonic() - t0 < 2


def test_openai_stalled_server_times_out(llm_server):
    engine = OpenAIEngine(url(llm_server, "stall"), "tiny-llm", retriever, LlmConfig(timeout_s=0.8))
    t0 = time.monotonic()
    with pytest.raises(DialogueError, match=r"no reply within 0.8 s"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert 0.7 < time.monotonic() - t0 < 2.5
    # no response headers at all
    engine = OpenAIEngine(url(llm_server, "mute"), "tiny-llm", retriever, LlmConfig(timeout_s=0.8))
    t0 = time.monotonic()
    with pytest.raises(DialogueError, match=r"no response within 0.8 s"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert 0.7 < time.monotonic() - t0 < 2.5
    # a stall after some text: the text stands, cut at the deadline
    engine = OpenAIEngine(url(llm_server, "slow"), "tiny-llm", retriever, LlmConfig(timeout_s=0.8))
    t0 = time.monotonic()
    info = GenerationInfo()
    msgs = engine.build_messages([user("Картаны")], "kk", retriever("Картаны", "kk", 3))
    assert "".join(engine.stream(msgs, info)) == ANSWER[:12]
    assert info.finish_reason == "timeout" and time.monotonic() - t0 < 2.5


def test_openai_malformed_chunk_is_an_error(llm_server):
    engine = OpenAIEngine(url(llm_server, "malformed"), "tiny-llm", retriever, LlmConfig(timeout_s=5))
    t0 = time.monotonic()
    with pytest.raises(DialogueError, match="malformed stream chunk"):
        run(engine, [user("Картаны қалай бұғаттауға болады?")])
    assert time.monotonic() - t0 < 2


def test_openai_bad_base_url_is_a_config_error():
    from models.errors import ModelError

    with pytest.raises(ModelError, match="base_url"):
        OpenAIEngine("127.0.0.1:8000", "m", retriever)
    with pytest.raises(ModelError, match="dialogue.model"):
        OpenAIEngine("http://127.0.0.1:8000/v1", "", retriever)
