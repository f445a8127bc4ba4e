"""Teardown lists a run's Services only when :func:`run_has_services` says it has some;
that rule must name exactly the runs whose jobs :func:`build_job_objects` gives them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.state.jobs import jobs_for
from shared.state.records import Placement
from tests.factories import run_of
from workers.podspec import PodContext, build_job_objects, run_has_services

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "one-node task": {"type": "task", "name": "one", "commands": ["true"]},
    "two-node task": {"type": "task", "name": "two", "nodes": 2, "commands": ["true"]},
    "task with ports": {"type": "task", "name": "ported", "commands": ["true"], "ports": [8080]},
    "service": {"type": "service", "name": "serve", "commands": ["serve"], "port": 8000},
    "dev environment": {"type": "dev-environment", "name": "dev", "ide": "vscode"},
}


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_services_rule_matches_what_each_job_gets(name: str) -> None:
    data: dict[str, Any] = CONFIGURATIONS[name]
    run, conf = run_of(data)
    context = PodContext(default_image="berth.local/run:x")
    for job in jobs_for(run, conf):
        placed = job.model_copy(update={"placement": Placement(node=f"n{job.job_num}")})
        services = build_job_objects(run, placed, conf, context).services
        assert bool(services) == run_has_services(run, placed), (name, job.job_num)
