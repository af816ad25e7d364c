"""Configuration layers (server/config.py): defaults < TOML file < DAUYS_* environment < CLI flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.config import DEFAULT_LANGUAGES, ConfigError, Settings, env_overrides, load_settings

ROOT = Path(__file__).resolve().parent.parent


def write_toml(tmp_path: Path, text: str, name: str = "dauys.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------
def test_defaults():
    s = load_settings(environ={})
    assert isinstance(s, Settings)
    assert s.server.host == "127.0.0.1"
    assert s.server.port == 8765
    assert s.server.api_keys == []
    assert s.asr.model == "embedded:whisper-base"
    assert s.asr.languages == ["kk", "ru", "uz", "tr", "az", "tt", "en"] == DEFAULT_LANGUAGES
    assert s.asr.default_language == "kk"
    assert s.asr.language_aliases == {"ky": "kk"}
    assert s.asr.device == "auto"
    assert s.vad.speculative_ms < s.vad.min_silence_ms


def test_defaults_are_fresh_copies():
    a = load_settings(environ={})
    a.asr.languages.append("de")
    assert load_settings(environ={}).asr.languages == DEFAULT_LANGUAGES


def test_kyrgyz_is_accepted_through_its_alias():
    s = load_settings(cli={"asr": {"languages": ["kk", "ky"], "default_language": "ky"}}, environ={})
    assert s.asr.languages == ["kk", "ky"]
    assert s.asr.language_aliases["ky"] == "kk"


def test_ky_without_alias_is_rejected():
    msg = config_error(cli={"asr": {"languages": ["kk", "ky"], "language_aliases": {}}}, environ={})
    assert "'ky'" in msg and "language_aliases" in msg


def test_example_config_file_loads():
    example = ROOT / "config.example.toml"
    if not example.is_file():
        pytest.skip("no config.example.toml")
    load_settings(example, environ={})


# --------------------------------------------------------------------------
# precedence
# --------------------------------------------------------------------------
def test_file_overrides_defaults(tmp_path):
    path = write_toml(tmp_path, '[server]\nport = 1111\nhost = "0.0.0.0"\n[asr]\nmodel = "tiny"\nlanguages = ["kk", "ru"]\n')
    s = load_settings(path, environ={})
    assert (s.server.port, s.server.host, s.asr.model, s.asr.languages) == (1111, "0.0.0.0", "tiny", ["kk", "ru"])
    assert s.asr.device == "auto"  # untouched keys keep their defaults


def test_environment_overrides_file_and_cli_overrides_environment(tmp_path):
    path = write_toml(tmp_path, '[server]\nport = 1111\nhost = "0.0.0.0"\n[asr]\nmodel = "tiny"\n')
    env = {"DAUYS_SERVER__PORT": "2222", "DAUYS_ASR__DEVICE": "cpu"}
    s = load_settings(path, environ=env)
    assert s.server.port == 2222
    assert s.server.host == "0.0.0.0"  # sections merge key by key
    assert (s.asr.model, s.asr.device) == ("tiny", "cpu")

    s = load_settings(path, cli={"server": {"port": 3333}}, environ=env)
    assert s.server.port == 3333
    assert s.server.host == "0.0.0.0"
    assert (s.asr.model, s.asr.device) == ("tiny", "cpu")

    s = load_settings(path, cli={"server": {"port": 3333}, "asr": {"device": "cuda"}}, environ=env)
    assert s.asr.device == "cuda"


def test_cli_overrides_file_without_environment(tmp_path):
    path = write_toml(tmp_path, '[asr]\nmodel = "tiny"\n')
    assert load_settings(path, cli={"asr": {"model": "small"}}, environ={}).asr.model == "small"


def test_environ_none_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("DAUYS_SERVER__PORT", "4321")
    assert load_settings().server.port == 4321


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('["kk", "ru"]', ["kk", "ru"]),
        ("kk,ru", ["kk", "ru"]),
        (" kk , ru ,", ["kk", "ru"]),
        ("KK,Ru", ["kk", "ru"]),
        ("kk", ["kk"]),
    ],
)
def test_languages_from_environment(raw, expected):
    s = load_settings(environ={"DAUYS_ASR__LANGUAGES": raw})
    assert s.asr.languages == expected


def test_api_keys_from_environment():
    k1, k2 = "k1-0123456789abcdef", "k2-0123456789abcdef"
    assert load_settings(environ={"DAUYS_SERVER__API_KEYS": f"{k1},{k2}"}).server.api_keys == [k1, k2]
    assert load_settings(environ={"DAUYS_SERVER__API_KEYS": f'["{k1}"]'}).server.api_keys == [k1]


def test_numeric_api_key_from_environment():
    assert load_settings(environ={"DAUYS_SERVER__API_KEYS": "1234567890123456"}).server.api_keys == ["1234567890123456"]


def test_env_overrides_shape():
    env = {
        "DAUYS_ASR__MODEL": "small",
        "DAUYS_ASR__DOWNLOAD": "false",
        "DAUYS_SERVER__PORT": "9000",
        "DAUYS_TTS__VOICES__KK": "/voices/kk.onnx",
        "DAUYS_NOSEPARATOR": "1",  # no "__": not a setting
        "DAUYS_LLM_API_KEY": "secret",  # the LLM key variable is not a setting
        "OTHER__THING": "x",
        "HOME": "/root",
    }
    assert env_overrides(env) == {
        "asr": {"model": "small", "download": False},
        "server": {"port": 9000},
        "tts": {"voices": {"kk": "/voices/kk.onnx"}},
    }


def test_nested_environment_value_is_validated():
    s = load_settings(environ={"DAUYS_TTS__VOICES__KK": "/voices/kk.onnx", "DAUYS_ASR__LANGUAGE_PRIOR": '{"kk": 2.0}'})
    assert s.tts.voices == {"kk": Path("/voices/kk.onnx")}
    assert s.asr.language_prior == {"kk": 2.0}


# --------------------------------------------------------------------------
# errors: one readable line per problem, naming the setting and its source
# --------------------------------------------------------------------------
def assert_one_line(msg: str) -> None:
    assert msg and "\n" not in msg, msg
    assert msg.startswith("config error:"), msg
    assert "Traceback" not in msg


def test_bad_port_type_from_environment():
    msg = config_error(environ={"DAUYS_SERVER__PORT": "abc"})
    assert_one_line(msg)
    assert "server.port" in msg and "from environment" in msg


def test_bad_port_type_from_file(tmp_path):
    path = write_toml(tmp_path, '[server]\nport = "abc"\n')
    msg = config_error(path, environ={})
    assert_one_line(msg)
    assert "server.port" in msg and str(path) in msg


def test_port_out_of_range_from_cli():
    msg = config_error(cli={"server": {"port": 70000}}, environ={})
    assert_one_line(msg)
    assert "server.port" in msg and "command line" in msg and "65535" in msg


@pytest.mark.parametrize("origin", ["file", "environment", "cli"])
def test_device_must_be_auto_cpu_or_cuda(tmp_path, origin):
    path = None
    env: dict = {}
    cli = None
    if origin == "file":
        path = write_toml(tmp_path, '[asr]\ndevice = "tpu"\n')
        where = str(path)
    elif origin == "environment":
        env = {"DAUYS_ASR__DEVICE": "tpu"}
        where = "from environment"
    else:
        cli = {"asr": {"device": "tpu"}}
        where = "command line"
    msg = config_error(path, cli=cli, environ=env)
    assert_one_line(msg)
    assert "asr.device" in msg and where in msg
    for choice in ("auto", "cpu", "cuda"):
        assert choice in msg


def test_unknown_key_in_file(tmp_path):
    path = write_toml(tmp_path, '[asr]\nmodle = "tiny"\n')
    msg = config_error(path, environ={})
    assert_one_line(msg)
    assert "asr.modle" in msg and "unknown setting" in msg and str(path) in msg


def test_unknown_key_from_environment():
    msg = config_error(environ={"DAUYS_ASR__MODLE": "tiny"})
    assert_one_line(msg)
    assert "asr.modle" in msg and "unknown setting" in msg and "from environment" in msg


def test_unknown_section(tmp_path):
    path = write_toml(tmp_path, "[bogus]\nx = 1\n")
    msg = config_error(path, environ={})
    assert_one_line(msg)
    assert "bogus" in msg and "unknown setting" in msg


def test_unknown_language():
    msg = config_error(environ={"DAUYS_ASR__LANGUAGES": "kk,xx"})
    assert_one_line(msg)
    assert "'xx'" in msg and "asr" in msg


def test_default_language_must_be_among_languages(tmp_path):
    path = write_toml(tmp_path, '[asr]\nlanguages = ["ru", "en"]\n')  # default_language stays kk
    msg = config_error(path, environ={})
    assert_one_line(msg)
    assert "default_language" in msg and "'kk'" in msg


def test_speculative_must_be_below_min_silence():
    for spec in (400, 500):
        msg = config_error(cli={"vad": {"speculative_ms": spec, "min_silence_ms": 400}}, environ={})
        assert_one_line(msg)
        assert "speculative_ms" in msg and "min_silence_ms" in msg
    load_settings(cli={"vad": {"speculative_ms": 399, "min_silence_ms": 400}}, environ={})


@pytest.mark.parametrize(
    "case",
    ["unknown_language_env", "default_language_file", "speculative_cli", "unknown_section_file", "unknown_section_env"],
)
def test_every_error_names_its_source(tmp_path, case):
    path = None
    env: dict = {}
    cli = None
    if case == "unknown_language_env":
        env, where = {"DAUYS_ASR__LANGUAGES": "kk,xx"}, "from environment"
    elif case == "default_language_file":
        path = write_toml(tmp_path, '[asr]\nlanguages = ["ru", "en"]\n')
        where = str(path)
    elif case == "speculative_cli":
        cli, where = {"vad": {"speculative_ms": 500}}, "command line"
    elif case == "unknown_section_file":
        path = write_toml(tmp_path, "[bogus]\nx = 1\n")
        where = str(path)
    else:
        env, where = {"DAUYS_BOGUS__X": "1"}, "from environment"
    msg = config_error(path, cli=cli, environ=env)
    assert_one_line(msg)
    assert where in msg, msg


def test_several_problems_give_one_line_each(tmp_path):
    path = write_toml(tmp_path, '[server]\nport = "abc"\n[asr]\ndevice = "tpu"\nmodle = 1\n')
    msg = config_error(path, environ={})
    lines = msg.splitlines()
    assert len(lines) == 3, msg
    for line in lines:
        assert line.startswith("config error:") and str(path) in line
    assert {"server.port", "asr.device", "asr.modle"} == {line.split(":")[1].strip() for line in lines}


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.toml"
    msg = config_error(missing, environ={})
    assert_one_line(msg)
    assert str(missing) in msg and "not found" in msg


def test_invalid_toml(tmp_path):
    path = write_toml(tmp_path, "[asr\nmodel = tiny\n")
    msg = config_error(path, environ={})
    assert_one_line(msg)
    assert str(path) in msg and "TOML" in msg


def test_config_error_is_raised_without_chained_pydantic_error():
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DAUYS_ASR__DEVICE": "tpu"})
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --------------------------------------------------------------------------
# language weights
# --------------------------------------------------------------------------
def test_language_weights_apply_prior_and_default():
    asr = load_settings(environ={}).asr
    w = asr.language_weights()
    assert list(w) == asr.languages
    assert w["kk"] == 1.0 and w["ru"] == 1.0
    for lang in ("uz", "tr", "az", "tt", "en"):
        assert w[lang] == asr.language_prior_default == 0.1


def test_language_weights_stickiness_multiplies_previous():
    asr = load_settings(cli={"asr": {"language_stickiness": 4.0, "language_prior": {"kk": 2.0}, "switch_within_prior": False}}, environ={}).asr
    base = asr.language_weights()
    for prev in ("kk", "ru", "tr"):
        w = asr.language_weights(prev)
        assert w[prev] == pytest.approx(base[prev] * 4.0)
        assert {k: v for k, v in w.items() if k != prev} == {k: v for k, v in base.items() if k != prev}
    # a previous language outside the configured ones changes nothing; nor does None
    assert asr.language_weights("de") == base
    assert asr.language_weights(None) == base


def test_after_the_first_final_a_call_switches_only_within_the_prior():
    asr = load_settings(environ={}).asr  # prior kk, ru; languages kk ru uz tr az tt en
    assert set(asr.language_weights()) == set(asr.languages)  # the first utterance: any
    assert asr.language_weights("kk") == {"kk": 3.0, "ru": 1.0}
    assert asr.language_weights("ru") == {"kk": 1.0, "ru": 3.0}
    assert asr.language_weights("uz") == {"kk": 1.0, "ru": 1.0, "uz": 0.1 * 3.0}  # a caller who began in Uzbek keeps it
    wide = load_settings(cli={"asr": {"switch_within_prior": False}}, environ={}).asr
    assert set(wide.language_weights("kk")) == set(wide.languages)


def test_language_weights_do_not_mutate_settings():
    asr = load_settings(environ={}).asr
    asr.language_weights("kk")
    assert asr.language_prior == {"kk": 1.0, "ru": 1.0}
    assert asr.language_weights()["kk"] == 1.0


# --------------------------------------------------------------------------
# the CLI reports config errors as one line, exit 2
# --------------------------------------------------------------------------
def test_cli_reports_config_error_as_one_line(tmp_path):
    bad = write_toml(tmp_path, '[asr]\ndevice = "tpu"\n', name="BAD.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "server", "transcribe", "x.wav", "--config", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "asr.device" in lines[0] and str(bad) in lines[0]
    assert proc.stdout == ""
