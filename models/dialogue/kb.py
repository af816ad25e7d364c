"""The embedded default dialogue engine: grounded answers from the operator's knowledge base.

A knowledge base (docs/knowledge_base.md) is a YAML or JSON file of entries,
each with example questions per language, an answer per language and an
optional action.  The engine finds the entry whose example questions are
closest to what the caller said and speaks that entry's answer -- it never
says anything that is not written in the file.

Matching is TF-IDF over character n-grams and cosine similarity: 2-5-grams
inside words padded with word boundaries, plus 2-3-grams across the text with
its spaces removed (recognisers split and merge words).  Character n-grams
share the stem of agglutinative Turkic word forms ("картам", "картамды",
"картаны") and survive recognition errors (a dropped or substituted letter
spoils a few n-grams, not the word).  An entry's score mixes its closest
example question with the centroid of all its examples.  Before matching
every text is normalised to one folded Cyrillic form: lowercase, NFKC,
punctuation dropped, Kazakh letters folded onto their Russian look-alikes
(ә->а, қ->к, ң->н, і->и ...), and Latin-script Kazakh/Uzbek transliterated
("kartam bugattaldy" == "картам бұғатталды"); greetings and thanks listed as
``fillers`` are dropped so they do not hide the question.  A Russian question
can match a Kazakh example and vice versa (code-mixed speech shares words);
the answer is always given in the caller's language.

Built with numpy only; the index is made once at load and a search takes
well under a millisecond for the demo knowledge base.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from models.dialogue.base import Action, DialogueEngine, DialogueState, Passage, Turn
from models.text import normalise, normalize_language, sentence_pieces

DEMO_KB_PATH = Path(__file__).resolve().parent.parent / "data" / "demo_bank_kb.yaml"

DEFAULT_THRESHOLD = 0.25
DEFAULT_MAX_MISUNDERSTOOD = 2
# Retrieval constants, chosen by 5-fold cross-validation over the demo knowledge
# base's own example questions and on those questions spoken by espeak-ng and
# transcribed by whisper-base -- never on tests/data/kb_heldout.jsonl.
NGRAM_MIN = 2
NGRAM_MAX = 5
PREFIX_WEIGHT = 2.0
"""Word-initial n-grams (" карт") weigh more: Turkic and Russian stems come first."""
SUFFIX_WEIGHT = 0.7
"""Word-final n-grams ("ды ", "мын ") weigh less: mostly grammatical endings."""
CENTROID_WEIGHT = 0.6
"""Entry score = 0.4 x best example question + 0.6 x the entry's centroid."""
MIN_LETTERS = 4
"""Shorter utterances ("да", "нет", "жоқ") have their scores scaled down unless they are an example question."""
JOINED_NGRAM_MIN = 2
JOINED_NGRAM_MAX = 3
JOINED_WEIGHT = 2.0
"""Extra n-grams over the text with its spaces removed: recognisers split and merge
words ("картамблокталды", "пин код"), which breaks word-bounded n-grams only."""
PHONETIC_NGRAM_MIN = 2
PHONETIC_NGRAM_MAX = 3
PHONETIC_WEIGHT = 3.0
"""Extra n-grams over a coarser, sound-alike key of the joined text (voiced consonants devoiced,
х -> к, о -> а, е -> и): what a recogniser writes for Kazakh it mishears ("буха тартамын" for
"бұғатталған") shares more of them with the question meant. Chosen with the decision settings on
the tuning split of scripts/bench_understanding.py (spoken right 21 -> 31 of 122, typed unchanged,
none wrong), never on its test split or kb_heldout.jsonl."""
_PHONETIC = str.maketrans({"б": "п", "д": "т", "г": "к", "з": "с", "ж": "ш", "в": "ф", "х": "к", "о": "а", "е": "и"})
DEFAULT_REASONS = {"handoff": "user_request", "end": "goodbye"}
TERM_BONUS = 0.12
"""Added to an entry's score when the caller used one of its ``terms`` (its topic words and
synonyms: "салым" for deposits, "құпия код" for the PIN). Chosen, like the constants above, on the
demo knowledge base's own example questions (leave-one-out), never on kb_heldout.jsonl."""
MIN_TERM_LETTERS = 3
"""Each word of a term matches caller words it begins (Turkic suffixes and Russian endings follow
the stem): so a term's first word needs this many letters to say anything (later ones two)."""

