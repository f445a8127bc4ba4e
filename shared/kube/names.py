"""Names of the objects Berth creates: deterministic, so creating twice is a no-op and
anyone (the API reading a pod's events, teardown) can name a job's pod without asking."""

from __future__ import annotations

import hashlib
import re

from shared.state.records import Job

DNS_LABEL_MAX = 63


def object_name(project: str, run: str, suffix: str = "") -> str:
    """A DNS-1123 label; long names keep a hash so two runs never collide."""
    raw = "-".join(p for p in ("berth", project, run, suffix) if p)
    name = re.sub(r"[^a-z0-9-]", "-", raw.lower()).strip("-")
    if len(name) <= DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: DNS_LABEL_MAX - 9].rstrip('-')}-{digest}"


def job_pod_name(job: Job) -> str:
    return object_name(job.project, job.run_name, f"{job.replica_num}-{job.job_num}")
