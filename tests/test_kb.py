"""The knowledge-base dialogue engine: file validation, retrieval (Kazakh, Russian, Latin script,
recognition errors), the misunderstanding policy, actions, and that it only ever says KB text."""

from __future__ import annotations

import copy
import json
import re
import statistics
import sys
import time

import pytest
import yaml

from models.dialogue.base import Action, DialogueEngine, DialogueState, Passage, Turn
from models.dialogue.kb import DEMO_KB_PATH, KbEngine, KnowledgeBase, KnowledgeBaseError, normalise
from models.text import sentence_pieces as split_sentences  # the pieces the engine streams
from tests.helpers.paths import ROOT

HELDOUT = ROOT / "tests" / "data" / "kb_heldout.jsonl"


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture(scope="module")
def engine(kb) -> KbEngine:
    return KbEngine(kb)


@pytest.fixture(scope="module")
def demo_data() -> dict:
    return yaml.safe_load(DEMO_KB_PATH.read_text(encoding="utf-8"))


def top(kb: KnowledgeBase, text: str, language: str = "kk") -> Passage:
    return kb.search(text, language, 1)[0]


def reply(engine: KbEngine, text: str, language: str, state: DialogueState | None = None) -> tuple[str, Action | None, list]:
    state = state if state is not None else DialogueState()
    out = list(engine.respond([Turn("user", text, language)], language, state))
    actions = [x for x in out if isinstance(x, Action)]
    assert len(actions) <= 1 and (not actions or out[-1] is actions[0]), "at most one action, after the text"
    return "".join(x for x in out if isinstance(x, str)), (actions[0] if actions else None), out


# --------------------------------------------------------------------------- the demo file


def test_demo_kb_is_complete_and_speakable(kb):
    assert len(kb) >= 25
    assert kb.model_id == "kb:demo-bank@1.0.0"
    assert kb.languages == ["kk", "ru"] and kb.default_language == "kk"
    kazakh_letters = set("әғқңөұүһі")
    for e in kb.entries:
        for lang in ("kk", "ru"):
            assert len(e.questions.get(lang, ())) >= 5, (e.id, lang)
            answer = e.answers[lang]
            sentences = [s for s in split_sentences(answer) if s.strip()]
            assert 1 <= len(sentences) <= 3, (e.id, lang, answer)
            assert not re.search(r"https?:|www\.|[*_#`\[\]<>]|\d", answer), f"{e.id}/{lang}: not speakable: {answer}"
        assert kazakh_letters & set(e.answers["kk"].lower()), f"{e.id}: the kk answer has no Kazakh letters"
    assert sum("uz" in e.answers for e in kb.entries) >= 8
    actions = {e.id: e.action for e in kb.entries if e.action}
    assert actions["operator"] == ("handoff", "user_request")
    assert actions["goodbye"] == ("end", "goodbye")


def test_every_example_question_retrieves_its_own_entry(kb):
    wrong = [(e.id, q, top(kb, q, lang).id) for e in kb.entries for lang, qs in e.questions.items() for q in qs if top(kb, q, lang).id != e.id]
    assert not wrong


# --------------------------------------------------------------------------- validation


def _write(tmp_path, data, name="kb.yaml"):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _entry(data, eid):
    return next(e for e in data["entries"] if e["id"] == eid)


