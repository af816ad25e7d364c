"""The carrier documentation stays true: every `transfer.*` and `carriers.*` setting the README names exists,
every setting of those sections is in config.example.toml, and every new WebSocket path is documented."""

import re
import tomllib

from server.app import CARRIER_PATHS
from server.config import load_settings
from tests.helpers.paths import ROOT


def test_documented_carrier_settings_exist_and_the_example_lists_them_all():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    defaults = load_settings(environ={}).model_dump()
    named = re.findall(r"`(transfer|carriers)\.([a-z_]+)`", readme)
    assert named
    for section, key in named:
        assert key in defaults[section], f"README documents {section}.{key}, which does not exist"
    example = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    for section in ("transfer", "carriers"):
        assert set(example[section]) == set(defaults[section]), section


def test_every_carrier_path_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in CARRIER_PATHS:
        assert f"HOST{path}" in readme, path
