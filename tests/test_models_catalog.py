"""The model catalog and `dauys models`: pull through a real HTTP download path, convert, serve, carry offline.

A stand-in hub (tests/helpers/hub.py: a real HTTP server in a thread speaking huggingface_hub's
endpoints) serves a tiny random transformers Whisper (tests/tools/make_tiny_whisper.py) and a tiny
Piper voice (tests/tools/make_test_voice.py, run in its own process).  Nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from models.catalog import NOT_STATED, load_catalog
from models.errors import ModelError
from models.store import MANIFEST, STAGING, IntegrityError, LicenceError, ModelStore, NotPulledError, OfflineError, sha256_file
from tests.helpers.hub import StandInHub, free_port
from tests.helpers.paths import CACHE_DIR, ROOT

WHISPER_REPO = "test-org/tiny-whisper-kk"
VOICE_REPO = "test-org/piper-voices"
VOICE_DIR = "kk/kk_KZ/tiny/x_low"
VOICE = "kk_KZ-tiny-x_low.onnx"


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg.strip() and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------------------- the catalog itself
REQUIRED_IDS = {
    "whisper-base", "faster-whisper-small", "faster-whisper-medium", "faster-whisper-large-v3", "faster-whisper-large-v3-turbo",
    "kk-whisper-base", "kk-sybyrla", "kk-whisper-turbo-kaz-rus", "kk-piper-issai-high", "kk-piper-iseke-x-low", "kk-piper-raya-x-low",
    "ru-piper-irina-medium", "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "kazllm-8b", "sherkala-8b-chat", "silero-vad",
}


def test_builtin_catalog_parses_and_every_entry_has_the_required_fields():
    catalog = load_catalog()
    assert REQUIRED_IDS <= set(catalog.entries)
    for e in catalog:
        assert e.kind in ("asr", "tts", "llm", "vad") and e.name and e.size and e.languages and e.license, e.id
        if e.downloadable:
            assert e.source.hub.count("/") == 1 and e.source.revision, e.id
            if len(e.source.revision) != 40 and e.source.revision in ("main", "master"):
                assert e.source.revision_note, f"{e.id}: an unpinned revision needs a note"
        else:
            assert e.source.embedded, e.id
        for f in e.figures:
            assert f.test_set and f.quoted_from.startswith("https://") and 0 < f.value < 100, e.id
    # facts quoted from the model cards
    kk = catalog.get("kk-whisper-base")
    assert (kk.source.hub, kk.license, kk.commercial) == ("akuzdeuov/whisper-base.kk", "Apache-2.0", True)
    assert [(f.metric, f.value) for f in kk.figures] == [("WER", 15.36)] and "KSC2" in kk.figures[0].test_set
    turbo = catalog.get("kk-whisper-turbo-kaz-rus")
    assert {(f.metric, f.value) for f in turbo.figures if "KSC2" in f.test_set} == {("WER", 8.92), ("CER", 2.99)}
    assert catalog.get("kazllm-8b").license == "CC-BY-NC-4.0" and catalog.get("kazllm-8b").commercial is False
    assert catalog.get("faster-whisper-large-v3").source.revision == "edaa852ec7e145841d8ffdb056a99866b5f0a478"


def test_unknown_and_non_commercial_licences_are_flagged_and_never_recommended():
    catalog = load_catalog()
    unknown = [e for e in catalog if e.license.lower() == NOT_STATED]
    assert {"kk-whisper-turbo-kaz-rus", "sherkala-8b-chat"} <= {e.id for e in unknown}
    for e in catalog:
        if not e.commercial_ok:
            assert not e.recommended, e.id
            assert not e.licence_accepted(()), e.id
            assert e.licence_accepted([e.id])
    for e in unknown:
        assert e.commercial is None


def _write_catalog(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


ENTRY = """
[[model]]
id = "{id}"
kind = "asr"
name = "x"
source = {{ hub = "org/x", revision = "{rev}"{note} }}
format = "ct2-whisper"
languages = ["kk"]
size = "1 MB"
license = "{lic}"
{commercial}
recommended = {rec}
"""


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(lic="not stated", commercial="", rec="true", rev="v1", note=""), "recommended"),
        (dict(lic="not stated", commercial="commercial = true", rec="false", rev="v1", note=""), "not stated"),
        (dict(lic="CC-BY-NC-4.0", commercial="commercial = false", rec="true", rev="v1", note=""), "recommended"),
        (dict(lic="MIT", commercial="commercial = true", rec="false", rev="main", note=""), "branch"),
    ],
)
def test_catalog_validation_refuses_bad_entries(tmp_path, fields, fragment):
    path = _write_catalog(tmp_path / "bad.toml", ENTRY.format(id="bad-one", **fields))
    with pytest.raises(ModelError) as e:
        load_catalog([path])
    assert fragment in one_line(e.value) and "bad-one" in str(e.value)


def test_extra_catalog_adds_and_replaces_entries(tmp_path):
    body = ENTRY.format(id="kk-whisper-base", lic="MIT", commercial="commercial = true", rec="false", rev="main", note=', revision_note = "test"')
    catalog = load_catalog([_write_catalog(tmp_path / "extra.toml", body)])
    assert catalog.get("kk-whisper-base").source.hub == "org/x"
    assert catalog.sources["kk-whisper-base"].endswith("extra.toml") and "faster-whisper-large-v3" in catalog.entries


# ----------------------------------------------------------------------------------------- the stand-in hub
@pytest.fixture(scope="module")
def hf_env(tmp_path_factory):
    """huggingface_hub pointed away from the real hub: its own HF_HOME, online mode, no token."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("hf-home")
    mp.setenv("HF_HOME", str(home))
    mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    mp.delenv("HF_TOKEN", raising=False)
    import huggingface_hub.constants as c

    mp.setattr(c, "HF_HUB_OFFLINE", False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def tiny_whisper_files(tmp_path_factory) -> dict[str, bytes]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from models.registry import resolve_asr_model
    from tests.tools.make_tiny_whisper import make_tiny_whisper

    served = resolve_asr_model("embedded:whisper-base", CACHE_DIR, download=False).path  # its tokenizer
    hf = make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "hf", served)
    return {p.relative_to(hf).as_posix(): p.read_bytes() for p in sorted(hf.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_voice_files(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("voice")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "make_test_voice.py"), str(out), "--language", "kk", "--sample-rate", "16000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    onnx = Path(proc.stdout.strip().splitlines()[-1])
    return {f"{VOICE_DIR}/{VOICE}": onnx.read_bytes(), f"{VOICE_DIR}/{VOICE}.json": Path(f"{onnx}.json").read_bytes(),
            f"{VOICE_DIR}/MODEL_CARD": b"# Model card for tiny (x_low)\n\n* License: CC0 (test voice)\n"}


@pytest.fixture(scope="module")
def hub(hf_env, tiny_whisper_files, tiny_voice_files):
    hub = StandInHub()
    hub.add_repo(WHISPER_REPO, tiny_whisper_files)
    hub.add_repo(VOICE_REPO, {**tiny_voice_files, "en/en_US/other/low/other.onnx": b"not wanted"}, refs=("v1",))
    hub.start()
    yield hub
    hub.stop()


TEST_CATALOG = """
[[model]]
id = "test-kk-whisper"
kind = "asr"
name = "tiny random Whisper, Kazakh and Russian (test)"
source = {{ hub = "{whisper}", revision = "main", revision_note = "the stand-in hub", files = ["*.json", "*.safetensors", "*.txt"] }}
format = "transformers-whisper"
languages = ["kk", "ru"]
size = "1 MB"
license = "Apache-2.0"
commercial = true
figures = [{{ metric = "WER", value = 99.0, test_set = "none (random weights)", language = "kk", quoted_from = "https://example.invalid/card" }}]
server_defaults = {{ languages = ["kk", "ru"], default_language = "kk", language_prior = {{ kk = 1.0, ru = 1.0 }} }}

[[model]]
id = "test-kk-voice"
kind = "tts"
name = "tiny Piper voice (test)"
source = {{ hub = "{voices}", revision = "v1", files = ["{vdir}/*"] }}
format = "piper"
languages = ["kk"]
size = "2 kB"
license = "CC0-1.0"
commercial = true
voice_file = "{voice}"

[[model]]
id = "test-nc-whisper"
kind = "asr"
name = "the same tiny Whisper under a non-commercial licence (test)"
source = {{ hub = "{whisper}", revision = "main", revision_note = "the stand-in hub", files = ["*.json", "*.safetensors", "*.txt"] }}
format = "transformers-whisper"
languages = ["kk"]
size = "1 MB"
license = "CC-BY-NC-4.0"
commercial = false

[[model]]
id = "test-missing"
kind = "asr"
name = "a repository the hub does not have (test)"
source = {{ hub = "test-org/nothing", revision = "v1" }}
format = "ct2-whisper"
languages = ["kk"]
size = "1 MB"
license = "MIT"
commercial = true
"""


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "test-catalog.toml"
    path.write_text(TEST_CATALOG.format(whisper=WHISPER_REPO, voices=VOICE_REPO, vdir=VOICE_DIR, voice=VOICE), encoding="utf-8")
    return path


def make_store(root: Path, catalog_file: Path, hub: StandInHub | None = None, endpoint: str | None = None) -> ModelStore:
    return ModelStore(root, (catalog_file,), endpoint or (hub.url if hub else None))


@pytest.fixture(scope="module")
def pulled(hub, catalog_file, tmp_path_factory) -> ModelStore:
    """One store with the tiny Whisper (converted) and the tiny voice pulled from the stand-in hub."""
    store = make_store(tmp_path_factory.mktemp("store"), catalog_file, hub)
    store.pull("test-kk-whisper", device="cpu")
    store.pull("test-kk-voice")
    return store


# ----------------------------------------------------------------------------------------- pull
def test_pull_converts_to_ctranslate2_with_a_manifest_and_a_card(pulled, tiny_whisper_files):
    d = pulled.model_dir("test-kk-whisper")
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json", "preprocessor_config.json", "dauys_model_card.md", MANIFEST):
        assert (d / name).is_file(), name
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["quantization"] == "int8" and manifest["license"] == "Apache-2.0"
    assert manifest["source"]["hub"] == WHISPER_REPO and len(manifest["source"]["commit"]) == 40
    assert set(manifest["files"]) == {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != MANIFEST}
    for rel, meta in manifest["files"].items():
        assert sha256_file(d / rel) == meta["sha256"], rel
    assert (d / "tokenizer.json").read_bytes() == tiny_whisper_files["tokenizer.json"]
    card = (d / "dauys_model_card.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in card and WHISPER_REPO in card and "none (random weights)" in card
    assert pulled.verify("test-kk-whisper") == []
    assert not list((pulled.root / STAGING).glob("test-kk-whisper*"))  # nothing left behind


def test_pulled_voice_is_flat_with_its_config(pulled, tiny_voice_files):
    voice = pulled.path_for("catalog:test-kk-voice", kind="tts")
    assert voice == pulled.model_dir("test-kk-voice") / VOICE
    assert voice.read_bytes() == tiny_voice_files[f"{VOICE_DIR}/{VOICE}"]
    assert Path(f"{voice}.json").is_file() and (voice.parent / "MODEL_CARD").is_file()
    assert not (voice.parent / "other.onnx").exists()  # only the catalog's files


def test_pull_converts_serves_and_transcribes_end_to_end(pulled, catalog_file, tmp_path, capsys):
    """`dauys transcribe` and the server's loader with asr.model = catalog:<id> from a config file."""
    import numpy as np

    from models.audio import AudioChunk, write_wav
    from server.cli import main
    from server.config import load_settings
    from server.services import load_services

    config = tmp_path / "dauys.toml"
    config.write_text(
        f'[asr]\nmodel = "catalog:test-kk-whisper"\ncache_dir = "{CACHE_DIR}"\ndownload = false\nwarmup = false\n'
        f'[models]\ndir = "{pulled.root}"\ncatalogs = ["{catalog_file}"]\n'
        f'[tts]\nvoices = {{ kk = "catalog:test-kk-voice" }}\n',
        encoding="utf-8",
    )
    from tests.helpers.audio import espeak

    speech = espeak("Картам бұғатталып қалды", "kk", 140)
    wav = tmp_path / "a.wav"
    write_wav(wav, AudioChunk(np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)]), 16000))

    assert main(["transcribe", "--config", str(config), "--json", str(wav)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out, "no utterance"
    for line in out:
        assert json.loads(line)["language"] in ("kk", "ru")  # the catalog's languages: never Turkish

    settings = load_settings(config, environ={})
    assert settings.asr.languages == ["kk", "ru"]
    svc = load_services(settings)
    try:
        assert svc.asr.model_id == "catalog:test-kk-whisper"
        assert svc.tts is not None and svc.tts.model_id_for("kk").startswith("piper:")
        asyncio.run(_serve_and_check_ready(settings, svc))
    finally:
        if svc.tts is not None:
            svc.tts.close()
        svc.close()


async def _serve_and_check_ready(settings, svc) -> None:
    """The real server on 127.0.0.1:0 with these services: /readyz names the catalog model."""
    from server.app import DauysServer
    from tests.helpers.server import LoadedHub, http_get

    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"port": 0})})
    server = DauysServer(settings, hub=LoadedHub(svc))
    await server.start()
    try:
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/readyz")
    finally:
        server._server.close()
        await server._server.wait_closed()
    assert status == 200, body
    assert "catalog:test-kk-whisper" in body.decode()