BROKEN = [
    (lambda d: _entry(d, "balance")["answer"].pop("ru"), r"kb\.yaml: entry 'balance': answer has no 'ru' text"),
    (lambda d: _entry(d, "balance")["answer"].update(kk="  "), r"entry 'balance': answer has no 'kk' text"),
    (lambda d: _entry(d, "balance").pop("questions"), r"entry 'balance': missing 'questions'"),
    (lambda d: _entry(d, "balance").update(questions={"kk": []}), r"entry 'balance': questions\.kk must be a non-empty list"),
    (lambda d: _entry(d, "balance").update(anwser={}), r"entry 'balance': unknown field 'anwser'"),
    (lambda d: _entry(d, "balance").update(action="transfer"), r"entry 'balance': action kind 'transfer' is not one of"),
    (lambda d: _entry(d, "balance").update(action={"kind": "handoff", "reason": "Bad Reason"}), r"entry 'balance': action reason"),
    (lambda d: _entry(d, "balance").update(id="greeting"), r"entry 'greeting': duplicate id"),
    (lambda d: _entry(d, "balance")["questions"]["ru"].append("Здравствуйте"), r"entry 'balance': question 'Здравствуйте' is also an example of entry 'greeting'"),
    (lambda d: d["entries"][3].pop("id"), r"entry #4: id None is missing"),
    (lambda d: d["fallback"]["rephrase"].pop("kk"), r"fallback\.rephrase: text has no 'kk' text"),
    (lambda d: d["fallback"].pop("handoff"), r"fallback: missing 'handoff' texts"),
    (lambda d: d["settings"].update(threshold=1.5), r"settings\.threshold: must be a number between 0 and 1"),
    (lambda d: d["settings"].update(max_misunderstood=0), r"settings\.max_misunderstood: must be a whole number"),
    (lambda d: d.update(default_language="en"), r"default_language: 'en' is not in languages"),
    (lambda d: d.update(entries=[]), r"entries: must be a non-empty list"),
    (lambda d: d.update(entrys=[]), r"unknown top-level field 'entrys'"),
    (lambda d: d.pop("fallback"), r"missing required field 'fallback'"),
    (lambda d: _entry(d, "balance").update(terms=["баланс"]), r"entry 'balance': terms must be a mapping of language"),
    (lambda d: _entry(d, "balance").update(terms={"kk": ["ақ"]}), r"entry 'balance': terms\.kk: 'ақ' needs a first word of at least 3 letters"),
    (lambda d: _entry(d, "balance").update(terms={"KK": ["баланс"]}), r"entry 'balance': terms: 'KK' is not a language code"),
]


