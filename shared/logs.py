"""Structured logging: every line carries the run and job it is about.

Tasks and requests set :data:`run_id` / :data:`job_id` (context variables,
so threads and asyncio tasks each keep their own), and a filter stamps them
on every record. ``log.json`` switches the output to one JSON object a line.
No record ever carries a token or kubeconfig: the code logs ids, never
configurations or credentials.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator

run_id: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="-")
job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")

_TEXT = "%(asctime)s %(levelname)s %(name)s run=%(run_id)s job=%(job_id)s: %(message)s"


def configure(*, json_lines: bool, level: str = "INFO") -> None:
    """Install Berth's handler on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_berth", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._berth = True  # type: ignore[attr-defined]
    handler.addFilter(_ContextFilter())
    handler.setFormatter(_JsonFormatter() if json_lines else logging.Formatter(_TEXT))
    root.addHandler(handler)


@contextlib.contextmanager
def context(*, run: str | None = None, job: str | None = None) -> Iterator[None]:
    """Within the block, log lines name this run and job."""
    tokens = []
    if run is not None:
        tokens.append((run_id, run_id.set(run)))
    if job is not None:
        tokens.append((job_id, job_id.set(job)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = run_id.get()
        record.job_id = job_id.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "run_id": getattr(record, "run_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)
