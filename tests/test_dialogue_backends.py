"""Every dialogue backend loads the way the server loads it: a TOML file -> Settings -> load_dialogue.

And the openai backend keeps caller text on the machine unless the operator says where it may go
(Law 230-VIII, the personal-data law): https and dialogue.allowed_hosts, or allow_external; PII
redacted before sending; a start-up warning when text leaves the host.
"""

from __future__ import annotations

import logging

import pytest

from models.dialogue import load_dialogue
from models.dialogue.base import DialogueEngine, DialogueState, Turn
from models.dialogue.llm import check_destination, host_allowed
from models.errors import ModelError
from server.config import load_settings
from tests.helpers.llm import url

IIN = "900101300126"  # checksum-valid (tests/test_privacy.py)
PHONE = "+7 701 123 45 67"


def settings_from_toml(tmp_path, body: str, environ: dict | None = None):
    path = tmp_path / "dauys.toml"
    path.write_text(body, encoding="utf-8")
    return load_settings(path, environ=environ or {})


def drain(engine, text: str, language: str = "kk", before: tuple[str, ...] = ()):
    history = [Turn("user" if i % 2 == 0 else "assistant", t, language) for i, t in enumerate(before)]
    out = list(engine.respond([*history, Turn("user", text, language)], language, DialogueState()))
    return "".join(x for x in out if isinstance(x, str)), [x for x in out if not isinstance(x, str)]


def test_kb_backend_from_config(tmp_path):
    s = settings_from_toml(tmp_path, '[dialogue]\nbackend = "kb"\n')
    engine = load_dialogue(s.dialogue)
    assert isinstance(engine, DialogueEngine)
    text, _ = drain(engine, "Картам бұғатталып қалды, не істеймін?")
    assert "бұғат" in text.lower()


def test_transformers_backend_from_config(tmp_path, tiny_model):
    path, _ = tiny_model
    s = settings_from_toml(tmp_path, f'[dialogue]\nbackend = "transformers"\nmodel = "{path}"\nmax_new_tokens = 12\ndevice = "cpu"\n')
    engine = load_dialogue(s.dialogue)
    assert engine.name == "transformers"
    text, _ = drain(engine, "Картам бұғатталып қалды, не істеймін?")
    assert text.strip()


def test_ctranslate2_backend_from_config(tmp_path, ct2_dir):
    s = settings_from_toml(tmp_path, f'[dialogue]\nbackend = "ctranslate2"\nmodel = "{ct2_dir}"\nmax_new_tokens = 12\ndevice = "cpu"\n')
    engine = load_dialogue(s.dialogue)
    assert engine.name == "ctranslate2"
    text, _ = drain(engine, "Картам бұғатталып қалды, не істеймін?")
    assert text.strip()


def test_openai_backend_from_config_and_environment_sends_redacted_text(tmp_path, llm_server, caplog):
    """The key comes from the variable dialogue.api_key_env names; the request carries no IIN or phone."""
    llm_server.key = "sk-from-env-456"
    s = settings_from_toml(
        tmp_path,
        f'[dialogue]\nbackend = "openai"\nmodel = "tiny-llm"\nbase_url = "{url(llm_server, "answer")}"\napi_key_env = "MY_LLM_KEY"\n',
        environ={"MY_LLM_KEY": "sk-from-env-456"},
    )
    import os

    os.environ["MY_LLM_KEY"] = "sk-from-env-456"
    try:
        with caplog.at_level(logging.WARNING, logger="dauys.dialogue"):
            engine = load_dialogue(s.dialogue)
    finally:
        del os.environ["MY_LLM_KEY"]
    assert engine.name == "openai"
    assert not [r for r in caplog.records if "outside this machine" in r.getMessage()]  # loopback: nothing leaves
    said = (f"Менің ЖСН {IIN}, телефоным {PHONE}.", "Рақмет. Қандай сұрағыңыз бар?")
    text, _ = drain(engine, "Картам бұғатталып қалды, не істеймін?", before=said)
    assert text.strip()
    (req,) = llm_server.requests
    assert req["headers"]["Authorization"] == "Bearer sk-from-env-456"
    sent = " ".join(m["content"] for m in req["body"]["messages"])
    assert "Картам бұғатталып қалды, не істеймін?" in sent
    assert IIN not in sent and "701 123 45 67" not in sent
    assert "[IIN]" in sent and "[PHONE]" in sent


