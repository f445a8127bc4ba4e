"""A service's ``probes`` as its container's Kubernetes readiness probe. Pure.

dstack runs the probe from its own agent and sends a replica traffic once
``ready_after`` probes in a row passed; the kubelet does the same for a
readinessProbe (``successThreshold``), and the pod's ``Ready`` condition is
what :mod:`workers.pod_status` turns into the job's ``ready``. One failure
takes the replica out again (``failureThreshold: 1``), as in dstack, where any
failed probe marks the replica not ready.
"""

from __future__ import annotations

from typing import Any


def readiness_probe(conf: Any) -> dict[str, Any] | None:
    """The readinessProbe of a service replica's main container; None without probes."""
    if getattr(conf, "type", None) != "service" or not conf.probes:
        return None
    probe = conf.probes[0]  # the configuration allows one (one readinessProbe per container)
    http_get: dict[str, Any] = {"path": probe.url, "port": conf.port, "scheme": "HTTP"}
    if probe.headers:
        http_get["httpHeaders"] = [{"name": h.name, "value": h.value} for h in probe.headers]
    return {
        "httpGet": http_get,
        "timeoutSeconds": max(1, probe.timeout),
        "periodSeconds": max(1, probe.interval),
        "successThreshold": probe.ready_after,
        "failureThreshold": 1,
    }
