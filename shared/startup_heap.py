"""What a long-lived process built at start, kept out of Python's full collections.

A Berth process imports and builds a few hundred thousand objects at start that it
keeps for its whole life (FastAPI's routes, pydantic's validators, the Kubernetes
client's models). CPython's full collection walks every tracked object, so each one
in a running process re-reads all of them: 98-148 ms on these machines, measured in
a 500-run burst as one pause of the API's event loop (with 32 submissions in flight)
and one of the worker's threads. Frozen (:func:`gc.freeze`), they are left out of
every later collection; what the process builds afterwards is collected as before.

Only a long-lived ``berth`` process freezes: its command calls :func:`enable` first,
and :func:`freeze` does nothing elsewhere (a test's in-process app or worker).
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

_enabled = False
_frozen: set[str] = set()
_lock = threading.Lock()


def enable() -> None:
    """This process lives long: its :func:`freeze` calls take effect."""
    global _enabled
    _enabled = True


def freeze(what: str) -> int | None:
    """Collect start-up's garbage, then freeze everything left; ``what`` names the
    moment in the log. Returns how many objects are frozen, or None when the process
    did not :func:`enable` it or ``what`` was frozen before in this process. Call it
    again after a later warm-up (a cluster's client loaded in a thread): each call
    adds what is new. Each moment counts once: a second leader term (after a lost
    lease) rebuilds clients and drops the first term's, and freezing at every term
    would keep each term's for good."""
    with _lock:
        if not _enabled or what in _frozen:
            return None
        _frozen.add(what)
    started = time.perf_counter()
    gc.collect()  # what start-up dropped goes first: frozen, it would stay for good
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "%d start-up objects frozen after %s (%.0f ms)",
        frozen,
        what,
        (time.perf_counter() - started) * 1000,
    )
    return frozen