def test_openai_redaction_can_be_turned_off_for_a_local_server(tmp_path, llm_server):
    s = settings_from_toml(
        tmp_path, f'[dialogue]\nbackend = "openai"\nmodel = "tiny-llm"\nbase_url = "{url(llm_server, "answer")}"\nredact_pii = false\n'
    )
    engine = load_dialogue(s.dialogue)
    drain(engine, "Картам бұғатталып қалды, не істеймін?", before=(f"Менің ЖСН {IIN}.", "Рақмет."))
    (req,) = llm_server.requests
    assert IIN in " ".join(m["content"] for m in req["body"]["messages"])


@pytest.mark.parametrize(
    "base_url, allowed, external, expected",
    [
        ("http://127.0.0.1:8000/v1", [], False, "local"),
        ("http://localhost:8000/v1", [], False, "local"),
        ("http://[::1]:8000/v1", [], False, "local"),
        ("https://llm.bank.kz/v1", ["llm.bank.kz"], False, "allowed"),
        ("https://a.llm.bank.kz/v1", ["*.llm.bank.kz"], False, "allowed"),
        ("https://10.1.2.3:8443/v1", ["10.1.0.0/16"], False, "allowed"),
        ("https://api.openai.com/v1", [], True, "external"),
        ("http://10.1.2.3:8000/v1", [], True, "external"),
    ],
)
def test_destinations_that_are_allowed(base_url, allowed, external, expected):
    assert check_destination(base_url, allowed, external) == expected


@pytest.mark.parametrize(
    "base_url, allowed, why",
    [
        ("http://llm.bank.kz/v1", ["llm.bank.kz"], "unencrypted"),
        ("https://api.openai.com/v1", [], "not in dialogue.allowed_hosts"),
        ("https://evil-llm.bank.kz/v1", ["llm.bank.kz"], "not in dialogue.allowed_hosts"),
        ("https://llm.bank.kz.evil.com/v1", ["*.bank.kz"], "not in dialogue.allowed_hosts"),
        ("https://10.2.0.1/v1", ["10.1.0.0/16"], "not in dialogue.allowed_hosts"),
        ("ftp://127.0.0.1/v1", [], "http"),
        ("http://127.evil.example/v1", [], "unencrypted"),  # a name that starts with 127. is not this machine
    ],
)
def test_destinations_that_are_refused(base_url, allowed, why):
    with pytest.raises(ModelError, match=why):
        check_destination(base_url, allowed, False)


def test_local_hosts():
    from models.net import is_local_host

    assert all(is_local_host(h) for h in ("localhost", "LOCALHOST", "127.0.0.1", "127.3.4.5", "::1", "[::1]"))
    assert not any(is_local_host(h) for h in ("127.evil.example", "10.0.0.1", "localhost.evil.example", "", None))


def test_host_patterns():
    assert host_allowed("LLM.Bank.KZ", ["llm.bank.kz"])
    assert not host_allowed("bank.kz", ["*.bank.kz"])
    assert host_allowed("x.bank.kz", ["*.bank.kz"])
    assert not host_allowed("10.0.0.1", ["*.0.0.1"])


def test_openai_to_an_unlisted_host_is_a_start_up_error_through_config(tmp_path):
    s = settings_from_toml(tmp_path, '[dialogue]\nbackend = "openai"\nmodel = "m"\nbase_url = "https://api.openai.com/v1"\n')
    with pytest.raises(ModelError, match="allowed_hosts"):
        load_dialogue(s.dialogue)


def test_openai_to_an_allowed_host_warns_that_text_leaves_the_machine(tmp_path, caplog):
    s = settings_from_toml(
        tmp_path,
        '[dialogue]\nbackend = "openai"\nmodel = "m"\nbase_url = "https://llm.bank.kz/v1"\n',
        environ={"DAUYS_DIALOGUE__ALLOWED_HOSTS": "llm.bank.kz,10.0.0.0/8"},
    )
    assert s.dialogue.allowed_hosts == ["llm.bank.kz", "10.0.0.0/8"]
    with caplog.at_level(logging.WARNING, logger="dauys.dialogue"):
        engine = load_dialogue(s.dialogue)  # constructing it sends nothing
    assert engine.redact is not None
    (rec,) = [r for r in caplog.records if "outside this machine" in r.getMessage()]
    assert "llm.bank.kz" in rec.getMessage() and "redacted" in rec.getMessage()
