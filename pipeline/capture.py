"""Consented call capture: the caller's utterances, stored encrypted on this machine for fine-tuning.

Three parts:

* :class:`CaptureStore` -- the files under ``capture.dir``, one folder per call (named by the
  session id), every file encrypted with Fernet (AES-128-CBC + HMAC-SHA256, ``cryptography``)
  under the key in ``capture.key_env``::

      <dir>/<session_id>/call.json.enc          the call: ids, transport, start time, consent
      <dir>/<session_id>/<utt>.flac.enc         the utterance, FLAC 16 kHz mono
      <dir>/<session_id>/<utt>.json.enc         its final transcript, language, confidence, KB entry, repeat
      <dir>/<session_id>/<utt>.review.json.enc  the reviewer's verdict (/review)
      <dir>/exports.json.enc                    where `dauys capture export` wrote copies (deleted with a call)
      <dir>/.erased/<keyed hash>                empty: a call erased on request is never written again
      <dir>/.pseudonym-key.enc                  since the first key rotation: the pseudonyms' key
      <dir>/.lock                               shared by the servers writing here, exclusive for a rotation

  Listing, review, export (the manifest ``scripts/finetune_asr.py`` reads, opt-outs as
  ``tdm_reservation``), deletion of a call (every file and every exported copy) and purging
  by ``capture.retention_days`` and the key's rotation (``dauys capture rotate-key``) live here,
  used by the server and by ``dauys capture``.
* :class:`CaptureWriter` -- one writer thread per process behind a bounded queue: FLAC
  encoding, encryption and disk I/O never run on the event loop. A full queue drops the
  utterance; a write that fails (disk full) stops capture for that call; both are counted
  (``dauys_capture_dropped_total``) and the call goes on.
* :class:`CallCapture` -- one per session: the consent decision (upstream, asked by Dauys and
  answered by voice or keys 1/2, or none), and the utterances of a consented call, each written
  once its reply is known (the KB entry matched, whether the caller was asked to repeat).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import io
import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline import metrics

log = logging.getLogger("dauys.capture")

SAMPLE_RATE = 16000
REVIEW_STATUSES = ("pending", "confirmed", "corrected", "not_speech", "opt_out")
"""pending: not reviewed; confirmed: the transcript is right; corrected: the reviewer's text replaces it;
not_speech: no speech (never exported); opt_out: the caller reserved their rights (exported marked
``tdm_reservation: 1``, so the fine-tuning loader skips and counts it, Law 230-VIII Art. 23)."""
REPEAT_ACTS = ("rephrase", "not_heard", "reask")
"""Dialogue acts that ask the caller to say it again: the utterance was not understood."""
CONSENT_VALUES = ("granted", "refused", "ask")
SUFFIX = ".enc"
PSEUDONYM_FILE = f".pseudonym-key{SUFFIX}"
"""The key of the export pseudonyms and erasure marks, written (encrypted) at the first key rotation so
they outlive it; until then it is derived from the capture key."""
LOCK_FILE = ".lock"
"""A server's writer holds a shared lock on it; a key rotation takes it exclusively (never under a writer)."""
ERASED_DIR = ".erased"
"""Under the capture folder: one empty file per call erased on request (named by a keyed hash of its id)."""
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class CaptureError(Exception):
    """Capture is on but cannot work (no key, a bad key, a folder that cannot be written): one line."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def safe_id(value: str) -> bool:
    """Call and utterance ids are file names: letters, digits, - and _ only."""
    return bool(value) and len(value) <= 64 and set(value) <= _ID_CHARS


def make_key() -> str:
    """A new encryption key for ``capture.key_env``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def fernet_from_env(key_env: str, environ=None):
    """The cipher for the key in ``key_env``; CaptureError (one line, no key material) otherwise.
    It also keys the pseudonyms of exported calls (:meth:`CaptureStore.pseudonym`)."""
    from cryptography.fernet import Fernet

    raw = (os.environ if environ is None else environ).get(key_env, "").strip()
    if not raw:
        raise CaptureError(f"capture is enabled but the environment variable {key_env} holds no key (make one with `dauys capture key`)")
    try:
        cipher = Fernet(raw.encode())
    except (ValueError, TypeError):
        raise CaptureError(f"{key_env} is not a capture key (32 url-safe base64-encoded bytes; make one with `dauys capture key`)") from None
    cipher.pseudonym_key = hashlib.sha256(b"dauys-capture-pseudonym\x00" + raw.encode()).digest()
    return cipher


