"""Call capture without models: the encrypted store, review, export to fine-tuning (opt-outs), deletion,
retention, the writer (disk full, full queue), the consent decision, and bad input at start."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline import metrics
from pipeline.capture import CallCapture, CaptureError, CaptureStore, CaptureWriter, fernet_from_env, make_key, open_capture
from pipeline.errors import ProtocolError
from pipeline.events import Consent, Start, parse_client_message, parse_server_event
from server.codecs import AudioSocketCodec, CallStart, TwilioCodec, frame
from tests.helpers.paths import CACHE_DIR, ROOT
from tests.helpers.sealed import assert_sealed
from tests.helpers.server import make_settings

KEY_ENV = "DAUYS_TEST_CAPTURE_KEY"


def _tone(seconds=0.5, f=440.0):
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    return CaptureStore(tmp_path / "capture", fernet_from_env(KEY_ENV, {KEY_ENV: make_key()}))


def _fill(store, call="c0ffee01", n=3, carrier=None, started=None):
    store.write_call(call, {"session_id": call, "carrier_call_id": carrier, "transport": "native", "started": started or "2026-12-04T10:00:00Z"})
    for i in range(1, n + 1):
        store.write_utterance(call, f"u{i}", _tone(0.3 + 0.1 * i), {"text": f"сөз {i}", "language": "kk", "confidence": 0.9 - 0.2 * i, "created": f"2026-12-04T10:00:0{i}Z"})


def test_files_are_encrypted_and_read_back_only_with_the_key(store, tmp_path):
    _fill(store)
    files = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert {p.name for p in files} == {"call.json.enc", "u1.flac.enc", "u1.json.enc", "u2.flac.enc", "u2.json.enc", "u3.flac.enc", "u3.json.enc"}
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o600, p  # owner only
        plain = assert_sealed(p.read_bytes(), store.fernet, str(p))  # the whole file is one token of this key
        assert plain.startswith(b"fLaC") == (".flac." in p.name)
    u = store.utterance("c0ffee01", "u2")
    assert (u.text, u.language, u.confidence, u.duration) == ("сөз 2", "kk", 0.5, 0.5)
    samples, rate = __import__("pipeline.capture", fromlist=["read_flac"]).read_flac(store.audio("c0ffee01", "u2"))
    assert rate == 16000 and len(samples) == 8000 and np.abs(samples - _tone(0.5)).max() < 1e-3  # FLAC 16 kHz, lossless to 16 bits
    other = CaptureStore(store.root, fernet_from_env(KEY_ENV, {KEY_ENV: make_key()}))
    with pytest.raises(ValueError, match="cannot be decrypted"):
        other.utterance("c0ffee01", "u1")


def test_review_order_lowest_confidence_first_and_edits_persist(store):
    _fill(store, "call1", 3)
    _fill(store, "call2", 1)
    order = [(u.call, u.id) for u in store.for_review()]
    assert order == [("call1", "u3"), ("call1", "u2"), ("call1", "u1"), ("call2", "u1")]
    store.review("call1", "u3", "corrected", "  дұрыс   мәтін ")
    again = store.utterance("call1", "u3")
    assert (again.status, again.reviewed_text, again.final_text, again.text) == ("corrected", "дұрыс мәтін", "дұрыс мәтін", "сөз 3")
    assert store.for_review()[-1].id == "u3"  # reviewed ones go after the pending
    with pytest.raises(ValueError):
        store.review("call1", "u1", "corrected", "")
    with pytest.raises(ValueError):
        store.review("call1", "u1", "maybe")
    with pytest.raises(FileNotFoundError):
        store.review("call1", "u9", "confirmed")
    with pytest.raises(ValueError):
        store.review("../etc", "u1", "confirmed")


def test_export_reviewed_rows_opt_outs_marked_for_the_loader_and_corrupted_files_reported(store, tmp_path):
    from models.finetune.data import load_rows

    _fill(store, "call1", 4)
    _fill(store, "call2", 2)
    store.review("call1", "u1", "confirmed")
    store.review("call1", "u2", "corrected", "жарықты қос")
    store.review("call1", "u3", "opt_out")
    store.review("call1", "u4", "not_speech")
    store.review("call2", "u1", "confirmed")
    (store.root / "call2" / "u1.flac.enc").write_bytes(b"garbage")  # corrupted audio
    (store.root / "call2" / "u2.json.enc").write_bytes(b"garbage")  # corrupted record
    res = store.export(tmp_path / "out")
    assert res.rows == 3 and res.opt_out == 1
    assert res.skipped == {"not_speech": 1}
    assert sorted(c.split(":")[0] for c in res.corrupted) == ["call2/u1", "call2/u2"]
    rows = [json.loads(x) for x in res.manifest.read_text(encoding="utf-8").splitlines()]
    alias = store.pseudonym("call1")
    assert alias != store.pseudonym("call2") and len(alias) == 16
    assert [(r["id"], r["speaker"], r["text"], r.get("tdm_reservation")) for r in rows] == [
        (f"{alias}-u1", alias, "сөз 1", None), (f"{alias}-u2", alias, "жарықты қос", None), (f"{alias}-u3", alias, "сөз 3", 1)]
    assert "call1" not in res.manifest.read_text(encoding="utf-8")  # exports never carry the session id
    assert not (tmp_path / "out" / "audio" / f"{alias}_u3.flac").exists()  # an opt-out's audio is never copied
    loaded = load_rows(res.manifest)
    assert [r.id for r in loaded.rows] == [f"{alias}-u1", f"{alias}-u2"] and loaded.skipped_optout.count == 1
    assert loaded.rows[1].text == "жарықты қос" and abs(loaded.rows[1].duration - 0.5) < 0.01
    everything = store.export(tmp_path / "all", include_unreviewed=True)
    assert everything.rows == 3 and "unreviewed" not in everything.skipped  # call2/u2 is corrupted, call2/u1 too
    assert store.export(tmp_path / "none").skipped == {"not_speech": 1}


def test_delete_by_session_or_carrier_id_leaves_nothing_and_removes_exported_copies(store, tmp_path):
    _fill(store, "call1", 2, carrier="CA0123456789abcdef")
    _fill(store, "call2", 2)
    for c in ("call1", "call2"):
        store.review(c, "u1", "confirmed")
    store.export(tmp_path / "out")
    a1, a2 = store.pseudonym("call1"), store.pseudonym("call2")
    split = (tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8")
    (tmp_path / "out" / "train.jsonl").write_text(split, encoding="utf-8")  # a split made from it (dauys finetune does)
    assert store.find_call("CA0123456789abcdef") == ["call1"]
    assert store.delete_call("call1") > 0
    assert not (store.root / "call1").exists() and store.calls() == ["call2"]
    assert not list((tmp_path / "out" / "audio").glob(f"{a1}_*")) and list((tmp_path / "out" / "audio").glob(f"{a2}_*"))
    for name in ("manifest.jsonl", "train.jsonl"):
        manifest = (tmp_path / "out" / name).read_text(encoding="utf-8")
        assert a1 not in manifest and a2 in manifest
    assert store.find_call("CA0123456789abcdef") == []


def test_a_call_erased_while_in_progress_is_never_written_again(store, tmp_path):
    """`dauys capture delete` may run (another process) while the server still captures the call: its
    later utterances, and a write that raced the erasure, leave nothing."""
    _fill(store, "live1", 1)
    assert store.delete_call("live1") > 0 and store.erased("live1")
    store.write_utterance("live1", "u2", _tone(0.3), {"text": "сөз", "language": "kk"})  # the call goes on
    store.write_call("live1", {"session_id": "live1"})
    assert not (store.root / "live1").exists() and store.calls() == []
    # the mark holds no call id and is not the export pseudonym
    marks = [p.name for p in (store.root / ".erased").iterdir()]
    assert len(marks) == 1 and "live1" not in marks[0] and store.pseudonym("live1") not in marks[0]

    # the erasure lands between the two files of an utterance being written
    _fill(store, "live2", 1)
    other = CaptureStore(store.root, store.fernet)  # the CLI's own store
    real_write = store._write

    def write(path, data):
        real_write(path, data)
        if path.name.startswith("u2.flac"):
            other.delete_call("live2")

    store._write = write
    store.write_utterance("live2", "u2", _tone(0.3), {"text": "сөз", "language": "kk"})
    assert not (store.root / "live2").exists() and store.calls() == []
    # retention is no erasure request: no mark, a later call of the same id could be captured
    _fill(store, "old1", 1, started="2020-01-01T00:00:00Z")
    assert store.purge(30) == ["old1"] and not store.erased("old1")


def test_retention_purges_calls_older_than_the_limit(store):
    old = (datetime.now(timezone.utc) - timedelta(days=31)).isoformat().replace("+00:00", "Z")
    new = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    _fill(store, "oldcall", 1, started=old)
    _fill(store, "newcall", 1, started=new)
    assert store.purge(30) == ["oldcall"]
    assert store.calls() == ["newcall"]
    assert store.purge(0) == ["newcall"] and store.calls() == []


def test_disk_full_stops_capture_for_that_call_only_and_is_counted(store):
    writer = CaptureWriter(store, 16)
    real = store.write_utterance

    def full_for_one(call, utt, samples, meta):
        if call == "fullcall":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(call, utt, samples, meta)

    store.write_utterance = full_for_one
    before = metrics.CAPTURE_DROPPED.labels("disk_full")._value.get()
    a = CallCapture("fullcall", writer, "granted", False)
    b = CallCapture("okcall", writer, "granted", False)
    for cap in (a, b):
        cap.audio("u1", _tone())
        cap.transcript("u1", "бір", "kk", 0.8)
        cap.reply("u1", {"act": "answer", "entry": "card_blocked"})
    assert writer.flush()
    assert metrics.CAPTURE_DROPPED.labels("disk_full")._value.get() == before + 1
    assert not a.capturing and b.capturing and a.record()["captured"] is False
    a.audio("u2", _tone())  # nothing more is taken for the failed call
    assert "u2" not in a._pending
    assert store.utterance("okcall", "u1").entry == "card_blocked"
    writer.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(store):
    writer = CaptureWriter(store, 1)
    import threading

    gate = threading.Event()
    writer.submit("x", lambda s: gate.wait(5))  # the writer is busy
    assert writer.flush(0.05) is False
    before = metrics.CAPTURE_DROPPED.labels("queue_full")._value.get()
    results = [writer.submit("x", lambda s: None) for _ in range(3)]
    assert results.count(False) >= 2
    assert metrics.CAPTURE_DROPPED.labels("queue_full")._value.get() >= before + 2
    gate.set()
    assert writer.flush()
    writer.close()


def test_call_capture_records_entry_repeat_and_only_with_consent(store):
    writer = CaptureWriter(store, 16)
    cap = CallCapture("s1", writer, "granted", False)
    cap.carrier_call_id = "CAxyz"
    cap.audio("u1", _tone())
    cap.transcript("u1", "не дедіңіз", "kk", 0.31)
    cap.reply("u1", {"act": "rephrase"})
    cap.audio("u2", _tone())
    cap.discarded("u2", "no_speech", "kk")
    cap.close()
    refused = CallCapture("s2", writer, "refused", False)
    refused.audio("u1", _tone())
    refused.transcript("u1", "x", "kk", 0.5)
    refused.reply("u1", {"act": "answer"})
    none = CallCapture("s3", writer, None, False)
    assert (none.decision, none.source) == ("refused", "not_asked")
    assert writer.flush()
    assert store.calls() == ["s1"]
    u1, u2 = store.utterance("s1", "u1"), store.utterance("s1", "u2")
    assert (u1.repeat_asked, u1.act, u1.confidence) == (True, "rephrase", 0.31)
    assert (u2.rejected, u2.text) == ("no_speech", "")
    assert store.call_meta("s1")["carrier_call_id"] == "CAxyz" and store.call_meta("s1")["consent"] == {"recording": "granted", "source": "upstream"}
    writer.close()


@pytest.mark.parametrize("kind, source, decision", [("yes", "voice", "granted"), ("first", "dtmf", "granted"), ("no", "voice", "refused"), (None, "voice", "refused")])
def test_consent_answers(kind, source, decision):
    cap = CallCapture("s", None, "ask", False)
    assert cap.asking and cap.record()["recording"] == "asked"
    assert cap.answer(kind, source) is (kind is not None)
    assert cap.decision == decision and cap.source == (source if kind else "unanswered") and not cap.asking
    assert cap.capturing is False  # no writer on this server: never captured


def test_start_consent_on_the_wire_and_the_consent_event_round_trips():
    msg = parse_client_message(json.dumps({"type": "start", "consent": {"recording": "granted"}}))
    assert msg.consent == "granted"
    assert parse_client_message(msg.to_json()) == msg
    assert parse_client_message(json.dumps({"type": "start"})).consent is None
    for bad in ({"recording": "yes"}, "granted", {"recording": None}):
        with pytest.raises(ProtocolError) as e:
            parse_client_message(json.dumps({"type": "start", "consent": bad}))
        assert e.value.code == "invalid_message"
    ev = Consent("granted", "dtmf", True, "dtmf:1")
    assert parse_server_event(ev.to_json()) == ev


def test_phone_carriers_bring_consent_the_way_they_bring_the_language():
    tw = TwilioCodec()
    start = {"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1", "customParameters": {"consent": "granted", "language": "kk"}}}
    (call,) = [i for i in tw.decode(json.dumps(start)) if isinstance(i, CallStart)]
    assert call.start.consent == "granted" and call.start.language == "kk"
    start["start"]["customParameters"] = {"consent": "whatever"}
    (call,) = [i for i in TwilioCodec().decode(json.dumps(start)) if isinstance(i, CallStart)]
    assert call.start.consent is None
    (call,) = [i for i in AudioSocketCodec("auto", "ask").decode(frame(0x10, b"\0" * 320)) if isinstance(i, CallStart)]
    assert call.start.consent == "ask"
    (call,) = [i for i in AudioSocketCodec("auto", "none").decode(frame(0x10, b"\0" * 320)) if isinstance(i, CallStart)]
    assert call.start.consent is None
    assert Start().consent is None


def test_capture_on_but_unusable_is_a_one_line_error(tmp_path):
    s = make_settings(capture={"enabled": True, "dir": str(tmp_path / "c"), "key_env": KEY_ENV})
    with pytest.raises(CaptureError, match=f"{KEY_ENV} holds no key"):
        open_capture(s.capture, environ={})
    with pytest.raises(CaptureError, match="is not a capture key"):
        open_capture(s.capture, environ={KEY_ENV: "short"})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s2 = make_settings(capture={"enabled": True, "dir": str(blocker / "capture"), "key_env": KEY_ENV})
    with pytest.raises(CaptureError, match="is not writable"):
        open_capture(s2.capture, environ={KEY_ENV: make_key()})
    assert open_capture(make_settings().capture) is None  # off by default


@pytest.mark.parametrize("case", ["no_key", "unwritable"])
def test_serve_refuses_to_start_with_unusable_capture(tmp_path, case):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", DAUYS_CAPTURE__ENABLED="true")
    env.pop("DAUYS_CAPTURE_KEY", None)
    if case == "unwritable":
        env.update(DAUYS_CAPTURE__DIR=str(blocker / "capture"), DAUYS_CAPTURE_KEY=make_key())
    proc = subprocess.run([sys.executable, "-m", "server", "serve", "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dauys: error: ")
    assert ("DAUYS_CAPTURE_KEY holds no key" if case == "no_key" else "is not writable") in lines[0]
    assert "listening" not in proc.stdout


def test_capture_cli_key_list_export_delete_purge(tmp_path):
    key = make_key()
    cap_dir = tmp_path / "capture"
    store = CaptureStore(cap_dir, fernet_from_env(KEY_ENV, {KEY_ENV: key}))
    _fill(store, "call1", 2, carrier="CAcli")
    store.review("call1", "u1", "confirmed")
    env = dict(os.environ, DAUYS_CAPTURE__DIR=str(cap_dir), DAUYS_CAPTURE_KEY=key)

    def dauys(*args):
        return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    k = dauys("capture", "key")
    assert k.returncode == 0 and fernet_from_env("K", {"K": k.stdout.strip()})
    listed = dauys("capture", "list", "--json")
    assert listed.returncode == 0
    assert [json.loads(x) for x in listed.stdout.splitlines()][0] == {
        "call": "call1", "carrier_call_id": "CAcli", "transport": "native", "started": "2026-12-04T10:00:00Z", "utterances": 2, "reviewed": 1, "corrupted": 0}
    (cap_dir / "call1" / "u2.json.enc").write_bytes(b"not a token")  # a corrupted file
    assert json.loads(dauys("capture", "list", "--json").stdout)["corrupted"] == 1
    out = dauys("capture", "export", str(tmp_path / "ft"))
    assert out.returncode == 0 and "exported 1 utterances of 1 calls" in out.stdout, out.stdout + out.stderr
    assert "corrupted, skipped: call1/u2" in out.stderr and "NOT encrypted" in out.stderr
    assert dauys("capture", "delete", "--call", "nosuch").returncode == 1
    gone = dauys("capture", "delete", "--call", "CAcli")
    assert gone.returncode == 0 and "deleted 1 call" in gone.stdout
    assert not (cap_dir / "call1").exists() and not list((tmp_path / "ft" / "audio").iterdir())
    assert dauys("capture", "purge").returncode == 0
    nokey = subprocess.run([sys.executable, "-m", "server", "capture", "list"], cwd=ROOT, env={k: v for k, v in env.items() if k != "DAUYS_CAPTURE_KEY"},
                           capture_output=True, text=True, timeout=60)
    assert nokey.returncode == 2 and "DAUYS_CAPTURE_KEY holds no key" in nokey.stderr


def test_rotating_the_key_re_encrypts_everything_and_keeps_pseudonyms_and_erasures(tmp_path):
    old_key = make_key()
    store = CaptureStore(tmp_path / "capture", fernet_from_env("OLD", {"OLD": old_key}))
    _fill(store, "call1", 2)
    _fill(store, "call2", 1)
    store.review("call1", "u1", "confirmed")
    store.review("call2", "u1", "confirmed")
    store.export(tmp_path / "ft")
    _fill(store, "gone1", 1)
    store.delete_call("gone1")  # an erasure before the rotation
    before = {c: store.pseudonym(c) for c in ("call1", "call2", "gone1")}
    old = CaptureStore(store.root, store.fernet)
    new_key = make_key()
    new = fernet_from_env("NEW", {"NEW": new_key})

    done, unreadable = store.rotate_key(new)
    assert unreadable == [] and done == sum(1 for p in store.root.rglob("*.enc"))
    with pytest.raises(ValueError, match="cannot be decrypted"):  # the old key opens nothing now
        old.utterance("call1", "u1")
    for p in store.root.rglob("*.enc"):
        assert_sealed(p.read_bytes(), new, str(p)) if not p.name.startswith(".pseudonym") else new.decrypt(p.read_bytes())
    fresh = CaptureStore(store.root, fernet_from_env("NEW", {"NEW": new_key}))  # the server, restarted on the new key
    assert fresh.utterance("call1", "u2").text == "сөз 2" and fresh.calls() == ["call1", "call2"]
    assert {c: fresh.pseudonym(c) for c in before} == before  # exports made before still name the same calls
    assert fresh.erased("gone1")  # and an erased call stays erased
    fresh.delete_call("call1")  # so an erasure after the rotation still finds its exported copies
    assert not list((tmp_path / "ft" / "audio").glob(f"{before['call1']}_*")) and list((tmp_path / "ft" / "audio").glob(f"{before['call2']}_*"))
    # cut short and run again with the same two keys (the old one still in capture.key_env): nothing is lost
    again = CaptureStore(store.root, fernet_from_env("OLD", {"OLD": old_key}))
    assert again.rotate_key(new)[1] == [] and again.pseudonym("call2") == before["call2"]
    assert fresh.utterance("call2", "u1").text == "сөз 1"
    with pytest.raises(CaptureError, match="neither key"):  # a wrong old key is named, nothing is touched
        CaptureStore(store.root, fernet_from_env("X", {"X": make_key()})).rotate_key(fernet_from_env("Y", {"Y": make_key()}))


def test_no_key_rotation_while_a_server_writes_and_no_writer_during_one(store):
    _fill(store, "call1", 1)
    writer = CaptureWriter(store, 4)  # a running server's writer
    try:
        with pytest.raises(CaptureError, match="a server is capturing"):
            store.rotate_key(fernet_from_env("NEW", {"NEW": make_key()}))
        assert store.utterance("call1", "u1").text == "сөз 1"  # nothing was touched
    finally:
        writer.close()
    with store.locked(exclusive=True):  # a rotation under way: a server cannot start capturing
        with pytest.raises(CaptureError, match="being rotated"):
            CaptureWriter(store, 4)
    assert store.rotate_key(fernet_from_env("NEW", {"NEW": make_key()}))[1] == []


def test_capture_cli_rotate_key(tmp_path):
    key, new_key = make_key(), make_key()
    cap_dir = tmp_path / "capture"
    _fill(CaptureStore(cap_dir, fernet_from_env(KEY_ENV, {KEY_ENV: key})), "call1", 1)
    env = dict(os.environ, DAUYS_CAPTURE__DIR=str(cap_dir), DAUYS_CAPTURE_KEY=key, DAUYS_NEW_KEY=new_key)
    run = subprocess.run([sys.executable, "-m", "server", "capture", "rotate-key", "--new-key-env", "DAUYS_NEW_KEY"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    # the call's record, its utterance's audio and text, and the pseudonyms' key
    assert run.returncode == 0 and "re-encrypted 4 files" in run.stdout and "DAUYS_CAPTURE_KEY" in run.stdout, run.stdout + run.stderr
    assert new_key not in run.stdout + run.stderr and key not in run.stdout + run.stderr
    assert CaptureStore(cap_dir, fernet_from_env("N", {"N": new_key})).utterance("call1", "u1").text == "сөз 1"


def test_switch_decision_needs_the_margin():
    from server.cli import decide_switch

    assert decide_switch({"wer_before": 0.5, "wer_after": 0.3, "n": 4}, 0.02)["switch"] is True
    no = decide_switch({"wer_before": 0.5, "wer_after": 0.49, "n": 4}, 0.02)
    assert no["switch"] is False and "not better by the margin" in no["reason"]
    assert decide_switch({"wer_before": 0.5, "wer_after": 0.6}, 0.0)["switch"] is False
    assert decide_switch(None, 0.0)["switch"] is False


def test_sighup_reload_sees_a_repointed_model_link(tmp_path):
    """`dauys finetune --from-capture` repoints capture.model_link; the unchanged asr section then still means a new model."""
    from server.app import DauysServer

    a, b = tmp_path / "model-a", tmp_path / "model-b"
    a.mkdir()
    b.mkdir()
    link = tmp_path / "current"
    link.symlink_to(a)
    settings = make_settings(asr={"model": str(link)})
    server = DauysServer(settings, hub=object())
    assert not server.asr_changed(settings.asr)
    tmp = tmp_path / "current.new"
    tmp.symlink_to(b)
    os.replace(tmp, link)
    assert server.asr_changed(settings.asr)
    assert server.asr_changed(make_settings(asr={"model": "embedded:whisper-base"}).asr)


def test_switch_repoints_the_link_atomically_and_sends_sighup(tmp_path):

    from server.cli import _switch

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    link = tmp_path / "current"
    link.symlink_to(old)
    settings = make_settings(asr={"model": str(link)}, capture={"model_link": str(link)})
    # stands in for the server: its own SIGHUP handler exits 42 (a plain `sleep` would inherit an ignored
    # SIGHUP from a run under nohup and never end)
    server = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a: sys.exit(42))\ntime.sleep(30)"])
    time.sleep(0.5)  # its handler in place
    decision = {"switch": True, "reason": "better", "model": str(new)}
    _switch(decision, settings.capture, settings, server.pid)
    assert os.readlink(link) == str(new) and decision["linked"] == str(link) and decision["reloaded_pid"] == server.pid
    assert server.wait(10) == 42
    unlinked = {"switch": True, "reason": "better", "model": str(new)}
    _switch(unlinked, make_settings().capture, settings, None)
    assert unlinked["switch"] is False and "set capture.model_link" in unlinked["reason"]


def test_finetune_from_capture_needs_two_reviewed_calls(tmp_path):
    key = make_key()
    store = CaptureStore(tmp_path / "capture", fernet_from_env(KEY_ENV, {KEY_ENV: key}))
    _fill(store, "onlyone", 2)
    store.review("onlyone", "u1", "confirmed")
    env = dict(os.environ, DAUYS_CAPTURE__DIR=str(tmp_path / "capture"), DAUYS_CAPTURE_KEY=key)
    proc = subprocess.run([sys.executable, "-m", "server", "finetune", "--from-capture", "--out", str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "at least two calls" in proc.stderr
    assert not (tmp_path / "run" / "run").exists()  # nothing was trained
