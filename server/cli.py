"""The `dauys` command: serve, hash-key, transcribe, say, detect-mark, forget-call, call, models, capture, finetune."""

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
    p.add_argument("--audiosocket-host", dest="server_audiosocket_host", help="server.audiosocket_host (default 127.0.0.1; off loopback list Asterisk in server.audiosocket_allow)")
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
    _add_capture_commands(sub)
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


# ------------------------------------------------------------------ capture: consented calls, review, fine-tuning
def _add_capture_commands(sub) -> None:
    """`dauys capture ...` (the captured calls) and `dauys finetune --from-capture` (README *Call capture*)."""
    p = sub.add_parser("capture", help="consented call capture: make a key, list, export for fine-tuning, delete a call, purge")
    p.add_argument("--config", help="TOML configuration file (capture.dir, capture.key_env, capture.retention_days)")
    csub = p.add_subparsers(dest="capture_command", required=True)
    csub.add_parser("key", help="print a new encryption key for capture.key_env (DAUYS_CAPTURE_KEY)")
    c = csub.add_parser("list", help="the captured calls: id, carrier id, start, utterances, reviewed")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("export", help="write a fine-tuning manifest (scripts/finetune_asr.py) of the reviewed utterances")
    c.add_argument("out", help="output folder: manifest.jsonl and audio/")
    c.add_argument("--include-unreviewed", action="store_true", help="also utterances nobody reviewed (the recogniser's text)")
    c = csub.add_parser("delete", help="delete every trace of one call (its files and its exported copies)")
    c.add_argument("--call", required=True, help="a Dauys session id, a Twilio callSid or an AudioSocket call UUID")
    c = csub.add_parser("purge", help="delete the calls older than capture.retention_days")
    c.add_argument("--days", type=float, help="another age limit, in days (0 = every call)")
    c = csub.add_parser("rotate-key", help="re-encrypt every captured file with a new key (stop the server first)")
    c.add_argument("--new-key-env", required=True, metavar="NAME", help="the environment variable holding the new key (make one with `dauys capture key`)")

    p = sub.add_parser("finetune", help="fine-tune on the capture, compare with the served model, switch only if better")
    p.add_argument("--from-capture", action="store_true", required=True, help="train on the reviewed captured utterances")
    p.add_argument("--config", help="the server's TOML configuration file")
    p.add_argument("--out", required=True, help="run folder (data, checkpoints, exports, report.json, decision.json)")
    p.add_argument("--base", help="model to start from (default: the server's asr.model)")
    p.add_argument("--include-unreviewed", action="store_true")
    p.add_argument("--margin", type=float, help="capture.switch_margin: how much lower the new WER must be (absolute)")
    p.add_argument("--holdout", type=float, help="capture.holdout: share of the calls held out")
    p.add_argument("--pid", type=int, help="the running server's process id: sent SIGHUP after a switch")
    p.add_argument("--method", choices=["lora", "full"], default="lora")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")


