"""The `dauys` command: serve, hash-key, transcribe, say, detect-mark, forget-call, call, models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from models import __version__


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--model", dest="asr_model", help="asr.model: embedded:whisper-base, a directory, a size name or a Hugging Face id")
    p.add_argument("--device", dest="asr_device", choices=["auto", "cpu", "cuda"], help="asr.device")
    p.add_argument("--compute-type", dest="asr_compute_type", help="asr.compute_type (auto, int8, float16, int8_float16, ...)")
    p.add_argument("--languages", dest="asr_languages", help="asr.languages, comma-separated (e.g. kk,ru,uz)")
    p.add_argument("--log-level", dest="server_log_level", choices=["debug", "info", "warning", "error"])


def _cli_layer(args: argparse.Namespace) -> dict:
    layer: dict = {}
    for key, value in vars(args).items():
        if value is None or "_" not in key or key.split("_", 1)[0] not in ("server", "asr", "vad"):
            continue
        section, name = key.split("_", 1)
        if name == "languages":
            value = [x.strip() for x in value.split(",") if x.strip()]
        layer.setdefault(section, {})[name] = value
    return layer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dauys", description="Streaming voice assistant for Kazakh, the Turkic languages and Russian")
    parser.add_argument("--version", action="version", version=f"dauys {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the WebSocket server with the web demo")
    _add_model_flags(p)
    p.add_argument("--host", dest="server_host", help="server.host (default 127.0.0.1)")
    p.add_argument("--port", dest="server_port", type=int, help="server.port (default 8765; 0 = any free port)")
    p.add_argument("--api-key", dest="server_api_keys", action="append", help="accept this bearer key (repeatable; 16 characters or more: `dauys hash-key --new` makes one)")
    p.add_argument("--max-sessions", dest="server_max_sessions", type=int)
    p.add_argument("--audiosocket-port", dest="server_audiosocket_port", type=int, help="also serve Asterisk AudioSocket on this TCP port")
    p.add_argument("--log-format", dest="server_log_format", choices=["text", "json"])

    p = sub.add_parser("hash-key", help="print the server.api_key_hashes entry of an API key (read from stdin), or make a new key")
    p.add_argument("--new", action="store_true", help="generate a random key; print it, then its hash")

    p = sub.add_parser("transcribe", help="transcribe an audio file with the server's engine")
    _add_model_flags(p)
    p.add_argument("file")
    p.add_argument("--language", default="auto", help="auto (default) or a code such as kk, ru")
    p.add_argument("--json", action="store_true", help="one JSON object per utterance")

    p = sub.add_parser("say", help="speak text with the server's TTS into a marked WAV file")
    p.add_argument("text")
    p.add_argument("--language", default="kk")
    p.add_argument("-o", "--out", required=True, help="output WAV file")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--rate", type=int, default=None, help="resample to this rate (default: the voice's)")

    p = sub.add_parser("detect-mark", help="is the Dauys watermark in this audio file? (exit 0 yes, 1 no)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key", help="the server's compliance.watermark_key (a keyed mark is found only with it; prefer --key-env)")
    key.add_argument("--key-env", metavar="VAR", help="read the key from this environment variable (e.g. DAUYS_COMPLIANCE__WATERMARK_KEY)")

    p = sub.add_parser("forget-call", help="delete every log line of one call from JSON log files (erasure request)")
    p.add_argument("call_id", help="a Twilio callSid, an AudioSocket call UUID or a Dauys session id")
    p.add_argument("files", nargs="+", help="JSON-lines log files (server.log_format = json), rotated ones too")
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")

    p = sub.add_parser("call", help="stream a WAV over /v1/voice as a caller would; print events as JSON lines")
    p.add_argument("file", nargs="?", help="audio file (any format PyAV reads); omit with --text")
    p.add_argument("--url", default="ws://127.0.0.1:8765/v1/voice")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True, help="send at real-time pace (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false", help="send as fast as possible")
    p.add_argument("--text", action="append", help="typed input to send (repeatable)")
    p.add_argument("--language", default="auto")
    p.add_argument("--encoding", choices=["pcm_s16le", "mulaw"], default="pcm_s16le")
    p.add_argument("--rate", type=int, default=16000, help="sample rate to send at (8000..48000)")
    p.add_argument("--token", help="API key")
    p.add_argument("--out", help="save the spoken reply audio to this WAV file")
    p.add_argument("--timeout", type=float, default=120.0)

    p = sub.add_parser("models", help="the model catalog: list, info, pull, verify, remove, pack, unpack")
    msub = p.add_subparsers(dest="models_command", required=True)

    def models_parser(name: str, help: str) -> argparse.ArgumentParser:
        mp = msub.add_parser(name, help=help)
        mp.add_argument("--config", help="TOML configuration file (its [models] section and asr.cache_dir)")
        mp.add_argument("--dir", type=Path, help="the model store (default models.dir, else <asr.cache_dir>/catalog)")
        return mp

    mp = models_parser("list", "the catalog, with what is pulled here")
    mp.add_argument("--kind", choices=["asr", "tts", "llm", "vad"])
    mp.add_argument("--installed", action="store_true", help="only the models pulled into the store")
    mp.add_argument("--json", action="store_true")
    mp = models_parser("info", "everything the catalog knows about a model, and its pulled copy")
    mp.add_argument("id")
    mp.add_argument("--json", action="store_true")
    mp = models_parser("pull", "download (and convert) catalog models into the store")
    mp.add_argument("ids", nargs="+", metavar="id")
    mp.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="append", default=[], metavar="SPDX_OR_ID",
                    help="pull a model whose licence is non-commercial or not stated (name the licence, e.g. CC-BY-NC-4.0, or the model id)")
    mp.add_argument("--quantization", help="CTranslate2 type of a converted model (default int8 on CPU, int8_float16 on CUDA)")
    mp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="the device the quantization default is chosen for")
    mp.add_argument("--force", action="store_true", help="pull again even if already pulled")
    mp = models_parser("verify", "recheck the sha256 of every file of pulled models (default: all)")
    mp.add_argument("ids", nargs="*", metavar="id")
    mp = models_parser("remove", "delete pulled models from the store")
    mp.add_argument("ids", nargs="+", metavar="id")
    mp = models_parser("pack", "write pulled models (with their manifests) into one tar file for a server without internet")
    mp.add_argument("ids", nargs="+", metavar="id")
    mp.add_argument("-o", "--out", required=True, help="the tar file to write")
    mp = models_parser("unpack", "verify and install the models of a pack into the store")
    mp.add_argument("file")
    return parser


def _settings(args):
    from server.config import ConfigError, load_settings

    try:
        return load_settings(args.config, _cli_layer(args))
    except ConfigError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args) -> int:
    from server.app import serve_forever
    from server.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.server.log_level, settings.server.log_format)
    from server.config import load_settings

    # SIGHUP re-reads the same sources (file, environment, these flags) and switches the ASR model.
    return asyncio.run(serve_forever(settings, reload_settings=lambda: load_settings(args.config, _cli_layer(args))))


def cmd_hash_key(args) -> int:
    """``sha256:<hex>`` for server.api_key_hashes: the config file then holds no usable key."""
    import getpass
    import secrets

    from server.auth import hash_key

    if args.new:
        key = secrets.token_urlsafe(32)
        print(key)
        print(hash_key(key))
        return 0
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not key.strip():
        print("dauys: error: no key given (pipe it in: printf %s \"$KEY\" | dauys hash-key)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def cmd_transcribe(args) -> int:
    from models.errors import ModelError
    from pipeline.offline import transcribe_file
    from server.logs import setup_logging

    settings = _settings(args)
    setup_logging("warning")
    if args.language != "auto" and args.language not in settings.asr.languages:
        print(f"dauys: error: language {args.language!r} is not in asr.languages {settings.asr.languages}", file=sys.stderr)
        return 2
    try:
        for u in transcribe_file(settings, args.file, None if args.language == "auto" else args.language):
            if args.json:
                print(json.dumps(u, ensure_ascii=False), flush=True)
            elif u["text"]:
                print(u["text"], flush=True)
    except ModelError as e:
        print(f"dauys: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError) as e:
        print(f"dauys: error: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def cmd_say(args) -> int:
    import numpy as np

    from models.audio import AudioChunk, resample, write_wav
    from models.errors import ModelError
    from models.tts import TtsRouter
    from pipeline.marking import info_chunk, provenance

    settings = _settings(args)
    try:
        tts = TtsRouter.from_settings(settings.tts)
        if tts is None:
            raise ModelError("no TTS engine is available: install espeak-ng or configure tts.voices")
        chunks, model_id = [], tts.model_id_for(args.language)
        chunks.extend(tts.synthesize(args.text, args.language))  # sentence by sentence
    except ModelError as e:
        print(f"dauys: error: {e}", file=sys.stderr)
        return 2
    if not chunks:
        print("dauys: error: nothing to say", file=sys.stderr)
        return 2
    rate = chunks[0].rate
    samples = np.concatenate([resample(c.samples, c.rate, rate) for c in chunks])
    prov = provenance({"tts": model_id}, settings.compliance.classification(), language=args.language)
    mark = _watermark(samples, rate, prov, settings.compliance.watermark_key.get_secret_value())
    if args.rate and args.rate != rate:
        samples, rate = resample(mark, rate, args.rate), args.rate
    else:
        samples = mark
    write_wav(args.out, AudioChunk(samples, rate), info_chunk(prov))
    print(json.dumps({"out": args.out, "seconds": round(len(samples) / rate, 2), **prov}, ensure_ascii=False))
    return 0


def _watermark(samples, rate, prov: dict, secret: str = ""):
    """Embed the in-band mark (keyed with ``secret`` when set); records its payload in ``prov``."""
    from pipeline import watermark
    from pipeline.replies import SYSTEM_ID

    payload = watermark.payload_for(SYSTEM_ID, prov["created"])
    prov["watermark"] = watermark.format_payload(payload)
    return watermark.embed(samples, rate, payload, key=watermark.key_seed(secret))


def cmd_forget_call(args) -> int:
    from server.logs import forget_call

    try:
        removed, sessions = forget_call(args.files, args.call_id, dry_run=args.dry_run)
    except (OSError, ValueError) as e:
        print(f"dauys: error: {e}", file=sys.stderr)
        return 2
    verb = "would remove" if args.dry_run else "removed"
    print(f"dauys: {verb} {removed} log lines of {len(sessions)} session(s) from {len(args.files)} file(s)")
    return 0 if removed else 1


def cmd_detect_mark(args) -> int:
    import os

    from pipeline import watermark

    secret = args.key or ""
    if args.key_env:
        secret = os.environ.get(args.key_env, "")
        if not secret:
            print(f"dauys: error: environment variable {args.key_env} is not set", file=sys.stderr)
            return 2
    try:
        det = watermark.detect_file(args.file, key=watermark.key_seed(secret))
    except (OSError, ValueError) as e:
        print(f"dauys: error: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    payload = watermark.format_payload(det.payload) if det.found and det.payload is not None else None
    if args.json:
        print(json.dumps({"found": bool(det.found), "payload": payload, "confidence": round(float(det.confidence), 3)}))
    elif det.found:
        print(f"mark found: {payload} (confidence {det.confidence:.2f})")
    else:
        print(f"no mark (confidence {det.confidence:.2f})")
    return 0 if det.found else 1


def cmd_call(args) -> int:
    from websockets.exceptions import InvalidStatus, WebSocketException

    from models.audio import Encoding
    from server.client import call

    if args.file is None and not args.text:
        print("dauys: error: give an audio file, --text, or both", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            call(
                args.url, args.file, realtime=args.realtime, texts=args.text, language=args.language,
                encoding=Encoding(args.encoding), rate=args.rate, token=args.token, out=args.out, timeout=args.timeout,
            )
        )
    except InvalidStatus as e:
        print(f"dauys: error: the server refused the connection: HTTP {e.response.status_code}", file=sys.stderr)
        return 1
    except (OSError, WebSocketException, TimeoutError) as e:
        print(f"dauys: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _store(args):
    from models.store import ModelStore, model_store

    settings = _settings(args)
    store = model_store(settings.asr)
    return ModelStore(args.dir, store.catalogs, store.endpoint) if args.dir else store


def cmd_models(args) -> int:
    """Thin: the work is in models/store.py and models/catalog.py."""
    from models.errors import ModelError

    try:
        store = _store(args)
        return _MODELS[args.models_command](store, args)
    except ModelError as e:
        print(f"dauys: error: {e}", file=sys.stderr)
        return 2


def _models_list(store, args) -> int:
    installed = {m.id: m for m in store.installed()}
    rows = [e for e in store.catalog if (args.kind is None or e.kind == args.kind) and (not args.installed or e.id in installed)]
    extra = [m for mid, m in installed.items() if mid not in store.catalog.entries] if not args.kind else []
    if args.json:
        out = [{"id": e.id, "kind": e.kind, "license": e.license, "commercial": e.commercial, "recommended": e.recommended, "size": e.size,
                "languages": e.languages, "pulled": e.id in installed or not e.downloadable} for e in rows]
        out += [{"id": m.id, "kind": m.manifest.get("kind"), "license": m.manifest.get("license"), "pulled": True, "catalog": False} for m in extra]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"model store: {store.root}")
    print(f"{'':2}{'id':38} {'kind':4} {'size':10} {'licence':40} {'languages':14} here")
    for e in rows:
        flag = "* " if e.recommended else ("! " if not e.commercial_ok else "  ")
        here = "built in" if not e.downloadable else ("pulled" if e.id in installed else "-")
        print(f"{flag}{e.id:38} {e.kind:4} {e.size[:10]:10} {e.licence_line()[:40]:40} {','.join(e.languages)[:14]:14} {here}")
    for m in extra:
        print(f"  {m.id:38} {m.manifest.get('kind', '?'):4} {'':10} {str(m.manifest.get('license'))[:40]:40} {'':14} pulled (not in the catalog)")
    print("* recommended   ! non-commercial or licence not stated (pull needs --accept-licence)")
    return 0


def _models_info(store, args) -> int:
    from models.store import lookup_entry, model_card_text

    entry = lookup_entry(store, args.id)
    if entry is None:
        store.entry(args.id)  # raises the one-line error
    manifest = store.manifest(entry.id)
    if args.json:
        print(json.dumps({"entry": entry.model_dump(mode="json"), "pulled": manifest is not None, "path": str(store.model_dir(entry.id)),
                          "manifest": manifest}, ensure_ascii=False, indent=2))
        return 0
    print(model_card_text(entry, (manifest or {}).get("source", {}).get("commit", ""), (manifest or {}).get("quantization")))
    if manifest is not None:
        print(f"pulled into {store.model_dir(entry.id)} on {manifest.get('pulled')}; use it as {entry.ref}")
    elif entry.downloadable:
        print(f"not pulled: dauys models pull {entry.id}")
    return 0


def _models_pull(store, args) -> int:
    from models.store import StoreError

    status = 0
    for mid in args.ids:
        entry = store.entry(mid)
        if not entry.downloadable:
            use = "always used" if entry.kind == "vad" else f"use it as {entry.ref}"
            print(f"{entry.id}: ships with Dauys ({entry.source.embedded}); nothing to pull, {use}")
            continue
        try:
            path = store.pull(mid, accept_licence=args.accept_licence, quantization=args.quantization, device=args.device, force=args.force)
        except StoreError as e:
            print(f"dauys: error: {e}", file=sys.stderr)
            status = 2
            continue
        print(f"{entry.id}: {path} ({entry.licence_line()}); use it as {entry.ref}")
    return status


def _models_verify(store, args) -> int:
    ids = args.ids or [m.id for m in store.installed()]
    if not ids:
        print(f"nothing is pulled into {store.root}")
        return 0
    bad = 0
    for mid in ids:
        problems = store.verify(mid)
        print(f"{mid}: " + ("ok" if not problems else "DAMAGED"))
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


def _models_remove(store, args) -> int:
    for mid in args.ids:
        print(f"removed {store.remove(mid)}")
    return 0


def _models_pack(store, args) -> int:
    out = store.pack(args.ids, args.out)
    print(f"{out}: {', '.join(args.ids)} ({out.stat().st_size / 1e6:.1f} MB); on the offline server: dauys models unpack {out.name}")
    return 0


def _models_unpack(store, args) -> int:
    ids = store.unpack(args.file)
    for mid in ids:
        print(f"{mid}: installed into {store.model_dir(mid)}")
    return 0


_MODELS = {"list": _models_list, "info": _models_info, "pull": _models_pull, "verify": _models_verify, "remove": _models_remove,
           "pack": _models_pack, "unpack": _models_unpack}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"serve": cmd_serve, "hash-key": cmd_hash_key, "transcribe": cmd_transcribe, "call": cmd_call, "say": cmd_say, "detect-mark": cmd_detect_mark, "forget-call": cmd_forget_call, "models": cmd_models}[args.command](args)
