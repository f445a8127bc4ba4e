"""Run-level policies dstack adds to a configuration: when it starts, in what order, when it ends.

- ``schedule``: one or more crons (UTC) at which Berth starts the run (``shared.state.schedules``);
- ``startup_order`` and ``stop_criteria``: how the nodes of a multi-node task start
  and when the task is over (``workers.node_order``);
- ``utilization_policy``: stop a run whose GPUs stay below a utilisation for a
  time window (``workers.gpu_utilization``), read from the cluster's DCGM exporter.

Each is a pure value here; the modules named above give it its effect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BeforeValidator, Field, field_validator

from shared.configuration.base import BerthModel
from shared.configuration.fields import Duration

StartupOrder = Literal["any", "master-first", "workers-first"]
StopCriteria = Literal["all-done", "master-done"]

# dstack's lower bound (core/models/profiles.py UtilizationPolicy): a shorter window
# would stop a run over one slow data-loading pause.
MIN_TIME_WINDOW_S = 5 * 60


class Schedule(BerthModel):
    """Start the run at each cron time (minute hour day-of-month month day-of-week, UTC)."""

    cron: list[str] = Field(min_length=1)

    @field_validator("cron", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _parses(cls, value: list[str]) -> list[str]:
        for text in value:
            # Five fields only: croniter would also take a sixth (seconds), which dstack does not.
            if len(text.split()) != 5 or not croniter.is_valid(text):
                raise ValueError(
                    f"cannot parse cron {text!r}: expected five fields (minute hour"
                    " day-of-month month day-of-week) such as '0 8 * * mon-fri' or '*/15 * * * *'"
                )
        return value


def _schedule_from_yaml(value: Any) -> Any:
    return {"cron": value} if isinstance(value, str | list) else value


ScheduleField = Annotated[Schedule | None, BeforeValidator(_schedule_from_yaml)]


class UtilizationPolicy(BerthModel):
    """Stop the run when every GPU it holds stayed below ``min_gpu_utilization`` percent
    for the whole ``time_window``."""

    min_gpu_utilization: int = Field(ge=0, le=100, strict=True)
    time_window: Duration

    @field_validator("time_window")
    @classmethod
    def _bounded(cls, value: int) -> int:
        if value < MIN_TIME_WINDOW_S:
            raise ValueError(f"time_window must be at least 5m, got {value}s")
        return value
