"""The CLI's server, token and project: the config file, or the environment over it.

A run with ``dstack: true`` has ``BERTH_URL`` and ``BERTH_PROJECT`` in its
environment and no config file; dstack's examples pass the token as ``DSTACK_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.client import load_client_config
from shared.errors import ConfigError


def test_the_environment_alone_is_enough_inside_a_run(tmp_path: Path) -> None:
    env = {"BERTH_URL": "http://berth-api:3000", "DSTACK_TOKEN": "t", "BERTH_PROJECT": "team"}
    config = load_client_config(tmp_path, env)
    assert (config.url, config.token, config.project) == ("http://berth-api:3000", "t", "team")


def test_the_environment_wins_over_the_file_field_by_field(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"url": "http://file:3000", "token": "file", "project": "main"})
    )
    config = load_client_config(tmp_path, {"BERTH_TOKEN": "env", "DSTACK_TOKEN": "other"})
    assert (config.url, config.token, config.project) == ("http://file:3000", "env", "main")
    assert load_client_config(tmp_path, {}).token == "file"


def test_no_file_and_no_token_in_the_environment_says_both_ways(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_client_config(tmp_path, {"BERTH_URL": "http://berth-api:3000"})
    assert "berth config --url URL --token TOKEN" in caught.value.message
    assert "BERTH_URL and BERTH_TOKEN" in caught.value.message