def _capture_store(args):
    from pipeline.capture import CaptureError, CaptureStore

    settings = _settings(args)
    try:
        return settings, CaptureStore.from_settings(settings.capture)
    except CaptureError as e:
        print(f"dauys: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_capture(args) -> int:
    if args.capture_command == "key":
        from pipeline.capture import make_key

        print(make_key())
        return 0
    settings, store = _capture_store(args)
    if args.capture_command == "list":
        rows = []
        for call in store.calls():
            try:
                meta = store.call_meta(call)
            except (OSError, ValueError) as e:
                meta = {"error": str(e)}
            corrupted: list[str] = []
            utts = []
            for u in store.utterance_ids(call):
                try:
                    utts.append(store.utterance(call, u))
                except (OSError, ValueError) as e:
                    corrupted.append(str(e))
            rows.append({"call": call, "carrier_call_id": meta.get("carrier_call_id"), "transport": meta.get("transport"),
                         "started": meta.get("started"), "utterances": len(utts), "reviewed": sum(u.status != "pending" for u in utts),
                         "corrupted": len(corrupted) + ("error" in meta)})
        if args.json:
            for r in rows:
                print(json.dumps(r))
        else:
            print(f"{'call':<18}{'carrier id':<38}{'started':<22}{'utt':>5}{'reviewed':>10}{'corrupted':>11}")
            for r in rows:
                print(f"{r['call']:<18}{str(r['carrier_call_id'] or '-'):<38}{str(r['started'] or '-'):<22}{r['utterances']:>5}{r['reviewed']:>10}{r['corrupted']:>11}")
            print(f"{len(rows)} calls, {sum(r['utterances'] for r in rows)} utterances in {store.root}")
        return 0
    if args.capture_command == "export":
        res = store.export(args.out, include_unreviewed=args.include_unreviewed)
        skipped = ", ".join(f"{n} {k}" for k, n in sorted(res.skipped.items())) or "none"
        print(f"dauys: exported {res.rows} utterances of {len(res.calls)} calls ({res.opt_out} marked opt-out) to {res.manifest}; skipped: {skipped}")
        for bad in res.corrupted:
            print(f"dauys: corrupted, skipped: {bad}", file=sys.stderr)
        print("dauys: the export is NOT encrypted: keep it on this machine and delete it after training", file=sys.stderr)
        return 0 if res.rows else 1
    if args.capture_command == "delete":
        calls = store.find_call(args.call)
        if not calls:
            print(f"dauys: no captured call {args.call}", file=sys.stderr)
            return 1
        n = sum(store.delete_call(c) for c in calls)
        print(f"dauys: deleted {len(calls)} call(s), {n} files and exported copies")
        return 0
    if args.capture_command == "rotate-key":
        from pipeline.capture import CaptureError, fernet_from_env

        try:
            new = fernet_from_env(args.new_key_env)
            done, unreadable = store.rotate_key(new)
        except CaptureError as e:
            print(f"dauys: error: {e}", file=sys.stderr)
            return 2
        for name in unreadable:
            print(f"dauys: neither key opens {name}: left as it was", file=sys.stderr)
        print(f"dauys: re-encrypted {done} files under {store.root} with the key in {args.new_key_env}; "
              f"put that key in {settings.capture.key_env} before starting the server")
        return 1 if unreadable else 0
    if args.capture_command == "purge":
        days = settings.capture.retention_days if args.days is None else args.days
        gone = store.purge(days)
        print(f"dauys: purged {len(gone)} call(s) older than {days:g} days")
        return 0
    return 2


def cmd_finetune(args) -> int:
    """The operator's loop: export the reviewed capture, hold out whole calls, measure the served model on them,
    fine-tune on the rest, measure the new model on the same calls, and switch (capture.model_link + SIGHUP)
    only when the new one is better by the margin; otherwise keep the served model and say why."""
    import subprocess
    from pathlib import Path

    from models.finetune.data import load_manifest, split_rows

    settings, store = _capture_store(args)
    cap = settings.capture
    out = Path(args.out)
    margin = cap.switch_margin if args.margin is None else args.margin
    holdout = cap.holdout if args.holdout is None else args.holdout
    progress = not args.no_progress
    print(f"[1/4] exporting the reviewed capture to {out / 'data'}", flush=True)
    res = store.export(out / "data", include_unreviewed=args.include_unreviewed)
    for bad in res.corrupted:
        print(f"dauys: corrupted, skipped: {bad}", file=sys.stderr)
    loaded = load_manifest(res.manifest)
    train_rows, held_rows = split_rows(loaded.rows, holdout, seed=0, by="speaker")
    print(f"      {res.rows} utterances of {len(res.calls)} calls ({res.opt_out} opt-out, skipped by the loader); "
          f"train {len(train_rows)}, held out {len(held_rows)} (whole calls)", flush=True)
    if not train_rows or not held_rows:
        print("dauys: error: too few reviewed utterances: at least two calls with reviewed speech are needed (whole calls are held out)", file=sys.stderr)
        return 2
    held_calls = {r.speaker for r in held_rows}
    lines = res.manifest.read_text(encoding="utf-8").splitlines()
    split = {"train.jsonl": [x for x in lines if json.loads(x).get("speaker") not in held_calls],
             "holdout.jsonl": [x for x in lines if json.loads(x).get("speaker") in held_calls]}
    for name, rows in split.items():
        (out / "data" / name).write_text("".join(x + "\n" for x in rows), encoding="utf-8")

    print(f"[2/4] measuring the served model ({settings.asr.model}) on the held-out calls", flush=True)
    served = _evaluate(settings, None, held_rows, progress)
    if served is None:
        return 2
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(root / "scripts" / "finetune_asr.py"), str(out / "data" / "train.jsonl"), "--eval", str(out / "data" / "holdout.jsonl"),
           "--out", str(out / "run"), "--method", args.method, "--epochs", str(args.epochs), "--max-steps", str(args.max_steps),
           "--lr", str(args.lr), "--batch-size", str(args.batch_size), "--quantization", "int8", "--skip-before"]
    if args.base:
        cmd += ["--base", args.base]
    if args.config:
        cmd += ["--config", args.config]
    if args.no_progress:
        cmd.append("--no-progress")
    print("[3/4] fine-tuning (scripts/finetune_asr.py) and measuring the new model on the same calls", flush=True)
    if subprocess.run(cmd).returncode != 0:
        print("dauys: error: fine-tuning failed; the served model is kept", file=sys.stderr)
        return 2
    report = json.loads((out / "run" / "report.json").read_text(encoding="utf-8"))
    new = report["full_reports"]["after"]["held-out"]["overall"]
    decision = decide_switch({"wer_before": served["wer"], "wer_after": new["wer"], "n": new["n"]}, margin)
    decision.update(cer_served=served["cer"], cer_new=new["cer"], served_model=settings.asr.model, model=str((out / "run" / "ct2-int8").resolve()))
    print(f"[4/4] {decision['reason']}", flush=True)
    if decision["switch"]:
        _switch(decision, cap, settings, args.pid)
    (out / "decision.json").write_text(json.dumps(decision, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"dauys: {'switched' if decision['switch'] else 'kept the served model'}: {decision['reason']}", flush=True)
    return 0


def _evaluate(settings, model, rows, progress: bool) -> dict | None:
    from models.errors import ModelError
    from models.finetune.evaluate import evaluate_rows, load_engine

    try:
        engine = load_engine(model, settings=settings)
    except (ModelError, OSError, ValueError, RuntimeError) as e:
        print(f"dauys: error: cannot load {model or settings.asr.model}: {e}", file=sys.stderr)
        return None
    return evaluate_rows(engine, rows, "manifest", progress, settings=settings).overall


def _switch(decision: dict, cap, settings, pid: int | None) -> None:
    """Point capture.model_link at the new model (atomically) and have the server reload (SIGHUP)."""
    import os
    import signal
    from pathlib import Path

    if cap.model_link is None:
        decision.update(switch=False, reason=decision["reason"] + "; not switched: set capture.model_link (and asr.model to it)")
        return
    link = Path(cap.model_link).expanduser()
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(decision["model"], tmp)
    os.replace(tmp, link)  # atomic: the server never sees a missing link
    decision["linked"] = str(link)
    if Path(settings.asr.model).expanduser() != link:
        print(f"dauys: warning: asr.model is {settings.asr.model}, not {link}: the server will not pick the new model up", file=sys.stderr)
    if pid:
        os.kill(pid, signal.SIGHUP)
        decision["reloaded_pid"] = pid
        print(f"dauys: {link} -> {decision['model']}; server {pid} reloading (SIGHUP)", flush=True)
    else:
        print(f"dauys: {link} -> {decision['model']}; send the server SIGHUP (kill -HUP <pid>) to serve it", flush=True)


def decide_switch(overall: dict | None, margin: float) -> dict:
    """Switch only when the new model's held-out WER is lower than the served one's by ``margin`` (absolute)."""
    if not overall or overall.get("wer_before") is None or overall.get("wer_after") is None:
        return {"switch": False, "reason": "no held-out comparison was measured"}
    before, after = float(overall["wer_before"]), float(overall["wer_after"])
    gain = before - after
    d = {"wer_served": before, "wer_new": after, "margin": margin, "n": overall.get("n")}
    if gain >= margin and gain > 0:
        return {**d, "switch": True, "reason": f"held-out WER {100 * before:.1f}% -> {100 * after:.1f}% (better by {100 * gain:.1f} points >= margin {100 * margin:.1f})"}
    return {**d, "switch": False, "reason": f"held-out WER {100 * before:.1f}% -> {100 * after:.1f}%: not better by the margin {100 * margin:.1f} points"}


CAPTURE_COMMANDS = {"capture": cmd_capture, "finetune": cmd_finetune}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CAPTURE_COMMANDS:
        return CAPTURE_COMMANDS[args.command](args)
    return {"serve": cmd_serve, "hash-key": cmd_hash_key, "transcribe": cmd_transcribe, "call": cmd_call, "say": cmd_say, "detect-mark": cmd_detect_mark, "forget-call": cmd_forget_call, "models": cmd_models}[args.command](args)
