"""The model card of an exported model: ``README.md`` and ``dauys_model_card.json``."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping

CARD_JSON = "dauys_model_card.json"
AI_NOTE = (
    "Transcripts produced with this model are AI-generated output. Under the Law of the Republic of "
    "Kazakhstan No. 230-VIII \"On Artificial Intelligence\" (Art. 21) a service that uses it must tell "
    "its users in advance that an AI system serves them and mark what the system generates in a "
    "machine-readable form; the Dauys server does both (see COMPLIANCE.md)."
)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f} %" if pct else f"{v:g}"
    return str(v)


def _count(v: Any) -> int:
    if isinstance(v, Mapping):
        return int(v.get("count", len(v.get("ids", []))))
    if isinstance(v, (list, tuple, set)):
        return len(v)
    return int(v or 0)


def model_card(card: Mapping[str, Any]) -> str:
    """The README.md of an exported model, from the card dict (see :func:`export_ct2`)."""
    data = dict(card.get("data") or {})
    lines = [f"# {card.get('name') or 'Dauys Whisper fine-tune'}", ""]
    lines.append(
        "A Whisper speech recognition model in CTranslate2 form for the Dauys voice server "
        "(`asr.model = \"/path/to/this/directory\"`)."
    )
    lines += ["", "| | |", "| --- | --- |"]
    lines.append(f"| base model | {card.get('base_model') or 'unknown'} |")
    for key in ("quantization", "date"):
        if card.get(key):
            lines.append(f"| {key} | {card[key]} |")
    if card.get("languages"):
        lines.append(f"| languages | {', '.join(card['languages'])} |")
    for key, label in (("ctranslate2", "ctranslate2"), ("transformers", "transformers")):
        if card.get("versions", {}).get(key):
            lines.append(f"| {label} | {card['versions'][key]} |")

    lines += ["", "## Training data", ""]
    if data:
        hours = data.get("hours")
        if hours is None and data.get("audio_s") is not None:
            hours = float(data["audio_s"]) / 3600
        lines.append(f"- rows used: {_fmt(data.get('rows'))}")
        lines.append(f"- audio: {hours:.2f} h" if hours is not None else "- audio: –")
        lines.append(f"- skipped because the rights holder opted out of AI training (Law 230-VIII Art. 23): {_count(data.get('opt_outs_skipped', data.get('skipped_optout')))}")
        lines.append(f"- bad rows left out: {_count(data.get('bad_rows', data.get('bad')))}")
        if data.get("source"):
            lines.append(f"- source: {data['source']}")
    else:
        lines.append("Not fine-tuned by Dauys (no training data recorded).")

    evaluation = card.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if evaluation:
        split = card.get("eval_split") or "held-out split"
        lines.append(f"On the {split}, decoded as the server decodes (`scripts/evaluate_asr.py`), text normalised by `models/finetune/textnorm.py`:")
        lines += ["", "| language | rows | WER before | WER after | CER before | CER after |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for lang, m in sorted(evaluation.items(), key=lambda kv: (kv[0] == "overall", kv[0])):
            lines.append(
                f"| {lang} | {_fmt(m.get('n'))} | {_fmt(m.get('wer_before'), True)} | {_fmt(m.get('wer_after'), True)} "
                f"| {_fmt(m.get('cer_before'), True)} | {_fmt(m.get('cer_after'), True)} |"
            )
    else:
        lines.append("No evaluation recorded.")
    other = card.get("other_sets") or {}
    if other:
        lines += ["", "Other evaluation sets (all languages together):", "",
                  "| set | WER before | WER after | CER before | CER after |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, m in sorted(other.items()):
            b, a = m.get("before") or {}, m.get("after") or {}
            lines.append(f"| {name} | {_fmt(b.get('wer'), True)} | {_fmt(a.get('wer'), True)} | {_fmt(b.get('cer'), True)} | {_fmt(a.get('cer'), True)} |")

    training = card.get("training") or {}
    lines += ["", "## Training settings", ""]
    if training:
        lines += [f"- {k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}" for k, v in training.items()]
    else:
        lines.append("None recorded.")

    lines += ["", "## AI-generated output", "", card.get("ai_note") or AI_NOTE, ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, card: Mapping[str, Any]) -> Path:
    """Write ``README.md`` and ``dauys_model_card.json`` into ``out_dir``; return the README."""
    out_dir = Path(out_dir)
    card = dict(card)
    card.setdefault("date", _dt.date.today().isoformat())
    card.setdefault("ai_generated_output", True)
    card.setdefault("ai_note", AI_NOTE)
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    readme = out_dir / "README.md"
    readme.write_text(model_card(card), encoding="utf-8")
    return readme