def test_catalog_languages_become_the_asr_defaults_unless_set(catalog_file, tmp_path):
    from server.config import load_settings

    env = {"DAUYS_ASR__MODEL": "catalog:test-kk-whisper", "DAUYS_MODELS__CATALOGS": str(catalog_file), "DAUYS_ASR__CACHE_DIR": str(tmp_path)}
    s = load_settings(environ=env)
    assert s.asr.languages == ["kk", "ru"] and s.asr.language_prior == {"kk": 1.0, "ru": 1.0}
    assert set(s.asr.language_weights(None)) == {"kk", "ru"}  # Turkish is no candidate: no prior needed against it
    base = load_settings(environ={"DAUYS_ASR__CACHE_DIR": str(tmp_path)})
    assert "tr" in base.asr.languages  # whisper-base keeps its prior against Turkish
    explicit = load_settings(environ={**env, "DAUYS_ASR__LANGUAGES": "kk,ru,tr"})
    assert explicit.asr.languages == ["kk", "ru", "tr"]  # what the operator set wins
    assert explicit.asr.language_prior == {"kk": 1.0, "ru": 1.0}  # the rest still comes from the entry
    kk_only = load_settings(environ={"DAUYS_ASR__MODEL": "catalog:kk-whisper-base", "DAUYS_ASR__CACHE_DIR": str(tmp_path)})
    assert kk_only.asr.languages == ["kk"] and kk_only.asr.default_language == "kk"


