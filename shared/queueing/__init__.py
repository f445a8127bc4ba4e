"""Berth's queue: who starts next, where, and why the others wait.

The pure core (:mod:`~shared.queueing.planner` with :mod:`~shared.queueing.order`
and :mod:`~shared.queueing.share`) decides over plain models and is what the
property tests and the bench exercise. :mod:`~shared.queueing.view` reads the
store into those models and :mod:`~shared.queueing.commit` writes decisions
back atomically; :mod:`~shared.queueing.limits` holds the time rules (retry,
``max_duration``, inactivity, gang readiness).
"""

from shared.queueing.model import Admit, Fail, Holding, Plan, QueuedRun, Wait
from shared.queueing.planner import plan

__all__ = ["Admit", "Fail", "Holding", "Plan", "QueuedRun", "Wait", "plan"]
