"""Label problems, logged once per distinct problem rather than on every inventory pass.

The inventory re-reads a node's labels whenever the node changes (its status
heartbeat included), so a plain ``log.warning`` in a label reader would repeat
the same line every few seconds for every such node. The set of problems seen
is process-wide by nature, like ``logging``'s own registry of loggers, and
bounded so that a cluster churning through label values cannot grow it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

__all__ = ["warn_once"]

log = logging.getLogger("shared.gpu.labels")

# Distinct problems remembered; the oldest is forgotten (and may be logged again).
_MAX_REMEMBERED = 4096
_seen: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> bool:
    """Log ``message % args`` at WARNING unless ``key`` was logged before; True if logged."""
    with _lock:
        if key in _seen:
            _seen.move_to_end(key)
            return False
        _seen[key] = None
        if len(_seen) > _MAX_REMEMBERED:
            _seen.popitem(last=False)
    log.warning(message, *args)
    return True
