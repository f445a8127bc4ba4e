"""Listing runs: every active run at once, history a page at a time.

``berth ps`` must show what runs now whatever the history holds, so active
runs come from the set of active runs, never from the newest N of the history;
``berth ps -a`` pages through history newest first with a cursor, so a page
costs a few round trips however many runs a project has had.
"""

from __future__ import annotations

from shared.queueing import keys
from shared.state.records import Run, RunStatus
from shared.state.store import RunCursor, Store

NEXT_CURSOR_HEADER = "X-Berth-Next-Cursor"


def list_runs(
    store: Store,
    project: str,
    *,
    history: bool,
    status: RunStatus | None,
    prefix: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Run], str | None]:
    """The runs to show and the cursor of the next page (``None``: nothing more)."""

    def keep(run: Run) -> bool:
        if status is not None and run.status != status:
            return False
        return prefix is None or run.name.startswith(prefix)

    if not history:
        active = [r for r in store.active_runs(project) if keep(r)]
        return active, None  # every active run: no page to go on to
    before = RunCursor.decode(cursor) if cursor else None
    page, after = store.page_runs(project, limit=limit, before=before, keep=keep)
    return page, after.encode() if after is not None else None


def idle_stop_in(store: Store, runs: list[Run], *, now: float) -> dict[str, float]:
    """Run id -> seconds until a dev environment is stopped for inactivity, if it has a
    limit: from the later of its placement and its last SSH session (workers/activity.py)."""
    watched = {
        r.id: int(limit)
        for r in runs
        if r.configuration_type == "dev-environment"
        and r.status == RunStatus.RUNNING
        and isinstance(limit := r.configuration.get("inactivity_duration"), int)
        and not isinstance(limit, bool)
    }
    if not watched:
        return {}
    admitted = keys.timestamps(store, keys.ADMITTED, watched)
    active = keys.timestamps(store, keys.ACTIVITY, watched)
    return {
        run_id: max(0.0, max(admitted[run_id], active.get(run_id, 0.0)) + limit - now)
        for run_id, limit in watched.items()
        if run_id in admitted
    }
