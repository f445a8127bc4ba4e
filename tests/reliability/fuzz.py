"""schemathesis against Berth's own OpenAPI document, for the tests and ``bench.faults``.

Every operation gets ``examples`` generated requests (valid and invalid
bodies, paths and queries), sent with the admin token to the running API.
Each answer is checked: no server error (5xx), a status the document lists,
and a body that matches the document's schema for that status. Failures are
collected, not raised, so one run counts all of them.

The service proxy (``/proxy/...``) is left out: it forwards users' own
traffic, so its answers are whatever the service says (and 502/504 when the
service is away), which no schema of Berth's describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXCLUDED = "^/proxy/"
_CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@dataclass
class FuzzFigures:
    operations: int = 0
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def fuzz_api(url: str, token: str, *, examples: int, seed: int = 8) -> FuzzFigures:
    """Send ``examples`` generated requests per operation; return what happened."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json").exclude(path_regex=EXCLUDED)
    figures = FuzzFigures()
    headers = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid one raises here
        figures.operations += 1

        # Most paths name a project; a random one only ever gets 404, so they name
        # one that exists and the bodies, queries and other names are generated.
        known = {"project": "main"} if "{project}" in operation.path else None

        @given(case=operation.as_strategy(path_parameters=known))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def one(case: schemathesis.Case[Any]) -> None:
            figures.cases += 1
            response = case.call(base_url=url, headers=headers, timeout=30)
            figures.statuses[response.status_code] = (
                figures.statuses.get(response.status_code, 0) + 1
            )
            try:
                case.validate_response(response, checks=_CHECKS)
            except (AssertionError, ExceptionGroup) as e:
                figures.failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {e}"[:600]
                )

        one()
    return figures
