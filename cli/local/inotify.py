"""Room for KWOK's log watchers: ``fs.inotify.max_user_instances``, raised while clusters run.

KWOK serves a fake pod's log with one inotify instance per ``follow`` request, and
keeps it after the request ends until the log changes again, which for a finished
pod is never (seen in the full check: 124 instances held by KWOK with one TCP
connection open). Berth's log collector follows every job pod and cuts the
stream once the container ends, so a session that runs a few hundred short KWOK
jobs reaches the host's default of 128 instances per user, and the next follow
fails with "failed to create fsnotify watcher: too many open files". Real kubelets
end a follow when the container does; nothing is held.

So while any local cluster runs, the limit is at least :data:`INSTANCES` (kind
documents the same raise). 1,024 was not enough for long runs: KWOK holds about one
instance per job pod ever followed, so a 10,000-job drain ran out after about a
thousand; every later follow failed and was tried again (3.1-3.4 log requests per
job instead of 2, 20,000 failures in the collector's log). The host's own value is
kept in :data:`MARKER` by the first cluster that raised it and put back by the last
one down.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

KEY = Path("/proc/sys/fs/inotify/max_user_instances")
INSTANCES = 32_768
MARKER = Path("/run/berth-inotify-max-user-instances")
"""The host's value before a local cluster raised it."""


def raise_limit(key: Path = KEY, marker: Path = MARKER) -> None:
    """Make the limit at least :data:`INSTANCES`, remembering the host's value once."""
    with contextlib.suppress(OSError):  # not Linux, or not root: KWOK keeps the default
        current = int(key.read_text())
        if current >= INSTANCES:
            return
        if not marker.exists():
            marker.write_text(f"{current}\n")
        key.write_text(f"{INSTANCES}\n")


def restore_limit(*, others_running: bool, key: Path = KEY, marker: Path = MARKER) -> None:
    """Put the host's value back, unless another local cluster still runs."""
    if others_running or not marker.exists():
        return
    with contextlib.suppress(OSError, ValueError):
        key.write_text(f"{int(marker.read_text())}\n")
        marker.unlink()


def kwok_running(proc: Path = Path("/proc")) -> bool:
    """Whether a local cluster's KWOK (from Berth's build cache) runs on this host."""
    for cmdline in proc.glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv0 = cmdline.read_bytes().split(b"\0", 1)[0]
            if b"/local-cluster-" in argv0 and argv0.endswith(b"/bin/kwok"):
                return True
    return False
