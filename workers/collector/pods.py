"""Which job containers have output to collect: a watch of Berth's job pods in one namespace.

A LIST, then a WATCH from its resourceVersion; a watch that ends normally
resumes from the last version seen, a 410 Gone (history compacted) relists,
and any Kubernetes error backs off (doubling to a minute) before trying
again, so a forbidden or unreachable cluster costs one call a minute, not a
loop. After every (re)list each pod present is reported again: the gap may
have hidden its events, and reporting twice is harmless.

Pods are read as the apiserver's JSON (``shared/kube/raw.py``), never as client
model objects: the collector sees every event of every job pod, and building a
``V1Pod`` for each (to read six fields) was most of its CPU in a burst.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from shared import kube
from shared.errors import KubeError, KubeTemporaryError
from shared.kube.raw import as_raw, dig, labels_of, undeclared
from workers.collector.target import CONTAINER
from workers.supervisor import printed_lines

log = logging.getLogger(__name__)

_SELECTOR = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{kube.LABEL_JOB}"
_BACKOFF_INITIAL_S = 1.0
_BACKOFF_MAX_S = 60.0
_WATCH_TIMEOUT_S = 240  # server-side; below most load balancers' idle cut-off


@dataclass(frozen=True)
class PodView:
    """What the collector needs of a job pod."""

    name: str
    uid: str
    job_id: str
    attempt: int
    started: bool
    """The run's container has started (running or ended): its output can be read."""
    ended: bool
    printed: int | None = None
    """Lines the container said it printed (its termination message), once it ended."""


def pod_view(pod: Any) -> PodView | None:
    """The collector's view of a pod (its JSON, or a client object); None for a pod that
    is not a job's."""
    raw = as_raw(pod)
    labels = labels_of(raw)
    job_id = labels.get(kube.LABEL_JOB)
    if not job_id:
        return None
    attempt = kube.attempt_of(labels)
    if attempt is None:
        attempt = 1  # a garbled label reads as the first attempt
    started = ended = False
    printed = None
    for status in dig(raw, "status", "containerStatuses") or ():
        state = dig(status, "state")
        if dig(status, "name") != CONTAINER or not state:
            continue
        terminated = state.get("terminated")
        ended = terminated is not None
        started = ended or state.get("running") is not None
        if terminated:
            printed = printed_lines(terminated.get("message"))
    if started and dig(raw, "status", "phase") in ("Succeeded", "Failed"):
        ended = True  # a finished pod's containers all ended, whatever their states say
    return PodView(
        name=str(dig(raw, "metadata", "name")),
        uid=str(dig(raw, "metadata", "uid")),
        job_id=job_id,
        attempt=attempt,
        started=started,
        ended=ended,
        printed=printed,
    )


class PodWatch:
    """Calls ``on_pod(view, deleted)`` for every job pod event in ``namespace``."""

    def __init__(
        self,
        k: kube.Kube,
        namespace: str,
        on_pod: Callable[[PodView, bool], None],
    ) -> None:
        self.k = k
        self.namespace = namespace
        self.on_pod = on_pod
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"pods-{namespace}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_INITIAL_S
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch_from(version)
                backoff = _BACKOFF_INITIAL_S
            except _Gone:
                version = None
            except KubeError as e:
                log.warning(
                    "watching job pods in %s failed (next try in %.0f s): %s",
                    self.namespace,
                    backoff,
                    e,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception:  # a bug: a guard keeps the watch alive, relisting (kopf's way)
                log.exception("the job pod watch in %s failed; relisting", self.namespace)
                version = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _list(self) -> str:
        pods = self.k.call_json(
            self.k.core.list_namespaced_pod, self.namespace, label_selector=_SELECTOR
        )
        for pod in pods.get("items") or ():
            self._report(pod, deleted=False)
        return str(dig(pods, "metadata", "resourceVersion"))

    def _watch_from(self, version: str) -> str:
        w = watch.Watch()
        self._watch = w
        try:
            for event in w.stream(
                undeclared(self.k.core.list_namespaced_pod, self.namespace),
                label_selector=_SELECTOR,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=_WATCH_TIMEOUT_S,
                _request_timeout=(self.k.timeout, _WATCH_TIMEOUT_S + 30),
            ):
                if self._stop.is_set():
                    break
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    raw = event.get("raw_object") or {}
                    if raw.get("code") == 410:
                        raise _Gone
                    raise KubeTemporaryError(f"pod watch error: {raw.get('message', raw)}")
                if kind == "BOOKMARK":  # only a newer version to resume from
                    version = _bookmark_version(obj) or version
                    continue
                version = str(dig(obj, "metadata", "resourceVersion") or version)
                self._report(obj, deleted=kind == "DELETED")
        except ApiException as e:  # watch raises ERROR events as ApiException, 410 included
            if e.status == 410:
                raise _Gone from e
            raise kube.wrap_api_exception(e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if self._stop.is_set():
                return version
            raise KubeTemporaryError(f"pod watch broke: {e}") from e
        finally:
            self._watch = None
        return version

    def _report(self, pod: Any, *, deleted: bool) -> None:
        view = pod_view(pod)
        if view is not None:
            self.on_pod(view, deleted)


def _bookmark_version(obj: Any) -> str | None:
    """A BOOKMARK carries only metadata."""
    version = dig(as_raw(obj), "metadata", "resourceVersion")
    return str(version) if version else None


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""
