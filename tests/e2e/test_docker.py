"""``docker: true`` on a server without a ``dind_image``: refused at submission.

The e2e stack sets no ``BERTH_DIND_IMAGE`` (as a server whose operator mirrored no
Docker image), so the API must refuse the run, naming the field and the setting,
and keep nothing of it; the real-node tier runs it where the image exists.
"""

from __future__ import annotations

import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "task", "docker": True, "commands": ["docker info"]}, "docker"),
        (
            {
                "type": "service",
                "port": 9000,
                "groups": [{"replicas": 1, "docker": True, "commands": ["docker compose up"]}],
            },
            "groups.0.docker",
        ),
    ],
    ids=["task", "replica-group"],
)
def test_docker_without_a_dind_image_is_refused_naming_it_and_nothing_is_stored(
    stack: Stack, body: dict[str, object], field: str
) -> None:
    name = f"no-dind-{field.replace('.', '-')}"
    with stack.client() as c:
        r = c.post("/api/projects/main/runs", json={"configuration": {"name": name, **body}})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == field
        assert "dind_image" in error["message"] and "BERTH_DIND_IMAGE" in error["message"]
        assert c.get(f"/api/projects/main/runs/{name}").status_code == 404  # nothing stored
        assert name not in [run["name"] for run in c.get("/api/projects/main/runs").json()]