def flac_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def read_flac(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def wav_from_flac(data: bytes) -> bytes:
    """The review page plays WAV (every browser does)."""
    import soundfile

    samples, rate = read_flac(data)
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class Utterance:
    """One captured utterance, as listed and reviewed."""

    call: str
    id: str
    text: str
    language: str
    confidence: float
    created: str
    duration: float = 0.0
    entry: str | None = None
    act: str | None = None
    repeat_asked: bool = False
    """The reply asked the caller to say it again (rephrase, not_heard, reask): recognition or understanding failed."""
    rejected: str | None = None
    """The recogniser rejected it (no_speech, hallucination, ...): no transcript was sent; text is empty."""
    status: str = "pending"
    reviewed_text: str | None = None
    reviewed_at: str | None = None

    @property
    def final_text(self) -> str:
        return self.reviewed_text if self.reviewed_text is not None else self.text

    def to_dict(self) -> dict:
        return {
            "call": self.call, "id": self.id, "text": self.text, "language": self.language, "confidence": self.confidence,
            "created": self.created, "duration": self.duration, "entry": self.entry, "act": self.act,
            "repeat_asked": self.repeat_asked, "rejected": self.rejected, "status": self.status,
            "reviewed_text": self.reviewed_text, "reviewed_at": self.reviewed_at,
        }


@dataclass
class ExportResult:
    manifest: Path
    rows: int = 0
    opt_out: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Utterances not exported, by reason: unreviewed, not_speech, no_text."""
    corrupted: list[str] = field(default_factory=list)
    """Files that could not be decrypted or decoded (call/utterance), skipped."""
    calls: set[str] = field(default_factory=set)


class CaptureStore:
    """The encrypted files of captured calls under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, fernet) -> None:
        self.root = Path(root)
        self.fernet = fernet
        self._pkey: bytes | None = None

    @classmethod
    def from_settings(cls, capture, environ=None) -> "CaptureStore":
        return cls(capture.dir, fernet_from_env(capture.key_env, environ))

    # ------------------------------------------------------------------ checks
    def check_writable(self) -> None:
        """Create ``root`` (mode 700) and prove a file can be written there; CaptureError otherwise."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(self.fernet.encrypt(b"probe"))
            probe.unlink()
        except OSError as e:
            raise CaptureError(f"capture.dir {self.root} is not writable: {e.strerror or e}") from None

    # ------------------------------------------------------------------ low level
    def _write(self, path: Path, data: bytes) -> None:
        self._write_token(path, self.fernet.encrypt(data))

    @staticmethod
    def _write_token(path: Path, token: bytes) -> None:
        """Replace ``path`` with ``token`` atomically (a temporary file, fsync, rename), owner only."""
        tmp = path.with_name(path.name + ".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(token)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read(self, path: Path) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self.fernet.decrypt(path.read_bytes())
        except InvalidToken:
            raise ValueError(f"{path.name}: cannot be decrypted with this key (corrupted, or another key)") from None

    def _read_json(self, path: Path) -> dict:
        try:
            d = json.loads(self._read(path))
        except json.JSONDecodeError:
            raise ValueError(f"{path.name}: not JSON after decryption") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path.name}: not a JSON object")
        return d

    def pseudonym(self, call: str) -> str:
        """The name a call has in exports (``c`` + 15 hex digits, keyed): fine-tuning runs, their reports
        and checkpoints never carry the session id, and only the key holder can link the two."""
        return "c" + hmac.new(self._pseudonym_key(), call.encode(), hashlib.sha256).hexdigest()[:15]

    def _pseudonym_key(self) -> bytes:
        """The pseudonyms' key: kept in the folder since the first key rotation, else derived from the key."""
        if self._pkey is None:
            kept = self.root / PSEUDONYM_FILE
            self._pkey = self._read(kept) if kept.is_file() else getattr(self.fernet, "pseudonym_key", b"")
        return self._pkey

    def call_dir(self, call: str) -> Path:
        if not safe_id(call):
            raise ValueError(f"{call!r} is not a call id")
        return self.root / call

    # ------------------------------------------------------------------ writing (the writer thread)
    def write_call(self, call: str, meta: dict) -> None:
        self._write_files(call, [(f"call.json{SUFFIX}", json.dumps(meta, ensure_ascii=False).encode())])

    def write_utterance(self, call: str, utt: str, samples: np.ndarray, meta: dict) -> None:
        if not safe_id(utt):
            raise ValueError(f"{utt!r} is not an utterance id")
        meta = {**meta, "duration": round(len(samples) / SAMPLE_RATE, 3)}
        self._write_files(call, [(f"{utt}.flac{SUFFIX}", flac_bytes(samples)), (f"{utt}.json{SUFFIX}", json.dumps(meta, ensure_ascii=False).encode())])

    def _write_files(self, call: str, files: list[tuple[str, bytes]]) -> bool:
        """Write a call's files unless the call was erased (``dauys capture delete``, maybe from another
        process while the call is still in progress): checked before, and after, so a write that raced
        the erasure is removed again. False when nothing is kept."""
        d = self.call_dir(call)
        if self.erased(call):
            return False
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name, data in files:
                self._write(d / name, data)
        except FileNotFoundError:
            if not self.erased(call):
                raise
        if self.erased(call):  # erased while this was being written: it goes too
            shutil.rmtree(d, ignore_errors=True)
            return False
        return True

    def _tombstone(self, call: str) -> Path:
        """The mark an erased call leaves: named by a keyed hash (not the export pseudonym), so it holds no
        call id and links to nothing exported."""
        return self.root / ERASED_DIR / hmac.new(self._pseudonym_key(), b"erased\x00" + call.encode(), hashlib.sha256).hexdigest()[:32]

    def erased(self, call: str) -> bool:
        """Was ``call`` erased on request? Its files are then never written again."""
        return self._tombstone(call).exists()

    # ------------------------------------------------------------------ reading
    def calls(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and safe_id(p.name))

    def call_meta(self, call: str) -> dict:
        return self._read_json(self.call_dir(call) / f"call.json{SUFFIX}")

    def utterance_ids(self, call: str) -> list[str]:
        d = self.call_dir(call)
        ids = [p.name[: -len(".json" + SUFFIX)] for p in d.glob(f"*.json{SUFFIX}") if not p.name.endswith(f".review.json{SUFFIX}") and p.name != f"call.json{SUFFIX}"]
        return sorted(ids, key=lambda u: (len(u), u))

    def utterance(self, call: str, utt: str) -> Utterance:
        d = self.call_dir(call)
        if not safe_id(utt):
            raise ValueError(f"{utt!r} is not an utterance id")
        m = self._read_json(d / f"{utt}.json{SUFFIX}")
        u = Utterance(
            call, utt, str(m.get("text", "")), str(m.get("language", "")), float(m.get("confidence", 0.0)), str(m.get("created", "")),
            float(m.get("duration", 0.0)), m.get("entry"), m.get("act"), bool(m.get("repeat_asked", False)), m.get("rejected"),
        )
        review = d / f"{utt}.review.json{SUFFIX}"
        if review.is_file():
            r = self._read_json(review)
            u.status = r.get("status", "pending")
            u.reviewed_text = r.get("text")
            u.reviewed_at = r.get("reviewed_at")
        return u

    def audio(self, call: str, utt: str) -> bytes:
        """The utterance's FLAC bytes (decrypted)."""
        if not safe_id(utt):
            raise ValueError(f"{utt!r} is not an utterance id")
        return self._read(self.call_dir(call) / f"{utt}.flac{SUFFIX}")

    def utterances(self, corrupted: list[str] | None = None) -> list[Utterance]:
        """Every captured utterance; unreadable ones are named in ``corrupted`` and skipped."""
        out = []
        for call in self.calls():
            for utt in self.utterance_ids(call):
                try:
                    out.append(self.utterance(call, utt))
                except (OSError, ValueError) as e:
                    if corrupted is not None:
                        corrupted.append(f"{call}/{utt}: {e}")
        return out

    def for_review(self, limit: int = 500) -> list[Utterance]:
        """Utterances the reviewer should hear first: lowest ASR confidence first, unreviewed before reviewed."""
        items = self.utterances()
        items.sort(key=lambda u: (u.status != "pending", u.confidence, u.created, u.call, len(u.id), u.id))
        return items[:limit]

    def review(self, call: str, utt: str, status: str, text: str | None = None) -> Utterance:
        if status not in REVIEW_STATUSES:
            raise ValueError(f"status must be one of {', '.join(REVIEW_STATUSES)}")
        u = self.utterance(call, utt)  # exists and readable
        if text is not None:
            text = " ".join(str(text).split())
            if len(text) > 2000:
                raise ValueError("text is limited to 2000 characters")
        if status == "confirmed":
            text = None
        elif status == "corrected" and not text:
            raise ValueError("a corrected transcript needs its text")
        self._write(self.call_dir(call) / f"{utt}.review.json{SUFFIX}", json.dumps({"status": status, "text": text, "reviewed_at": _now()}, ensure_ascii=False).encode())
        u.status, u.reviewed_text, u.reviewed_at = status, text, _now()
        return u

    # ------------------------------------------------------------------ deletion, retention
    def find_call(self, call_id: str) -> list[str]:
        """The stored calls ``call_id`` names: a session id, or a carrier's id (Twilio callSid, AudioSocket UUID)."""
        found = []
        for call in self.calls():
            if call == call_id:
                found.append(call)
                continue
            try:
                if self.call_meta(call).get("carrier_call_id") == call_id:
                    found.append(call)
            except (OSError, ValueError):
                pass
        return found

    def delete_call(self, call: str, erase: bool = True) -> int:
        """Remove every file of ``call`` and every exported copy of it; returns how many files went.
        ``erase`` (an erasure request, not retention): first leave a mark that keeps the call from being
        written again, should it still be in progress on a server writing to this folder."""
        d = self.call_dir(call)
        if erase:
            mark = self._tombstone(call)
            mark.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            mark.touch(mode=0o600)
        n = 0
        if d.is_dir():
            n = sum(1 for p in d.rglob("*") if p.is_file())
            shutil.rmtree(d)
        n += self._delete_exported(call)
        return n

    def call_created(self, call: str) -> datetime:
        """When the call was captured (its record, else its folder's time)."""
        try:
            return datetime.fromisoformat(self.call_meta(call)["started"].replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError, AttributeError):
            return datetime.fromtimestamp(self.call_dir(call).stat().st_mtime, timezone.utc)

    def purge(self, retention_days: float, now: datetime | None = None) -> list[str]:
        """Delete the calls captured more than ``retention_days`` ago; returns their ids."""
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
        gone = []
        for call in self.calls():
            try:
                if self.call_created(call) < cutoff:
                    self.delete_call(call, erase=False)  # long over: nothing writes it any more
                    gone.append(call)
            except OSError as e:
                log.warning("capture purge: %s not removed: %s", call, e.strerror or e)
        return gone

    # ------------------------------------------------------------------ key rotation
    @contextlib.contextmanager
    def locked(self, exclusive: bool):
        """The folder's lock: shared by every server writing here, exclusive for a key rotation.
        CaptureError when it cannot be had at once."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CaptureError(
                    f"a server is capturing into {self.root}: stop it (or set capture.enabled = false) before rotating the key"
                    if exclusive else f"the capture key of {self.root} is being rotated: start the server once `dauys capture rotate-key` is done"
                ) from None
            yield
        finally:
            os.close(fd)

    def rotate_key(self, new_fernet) -> tuple[int, list[str]]:
        """Re-encrypt every file under the folder with ``new_fernet`` (``dauys capture rotate-key``); returns
        (files re-encrypted, files no key opens). Never while a server writes here (the lock). The pseudonyms
        and erasure marks keep their names: their key is kept in the folder, encrypted, from now on. A
        rotation cut short can be run again with the same two keys (files already done open with the new one)."""
        from cryptography.fernet import InvalidToken, MultiFernet

        with self.locked(exclusive=True):
            both = MultiFernet([new_fernet, self.fernet])
            kept = self.root / PSEUDONYM_FILE
            if not kept.is_file():
                self._write(kept, self._pseudonym_key())  # under the old key: rotated with the rest below
            elif self._pkey is None:  # a rotation cut short may have re-encrypted it already
                try:
                    self._pkey = both.decrypt(kept.read_bytes())
                except InvalidToken:
                    raise CaptureError(f"neither key opens {kept}: is the old key the one in capture.key_env?") from None
            done, unreadable = 0, []
            for path in sorted(self.root.rglob(f"*{SUFFIX}")):
                if not path.is_file():
                    continue
                try:
                    token = both.rotate(path.read_bytes())
                except InvalidToken:
                    unreadable.append(str(path.relative_to(self.root)))
                    continue
                self._write_token(path, token)
                done += 1
            self.fernet = new_fernet
            return done, unreadable

    # ------------------------------------------------------------------ export
    def _exports_file(self) -> Path:
        return self.root / f"exports.json{SUFFIX}"

    def _exports(self) -> list[str]:
        f = self._exports_file()
        if not f.is_file():
            return []
        try:
            return list(json.loads(self._read(f)).get("dirs", []))
        except (OSError, ValueError):
            return []

    def _remember_export(self, out: Path) -> None:
        dirs = self._exports()
        if str(out) not in dirs:
            dirs.append(str(out))
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write(self._exports_file(), json.dumps({"dirs": dirs}).encode())

    def _delete_exported(self, call: str) -> int:
        """Remove ``call``'s rows (in every ``*.jsonl``: the manifest, its train/held-out splits) and audio
        from every export made by :meth:`export`."""
        n = 0
        name = self.pseudonym(call)
        for d in map(Path, self._exports()):
            for manifest in sorted(d.glob("*.jsonl")) if d.is_dir() else []:
                lines = manifest.read_text(encoding="utf-8").splitlines()
                keep = []
                for line in lines:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        keep.append(line)
                        continue
                    if row.get("speaker") != name:
                        keep.append(line)
                if len(keep) != len(lines):
                    manifest.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
                    n += 1
            audio = d / "audio"
            if audio.is_dir():
                for p in audio.glob(f"{name}_*"):
                    p.unlink()
                    n += 1
        return n

    def export(self, out: Path, include_unreviewed: bool = False, calls: Iterable[str] | None = None) -> ExportResult:
        """Write ``out/manifest.jsonl`` and ``out/audio/*.flac`` (decrypted) for ``scripts/finetune_asr.py``.

        Rows: reviewed utterances (confirmed: the transcript; corrected: the reviewer's text), and
        with ``include_unreviewed`` the pending ones too (the recogniser's text). ``opt_out`` rows are
        written with ``tdm_reservation: 1`` (the loader skips and counts them); ``not_speech`` and
        empty ones are left out. ``speaker`` is the call's :meth:`pseudonym` (held-out splits are by call;
        ids and file names carry the pseudonym, never the session id).
        Corrupted files are skipped and listed in the result."""
        out = Path(out)
        (out / "audio").mkdir(parents=True, exist_ok=True)
        res = ExportResult(out / "manifest.jsonl")
        wanted = set(calls) if calls is not None else None
        rows = []
        for call in self.calls():
            if wanted is not None and call not in wanted:
                continue
            for utt in self.utterance_ids(call):
                try:
                    u = self.utterance(call, utt)
                except (OSError, ValueError) as e:
                    res.corrupted.append(f"{call}/{utt}: {e}")
                    continue
                reason = None
                if u.status == "not_speech":
                    reason = "not_speech"
                elif u.status == "pending" and not include_unreviewed:
                    reason = "unreviewed"
                elif not u.final_text.strip() and u.status != "opt_out":
                    reason = "no_text"
                if reason:
                    res.skipped[reason] = res.skipped.get(reason, 0) + 1
                    continue
                alias = self.pseudonym(call)
                name = f"{alias}_{utt}.flac"
                row = {"id": f"{alias}-{utt}", "audio": f"audio/{name}", "text": u.final_text, "language": u.language, "speaker": alias,
                       "review": u.status, "confidence": u.confidence}
                if u.status == "opt_out":
                    row["tdm_reservation"] = 1  # Law 230-VIII Art. 23: the loader skips it, counted
                    res.opt_out += 1
                else:
                    try:
                        data = self.audio(call, utt)
                        read_flac(data)  # decodes
                    except Exception as e:  # noqa: BLE001 - any decoding failure: a corrupted file
                        res.corrupted.append(f"{call}/{utt}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                        continue
                    (out / "audio" / name).write_bytes(data)
                rows.append(row)
                res.calls.add(call)
        res.manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        res.rows = len(rows)
        self._remember_export(out.resolve())
        return res


# ---------------------------------------------------------------------- the writer
class CaptureWriter:
    """One thread writing for every call, behind a bounded queue (nothing blocks the event loop)."""

    def __init__(self, store: CaptureStore, queue_size: int = 256) -> None:
        self.store = store
        self._lock = store.locked(exclusive=False)
        self._lock.__enter__()  # shared with other servers; keeps a key rotation out while this writes
        self._q: queue.Queue = queue.Queue(queue_size)
        self.failed: set[str] = set()
        """Calls whose capture stopped (a write failed: disk full, I/O error)."""
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def submit(self, call: str, job) -> bool:
        """Queue ``job(store)`` for ``call``; False (dropped, counted) when the queue is full or the call failed."""
        if call in self.failed:
            return False
        try:
            self._q.put_nowait((call, job))
        except queue.Full:
            metrics.CAPTURE_DROPPED.labels("queue_full").inc()
            log.warning("capture: writer queue full, an utterance of %s dropped", call)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                call, job = item
                if call in self.failed:
                    continue
                try:
                    job(self.store)
                    metrics.CAPTURE_WRITES.inc()
                except OSError as e:
                    reason = "disk_full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
                    self.failed.add(call)
                    metrics.CAPTURE_DROPPED.labels(reason).inc()
                    log.error("capture of %s stopped (%s: %s); the call goes on", call, reason, e.strerror or type(e).__name__)
                except Exception as e:  # noqa: BLE001 - a bad item must not stop the writer for other calls
                    self.failed.add(call)
                    metrics.CAPTURE_DROPPED.labels("error").inc()
                    log.error("capture of %s stopped: %s", call, type(e).__name__)
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._q.unfinished_tasks

    def close(self) -> None:
        try:
            self._q.put(None, timeout=5)
        except queue.Full:
            pass
        self._thread.join(10)
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


def open_capture(capture_settings, environ=None) -> CaptureWriter | None:
    """The process's writer when ``capture.enabled``; CaptureError (one line) when it cannot work."""
    if not capture_settings.enabled:
        return None
    store = CaptureStore.from_settings(capture_settings, environ)
    store.check_writable()
    return CaptureWriter(store, capture_settings.queue_size)


# ---------------------------------------------------------------------- one call
@dataclass
class _Pending:
    audio: np.ndarray
    meta: dict


class CallCapture:
    """The consent decision of one session and, once granted, its utterances.

    ``consent`` is what the start said (``granted``, ``refused``, ``ask`` or None); ``ask_default``
    is ``capture.ask_consent``. The decision is final: ``granted`` or ``refused``; a caller asked
    whose first turn is no yes/no has not consented (``unanswered``)."""

    def __init__(self, session_id: str, writer: CaptureWriter | None, consent: str | None, ask_default: bool, transport: str = "native") -> None:
        self.session_id = session_id
        self.writer = writer
        self.transport = transport
        self.carrier_call_id: str | None = None
        self.decision: str | None = None
        """granted or refused, once decided."""
        self.source: str | None = None
        self.asking = False
        if consent == "granted":
            self._decide("granted", "upstream")
        elif consent == "refused":
            self._decide("refused", "upstream")
        elif consent == "ask" or (consent is None and ask_default):
            self.asking = True
        else:
            self._decide("refused", "not_asked")
        self._pending: dict[str, _Pending] = {}
        self._call_written = False

    def _decide(self, decision: str, source: str) -> None:
        self.decision, self.source, self.asking = decision, source, False
        metrics.CAPTURE_CONSENT.labels(decision, source).inc()

    @property
    def capturing(self) -> bool:
        return self.decision == "granted" and self.writer is not None and self.session_id not in self.writer.failed

    def record(self) -> dict:
        """The decision as the provenance and the consent event carry it."""
        return {"recording": self.decision or "asked", "source": self.source, "captured": self.capturing}

    def answer(self, kind: str | None, source: str) -> bool:
        """The caller's answer to the question: yes/no (or first/second, keys 1/2) decides; anything
        else while asking means no consent (``unanswered``). True if the answer was a yes or a no."""
        if not self.asking:
            return False
        if kind in ("yes", "first"):
            self._decide("granted", source)
            return True
        if kind in ("no", "second"):
            self._decide("refused", source)
            return True
        self._decide("refused", "unanswered")
        return False

    # ------------------------------------------------------------------ utterances
    def audio(self, utterance_id: str, samples: np.ndarray) -> None:
        if self.capturing:
            self._pending[utterance_id] = _Pending(np.asarray(samples, dtype=np.float32).copy(), {"created": _now()})

    def transcript(self, utterance_id: str, text: str, language: str, confidence: float | None) -> None:
        p = self._pending.get(utterance_id)
        if p is not None:
            p.meta.update(text=text, language=language, confidence=round(float(confidence or 0.0), 4))

    def discarded(self, utterance_id: str, reason: str, language: str) -> None:
        p = self._pending.get(utterance_id)
        if p is not None:
            p.meta.update(text="", language=language, confidence=0.0, rejected=reason)

    def reply(self, utterance_id: str, dialogue: dict | None) -> None:
        """The reply to an utterance is known: write it (with its KB entry and the repeat flag)."""
        p = self._pending.pop(utterance_id, None)
        if p is None:
            return
        d = dialogue or {}
        entry = d.get("entry") or ((d.get("entries") or [None])[0])
        p.meta.update(entry=entry, act=d.get("act"), repeat_asked=d.get("act") in REPEAT_ACTS)
        self._write(utterance_id, p)

    def _write(self, utterance_id: str, p: _Pending) -> None:
        if not self.capturing or "language" not in p.meta:
            return
        if not self._call_written:
            self._call_written = True
            meta = {"session_id": self.session_id, "carrier_call_id": self.carrier_call_id, "transport": self.transport,
                    "started": _now(), "consent": {"recording": self.decision, "source": self.source}}
            self.writer.submit(self.session_id, lambda store, m=meta: store.write_call(self.session_id, m))
        self.writer.submit(self.session_id, lambda store, a=p.audio, m=p.meta: store.write_utterance(self.session_id, utterance_id, a, m))

    def close(self) -> None:
        """The call is over: write what still waited for a reply (a discarded utterance, the last one)."""
        for uid, p in list(self._pending.items()):
            self._write(uid, p)
        self._pending.clear()