@pytest.mark.parametrize("breaks,message", BROKEN, ids=[m for _, m in BROKEN])
def test_invalid_files_fail_with_one_clear_line(tmp_path, demo_data, breaks, message):
    data = copy.deepcopy(demo_data)
    breaks(data)
    path = _write(tmp_path, data)
    with pytest.raises(KnowledgeBaseError) as err:
        KnowledgeBase.load(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert re.search(message, text), text


def test_syntax_errors_and_formats(tmp_path, demo_data):
    bad = tmp_path / "kb.yaml"
    bad.write_text("id: x\nentries:\n  - id: a\n    questions: [unclosed\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"kb\.yaml: line \d+, column \d+: YAML syntax error"):
        KnowledgeBase.load(bad)
    bad_json = tmp_path / "kb.json"
    bad_json.write_text('{"id": "x",}', encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"kb\.json: line 1, column \d+: JSON syntax error"):
        KnowledgeBase.load(bad_json)
    with pytest.raises(KnowledgeBaseError, match=r"unknown knowledge-base format '\.txt'"):
        KnowledgeBase.load(_write(tmp_path, demo_data, "kb.txt"))
    with pytest.raises(KnowledgeBaseError, match=r"missing\.yaml: cannot read"):
        KnowledgeBase.load(tmp_path / "missing.yaml")
    with pytest.raises(KnowledgeBaseError, match=r"the top level must be a mapping"):
        KnowledgeBase.load(_write(tmp_path, ["a", "b"]))
    # the same content as JSON loads and behaves the same
    as_json = KnowledgeBase.load(_write(tmp_path, demo_data, "kb.json"))
    assert len(as_json) == len(KnowledgeBase.load()) and top(as_json, "картам бұғатталды").id == "card_blocked"


def test_minimal_kb_defaults_and_model_id(tmp_path):
    data = {
        "id": "shop",
        "languages": ["ru"],
        "fallback": {"rephrase": {"ru": "Повторите, пожалуйста."}, "handoff": {"ru": "Соединяю с оператором."}},
        "entries": [{"id": "hours", "questions": {"ru": ["Когда вы работаете?"]}, "answer": {"ru": "С девяти до шести."}}],
    }
    kb = KnowledgeBase.load(_write(tmp_path, data))
    # clarifying questions on: the threshold is the floor of a confirmation (calibrated defaults)
    assert kb.confirm and kb.threshold == pytest.approx(0.18) and kb.max_misunderstood == 2 and kb.default_language == "ru"
    assert (kb.answer_threshold, kb.answer_margin, kb.choose_margin) == (0.30, 0.14, 0.06)
    assert KnowledgeBase.from_dict({**data, "settings": {"confirm": False}}).threshold == pytest.approx(0.25)  # answers need more
    assert re.fullmatch(r"kb:shop@[0-9a-f]{12}", kb.model_id)  # no version: the file's sha256
    assert KnowledgeBase.load(_write(tmp_path, {**data, "version": "2024.1"})).model_id == "kb:shop@2024.1"


# --------------------------------------------------------------------------- normalisation


def test_normalise_folds_kazakh_latin_and_uzbek_spellings():
    assert normalise("Картам БҰҒАТТАЛДЫ!") == normalise("kartam bugattaldy") == normalise("картам бугатталды")
    assert normalise("Пин-кодты ұмытып қалдым") == normalise("pin kodty umytyp qaldym")
    assert normalise("Қалайсыз?") == normalise("qalaisyz") == normalise("Калайсыз")
    assert normalise("Shotymdağy aqşa") == normalise("шотымдағы ақша")  # 2021 Latin alphabet
    assert normalise("Kartam oʻgʻirlandi") == normalise("Kartam o'g'irlandi") == normalise("Kartam og‘irlandi")
    assert normalise("Ещё раз, пожалуйста…") == "еше раз пожалуиста"


def test_split_sentences_concatenates_back():
    for text in ["Один. Два! Три?", "Сәлеметсіз бе! Мен көмекшімін.", "Без точки", "Число 1.5 тут. Конец."]:
        pieces = split_sentences(text)
        assert "".join(pieces) == text
    assert len(split_sentences("Один. Два! Три?")) == 3


# --------------------------------------------------------------------------- retrieval

PARAPHRASES = [
    ("kk", "Картамды банк бұғаттап қойыпты, енді не істеймін?", "card_blocked"),
    ("kk", "Картам жоқ, жоғалтып алған сияқтымын", "card_lost"),
    ("kk", "Картамда қанша теңге қалғанын қалай білемін?", "balance"),
    ("kk", "Пин-кодты жаңадан қою керек", "pin_reset"),
    ("kk", "Бөлімшелер неше де ашылады, сенбіде істей ме?", "branch_hours"),
    ("kk", "Долларды қандай бағаммен сатасыздар?", "currency_exchange"),
    ("kk", "Кредит алғым келеді, пайызы қанша?", "loan_rates"),
    ("kk", "Менің атымнан біреу ақша шешіп алды", "fraud"),
    ("kk", "Сіздерге шағым жазғым келеді", "complaint"),
    ("kk", "Қосымшаға кіре алмай қойдым", "app_login"),
    ("ru", "Мою карту заблокировали, как её открыть?", "card_blocked"),
    ("ru", "Я потеряла банковскую карту", "card_lost"),
    ("ru", "Хочу узнать, какой баланс на карте", "balance"),
    ("ru", "Как мне поменять пин-код?", "pin_reset"),
    ("ru", "Во сколько закрываются ваши отделения?", "branch_hours"),
    ("ru", "Сколько стоит доллар у вас?", "currency_exchange"),
    ("ru", "Под какой процент можно взять кредит?", "loan_rates"),
    ("ru", "Позовите живого оператора", "operator"),
    ("ru", "Хочу написать жалобу на отделение", "complaint"),
    ("ru", "Не пускает в приложение, что делать?", "app_login"),
]


def test_paraphrases_retrieve_the_right_entry(kb):
    results = [(text, expected, top(kb, text, language)) for language, text, expected in PARAPHRASES]
    report = [(t, e, p.id, p.score) for t, e, p in results if p.id != e or p.score < kb.threshold]
    assert sum(p.id == e for _, e, p in results) / len(results) >= 0.9, report
    assert sum(p.id == e and p.score >= kb.threshold for _, e, p in results) / len(results) >= 0.85, report
    for language in ("kk", "ru"):
        assert sum(p.id == e for (lang, _, _), (_, e, p) in zip(PARAPHRASES, results) if lang == language) >= 9, report


def test_search_returns_passages_in_the_requested_language(kb):
    hits = kb.search("картам бұғатталып қалды", "ru", 3)
    assert len(hits) == 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].id == "card_blocked" and hits[0].answer == kb.answer("card_blocked", "ru")
    assert hits[0].question in kb.by_id["card_blocked"].questions["kk"]
    assert kb("оператор", "kk", 1)[0].action == "handoff"  # a Retriever
    assert kb.search("", "kk", 2)[0].score == 0.0 and kb.search("картам", "kk", 0) == []


def test_cross_lingual_retrieval(tmp_path):
    """A Russian (or code-mixed) question finds an entry written only in Kazakh, and is answered in Russian."""
    data = {
        "id": "x", "languages": ["kk", "ru"], "default_language": "kk",
        "fallback": {"rephrase": {"kk": "Қайталаңызшы.", "ru": "Повторите."}, "handoff": {"kk": "Операторға қосамын.", "ru": "Соединяю."}},
        "entries": [
            {"id": "card_blocked", "questions": {"kk": ["Картам бұғатталып қалды", "Картамды блоктап тастады"]},
             "answer": {"kk": "Қосымшада бұғаттан шығарыңыз.", "ru": "Разблокируйте в приложении."}},
            {"id": "deposit", "questions": {"kk": ["Депозит пайызы қанша?", "Депозит ашқым келеді"]},
             "answer": {"kk": "Он төрт пайызға дейін.", "ru": "До четырнадцати процентов."}},
            {"id": "hours", "questions": {"kk": ["Бөлімше нешеде ашылады?"]}, "answer": {"kk": "Тоғызда.", "ru": "В девять."}},
        ],
    }
    kb = KnowledgeBase.load(_write(tmp_path, data))
    for text, expected in [("У меня карту заблокировали", "card_blocked"), ("Карта блокта, что делать", "card_blocked"),
                           ("Какой процент по депозиту?", "deposit")]:
        best = top(kb, text, "ru")
        assert best.id == expected, (text, kb.search(text, "ru", 3))
        assert best.answer == data["entries"][[e["id"] for e in data["entries"]].index(expected)]["answer"]["ru"]


def test_demo_kb_cross_lingual_and_fallback_language(kb, engine):
    # a Kazakh question answered in Russian and the reverse: the reply language is the caller's
    assert top(kb, "Доллар курсы қанша?", "ru").answer == kb.answer("currency_exchange", "ru")
    assert top(kb, "Какой курс доллара?", "kk").answer == kb.answer("currency_exchange", "kk")
    # Uzbek: an entry with an Uzbek answer uses it; one without falls back to the default language (kk)
    assert top(kb, "Dollar kursi qancha?", "uz").answer == kb.answer("currency_exchange", "uz")
    assert top(kb, "Kredit olmoqchiman", "uz").id == "loan_rates"
    no_uz = next(e for e in kb.entries if "uz" not in e.answers)
    assert kb.answer(no_uz, "uz") == no_uz.answers["kk"]
    assert kb.answer(no_uz, "kk-KZ") == no_uz.answers["kk"] and kb.answer(no_uz, "RU") == no_uz.answers["ru"]
    text, _, _ = reply(engine, "Kartam bloklanib qoldi", "uz")
    assert text == kb.answer("card_blocked", "uz")


LATIN_KAZAKH = [
    ("kartam bugattaldy", "card_blocked"),
    ("kartamdy zhogaltyp aldym", "card_lost"),
    ("pin kodty umytyp qaldym", "pin_reset"),
    ("balansymdy qalai bilemin", "balance"),
    ("dollar kursy qansha", "currency_exchange"),
    ("operatorga qosynyz", "operator"),
    ("Qosymshaga kire almai zhatyrmyn", "app_login"),
    ("Kredit paiyzy qansha?", "loan_rates"),
    ("Sau bolyñyz", "goodbye"),
]


@pytest.mark.parametrize("text,expected", LATIN_KAZAKH, ids=[t for t, _ in LATIN_KAZAKH])
def test_latin_script_kazakh(kb, text, expected):
    best = top(kb, text, "kk")
    assert best.id == expected and best.score >= kb.threshold, kb.search(text, "kk", 3)


# Hand-written Whisper-style errors: Kazakh letters written as Russian ones, dropped
# or swapped letters, words split and merged, phonetic spellings of Russian.
ASR_NOISY = [
    ("kk", "картам бугаттальп калды", "card_blocked"),
    ("kk", "карта мды блок тап тастапты", "card_blocked"),
    ("kk", "картамды жогалтып алдым", "card_lost"),
    ("kk", "карточкамды урлап кетти", "card_lost"),
    ("kk", "балансым канша екен", "balance"),
    ("kk", "шотымда канша акша бар", "balance"),
    ("kk", "пин кодты умытып калдым", "pin_reset"),
    ("kk", "пинкодымды озгерткым келеды", "pin_reset"),
    ("kk", "косымшага кыре алмай жатырмын", "app_login"),
    ("kk", "доллар курсы канша бугын", "currency_exchange"),
    ("kk", "операторга косыныз", "operator"),
    ("kk", "бөлімше сагат нешеде ашылад", "branch_hours"),
    ("kk", "кредит пайзы канша", "loan_rates"),
    ("kk", "аударган акшам келмеды", "transfer_not_arrived"),
    ("kk", "сау болыныз", "goodbye"),
    ("ru", "у меня за блокировали карту", "card_blocked"),
    ("ru", "я потерял карточ ку", "card_lost"),
    ("ru", "как перевести деньги на другую карт", "transfer_how"),
    ("ru", "забыл пинкот", "pin_reset"),
    ("ru", "не могу зайти в прилажение", "app_login"),
    ("ru", "какой курс далара", "currency_exchange"),
    ("ru", "саедините с аператором", "operator"),
    ("ru", "до скольки работаит отделение", "branch_hours"),
    ("ru", "не приходит эсэмэс с кодом", "sms_code"),
    ("ru", "банкомат сьел карту", "atm_problem"),
    ("ru", "хочу аставить жалобу", "complaint"),
]


def test_asr_noisy_questions_mostly_retrieve_the_right_entry(kb):
    results = [(text, expected, top(kb, text, lang)) for lang, text, expected in ASR_NOISY]
    right = [r for r in results if r[2].id == r[1] and r[2].score >= kb.threshold]
    misses = [(t, e, p.id, p.score) for t, e, p in results if (t, e, p) not in right]
    assert len(right) / len(results) >= 0.85, misses


def test_greetings_and_thanks_do_not_hide_the_question(kb):
    assert top(kb, "Сәлеметсіз бе, картам бұғатталып қалды", "kk").id == "card_blocked"
    assert top(kb, "Здравствуйте, девушка, какой курс доллара?", "ru").id == "currency_exchange"
    assert top(kb, "Рахмет, ал депозит пайызы қанша?", "kk").id == "deposit_rates"
    assert top(kb, "Здравствуйте", "ru").id == "greeting"
    assert top(kb, "Рахмет", "kk").id == "thanks"
    assert top(kb, "Рахмет, сау болыңыз", "kk").id == "goodbye"


def test_search_is_fast(kb):
    queries = [q for _, q, _ in ASR_NOISY + PARAPHRASES]
    times = []
    for q in queries * 5:
        t0 = time.perf_counter()
        kb.search(q, "kk", 3)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.005 and max(times) < 0.05
    t0 = time.perf_counter()
    KnowledgeBase.load()
    assert time.perf_counter() - t0 < 3.0


# --------------------------------------------------------------------------- the engine


def test_engine_implements_the_interface(engine):
    assert isinstance(engine, DialogueEngine)
    assert engine.name == "kb" and engine.model_id == "kb:demo-bank@1.0.0"


def test_answer_is_streamed_as_sentences_and_updates_state(engine, kb):
    state = DialogueState(misunderstood=1)
    text, action, out = reply(engine, "Картамды жоғалтып алдым", "kk", state)
    assert text == kb.answer("card_lost", "kk") and action is None
    assert len(out) == len(split_sentences(text)) >= 2
    assert state.misunderstood == 0 and state.last_entry == "card_lost"


def test_gibberish_asks_to_rephrase_then_hands_off(engine, kb):
    state = DialogueState()
    assert kb.max_misunderstood == 2
    text, action, _ = reply(engine, "шмыг абырвалг тыр пыр", "ru", state)
    assert text == kb.rephrase("ru") and action is None and state.misunderstood == 1
    text, action, _ = reply(engine, "ммм эээ бла бла", "ru", state)
    assert text == kb.handoff("ru") and state.misunderstood == 2
    assert action == Action("handoff", "not_understood", action.data) and action.data["misunderstood"] == 2


def test_good_answer_resets_the_misunderstanding_count(engine, kb):
    state = DialogueState()
    assert reply(engine, "qwxz vbnm", "kk", state)[0] == kb.rephrase("kk")
    assert reply(engine, "Депозит пайызы қанша?", "kk", state)[0] == kb.answer("deposit_rates", "kk")
    assert state.misunderstood == 0 and state.last_entry == "deposit_rates"
    text, action, _ = reply(engine, "qwxz vbnm", "kk", state)
    assert text == kb.rephrase("kk") and action is None  # counting starts again


def test_max_misunderstood_is_configurable(tmp_path, demo_data, engine):
    data = copy.deepcopy(demo_data)
    data["settings"]["max_misunderstood"] = 3
    three = KbEngine(KnowledgeBase.load(_write(tmp_path, data)))
    state = DialogueState()
    actions = [reply(three, "ыыы ъъъ", "kk", state)[1] for _ in range(3)]
    assert actions[:2] == [None, None] and actions[2].kind == "handoff" and actions[2].reason == "not_understood"
    empty_state = DialogueState()
    assert reply(engine, "   ", "kk", empty_state)[0] == engine.kb.rephrase("kk") and empty_state.misunderstood == 1


def test_actions(engine, kb):
    text, action, _ = reply(engine, "Операторға қосыңызшы", "kk")
    assert text == kb.answer("operator", "kk") and action.kind == "handoff" and action.reason == "user_request"
    assert action.data["entry"] == "operator"
    _, action, _ = reply(engine, "Соедините с оператором", "ru")
    assert (action.kind, action.reason) == ("handoff", "user_request")
    _, action, _ = reply(engine, "Мне позвонили мошенники и списали деньги", "ru")
    assert (action.kind, action.reason) == ("handoff", "fraud")
    text, action, _ = reply(engine, "Рахмет, сау болыңыз", "kk")
    assert text == kb.answer("goodbye", "kk") and (action.kind, action.reason) == ("end", "goodbye")
    assert reply(engine, "Какой курс доллара?", "ru")[1] is None


def test_uses_the_last_user_turn(engine, kb):
    history = [
        Turn("user", "Картам бұғатталып қалды", "kk"),
        Turn("assistant", kb.answer("card_blocked", "kk"), "kk"),
        Turn("user", "Доллар курсы қанша?", "kk"),
    ]
    text = "".join(x for x in engine.respond(history, "kk", DialogueState()) if isinstance(x, str))
    assert text == kb.answer("currency_exchange", "kk")
    assert "".join(engine.respond([], "kk", DialogueState())) == kb.rephrase("kk")


def _clarifying_pattern(kb) -> re.Pattern:
    """Every clarifying question the engine may put: the KB's (or built-in) templates with the
    KB's own entry names (topics, or quoted example questions) filled in."""
    alts = []
    for key in ("confirm", "choose", "reask"):
        for lang, template in kb.clarify_texts[key].items():
            names = "|".join(sorted({re.escape(kb.topic(e, lang)) for e in kb.entries}, key=len, reverse=True))
            body = re.escape(template).replace(r"\{topic\}", f"(?:{names})").replace(r"\{a\}", f"(?:{names})").replace(r"\{b\}", f"(?:{names})")
            alts.append(body)
    return re.compile("(?:" + "|".join(alts) + ")(?: (?:" + "|".join(alts) + "))?")


def test_never_says_anything_outside_the_knowledge_base(engine, kb):
    said_texts = set(kb.texts())
    clarifying = _clarifying_pattern(kb)
    inputs = [(lang, q) for e in kb.entries for lang, qs in e.questions.items() for q in qs]
    inputs += [(lang, t) for lang, t, _ in ASR_NOISY + PARAPHRASES]
    inputs += [(json.loads(line)["language"], json.loads(line)["text"]) for line in HELDOUT.read_text(encoding="utf-8").splitlines()]
    inputs += [("kk", "ааа"), ("ru", "расскажи анекдот про банк"), ("en", "what is the weather"), ("uz", "salom"), ("tt", "")]
    for lang, text in inputs:
        state = DialogueState()
        for _ in range(2):  # second round for the handoff text
            pieces = [x for x in engine.respond([Turn("user", text, lang)], lang, state) if isinstance(x, str)]
            said = "".join(pieces)
            assert pieces and (said in said_texts or clarifying.fullmatch(said.strip())), (text, pieces)


# --------------------------------------------------------------------------- held-out evaluation


# Two paraphrases a new user typed that got another entry's answer, confidently (issue 12):
# "құпия код" (secret code = PIN) and "салым" (deposit) are in no example question. Fixed by the
# entries' terms, not by adding these sentences to the knowledge base.
TRAPS = [
    ("Картаның құпия кодын есімнен шығарып алдым", "kk", "pin_reset"),
    ("Салым ашсам жылына қанша пайыз бересіздер?", "kk", "deposit_rates"),
]


@pytest.mark.parametrize("text,lang,expected", TRAPS)
def test_topic_terms_fix_confidently_wrong_answers(kb, text, lang, expected):
    assert normalise(text) not in {normalise(q) for e in kb.entries for qs in e.questions.values() for q in qs}
    hit = top(kb, text, lang)
    assert hit.id == expected and hit.score >= kb.threshold
    assert kb.decide(kb.scores_for(text))[0] in ("answer", "confirm")  # never another entry's answer
    # without the entries' terms the same knowledge base gives the entry much less: the terms are the fix
    # (before the sound-alike n-grams, another entry even came first)
    data = yaml.safe_load(DEMO_KB_PATH.read_text(encoding="utf-8"))
    for e in data["entries"]:
        e.pop("terms", None)
    bare = KnowledgeBase.from_dict(data)
    i = [e.id for e in kb.entries].index(expected)
    assert kb.scores_for(text)[i] - bare.scores_for(text)[i] >= 0.1


def test_demo_kb_terms_are_distinctive(kb):
    """A term that also matches another entry's example question pulls that entry's callers away
    (as "перевод" did with "Берёте процент за перевод?"); the one left is a PIN question of card_blocked,
    which its own example still wins."""
    assert [(e, t, o) for e, t, o, _ in kb.shared_terms()] == [("pin_reset", ("пин",), "card_blocked")]


def test_terms_match_word_beginnings_across_suffixes_and_scripts(tmp_path, demo_data):
    kb = KnowledgeBase.from_dict(demo_data)
    terms = kb.matched_terms
    ids = [e.id for e in kb.entries]

    def hits(text):
        m = terms(normalise(text)) or [None] * len(ids)
        return {i for i, t in zip(ids, m) if t}

    assert "deposit_rates" in hits("салымымды жабайын")  # салым + ым + ды
    assert "deposit_rates" in hits("хочу открыть вклады")
    assert "deposit_rates" in hits("omonat ochmoqchiman")  # Uzbek Latin, transliterated
    assert "pin_reset" in hits("құпия кодымды ұмыттым")  # a two-word term, both words inflected
    assert "pin_reset" not in hits("құпия ақпарат кодтары")  # words not next to each other
    assert "deposit_rates" not in hits("исалым")  # a term matches from a word's start only
    assert kb.matched_terms("мүлде басқа сұрақ") is None


def test_heldout_set_is_held_out_and_scores(kb):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import eval_kb
    finally:
        sys.path.pop(0)
    items = eval_kb.load_heldout(HELDOUT)
    in_scope = [it for it in items if it["expected"] is not None]
    assert len(in_scope) >= 60 and sum(it["noisy"] for it in in_scope) >= 20
    assert {it["language"] for it in in_scope} >= {"kk", "ru"}
    assert {it["expected"] for it in in_scope} <= set(kb.by_id)
    assert not eval_kb.leaks(kb, items)
    figures = eval_kb.evaluate(kb, items)["figures"]
    # regression floors (measured: see docs/knowledge_base.md)
    assert figures["clean"]["top1"] >= 0.9 and figures["noisy"]["top1"] >= 0.85
    # right at once or after the caller confirms; a wrong answer never (issue 12: confirm instead of guessing)
    assert figures["all"]["answered"] + figures["all"]["confirmed"] >= 0.95 and figures["all"]["answered"] >= 0.7
    assert figures["all"]["wrong_answer"] == 0 and figures["out_of_scope_rejected"]["rate"] >= 0.75


def test_documented_example_is_a_valid_knowledge_base(tmp_path):
    doc = (ROOT / "docs" / "knowledge_base.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    path = tmp_path / "example.yaml"
    path.write_text(example, encoding="utf-8")
    kb = KnowledgeBase.load(path)
    assert kb.model_id == "kb:my-bank@1.2.0" and kb.threshold == 0.25 and kb.max_misunderstood == 2
    assert top(kb, "Здравствуйте, карту заблокировали", "ru").id == "card_blocked"
    assert kb.by_id["operator"].action == ("handoff", "user_request") and kb.by_id["goodbye"].action == ("end", "goodbye")
    assert "scripts/eval_kb.py" in doc and (ROOT / "scripts" / "eval_kb.py").is_file()