_LANG = re.compile(r"^[a-z]{2,3}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = {"id", "version", "name", "description", "default_language", "languages", "settings", "fallback", "fillers", "entries"}
_ENTRY_KEYS = {"id", "topic", "confirm", "questions", "terms", "answer", "action", "notes"}
_SETTINGS_KEYS = {"threshold", "max_misunderstood", "confirm", "answer_threshold", "answer_margin", "choose_margin"}
_FALLBACK_KEYS = {"rephrase", "handoff"}
_CLARIFY_KEYS = {"confirm", "choose", "reask", "dtmf_hint"}
"""Optional fallback texts of the clarifying turns; built-in texts (kk, ru, uz, en) stand in for missing ones."""
BUILTIN_CLARIFY: dict[str, dict[str, str]] = {
    "confirm": {
        "kk": "Сіз {topic} туралы сұрап тұрсыз ба? Иә немесе жоқ деп айтыңыз.",
        "ru": "Правильно ли я понял, вы спрашиваете про {topic}? Скажите да или нет.",
        "uz": "Siz {topic} haqida soʻrayapsizmi? Ha yoki yoʻq deb ayting.",
        "en": "Did I understand right that you are asking about {topic}? Please say yes or no.",
    },
    "choose": {
        "kk": "Сіз {a} туралы ма, әлде {b} туралы ма сұрап тұрсыз? Біріншісі немесе екіншісі деп айтыңыз.",
        "ru": "Вы спрашиваете про {a} или про {b}? Скажите первое или второе.",
        "uz": "Siz {a} haqida soʻrayapsizmi yoki {b} haqidami? Birinchisi yoki ikkinchisi deb ayting.",
        "en": "Are you asking about {a} or about {b}? Please say first or second.",
    },
    "reask": {
        "kk": "Кешіріңіз, иә немесе жоқ деп жауап беріңізші.",
        "ru": "Извините, ответьте, пожалуйста, да или нет.",
        "uz": "Kechirasiz, iltimos, ha yoki yoʻq deb javob bering.",
        "en": "Sorry, please answer yes or no.",
    },
    "dtmf_hint": {
        "kk": "Бір немесе екі батырмасын басуға да болады.",
        "ru": "Можно также нажать один или два.",
        "uz": "Bir yoki ikki tugmasini bossangiz ham boʻladi.",
        "en": "You can also press one or two.",
    },
}
# Decision defaults (settings.answer_threshold, answer_margin, choose_margin): calibrated with
# scripts/bench_understanding.py --calibrate on its tuning split (espeak-ng voices and rates kept
# apart from the test split), never on tests/data/kb_heldout.jsonl or the test split.
# Calibrated 2026-12-03 (68 tuning questions, typed + espeak-ng clean + phone leg, whisper-base):
# no typed question and no spoken one answered wrong on the tuning split (README, *Understanding*).
DEFAULT_CONFIRM_THRESHOLD = 0.18
"""settings.threshold when clarifying questions are on: the floor of a confirmation."""
DEFAULT_ANSWER_THRESHOLD = 0.30
DEFAULT_ANSWER_MARGIN = 0.14
DEFAULT_CHOOSE_MARGIN = 0.06
NBEST_BETA = 3.0
"""Weight of the recogniser's hypotheses: exp(NBEST_BETA x (avg log-prob - the best's)), normalised."""


class KnowledgeBaseError(ValueError):
    """A knowledge-base file that cannot be used; the message is one line naming the file, entry and field."""


def _features(norm: str) -> dict[str, int]:
    """Counts of character n-grams: NGRAM_MIN..NGRAM_MAX inside each word padded with spaces,
    and JOINED_NGRAM_MIN..JOINED_NGRAM_MAX across the text with its spaces removed."""
    counts: dict[str, int] = {}
    for word in norm.split():
        padded = f" {word} "
        for n in range(NGRAM_MIN, NGRAM_MAX + 1):
            for i in range(len(padded) - n + 1):
                g = padded[i : i + n]
                counts[g] = counts.get(g, 0) + 1
    joined = norm.replace(" ", "")
    for n in range(JOINED_NGRAM_MIN, JOINED_NGRAM_MAX + 1):
        for i in range(len(joined) - n + 1):
            g = "\x01" + joined[i : i + n]  # marked apart from the word-bounded n-grams
            counts[g] = counts.get(g, 0) + 1
    sound = joined.translate(_PHONETIC)
    for n in range(PHONETIC_NGRAM_MIN, PHONETIC_NGRAM_MAX + 1):
        for i in range(len(sound) - n + 1):
            g = "\x02" + sound[i : i + n]
            counts[g] = counts.get(g, 0) + 1
    return counts


def _unit(v: dict[str, float]) -> dict[str, float]:
    n = math.sqrt(sum(x * x for x in v.values()))
    return {g: x / n for g, x in v.items()} if n > 0 else v


class _Postings:
    """Sparse row vectors stored by feature (an inverted index); ``dot`` scores all rows against a query."""

    def __init__(self, vectors: list[dict[str, float]], vocab: dict[str, int]) -> None:
        postings: list[list[tuple[int, float]]] = [[] for _ in vocab]
        for ri, v in enumerate(vectors):
            for g, w in v.items():
                postings[vocab[g]].append((ri, w))
        lengths = np.array([len(p) for p in postings], dtype=np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(lengths)])
        self.rows = np.array([ri for p in postings for ri, _ in p], dtype=np.int64)
        self.vals = np.array([w for p in postings for _, w in p], dtype=np.float64)
        self.n = len(vectors)

    def dot(self, ids: np.ndarray, w: np.ndarray) -> np.ndarray:
        if ids.size == 0:
            return np.zeros(self.n)
        starts = self.indptr[ids]
        lens = self.indptr[ids + 1] - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(self.n)
        # positions of every posting of every query feature, without a Python loop
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(total)
        weights = self.vals[offsets] * np.repeat(w, lens)
        return np.clip(np.bincount(self.rows[offsets], weights=weights, minlength=self.n), 0.0, 1.0)


