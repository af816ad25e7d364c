"""Operator fine-tuning of the recogniser: data in, fine-tune, measure, convert, serve.

Heavy dependencies (transformers, torch, peft, datasets) are imported lazily
inside the functions that need them; install them with ``pip install -e '.[finetune]'``.
"""
