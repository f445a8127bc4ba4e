"""A project secret reaches a real container's environment, and no log shows it."""

from __future__ import annotations

import hashlib
import secrets as random
from pathlib import Path

import pytest

from tests.realnode.world import SMALL, apply_and_follow, set_secret
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_a_secret_is_in_the_commands_env_and_in_no_output_or_log(
    real_stack: Stack, tmp_path: Path
) -> None:
    value = f"hf_{random.token_hex(16)}"
    set_secret(real_stack, "hf_token", value)
    result = apply_and_follow(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: secret-user
        env:
          - HF_TOKEN=${{{{ secrets.hf_token }}}}
        commands:
          - printf %s "$HF_TOKEN" | sha256sum
        {SMALL}
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert hashlib.sha256(value.encode()).hexdigest() in result.stdout, result.stdout
    assert "secret-user: done" in result.stdout
    for text in (result.stdout, result.stderr, real_stack.logs()):
        assert value not in text
