"""Shaping a run pod for the cluster's rules: the backend's pod settings and the run's tags.

A pure function over the pod Berth built. What it may change and what it may not:

- **Added:** the backend's (and context's) node selector, extra tolerations, labels,
  annotations, priority class, service account, runtime class, image pull
  secrets and default pod security context; the run's ``tags``, as labels
  where the value is a valid label value and as annotations otherwise.
- **Kept:** Berth's own labels (``berth.dev/*``, ``app.kubernetes.io/managed-by``)
  win over every other label, and Berth's placement affinity and GPU
  tolerations stay as they are. ``automountServiceAccountToken`` stays false
  unless the operator sets ``automount_service_account_token: true``.
- **Precedence among labels:** Berth's, then the operator's, then the run's tags,
  so users cannot override what the operator set (dstack's ``merge_tags``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from shared.configuration.kube_fields import (
    PodSettings,
    is_label_value,
    is_qualified_name,
    is_reserved_label,
)


def customise_pod(
    pod: Mapping[str, Any],
    settings: PodSettings,
    *,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``pod`` with ``settings`` and ``tags`` applied, Berth's own fields kept."""
    out = copy.deepcopy(dict(pod))
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    own = dict(meta.get("labels") or {})
    tag_labels, tag_annotations = split_tags(tags or {})
    meta["labels"] = tag_labels | settings.labels | own
    annotations = tag_annotations | settings.annotations | dict(meta.get("annotations") or {})
    if annotations:
        meta["annotations"] = annotations
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector) | dict(spec.get("nodeSelector") or {})
    if settings.tolerations:
        tolerations = list(spec.get("tolerations") or [])
        for extra in (t.to_kubernetes() for t in settings.tolerations):
            if extra not in tolerations:
                tolerations.append(extra)
        spec["tolerations"] = tolerations
    for field, value in (
        ("priorityClassName", settings.priority_class_name),
        ("serviceAccountName", settings.service_account_name),
        ("runtimeClassName", settings.runtime_class_name),
    ):
        if value is not None:
            spec[field] = value
    if settings.image_pull_secrets:
        secrets = list(spec.get("imagePullSecrets") or [])
        secrets += [{"name": n} for n in settings.image_pull_secrets if {"name": n} not in secrets]
        spec["imagePullSecrets"] = secrets
    if settings.security_context is not None and "securityContext" not in spec:
        spec["securityContext"] = settings.security_context.to_kubernetes()
    spec["automountServiceAccountToken"] = settings.automount_service_account_token
    return out


def split_tags(tags: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, annotations)`` from a run's tags.

    dstack's tag keys are always valid label keys except when they start or end
    with ``-`` or ``_``: those, and keys Berth reserves, are dropped. A value that
    is not a valid label value (spaces, ``/``, ``@``, over 63 characters) makes the
    tag an annotation instead.
    """
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for key, value in tags.items():
        if not is_qualified_name(key) or is_reserved_label(key):
            continue
        if is_label_value(value):
            labels[key] = value
        else:
            annotations[key] = value
    return labels, annotations
