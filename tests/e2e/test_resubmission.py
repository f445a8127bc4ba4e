"""Submitting a named run again: the same request is the same run, another is refused."""

from __future__ import annotations

import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

CONF = {"type": "task", "name": "once", "commands": ["train"], "resources": {"cpu": "1.."}}


def test_the_same_submission_again_answers_with_the_run_it_made(stack: Stack) -> None:
    # A client retrying after a 503 cannot know whether its first request was recorded.
    with stack.client() as c:
        first = c.post("/api/projects/main/runs", json={"configuration": CONF})
        again = c.post("/api/projects/main/runs", json={"configuration": CONF})
        other = c.post(
            "/api/projects/main/runs", json={"configuration": CONF | {"commands": ["eval"]}}
        )
        assert c.post("/api/projects/main/runs/once/stop", json={}).status_code == 200
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409, other.text
    assert other.json()["error"]["field"] == "name"
