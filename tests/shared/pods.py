"""The pod Berth would build for a configuration's first job: podspec tests read it."""

from __future__ import annotations

from typing import Any

from shared.configuration import configuration_from_mapping
from shared.state.records import Job, Placement, Run
from workers.podspec import PodContext, build_job_objects


def job_pod(
    data: dict[str, Any], *, name: str = "pol", group: str | None = None, **ctx: Any
) -> dict[str, Any]:
    """The pod of job 0 (of ``group``) on node ``n1``, in project ``main``."""
    conf = configuration_from_mapping({"name": name, **data})
    run = Run(
        id="r1",
        project="main",
        name=name,
        user="admin",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
    )
    job = Job(
        id="j0",
        run_id="r1",
        project="main",
        run_name=name,
        group=group,
        placement=Placement(node="n1"),
    )
    context = PodContext(default_image="berth.local/run:x", **ctx)
    return build_job_objects(run, job, conf, context).pod