# --------------------------------------------------------------------------- the knowledge base


@dataclass(frozen=True)
class Entry:
    id: str
    questions: dict[str, tuple[str, ...]]
    answers: dict[str, str]
    action: tuple[str, str] | None
    """(kind, reason) or None."""
    terms: tuple[tuple[str, ...], ...] = ()
    """Normalised topic words and synonyms, each a tuple of word stems (matched as word prefixes)."""
    topic: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Per language, a short name of the entry's subject for clarifying questions ("блокировку карты")."""
    confirm: bool = True
    """False: never asked about; answered whenever it is the best match above the threshold
    (greetings, thanks, a request for a person, fraud: a wrong guess costs little or help is urgent)."""


class KnowledgeBase:
    """A validated knowledge base with its retrieval index (built once, read-only afterwards)."""

    def __init__(self, data: Any, source: str = "<knowledge base>", digest: str | None = None) -> None:
        self.source = source
        self.sha256 = digest or hashlib.sha256(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()
        self._validate(data)
        self._build_index()

    # ----- loading

    @classmethod
    def load(cls, path: str | Path | None = None) -> "KnowledgeBase":
        """Load ``path`` (.yaml, .yml or .json); None loads the demo bank knowledge base."""
        p = Path(path) if path is not None else DEMO_KB_PATH
        name = str(path) if path is not None else p.name
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise KnowledgeBaseError(f"{name}: cannot read the knowledge base: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise KnowledgeBaseError(f"{name}: not UTF-8 text (byte {e.start})") from None
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise KnowledgeBaseError(f"{name}: {where}YAML syntax error: {problem}") from None
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise KnowledgeBaseError(f"{name}: line {e.lineno}, column {e.colno}: JSON syntax error: {e.msg}") from None
        else:
            raise KnowledgeBaseError(f"{name}: unknown knowledge-base format {suffix or '(no extension)'!r}; use .yaml, .yml or .json")
        return cls(data, source=name, digest=hashlib.sha256(raw).hexdigest())

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "KnowledgeBase":
        return cls(data, source=source)

    # ----- validation

    def _fail(self, where: str, message: str) -> KnowledgeBaseError:
        return KnowledgeBaseError(f"{self.source}: {where + ': ' if where else ''}{message}")

    def _text_map(self, value: Any, where: str, what: str, required: list[str]) -> dict[str, str]:
        if not isinstance(value, dict) or not value:
            raise self._fail(where, f"{what} must be a mapping of language to text, e.g. {{kk: ..., ru: ...}}")
        out: dict[str, str] = {}
        for lang, text in value.items():
            lang = str(lang)
            if not _LANG.match(lang):
                raise self._fail(where, f"{what}: {lang!r} is not a language code (two or three lowercase letters: kk, ru, uz)")
            if not isinstance(text, str) or not text.strip():
                raise self._fail(where, f"{what} has no {lang!r} text")
            out[lang] = " ".join(text.split())
        for lang in required:
            if lang not in out:
                raise self._fail(where, f"{what} has no {lang!r} text")
        return out

    def _validate(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise self._fail("", "the top level must be a mapping with id, languages, fallback and entries")
        unknown = sorted(set(map(str, data)) - _TOP_KEYS)
        if unknown:
            raise self._fail("", f"unknown top-level field {unknown[0]!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
        for key in ("id", "languages", "fallback", "entries"):
            if key not in data:
                raise self._fail("", f"missing required field {key!r}")
        if not isinstance(data["id"], str) or not _ID.match(data["id"]):
            raise self._fail("id", f"{data['id']!r} is not a valid id (letters, digits, '-', '_', '.')")
        self.id: str = data["id"]
        version = data.get("version")
        if version is not None and not isinstance(version, (str, int, float)):
            raise self._fail("version", "must be a string such as \"1.0.0\"")
        self.version: str | None = str(version) if version is not None else None
        self.name: str = str(data.get("name") or self.id)

        langs = data["languages"]
        if not isinstance(langs, list) or not langs or not all(isinstance(x, str) and _LANG.match(x) for x in langs):
            raise self._fail("languages", "must be a non-empty list of language codes, e.g. [kk, ru]")
        self.languages: list[str] = list(dict.fromkeys(langs))
        self.default_language: str = data.get("default_language", self.languages[0])
        if self.default_language not in self.languages:
            raise self._fail("default_language", f"{self.default_language!r} is not in languages {self.languages}")

        settings = data.get("settings") or {}
        if not isinstance(settings, dict):
            raise self._fail("settings", "must be a mapping")
        unknown = sorted(set(map(str, settings)) - _SETTINGS_KEYS)
        if unknown:
            raise self._fail("settings", f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_SETTINGS_KEYS))})")
        confirm = settings.get("confirm", True)
        if not isinstance(confirm, bool):
            raise self._fail("settings.confirm", f"must be true or false, not {confirm!r}")
        self.confirm: bool = confirm
        """Ask the caller to confirm (or choose) when the best match is not clearly above the rest."""
        # with clarifying questions the threshold is the floor of a confirmation; without, of an answer
        self.threshold = self._fraction(settings, "threshold", DEFAULT_CONFIRM_THRESHOLD if confirm else DEFAULT_THRESHOLD)
        max_mis = settings.get("max_misunderstood", DEFAULT_MAX_MISUNDERSTOOD)
        if isinstance(max_mis, bool) or not isinstance(max_mis, int) or max_mis < 1:
            raise self._fail("settings.max_misunderstood", f"must be a whole number of at least 1, not {max_mis!r}")
        self.max_misunderstood: int = max_mis
        self.answer_threshold = self._fraction(settings, "answer_threshold", DEFAULT_ANSWER_THRESHOLD)
        self.answer_margin = self._fraction(settings, "answer_margin", DEFAULT_ANSWER_MARGIN, zero=True)
        self.choose_margin = self._fraction(settings, "choose_margin", DEFAULT_CHOOSE_MARGIN, zero=True)
        if self.answer_threshold < self.threshold:
            raise self._fail("settings.answer_threshold", f"must not be below settings.threshold ({self.threshold})")

        fallback = data["fallback"]
        if not isinstance(fallback, dict):
            raise self._fail("fallback", "must be a mapping with rephrase and handoff texts")
        unknown = sorted(set(map(str, fallback)) - _FALLBACK_KEYS - _CLARIFY_KEYS)
        if unknown:
            raise self._fail("fallback", f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FALLBACK_KEYS | _CLARIFY_KEYS))})")
        for key in sorted(_FALLBACK_KEYS):
            if key not in fallback:
                raise self._fail("fallback", f"missing {key!r} texts")
        self.rephrase_texts = self._text_map(fallback["rephrase"], "fallback.rephrase", "text", self.languages)
        self.handoff_texts = self._text_map(fallback["handoff"], "fallback.handoff", "text", self.languages)
        self.clarify_texts: dict[str, dict[str, str]] = {}
        for key in sorted(_CLARIFY_KEYS):
            texts = dict(BUILTIN_CLARIFY[key])
            if key in fallback:
                texts.update(self._text_map(fallback[key], f"fallback.{key}", "text", []))
            for lang, text in texts.items():
                try:
                    text.format(topic="", a="", b="")
                except (KeyError, IndexError, ValueError):
                    raise self._fail(f"fallback.{key}", f"{lang!r} text has a placeholder other than {{topic}}, {{a}}, {{b}}") from None
            self.clarify_texts[key] = texts

        fillers = data.get("fillers") or {}
        if not isinstance(fillers, dict):
            raise self._fail("fillers", "must be a mapping of language to a list of phrases")
        phrases: set[str] = set()
        for lang, items in fillers.items():
            if not _LANG.match(str(lang)):
                raise self._fail("fillers", f"{str(lang)!r} is not a language code")
            if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
                raise self._fail(f"fillers.{lang}", "must be a list of non-empty phrases")
            phrases.update(n for n in map(normalise, items) if n)
        # longest first, so "көп рахмет" goes before "рахмет"
        self.fillers: list[str] = sorted(phrases, key=lambda s: (-len(s), s))

        entries = data["entries"]
        if not isinstance(entries, list) or not entries:
            raise self._fail("entries", "must be a non-empty list")
        self.entries: list[Entry] = []
        seen_ids: set[str] = set()
        owner: dict[str, str] = {}
        for i, raw in enumerate(entries):
            if not isinstance(raw, dict):
                raise self._fail(f"entry #{i + 1}", "must be a mapping with id, questions and answer")
            eid = raw.get("id")
            if not isinstance(eid, str) or not _ID.match(eid):
                raise self._fail(f"entry #{i + 1}", f"id {eid!r} is missing or not valid (letters, digits, '-', '_', '.')")
            where = f"entry {eid!r}"
            if eid in seen_ids:
                raise self._fail(where, "duplicate id")
            seen_ids.add(eid)
            unknown = sorted(set(map(str, raw)) - _ENTRY_KEYS)
            if unknown:
                raise self._fail(where, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
            for key in ("questions", "answer"):
                if key not in raw:
                    raise self._fail(where, f"missing {key!r}")
            qs = raw["questions"]
            if not isinstance(qs, dict) or not qs:
                raise self._fail(where, "questions must be a mapping of language to a list of example questions")
            questions: dict[str, tuple[str, ...]] = {}
            for lang, items in qs.items():
                lang = str(lang)
                if not _LANG.match(lang):
                    raise self._fail(where, f"questions: {lang!r} is not a language code")
                if isinstance(items, str):
                    items = [items]
                if not isinstance(items, list) or not items:
                    raise self._fail(where, f"questions.{lang} must be a non-empty list of questions")
                clean = []
                for q in items:
                    if not isinstance(q, str) or not normalise(q):
                        raise self._fail(where, f"questions.{lang} has an empty or non-text question {q!r}")
                    key = normalise(q)
                    if owner.get(key, eid) != eid:
                        raise self._fail(where, f"question {q!r} is also an example of entry {owner[key]!r}")
                    owner[key] = eid
                    clean.append(" ".join(q.split()))
                questions[lang] = tuple(dict.fromkeys(clean))
            answers = self._text_map(raw["answer"], where, "answer", self.languages)
            action = self._action(raw.get("action"), where)
            terms = self._terms(raw.get("terms"), where)
            topic = self._text_map(raw["topic"], where, "topic", []) if raw.get("topic") is not None else {}
            confirm = raw.get("confirm", True)
            if not isinstance(confirm, bool):
                raise self._fail(where, f"confirm must be true or false, not {confirm!r}")
            self.entries.append(Entry(eid, questions, answers, action, terms, topic, confirm))
        self.by_id: dict[str, Entry] = {e.id: e for e in self.entries}

    def _fraction(self, settings: dict, key: str, default: float, zero: bool = False) -> float:
        value = settings.get(key, default)
        low_ok = zero and value == 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low_ok or 0 < value < 1):
            raise self._fail(f"settings.{key}", f"must be a number {'from 0' if zero else 'between 0'} {'up to' if zero else 'and'} 1, not {value!r}")
        return float(value)

    def _terms(self, value: Any, where: str) -> tuple[tuple[str, ...], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self._fail(where, "terms must be a mapping of language to a list of words or phrases")
        out: list[tuple[str, ...]] = []
        for lang, items in value.items():
            if not _LANG.match(str(lang)):
                raise self._fail(where, f"terms: {str(lang)!r} is not a language code")
            if isinstance(items, str):
                items = [items]
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise self._fail(where, f"terms.{lang} must be a list of words or phrases")
            for t in items:
                words = tuple(normalise(t).split())
                if not words or len(words[0]) < MIN_TERM_LETTERS or any(len(w) < 2 for w in words):
                    raise self._fail(where, f"terms.{lang}: {t!r} needs a first word of at least {MIN_TERM_LETTERS} letters (later ones 2)")
                out.append(words)
        return tuple(dict.fromkeys(out))

    def _action(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None or value == "none":
            return None
        if isinstance(value, str):
            kind, reason = value, None
        elif isinstance(value, dict):
            unknown = sorted(set(map(str, value)) - {"kind", "reason"})
            if unknown:
                raise self._fail(where, f"action: unknown field {unknown[0]!r} (allowed: kind, reason)")
            kind, reason = value.get("kind"), value.get("reason")
        else:
            raise self._fail(where, f"action must be null, handoff, end or {{kind: ..., reason: ...}}, not {value!r}")
        if kind not in DEFAULT_REASONS:
            raise self._fail(where, f"action kind {kind!r} is not one of: handoff, end")
        if reason is not None and (not isinstance(reason, str) or not re.match(r"^[a-z][a-z0-9_]*$", reason)):
            raise self._fail(where, f"action reason {reason!r} must be a lowercase word such as user_request")
        return kind, reason or DEFAULT_REASONS[kind]

    # ----- index

    def strip_fillers(self, norm: str) -> str:
        """``norm`` without filler phrases (greetings, thanks); unchanged if nothing else is left."""
        if not self.fillers or not norm:
            return norm
        padded = f" {norm} "
        for f in self.fillers:
            if f" {f} " in padded:
                padded = padded.replace(f" {f} ", " ")
                while f" {f} " in padded:
                    padded = padded.replace(f" {f} ", " ")
        rest = " ".join(padded.split())
        return rest or norm

    def _weights(self, counts: dict[str, int]) -> dict[str, float]:
        """Sublinear tf x idf x position weight; n-grams never seen in the knowledge base get the top idf."""
        out = {}
        for g, c in counts.items():
            fid = self._vocab.get(g)
            idf = self._idf[fid] if fid is not None else self._idf_unknown
            pos = (
                JOINED_WEIGHT if g[0] == "\x01" else PHONETIC_WEIGHT if g[0] == "\x02"
                else PREFIX_WEIGHT if g[0] == " " else SUFFIX_WEIGHT if g[-1] == " " else 1.0
            )
            out[g] = (1.0 + math.log(c)) * idf * pos
        return out

    def _build_index(self) -> None:
        rows: list[dict[str, int]] = []
        self._exact: set[str] = set()
        self._row_entry: list[int] = []
        self._row_question: list[str] = []
        for ei, e in enumerate(self.entries):
            for lang, qs in e.questions.items():
                for q in qs:
                    norm = self.strip_fillers(normalise(q))
                    self._exact.add(norm)
                    rows.append(_features(norm))
                    self._row_entry.append(ei)
                    self._row_question.append(q)
        vocab: dict[str, int] = {}
        for r in rows:
            for g in r:
                vocab.setdefault(g, len(vocab))
        self._vocab = vocab
        n_entries = len(self.entries)
        # document frequency counted over entries, not example questions: an n-gram
        # shared by all examples of one entry is exactly what identifies it
        grams_of_entry: list[set[str]] = [set() for _ in range(n_entries)]
        for r, ei in zip(rows, self._row_entry):
            grams_of_entry[ei].update(r)
        df = np.zeros(len(vocab), dtype=np.float64)
        for grams in grams_of_entry:
            df[[vocab[g] for g in grams]] += 1
        self._idf = np.log((1 + n_entries) / (1 + df)) + 1.0
        self._idf_unknown = math.log(1 + n_entries) + 1.0
        q_vecs = [_unit(self._weights(r)) for r in rows]
        e_vecs: list[dict[str, float]] = [{} for _ in range(n_entries)]
        for v, ei in zip(q_vecs, self._row_entry):
            acc = e_vecs[ei]
            for g, w in v.items():
                acc[g] = acc.get(g, 0.0) + w
        self._questions = _Postings(q_vecs, vocab)
        self._centroids = _Postings([_unit(v) for v in e_vecs], vocab)
        self._row_entry_arr = np.array(self._row_entry, dtype=np.int64)
        # rows are grouped by entry in order: reduceat boundaries
        self._entry_starts = np.searchsorted(self._row_entry_arr, np.arange(n_entries))
        self._any_terms = any(e.terms for e in self.entries)

    # ----- queries

    def _query(self, norm: str) -> tuple[np.ndarray, np.ndarray]:
        """The (normalised) query's known feature ids and weights, unit length counting its unknown n-grams too."""
        w = _unit(self._weights(_features(norm)))
        known = [(self._vocab[g], x) for g, x in w.items() if g in self._vocab]
        return np.array([i for i, _ in known], dtype=np.int64), np.array([x for _, x in known], dtype=np.float64)

    def question_scores(self, text: str) -> np.ndarray:
        """Cosine similarity of ``text`` with every example question (index order)."""
        return self._questions.dot(*self._query(self.strip_fillers(normalise(text))))

    def entry_scores(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(score per entry, index of the best example question per entry).

        The score mixes the best single example question (a close paraphrase
        wins outright) with the entry's centroid (evidence spread over several
        examples)."""
        norm = self.strip_fillers(normalise(text))
        ids, w = self._query(norm)
        scores = self._questions.dot(ids, w)
        best = np.maximum.reduceat(scores, self._entry_starts)
        best = (1 - CENTROID_WEIGHT) * best + CENTROID_WEIGHT * self._centroids.dot(ids, w)
        letters = len(norm.replace(" ", ""))
        if letters < MIN_LETTERS and norm not in self._exact:
            # "да", "нет", "жоқ": too few n-grams to trust unless written in the knowledge base
            best = best * (letters / MIN_LETTERS)
        matched = self.matched_terms(norm)
        if matched:
            best = np.minimum(1.0, best + TERM_BONUS * np.array([bool(m) for m in matched]))
        # argmax within each entry's block of rows
        order = np.lexsort((-scores, self._row_entry_arr))
        best_row = order[self._entry_starts]
        return best, best_row

    def matched_terms(self, norm: str) -> list[tuple[str, ...]] | None:
        """Per entry, the first of its terms the (normalised) text contains, or None where none;
        None overall when no entry has terms. A term's words must begin consecutive words of the text."""
        if not self._any_terms:
            return None
        words = norm.split()
        out = [next((term for term in e.terms if _term_in(term, words)), None) for e in self.entries]
        return out if any(out) else None

    def shared_terms(self) -> list[tuple[str, tuple[str, ...], str, str]]:
        """(entry, term, other entry, its example question) wherever a term also matches another
        entry's example question: such a term is not distinctive and pulls that entry's callers away."""
        questions = [(o, q, normalise(q).split()) for o in self.entries for qs in o.questions.values() for q in qs]
        return [
            (e.id, term, o.id, q)
            for e in self.entries
            for term in e.terms
            for o, q, words in questions
            if o is not e and term not in o.terms and _term_in(term, words)
        ]

    def scores_for(self, text: str, alternatives=(), avg_logprob: float | None = None) -> np.ndarray:
        """Score per entry for what the caller said: ``text`` alone, or with the recogniser's other
        hypotheses ``alternatives`` [(text, avg log-prob)], each weighted by how much the recogniser
        believed it (``NBEST_BETA``): an entry several hypotheses agree on gains."""
        best, _ = self.entry_scores(text)
        if not alternatives or avg_logprob is None:
            return best
        weights = [1.0]
        total = best.copy()
        for alt, lp in alternatives:
            w = math.exp(NBEST_BETA * max(-10.0, lp - avg_logprob))
            weights.append(w)
            total += w * self.entry_scores(alt)[0]
        return total / sum(weights)

    def decide(self, scores: np.ndarray) -> tuple[str, list[int], float, float]:
        """(act, entry indices, best score, margin over the second) for a question's entry scores.

        answer: the best is at least ``answer_threshold`` and ``answer_margin`` above the second
        (or confirmation is off); choose: the two best are both at least ``threshold`` and within
        ``choose_margin`` of each other; confirm: the best is at least ``threshold``; else none."""
        order = np.argsort(-scores, kind="stable")
        s1 = float(scores[order[0]])
        s2 = float(scores[order[1]]) if len(order) > 1 else 0.0
        margin = s1 - s2
        if s1 < self.threshold:
            return "none", [], s1, margin
        if not self.confirm or (s1 >= self.answer_threshold and margin >= self.answer_margin):
            return "answer", [int(order[0])], s1, margin
        if not self.entries[order[0]].confirm:  # never asked about: answered from answer_threshold, else not understood
            return ("answer", [int(order[0])], s1, margin) if s1 >= self.answer_threshold else ("none", [], s1, margin)
        if s2 >= self.threshold and margin < self.choose_margin and self.entries[order[1]].confirm:
            return "choose", [int(order[0]), int(order[1])], s1, margin
        return "confirm", [int(order[0])], s1, margin

    def passage(self, entry: Entry | str, language: str, score: float = 1.0) -> Passage:
        """An entry as grounding for an LLM: its first example question (caller's language if any) and answer."""
        e = self._entry(entry)
        qs = e.questions.get(normalize_language(language)) or next(iter(e.questions.values()))
        return Passage(e.id, qs[0], self.answer(e, language), round(float(score), 4), e.action[0] if e.action else None)

    def topic(self, entry: Entry | str, language: str) -> str:
        """How a clarifying question names the entry: its ``topic`` in ``language``, else its
        first example question in that language, quoted, else the topic in the default language."""
        e = self._entry(entry)
        lang = normalize_language(language)
        if lang in e.topic:
            return e.topic[lang]
        if lang in e.questions:
            return f"«{e.questions[lang][0].rstrip('?.!')}»"
        return e.topic.get(self.default_language) or f"«{next(iter(e.questions.values()))[0].rstrip('?.!')}»"

    def clarify(self, key: str, language: str, keypad: bool = False, **names: str) -> str:
        """A clarifying text (confirm, choose, reask) in ``language`` with the names filled in,
        plus the keypad hint on phone lines."""
        texts = self.clarify_texts[key]
        lang = normalize_language(language)
        lang = lang if lang in texts else self.default_language if self.default_language in texts else "ru"
        text = texts[lang].format(topic=names.get("topic", ""), a=names.get("a", ""), b=names.get("b", ""))
        if keypad:
            hints = self.clarify_texts["dtmf_hint"]
            text += " " + hints.get(lang, hints.get("ru", ""))
        return text.strip()

    def _entry(self, entry: Entry | str) -> Entry:
        return self.by_id[entry] if isinstance(entry, str) else entry

    def answer(self, entry: Entry | str, language: str) -> str:
        e = self._entry(entry)
        return e.answers.get(normalize_language(language)) or e.answers[self.default_language]

    def rephrase(self, language: str) -> str:
        return self.rephrase_texts.get(normalize_language(language)) or self.rephrase_texts[self.default_language]

    def handoff(self, language: str) -> str:
        return self.handoff_texts.get(normalize_language(language)) or self.handoff_texts[self.default_language]

    def search(self, text: str, language: str, k: int = 3) -> list[Passage]:
        """The ``k`` best entries for ``text`` (any language or script), answers in ``language``."""
        if k <= 0:
            return []
        best, best_row = self.entry_scores(text)
        top = np.argsort(-best, kind="stable")[:k]
        out = []
        for ei in top.tolist():
            e = self.entries[ei]
            out.append(Passage(
                id=e.id,
                question=self._row_question[int(best_row[ei])],
                answer=self.answer(e, language),
                score=round(float(best[ei]), 4),
                action=e.action[0] if e.action else None,
            ))
        return out

    __call__ = search

    def texts(self) -> list[str]:
        """Everything the engine can say: every answer and fallback text, all languages."""
        out = [t for e in self.entries for t in e.answers.values()]
        clarify = [t for texts in self.clarify_texts.values() for t in texts.values()]
        return out + list(self.rephrase_texts.values()) + list(self.handoff_texts.values()) + clarify

    def spoken_texts(self) -> list[tuple[str, str]]:
        """(language, text) of what the engine says word for word, for speech caching: every answer,
        the fallback texts, and each entry's confirming question (its topic filled in). Questions
        offering two topics are left out (a pair of entries each: too many to be worth keeping)."""
        out = [(lang, t) for e in self.entries for lang, t in e.answers.items()]
        for texts in (self.rephrase_texts, self.handoff_texts, self.clarify_texts.get("reask", {}), self.clarify_texts.get("dtmf_hint", {})):
            out += list(texts.items())
        for lang in self.clarify_texts.get("confirm", {}):
            out += [(lang, self.clarify("confirm", lang, topic=self.topic(e, lang))) for e in self.entries if e.confirm]
        return out

    @property
    def model_id(self) -> str:
        return f"kb:{self.id}@{self.version or self.sha256[:12]}"

    def __len__(self) -> int:
        return len(self.entries)


def _term_in(term: tuple[str, ...], words: list[str]) -> bool:
    """Do the term's words begin consecutive ``words`` (suffixes may follow each)?"""
    n = len(term)
    return any(all(words[i + j].startswith(term[j]) for j in range(n)) for i in range(len(words) - n + 1))


# --------------------------------------------------------------------------- the engine


class KbEngine(DialogueEngine):
    """Dialogue engine answering only with knowledge-base texts (the embedded default)."""

    name = "kb"
    speculative = True
    """Answering is cheap (milliseconds): the session may prepare a reply at the caller's pause
    before the endpoint is confirmed (``dialogue.speculative``), and discard it."""

    def __init__(self, kb: KnowledgeBase | str | Path | None = None) -> None:
        self.kb = kb if isinstance(kb, KnowledgeBase) else KnowledgeBase.load(kb)
        self.model_id = self.kb.model_id

    @classmethod
    def load(cls, path: str | Path | None = None) -> "KbEngine":
        return cls(KnowledgeBase.load(path))

    def retrieve(self, text: str, language: str, k: int) -> list[Passage]:
        return self.kb.search(text, language, k)

    @property
    def max_misunderstood(self) -> int:
        """Misunderstood turns in a row (the knowledge base's setting) after which the call is handed off."""
        return self.kb.max_misunderstood

    def spoken_texts(self) -> list[tuple[str, str]]:
        """(language, text) this engine says word for word (:meth:`KnowledgeBase.spoken_texts`)."""
        return self.kb.spoken_texts()

    def would_answer(self, text: str, language: str, state: DialogueState) -> bool:
        """Whether this turn is settled by ``text`` as heard so far (:meth:`Clarifier.would_answer`)."""
        from models.dialogue.clarify import Clarifier

        return Clarifier(self.kb).would_answer(text, state)

    def respond(self, history: list[Turn], language: str, state: DialogueState) -> Iterator[str | Action]:
        """Answer, confirm, offer two topics, ask to rephrase or hand off (docs/knowledge_base.md,
        *Clarifying questions*); a pending clarification is resolved by this turn first."""
        from models.dialogue.clarify import Clarifier

        turn = next((t for t in reversed(history) if t.role == "user"), None)
        outcome = Clarifier(self.kb).step(turn, language, state)
        if outcome.entry is not None:
            yield from sentence_pieces(self.kb.answer(outcome.entry, language))
            if outcome.entry.action:
                kind, reason = outcome.entry.action
                yield Action(kind, reason, {"entry": outcome.entry.id, "score": round(outcome.score, 4), "question": outcome.question})
            return
        yield from sentence_pieces(outcome.text)
        if outcome.action is not None:
            yield outcome.action
