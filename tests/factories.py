"""Factories of Berth's records for tests and benches: one place, so a field added to a
record is added here once."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.configuration import configuration_from_mapping
from shared.state.records import Event, Job, Run, RunStatus


def one_job_run(name: str | None = None, *, user: str = "alice") -> tuple[Run, list[Job]]:
    """A one-job task run of project ``main`` as the API records it (fresh ids)."""
    run = Run(
        id=uuid.uuid4().hex,
        project="main",
        name=name or f"r-{uuid.uuid4().hex[:10]}",
        user=user,
        configuration={"type": "task"},
        configuration_type="task",
    )
    job = Job(id=uuid.uuid4().hex, run_id=run.id, project="main", run_name=run.name)
    run.job_ids = [job.id]
    return run, [job]


def run_record(
    name: str,
    status: RunStatus = RunStatus.SUBMITTED,
    *,
    kind: str = "task",
    conf: dict[str, Any] | None = None,
    **fields: Any,
) -> Run:
    """A run of project ``main`` by alice with id ``id-<name>``: a ``kind`` configuration
    holding ``conf``, and any other of the record's ``fields``."""
    return Run(
        id=f"id-{name}",
        project="main",
        name=name,
        user="alice",
        configuration={"type": kind, **(conf or {})},
        configuration_type=kind,
        status=status,
        **fields,
    )


def run_of(data: dict[str, Any]) -> tuple[Run, Any]:
    """The run a configuration mapping makes (id ``r1``, project ``main``) and its parsed
    configuration, for building its jobs' objects."""
    conf = configuration_from_mapping(data)
    run = Run(
        id="r1",
        project="main",
        name=str(data["name"]),
        user="u",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
    )
    return run, conf


def submitted() -> Event:
    return Event(at=time.time(), kind="status", status=RunStatus.SUBMITTED, message="submitted")
