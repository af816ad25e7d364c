#!/usr/bin/env python3
"""Download Piper voices on a connected machine (then copy the folder to offline servers).

The catalog voices are also one command: `dauys models pull kk-piper-issai-high` (checked, with a
manifest), then `tts.voices = { kk = "catalog:kk-piper-issai-high" }` (README, "Choosing a model").

    python scripts/fetch_voices.py                       # list the catalog
    python scripts/fetch_voices.py kk_KZ-issai-high ru_RU-irina-medium
    python scripts/fetch_voices.py --language kk --dir /srv/dauys/voices
    python scripts/fetch_voices.py --all

Voices come from the ``rhasspy/piper-voices`` repository on the Hugging Face
Hub (pinned to a revision, default v1.0.0): ``VOICE.onnx``, ``VOICE.onnx.json``
and the voice's ``MODEL_CARD`` (saved as ``VOICE.MODEL_CARD``), written flat
into the voices folder (default ``~/.cache/dauys/voices``, or
``$XDG_CACHE_HOME/dauys/voices``).  The script prints where each went, its
licence and the ``[tts]`` lines that use them.  Each voice's licence is that
of its training data: read the MODEL_CARD before using a voice commercially.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ID = "rhasspy/piper-voices"
DEFAULT_REVISION = "v1.0.0"
VOICE_NAME = re.compile(r"^(?P<family>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<speaker>[A-Za-z0-9_]+)-(?P<quality>x_low|low|medium|high)$")


@dataclass(frozen=True)
class CatalogVoice:
    name: str
    """Piper voice name: <lang>_<REGION>-<speaker>-<quality>."""
    license: str
    """Licence of the voice (of its training data) as far as we know; the MODEL_CARD is authoritative."""
    dataset: str
    note: str = ""

    @property
    def language(self) -> str:
        return parse_voice_name(self.name)["family"]

    @property
    def quality(self) -> str:
        return parse_voice_name(self.name)["quality"]


CATALOG: dict[str, CatalogVoice] = {
    v.name: v
    for v in (
        CatalogVoice("kk_KZ-issai-high", "CC-BY-4.0", "KazakhTTS (ISSAI)", "best Kazakh voice; ~128 MB; 22050 Hz"),
        CatalogVoice("kk_KZ-iseke-x_low", "CC-BY-4.0 (verify MODEL_CARD)", "Kazakh TTS (ISSAI)", "small and fast; 16000 Hz"),
        CatalogVoice("kk_KZ-raya-x_low", "CC-BY-4.0 (verify MODEL_CARD)", "Kazakh TTS (ISSAI)", "small and fast; 16000 Hz"),
        CatalogVoice("ru_RU-irina-medium", "see MODEL_CARD (not verified)", "irina", "Russian, female"),
        CatalogVoice("tr_TR-dfki-medium", "see MODEL_CARD (not verified)", "DFKI Turkish", "Turkish, male"),
    )
}
"""Voices for the languages Dauys serves.  Uzbek, Kyrgyz, Tatar, Azerbaijani have no
Piper voice: espeak-ng speaks them."""


def parse_voice_name(name: str) -> dict[str, str]:
    m = VOICE_NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a Piper voice name (like kk_KZ-issai-high)")
    return m.groupdict()


def hub_paths(name: str) -> dict[str, str]:
    """Paths inside rhasspy/piper-voices: {'model': .../VOICE.onnx, 'config': ..., 'card': .../MODEL_CARD}."""
    p = parse_voice_name(name)
    folder = f"{p['family']}/{p['family']}_{p['region']}/{p['speaker']}/{p['quality']}"
    return {"model": f"{folder}/{name}.onnx", "config": f"{folder}/{name}.onnx.json", "card": f"{folder}/MODEL_CARD"}


def local_paths(name: str, voices_dir: Path) -> dict[str, Path]:
    """Where a voice lies in the (flat) voices folder."""
    parse_voice_name(name)
    return {"model": voices_dir / f"{name}.onnx", "config": voices_dir / f"{name}.onnx.json", "card": voices_dir / f"{name}.MODEL_CARD"}


def default_voices_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "dauys" / "voices"


def select(names: list[str], languages: list[str], all_: bool) -> list[str]:
    chosen = list(CATALOG) if all_ else []
    for lang in languages:
        found = [n for n, v in CATALOG.items() if v.language == lang]
        if not found:
            raise ValueError(f"the catalog has no Piper voice for {lang!r} (espeak-ng speaks it)")
        chosen += found
    for n in names:
        parse_voice_name(n)  # any valid Piper voice name may be fetched, catalogued or not
        chosen.append(n)
    return list(dict.fromkeys(chosen))


def card_license(card_text: str) -> str | None:
    """The licence a Piper MODEL_CARD states (a 'License: ...' line or a licence name), if any."""
    for line in card_text.splitlines():
        m = re.search(r"licen[cs]e\s*[:=-]\s*(.+)", line, re.I)
        if m:
            return m.group(1).strip().strip("*` ")
    m = re.search(r"\b(CC[- ]BY[- A-Z0-9.]*|CC0[- 0-9.]*|MIT|Apache[- ]2\.0|public domain)\b", card_text, re.I)
    return m.group(1).strip() if m else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FetchError(Exception):
    pass


def _hub_download() -> Callable[..., str]:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise FetchError("huggingface_hub is not installed: pip install huggingface_hub") from None
    return hf_hub_download


def fetch_voice(name: str, voices_dir: Path, revision: str = DEFAULT_REVISION, download: Callable[..., str] | None = None, force: bool = False) -> dict[str, Path]:
    """Download one voice into ``voices_dir``; returns its local paths.  Raises FetchError."""
    download = download or _hub_download()
    local = local_paths(name, voices_dir)
    if not force and local["model"].is_file() and local["config"].is_file():
        return local
    voices_dir.mkdir(parents=True, exist_ok=True)
    staging = voices_dir / ".download"
    try:
        for key, hub_path in hub_paths(name).items():
            try:
                got = Path(download(repo_id=REPO_ID, filename=hub_path, revision=revision, local_dir=str(staging)))
            except Exception as e:  # network, offline mode, missing file: all end the same way
                if key == "card":
                    continue  # a voice without a card is still a voice
                why = str(e).splitlines()[0].rstrip(". ") if str(e) else ""
                raise FetchError(
                    f"cannot download {hub_path} from the Hugging Face Hub ({REPO_ID}@{revision}): "
                    f"{type(e).__name__}: {why}. This needs network access; "
                    f"on an offline server, copy {name}.onnx and {name}.onnx.json into {voices_dir} from a connected machine."
                ) from None
            os.replace(got, local[key])
        json.loads(local["config"].read_text(encoding="utf-8"))["audio"]["sample_rate"]
    except (ValueError, KeyError) as e:
        raise FetchError(f"{local['config']} is not a Piper voice config: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return local


def toml_snippet(fetched: dict[str, Path]) -> str:
    """[tts] lines that use the fetched voices (the first voice of each language)."""
    by_lang: dict[str, Path] = {}
    for name, path in fetched.items():
        by_lang.setdefault(parse_voice_name(name)["family"], path)
    inner = ", ".join(f'{lang} = "{path}"' for lang, path in by_lang.items())
    return f"[tts]\nvoices = {{ {inner} }}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("voices", nargs="*", help="voice names, e.g. kk_KZ-issai-high")
    p.add_argument("--language", action="append", default=[], help="every catalog voice of this language (repeatable)")
    p.add_argument("--all", action="store_true", help="every catalog voice")
    p.add_argument("--dir", type=Path, default=None, help="voices folder (default ~/.cache/dauys/voices)")
    p.add_argument("--revision", default=DEFAULT_REVISION, help=f"revision of {REPO_ID} (default {DEFAULT_REVISION})")
    p.add_argument("--force", action="store_true", help="download again even if present")
    args = p.parse_args(argv)
    voices_dir = (args.dir or default_voices_dir()).expanduser()
    try:
        names = select(args.voices, args.language, args.all)
    except ValueError as e:
        p.error(str(e))
    if not names:
        print(f"Piper voice catalog (fetch with: python scripts/fetch_voices.py NAME ...; into {voices_dir}):")
        for v in CATALOG.values():
            print(f"  {v.name:22} {v.language}  licence {v.license}  ({v.dataset}; {v.note})")
        return 0
    fetched: dict[str, Path] = {}
    status = 0
    for name in names:
        try:
            local = fetch_voice(name, voices_dir, args.revision, force=args.force)
        except FetchError as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            status = 1
            continue
        fetched[name] = local["model"]
        known = CATALOG[name].license if name in CATALOG else "not in the catalog"
        card = card_license(local["card"].read_text(encoding="utf-8", errors="replace")) if local["card"].is_file() else None
        print(f"{name}: {local['model']}")
        print(f"    licence: {known}" + (f"; MODEL_CARD says: {card}" if card else "; no MODEL_CARD licence line: check the dataset's terms"))
        print(f"    sha256: {sha256(local['model'])}")
    if fetched:
        print("\nTo use them, add to your config file:\n")
        print(toml_snippet(fetched))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