def test_interrupted_download_resumes(hub, catalog_file, tmp_path, tiny_voice_files, monkeypatch):
    import huggingface_hub.constants as c

    # huggingface_hub writes (and resumes from) whole chunks of DOWNLOAD_CHUNK_SIZE (10 MB); the test
    # voice is 2 kB, so chunks of 256 bytes make the same mechanism visible at this scale.
    monkeypatch.setattr(c, "DOWNLOAD_CHUNK_SIZE", 256)
    path = f"{VOICE_DIR}/{VOICE}"
    hub.drop_once.add(path)
    before = len(hub.downloads(VOICE))
    store = make_store(tmp_path / "store", catalog_file, hub)
    voice = store.pull("test-kk-voice") / VOICE
    gets = hub.downloads(VOICE)[before:]
    assert len(gets) == 2, gets
    assert gets[0].range is None and gets[1].range and gets[1].range.startswith("bytes=")
    assert 0 < int(gets[1].range.split("=")[1].rstrip("-")) <= len(tiny_voice_files[path]) // 2  # continued, not restarted
    assert voice.read_bytes() == tiny_voice_files[path]
    assert store.verify("test-kk-voice") == []


def test_download_cut_off_resumes_in_the_next_pull(hub, catalog_file, tmp_path, tiny_voice_files, monkeypatch):
    """The network goes away mid-file: the pull fails with the offline hint, keeps what it had, and the next pull continues."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "DOWNLOAD_CHUNK_SIZE", 256)
    path = f"{VOICE_DIR}/{VOICE}"
    store = make_store(tmp_path / "store", catalog_file, hub)
    hub.drop_once.add(path)
    hub.cut_off.add(path)
    try:
        with pytest.raises(OfflineError) as e:
            store.pull("test-kk-voice")
    finally:
        hub.cut_off.discard(path)
    assert "run the pull again to resume" in one_line(e.value)
    assert not store.model_dir("test-kk-voice").exists()
    before = len(hub.downloads(VOICE))
    voice = store.pull("test-kk-voice") / VOICE
    gets = hub.downloads(VOICE)[before:]
    assert len(gets) == 1 and gets[0].range and int(gets[0].range.split("=")[1].rstrip("-")) > 0, gets
    assert voice.read_bytes() == tiny_voice_files[path] and store.verify("test-kk-voice") == []
    assert not (store.root / STAGING).exists() or not any((store.root / STAGING).iterdir())


def test_corrupt_download_is_detected_and_nothing_is_installed(hub, catalog_file, tmp_path):
    hub.corrupt.add("model.safetensors")
    try:
        store = make_store(tmp_path / "store", catalog_file, hub)
        with pytest.raises(IntegrityError) as e:
            store.pull("test-kk-whisper", device="cpu")
    finally:
        hub.corrupt.discard("model.safetensors")
    assert "model.safetensors" in one_line(e.value) and "corrupt" in str(e.value)
    assert not store.model_dir("test-kk-whisper").exists()
    assert store.installed() == []
    assert not [p for p in (store.root / STAGING).rglob("*") if p.is_file()]  # no half-written file kept either
    with pytest.raises(NotPulledError):
        store.path_for("catalog:test-kk-whisper")


def test_unreachable_hub_is_a_one_line_error_naming_pack_and_unpack(catalog_file, tmp_path, capsys):
    store = make_store(tmp_path / "store", catalog_file, endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OfflineError) as e:
        store.pull("test-kk-voice")
    msg = one_line(e.value)
    assert "dauys models pack" in msg and "dauys models unpack" in msg
    assert not store.model_dir("test-kk-voice").exists()


def test_missing_repository_is_a_clear_error(hub, catalog_file, tmp_path):
    store = make_store(tmp_path / "store", catalog_file, hub)
    with pytest.raises(ModelError) as e:
        store.pull("test-missing")
    assert "test-org/nothing" in one_line(e.value)


def test_licence_refused_without_accept_licence(hub, catalog_file, tmp_path):
    store = make_store(tmp_path / "store", catalog_file, hub)
    before = len(hub.requests)
    with pytest.raises(LicenceError) as e:
        store.pull("test-nc-whisper", device="cpu")
    msg = one_line(e.value)
    assert "CC-BY-NC-4.0" in msg and "--accept-licence CC-BY-NC-4.0" in msg
    assert len(hub.requests) == before  # refused before any download
    assert not store.model_dir("test-nc-whisper").exists()
    with pytest.raises(LicenceError):
        store.pull("test-nc-whisper", accept_licence=["MIT"])  # naming another licence does not do


def test_cli_pull_refuses_then_accepts_a_licence(hub, catalog_file, tmp_path, capsys, monkeypatch):
    from server.cli import main

    monkeypatch.setenv("DAUYS_MODELS__CATALOGS", str(catalog_file))
    monkeypatch.setenv("DAUYS_MODELS__ENDPOINT", hub.url)
    store = tmp_path / "store"
    assert main(["models", "pull", "test-nc-whisper", "--dir", str(store), "--device", "cpu"]) == 2
    assert "--accept-licence" in capsys.readouterr().err
    assert main(["models", "pull", "test-nc-whisper", "--dir", str(store), "--device", "cpu", "--accept-licence", "CC-BY-NC-4.0"]) == 0
    assert "catalog:test-nc-whisper" in capsys.readouterr().out
    assert main(["models", "verify", "--dir", str(store)]) == 0
    assert capsys.readouterr().out.strip() == "test-nc-whisper: ok"
    assert main(["models", "list", "--dir", str(store), "--installed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed] == ["test-nc-whisper"] and listed[0]["pulled"] is True
    assert main(["models", "remove", "test-nc-whisper", "--dir", str(store)]) == 0
    assert not (store / "test-nc-whisper").exists()


def test_verify_finds_a_changed_file(pulled, tmp_path, capsys):
    import shutil

    from server.cli import main

    copy = make_store(tmp_path / "store", pulled.catalogs[0])
    shutil.copytree(pulled.model_dir("test-kk-voice"), copy.model_dir("test-kk-voice"))
    assert copy.verify("test-kk-voice") == []
    onnx = copy.model_dir("test-kk-voice") / VOICE
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 1
    onnx.write_bytes(bytes(data))
    problems = copy.verify("test-kk-voice")
    assert problems and VOICE in problems[0]
    assert main(["models", "verify", "test-kk-voice", "--dir", str(copy.root)]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def test_catalog_id_not_pulled_names_pull_and_pack(tmp_path):
    from models.registry import resolve_asr_model

    with pytest.raises(ModelError) as e:
        resolve_asr_model("catalog:kk-whisper-base", tmp_path)
    msg = one_line(e.value)
    assert "dauys models pull kk-whisper-base" in msg and "dauys models pack" in msg and "dauys models unpack" in msg
    with pytest.raises(ModelError) as e:
        resolve_asr_model("catalog:kk-piper-issai-high", tmp_path)
    assert "not a speech recogniser" in one_line(e.value)


def test_pack_then_unpack_on_a_fresh_cache_verifies(pulled, catalog_file, tmp_path):
    pack = pulled.pack(["test-kk-whisper", "test-kk-voice"], tmp_path / "models.tar")
    fresh = ModelStore(tmp_path / "offline", ())  # the offline server: no catalog entry, no hub
    assert sorted(fresh.unpack(pack)) == ["test-kk-voice", "test-kk-whisper"]
    assert fresh.verify("test-kk-whisper") == [] and fresh.verify("test-kk-voice") == []
    for name, meta in pulled.manifest("test-kk-whisper")["files"].items():
        assert sha256_file(fresh.model_dir("test-kk-whisper") / name) == meta["sha256"]
    assert fresh.path_for("catalog:test-kk-voice", kind="tts").name == VOICE  # from the manifest: no catalog needed
    from models.registry import resolve_asr_model

    resolved = resolve_asr_model("catalog:test-kk-whisper", tmp_path, store=fresh)
    assert resolved.path == fresh.model_dir("test-kk-whisper") and resolved.model_id == "catalog:test-kk-whisper"
    assert not list((fresh.root / STAGING).iterdir())


def _tamper(src: Path, dst: Path, edit) -> Path:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            m, data = edit(m, data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def test_unpack_refuses_a_damaged_pack_and_installs_nothing(pulled, tmp_path):
    pack = pulled.pack(["test-kk-voice"], tmp_path / "models.tar")

    def flip(m, data):
        if m.name.endswith(VOICE):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return m, data

    bad = _tamper(pack, tmp_path / "bad.tar", flip)
    fresh = ModelStore(tmp_path / "offline", ())
    with pytest.raises(IntegrityError) as e:
        fresh.unpack(bad)
    assert VOICE in one_line(e.value)
    assert fresh.installed() == [] and not fresh.model_dir("test-kk-voice").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "dauys-models/../../evil.txt", "elsewhere/x.txt"])
def test_unpack_rejects_path_traversal(pulled, tmp_path, name):
    pack = pulled.pack(["test-kk-voice"], tmp_path / "models.tar")
    evil = tmp_path / "evil.tar"
    with tarfile.open(pack) as tin, tarfile.open(evil, "w") as tout:
        for m in tin.getmembers():
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo(name)
        info.size = 4
        tout.addfile(info, io.BytesIO(b"evil"))
    fresh = ModelStore(tmp_path / "offline" / "store", ())
    with pytest.raises(ModelError) as e:
        fresh.unpack(evil)
    assert "refusing member" in one_line(e.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "offline" / "evil.txt").exists()
    assert fresh.installed() == []


def test_unpack_rejects_links(pulled, tmp_path):
    pack = pulled.pack(["test-kk-voice"], tmp_path / "models.tar")

    def link(m, data):
        if m.name.endswith("MODEL_CARD"):
            m = tarfile.TarInfo(m.name)
            m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
            return m, None
        return m, data

    bad = _tamper(pack, tmp_path / "link.tar", link)
    with pytest.raises(ModelError) as e:
        ModelStore(tmp_path / "offline", ()).unpack(bad)
    assert "links" in one_line(e.value)


def test_voice_not_pulled_falls_back_to_espeak_with_the_pull_command(tmp_path, caplog):
    from models.tts.router import resolve_catalog_voices
    from server.config import load_settings

    settings = load_settings(cli={"asr": {"cache_dir": str(tmp_path)}, "tts": {"voices": {"kk": "catalog:kk-piper-issai-high", "ru": "/x/ru.onnx"}}}, environ={})
    with caplog.at_level("WARNING", logger="dauys.tts"):
        voices = resolve_catalog_voices(settings.tts.voices, settings.tts)
    assert voices == {"ru": Path("/x/ru.onnx")}
    assert "dauys models pull kk-piper-issai-high" in caplog.text


def test_pulled_voice_resolves_through_the_tts_settings(pulled, catalog_file):
    from models.tts.router import resolve_catalog_voices
    from server.config import load_settings

    settings = load_settings(cli={"models": {"dir": str(pulled.root), "catalogs": [str(catalog_file)]}, "tts": {"voices": {"kk": "catalog:test-kk-voice"}}}, environ={})
    assert resolve_catalog_voices(settings.tts.voices, settings.tts) == {"kk": pulled.model_dir("test-kk-voice") / VOICE}


def test_dialogue_catalog_model_not_pulled_names_the_pull(tmp_path):
    from models.dialogue import load_dialogue
    from server.config import load_settings

    settings = load_settings(cli={"asr": {"cache_dir": str(tmp_path)}, "dialogue": {"backend": "transformers", "model": "catalog:qwen2.5-0.5b-instruct"}}, environ={})
    with pytest.raises(ModelError) as e:
        load_dialogue(settings.dialogue)
    assert "dauys models pull qwen2.5-0.5b-instruct" in one_line(e.value)
    settings = load_settings(cli={"asr": {"cache_dir": str(tmp_path)}, "dialogue": {"backend": "ctranslate2", "model": "catalog:qwen2.5-0.5b-instruct"}}, environ={})
    with pytest.raises(ModelError) as e:
        load_dialogue(settings.dialogue)
    assert "transformers" in one_line(e.value)


def test_catalog_whisper_base_is_the_embedded_model(tmp_path, capsys):
    from models.registry import resolve_asr_model
    from server.cli import main

    resolved = resolve_asr_model("catalog:whisper-base", CACHE_DIR, download=False)
    assert resolved.path == resolve_asr_model("embedded:whisper-base", CACHE_DIR, download=False).path
    assert resolved.model_id == "catalog:whisper-base"
    assert main(["models", "pull", "whisper-base", "--dir", str(tmp_path)]) == 0
    assert "nothing to pull" in capsys.readouterr().out and not any(tmp_path.iterdir())


def test_a_hub_file_name_outside_the_model_is_refused(hub, tmp_path):
    hub.add_repo("test-org/evil", {"x/../../../evil.json": b"{}"})
    catalog = _write_catalog(tmp_path / "evil.toml", ENTRY.format(
        id="evil", lic="MIT", commercial="commercial = true", rec="false", rev="main", note=', revision_note = "test"'
    ).replace('hub = "org/x"', 'hub = "test-org/evil"'))
    store = ModelStore(tmp_path / "store", (catalog,), hub.url)
    with pytest.raises(IntegrityError) as e:
        store.pull("evil")
    assert "refusing" in one_line(e.value)
    assert not (tmp_path / "evil.json").exists() and not list(tmp_path.rglob("evil.json"))
