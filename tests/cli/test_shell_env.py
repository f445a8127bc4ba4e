"""dstack's value-less env entries take their value from the submitting shell."""

from __future__ import annotations

import pytest
import yaml

from cli.shell_env import fill_from_shell
from shared.configuration.parse import parse_run_configuration
from shared.errors import ConfigError


def test_a_bare_name_in_a_list_or_a_map_takes_the_shells_value() -> None:
    text = "type: task\ncommands: [train]\nenv:\n  - HF_TOKEN\n  - MODE=fast\n"
    filled = fill_from_shell(text, {"HF_TOKEN": "hf_abc"})
    assert yaml.safe_load(filled)["env"] == ["HF_TOKEN=hf_abc", "MODE=fast"]
    conf = parse_run_configuration(filled)
    assert conf.env == {"HF_TOKEN": "hf_abc", "MODE": "fast"}

    mapped = fill_from_shell("type: task\ncommands: [x]\nenv: {A: , B: b}\n", {"A": "a"})
    assert yaml.safe_load(mapped)["env"] == {"A": "a", "B": "b"}


def test_a_bare_name_the_shell_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="env WANDB_API_KEY has no value") as e:
        fill_from_shell("type: task\ncommands: [x]\nenv: [WANDB_API_KEY]\n", {})
    assert e.value.field == "env"


def test_a_configuration_with_every_value_given_is_sent_as_written() -> None:
    text = "type: task  # comment kept\ncommands: [x]\nenv: [A=1]\n"
    assert fill_from_shell(text, {}) == text
    assert fill_from_shell("type: [unclosed\n", {}) == "type: [unclosed\n"
