"""The documentation stays true: the example config is the defaults, README commands exist."""

import re

from server.cli import build_parser
from server.config import load_settings
from tests.helpers.paths import ROOT


def test_example_config_matches_defaults():
    example = load_settings(ROOT / "config.example.toml", environ={}).model_dump()
    defaults = load_settings(environ={}).model_dump()
    assert example == defaults


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make serve" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)


def test_every_documented_setting_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    defaults = load_settings(environ={}).model_dump()
    for section, key in re.findall(r"`(server|asr|vad|session|twilio|models|capture)\.([a-z_]+)`", readme):
        assert key in defaults[section], f"README documents {section}.{key}, which does not exist"


def test_cli_subcommands_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"dauys {name}" in readme


def test_protocol_error_codes_documented():
    from pipeline.errors import ERROR_CODES

    protocol = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    for code in ERROR_CODES:
        assert f"`{code}`" in protocol, code
