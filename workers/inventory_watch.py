"""The live GPU inventory: watch nodes and pods, publish a snapshot on every change.

Runs inside the proxy worker. Design decisions:

* **An informer without client-go.** One thread per kind (nodes, pods in all
  namespaces) LISTs once, in pages, then WATCHes from the list's
  resourceVersion with ``allowWatchBookmarks``, a server-side
  ``timeoutSeconds`` and a client read timeout. When a watch ends normally
  it resumes from the last resourceVersion seen (bookmarks move it on a quiet
  cluster), so the steady state costs one request per watch timeout and never
  a full list. Only 410 Gone (the apiserver no longer holds that history)
  leads to a relist. ``kubernetes_asyncio`` is not available, so the threads
  use the sync client; ``Watch.stop()`` shuts the socket, which is how
  :meth:`InventoryWatcher.stop` interrupts a blocked read.
* **Raw JSON, compact records.** LIST pages and watch events are read as the
  apiserver's JSON, never as client model objects (about a millisecond and
  several KiB each per pod: at 10,000 pods that was most of the first
  inventory's 21 s and of the process's 600 MiB). The watch threads turn each
  object into the little the inventory keeps (a
  :class:`~shared.gpu.inventory.PodRecord` or
  :class:`~shared.gpu.inventory.NodeRecord`) before queueing it, page by page,
  so a relist never holds the whole list. Only Berth's own job pods go to
  ``on_berth_pod``, as a :class:`WatchedPod` that is read only if
  its reader asks.
* **One owner for the builder.** :class:`~shared.gpu.inventory.InventoryBuilder`
  is not thread-safe, so the watch threads only convert and enqueue; one
  consumer thread applies everything in arrival order. One producer per kind
  and a FIFO queue keep each kind's events in the order the apiserver sent them.
* **Coalesced publishing.** The first unpublished change is published at once
  if the last publish was at least ``min_publish_interval_s`` ago, otherwise
  when that interval has passed, and never later than ``max_publish_delay_s``
  after the change. A burst of deletions becomes a few snapshots, not hundreds.
  Events that change nothing counted (status heartbeats, a pod turning Ready)
  publish nothing. Nothing is published until both kinds have listed once: a
  snapshot with nodes and no pods would show every GPU free and invite
  overbooking.
* **Only foreign pods count.** Berth subtracts its own jobs from its placements
  before their pods exist, so its job pods (``is_foreign_pod`` is false) are not
  fed to the builder (its jump host pod has no placement and counts). Job pods
  trigger ``on_berth_pod(job_id, event_type, pod)`` on a separate thread, so a
  slow callback (a Redis round trip) never delays a publish. After a relist,
  Berth pods present are reported ``ADDED`` and those that vanished in the
  gap ``DELETED``: the gap may have hidden their events.
* **Failure never kills it.** Kubernetes errors (apiserver down, 5xx)
  back off from ``backoff_initial_s`` doubling to ``backoff_max_s`` and then
  resume from the last resourceVersion. A 403 is no outage: RBAC will say the
  same until an operator acts, so it is reported (``on_forbidden``, which asks
  :mod:`shared.policy.access` again) and that kind is not asked again for
  ``forbidden_retry_s``: never a loop of forbidden calls.
* **Namespace-only mode.** Given a ``namespace``, it watches only the pods
  there (Berth's own job pods, for ``on_berth_pod``) and publishes no
  inventory: without node reads there is none to publish. Anything else is a bug; every
  long-lived thread runs under a guard that logs the failure or an unexpected
  return and restarts the loop with the same backoff (kopf's guarded tasks).
  A consumer restart relists both kinds, since the event it failed on is lost.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from shared import kube
from shared.errors import BerthError, KubeError, KubeForbidden, KubeTemporaryError
from shared.gpu.inventory import (
    GpuInventory,
    InventoryBuilder,
    NodeRecord,
    PodRecord,
    node_record,
    pod_record,
)
from shared.gpu.pod_view import PodView, decode_pod, decode_pod_list, pod_view
from shared.kube.raw import Raw, dig, undeclared
from shared.state.inventory_store import is_foreign

__all__ = ["NODES", "PODS", "InventoryWatcher", "WatchSettings", "WatcherHealth"]

log = logging.getLogger(__name__)

NODES, PODS = "nodes", "pods"
ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

Publish = Callable[[GpuInventory], None]
ForbiddenCallback = Callable[[str], None]
"""Called with the kind whose LIST or WATCH the apiserver refused (403)."""
BerthPodCallback = Callable[[str, str, Any], None]
"""Called with (value of the pod's ``berth.dev/job`` label, ``ADDED|MODIFIED|DELETED``, the
:class:`WatchedPod` as watched: None for a pod a relist no longer finds)."""
WatchFactory = Callable[[], Any]
"""Makes a ``kubernetes.watch.Watch``; tests pass one that injects apiserver answers."""


class InventoryWatcher:
    """Keeps a :class:`GpuInventory` current from node and pod watches and publishes it.

    In the proxy worker::

        watcher = InventoryWatcher(
            kube,
            publish=lambda inv: publish_inventory(store, cluster_key, inv),
            on_berth_pod=enqueue_job_sync,
        )
        watcher.start()
        watcher.wait_synced(timeout=30)
        ...
        watcher.stop()

    ``publish`` and ``on_berth_pod`` run on the watcher's own threads; a
    :class:`~shared.errors.BerthError` they raise is logged and retried
    (publish) or dropped (on_berth_pod, beat's sweeps catch up).
    """

    def __init__(
        self,
        kube_client: kube.Kube,
        *,
        publish: Publish,
        on_berth_pod: BerthPodCallback | None = None,
        settings: WatchSettings | None = None,
        watch_factory: WatchFactory = watch.Watch,
        namespace: str | None = None,
        on_forbidden: ForbiddenCallback | None = None,
    ) -> None:
        self._settings = settings or WatchSettings()
        self._publish = publish
        self._on_berth_pod = on_berth_pod
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._stats = _Stats()
        self._inbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._notices: queue.SimpleQueue[tuple[str, str, Any] | None] = queue.SimpleQueue()
        self._kinds = {
            kind: _KindWatch(
                kind,
                list_fn,
                reader,
                kube_client=kube_client,
                inbox=self._inbox,
                settings=self._settings,
                stats=self._stats,
                stopping=self._stopping,
                watch_factory=watch_factory,
                on_forbidden=on_forbidden,
            )
            for kind, list_fn, reader in _lists(kube_client, namespace)
        }
        self._consumer = _Consumer(
            publish=self._publish_snapshot,
            notify=self._notices.put if on_berth_pod is not None else None,
            settings=self._settings,
            stats=self._stats,
        )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the watch, consumer and callback threads; a watcher starts once."""
        if self._threads:
            raise RuntimeError("InventoryWatcher.start() called twice")
        loops: list[tuple[str, Callable[[], None], Callable[[], None] | None]] = [
            (f"watch-{kind}", w.run, None) for kind, w in self._kinds.items()
        ]
        loops.append(("consumer", self._consume, self._relist_all))
        if self._on_berth_pod is not None:
            loops.append(("berth-pods", self._deliver_notices, None))
        self._threads = [
            threading.Thread(
                target=_guarded,
                args=(name, loop, on_restart, self._stopping, self._settings, self._stats),
                name=f"inventory-{name}",
                daemon=True,  # a wedged thread must not keep the process alive at exit
            )
            for name, loop, on_restart in loops
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every thread within ``timeout`` seconds; False (and a log line) if one lingers.

        A LIST already in flight cannot be interrupted; it ends within the Kube
        client's request timeout. Calling it again is harmless.
        """
        self._stopping.set()
        self._inbox.put(_STOP)
        self._notices.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                # Repeated because a watch may connect after the previous interrupt.
                for kind_watch in self._kinds.values():
                    kind_watch.interrupt()
                thread.join(_JOIN_POLL_S)
        lingering = [t.name for t in self._threads if t.is_alive()]
        if lingering:
            log.warning(
                "inventory watcher threads still running after %.1fs: %s", timeout, lingering
            )
        return not lingering

    def wait_synced(self, timeout: float) -> bool:
        """Block until the first snapshot is published (both kinds listed); False on timeout."""
        return self._synced.wait(timeout)

    def health(self) -> WatcherHealth:
        with self._stats.lock:
            s = self._stats
            return WatcherHealth(
                synced=self._synced.is_set(),
                alive=bool(self._threads) and all(t.is_alive() for t in self._threads),
                last_publish_at=s.last_publish_at,
                publishes=s.publishes,
                events_seen=s.events_seen,
                lists=dict(s.lists),
                relists=sum(n - 1 for n in s.lists.values() if n > 1),
                restarts=s.restarts,
                last_error=s.last_error,
                last_error_at=s.last_error_at,
            )

    # -- thread bodies ---------------------------------------------------------

    def _consume(self) -> None:
        while True:
            wait = self._consumer.seconds_until_due()
            try:
                message = self._inbox.get(timeout=wait)
            except queue.Empty:
                pass  # a snapshot fell due
            else:
                if isinstance(message, _Stop):
                    return
                self._consumer.apply(message)
            if self._consumer.seconds_until_due() == 0.0:
                self._drain_queued()
                self._consumer.publish()

    def _drain_queued(self) -> None:
        """Apply what is already queued, so one snapshot covers the whole burst."""
        for _ in range(_MAX_DRAIN):
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, _Stop):
                self._inbox.put(message)  # seen by the next get, after this publish
                return
            self._consumer.apply(message)

    def _publish_snapshot(self, inventory: GpuInventory) -> None:
        self._publish(inventory)
        self._synced.set()

    def _deliver_notices(self) -> None:
        assert self._on_berth_pod is not None
        while (notice := self._notices.get()) is not None:
            job_id, event_type, pod = notice
            try:
                self._on_berth_pod(job_id, event_type, pod)
            except BerthError as e:
                log.warning("on_berth_pod(%s, %s) failed, dropped: %s", job_id, event_type, e)
                self._stats.error(str(e))

    def _relist_all(self) -> None:
        for kind_watch in self._kinds.values():
            kind_watch.request_relist()


@dataclass(frozen=True)
class WatchSettings:
    """Timing of the watches and of publishing. Every field is in seconds unless named otherwise."""

    watch_timeout_s: int = 300
    """Server-side ``timeoutSeconds`` of one watch request. client-go's reflector picks
    5-10 min; ending sooner only costs a reconnect that resumes without relisting."""
    idle_read_timeout_s: float = 90.0
    """Client read timeout: the longest silence before the connection is presumed dead.
    The apiserver sends a bookmark about every minute, so 90 s never fires on a healthy
    watch, while a silently dropped connection is noticed in 1.5 min, not at timeout."""
    list_page_size: int = 500
    """Objects per LIST page (client-go's default), bounding one response on big clusters."""
    min_publish_interval_s: float = 0.05
    """Shortest gap between two snapshots: caps publishing at 20 per second in a burst."""
    max_publish_delay_s: float = 0.2
    """Longest a change may wait before its snapshot is published (scheduler wake-up budget)."""
    backoff_initial_s: float = 0.2
    """First retry delay after an API or publish error, doubled on each repeat."""
    backoff_max_s: float = 5.0
    """Retry delay ceiling: an apiserver back from an outage is seen within this."""
    forbidden_retry_s: float = 300.0
    """After a 403, the wait before that kind is listed again (``kube.forbidden_retry_s``)."""


@dataclass(frozen=True)
class WatcherHealth:
    synced: bool
    """A first snapshot has been published."""
    alive: bool
    """Every thread of the watcher is running."""
    last_publish_at: float | None
    """Wall-clock time (``time.time()``) of the last successful publish."""
    publishes: int
    events_seen: int
    """ADDED/MODIFIED/DELETED watch events received, both kinds, bookmarks excluded."""
    lists: dict[str, int]
    """Completed LISTs per kind, the first one included."""
    relists: int
    """LISTs after the first, per kind summed: watch expiries (410) and consumer restarts."""
    restarts: int
    """Guarded loops restarted after a crash or an unexpected return."""
    last_error: str | None
    """The latest error, kept after recovery; compare ``last_error_at`` with ``last_publish_at``."""
    last_error_at: float | None


# --- helpers, in call order ---------------------------------------------------------

_JOIN_POLL_S = 0.05  # how often stop() re-interrupts watches while joining
_MAX_DRAIN = 10_000  # bounds one publish's delay even if events arrive faster than applied
_QUICK_END_S = 1.0  # a watch that ends sooner, with no event, is treated like an error


@dataclass(frozen=True, slots=True)
class _PodSeen:
    """A pod as the consumer needs it: its record, and for a Berth job's pod the job and pod."""

    record: PodRecord
    job: str | None = None
    """Set for Berth's job pods only (:func:`is_foreign_pod` is false)."""
    pod: WatchedPod | None = None
    """The pod for ``on_berth_pod``; set with ``job``."""


class WatchedPod:
    """A Berth job pod as a watch saw it: its JSON, read only when asked.

    Most of a job pod's events are never read: the follower keeps only each job's
    latest event, and a stopping run's pod sends its last events after its job has
    finished, when nothing reads them. What reads one (``workers/pod_status.py``)
    reads the JSON as it is: a ``V1Pod`` cost about 0.75 ms per event.
    """

    __slots__ = ("_load",)

    def __init__(self, load: Callable[[], Raw]) -> None:
        self._load = load

    def raw(self) -> Raw:
        """The pod as the API's JSON."""
        return self._load()


_Seen = NodeRecord | _PodSeen


@dataclass(frozen=True)
class _Listed:
    kind: str
    items: list[_Seen]


@dataclass(frozen=True)
class _Changed:
    kind: str
    type: str
    obj: _Seen


class _Stop:
    """Tells the consumer to return."""


_STOP = _Stop()
_Message = _Listed | _Changed | _Stop


@dataclass
class _Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_publish_at: float | None = None
    publishes: int = 0
    events_seen: int = 0
    lists: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def error(self, text: str) -> None:
        with self.lock:
            self.last_error, self.last_error_at = text, time.time()


def _lists(kube_client: kube.Kube, namespace: str | None) -> list[tuple[str, Any, _Reader]]:
    """The kinds to watch, with their LIST method and reader: all nodes and pods, or
    one namespace's pods."""
    pods = _PodReader()
    if namespace is None:
        return [
            (NODES, undeclared(kube_client.core.list_node), _NodeReader()),
            (PODS, undeclared(kube_client.core.list_pod_for_all_namespaces), pods),
        ]
    return [(PODS, undeclared(kube_client.core.list_namespaced_pod, namespace), pods)]


_Page = tuple[list[_Seen], str | None, str | None]
"""A LIST page read: its items, the continue token and the list's resourceVersion."""


class _Reader(Protocol):
    """Turns one kind's LIST pages and watch events into what the consumer keeps."""

    def page(self, body: bytes) -> _Page: ...

    def event(self, raw: Raw) -> _Seen | None: ...


class _NodeReader:
    def page(self, body: bytes) -> _Page:
        try:
            page = json.loads(body)
        except ValueError as e:
            raise KubeTemporaryError(f"the node list is not JSON: {e}") from e
        items: list[_Seen] = [seen for raw in page.get("items") or () if (seen := self.event(raw))]
        meta = page.get("metadata") or {}
        return items, meta.get("continue"), meta.get("resourceVersion")

    def event(self, raw: Raw) -> NodeRecord | None:
        return node_record(raw)


def _mapping(item: Any) -> Raw:
    loaded = json.loads(bytes(item))
    return loaded if isinstance(loaded, dict) else {}


class _PodReader:
    """Pods as records; Berth's job pods also as the :class:`WatchedPod` ``on_berth_pod`` takes.

    A LIST page is decoded into :class:`~shared.gpu.pod_view.PodView`s, its items
    kept as raw JSON until then, so only Berth's own pods are ever read whole.
    """

    def page(self, body: bytes) -> _Page:
        try:
            page = decode_pod_list(body)
            items: list[_Seen] = [
                seen
                for item in page.items or ()
                if (seen := self._seen(decode_pod(item), partial(_mapping, item)))
            ]
        except ValueError as e:
            raise KubeTemporaryError(f"the pod list is not what the API sends: {e}") from e
        return items, page.next_page, page.resource_version

    def event(self, raw: Raw) -> _PodSeen | None:
        try:
            view = pod_view(raw)
        except ValueError as e:
            log.warning("ignoring a pod event that is not a pod: %s", e)
            return None
        return self._seen(view, lambda: raw)

    def _seen(self, view: PodView, load: Callable[[], Raw]) -> _PodSeen | None:
        record = pod_record(view)
        if record is None:
            return None
        labels = view.labels
        if is_foreign(labels):
            return _PodSeen(record)
        job = labels.get(kube.LABEL_JOB)
        if not job:
            return None  # labelled as a job's but with no job to sync: neither counted nor told
        return _PodSeen(record, job=job, pod=WatchedPod(load))


def _guarded(
    name: str,
    loop: Callable[[], None],
    on_restart: Callable[[], None] | None,
    stopping: threading.Event,
    settings: WatchSettings,
    stats: _Stats,
) -> None:
    """Run ``loop`` until stopping, restarting it with backoff when it fails or returns."""
    backoff = _Backoff(settings)
    while not stopping.is_set():
        started = time.monotonic()
        try:
            loop()
        except Exception as e:  # the guard's whole job: no bug may end the watcher
            log.exception("inventory watcher loop %r failed; restarting", name)
            stats.error(f"{name}: {e!r}")
        else:
            if stopping.is_set():
                return
            log.error("inventory watcher loop %r returned unexpectedly; restarting", name)
        if time.monotonic() - started > settings.backoff_max_s:
            backoff.reset()  # it ran a good while: a fresh failure, not a crash loop
        if stopping.wait(backoff.next()):
            return
        with stats.lock:
            stats.restarts += 1
        if on_restart is not None:
            on_restart()


class _Backoff:
    def __init__(self, settings: WatchSettings) -> None:
        self._initial, self._max = settings.backoff_initial_s, settings.backoff_max_s
        self.failures = 0

    def next(self) -> float:
        # The exponent is capped so that a long outage cannot overflow the float.
        delay = min(self._max, self._initial * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class _KindWatch:
    """LIST then WATCH one kind for as long as the watcher runs, feeding the inbox."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        reader: _Reader,
        *,
        kube_client: kube.Kube,
        inbox: queue.SimpleQueue[_Message],
        settings: WatchSettings,
        stats: _Stats,
        stopping: threading.Event,
        watch_factory: WatchFactory,
        on_forbidden: ForbiddenCallback | None = None,
    ) -> None:
        self.kind = kind
        self._on_forbidden = on_forbidden
        self._list_fn = list_fn
        self._reader = reader
        self._kube = kube_client
        self._inbox = inbox
        self._settings = settings
        self._stats = stats
        self._stopping = stopping
        self._watch_factory = watch_factory
        self._resource_version: str | None = None
        self._lock = threading.Lock()
        self._current: Any = None  # the live Watch, for interrupt()
        self._relist_requested = False

    def run(self) -> None:
        backoff = _Backoff(self._settings)
        while not self._stopping.is_set():
            try:
                if self._take_relist_request() or self._resource_version is None:
                    self._list()
                    backoff.reset()
                if self._watch() or self._relist_requested:
                    backoff.reset()
                    continue
                delay = backoff.next()
            except KubeError as e:
                if self._stopping.is_set():
                    return
                if self._relist_requested:
                    continue  # interrupted on purpose (see request_relist)
                if isinstance(e, KubeForbidden):
                    delay = self._forbidden(e)
                    self._stopping.wait(delay)
                    continue
                expired = e.status == 410
                if expired:
                    log.info("%s watch expired (%s); relisting", self.kind, e)
                    self._resource_version = None
                else:
                    log.warning("%s list/watch failed, resuming after backoff: %s", self.kind, e)
                    self._stats.error(f"{self.kind}: {e}")
                # The first 410 relists at once; repeated failures of any kind back off.
                delay = 0.0 if expired and backoff.failures == 0 else backoff.next()
            self._stopping.wait(delay)

    def _forbidden(self, e: KubeForbidden) -> float:
        """A 403: report it, and wait long before asking again (RBAC does not flap)."""
        log.warning(
            "may not list/watch %s (%s); not asking again for %gs",
            self.kind,
            e.message,
            self._settings.forbidden_retry_s,
        )
        self._stats.error(f"{self.kind}: {e}")
        self._resource_version = None  # a later LIST starts afresh
        if self._on_forbidden is not None:
            try:
                self._on_forbidden(self.kind)
            except BerthError as callback_error:
                log.warning("on_forbidden(%s) failed: %s", self.kind, callback_error)
        return self._settings.forbidden_retry_s

    def interrupt(self) -> None:
        """End the current watch request now (``Watch.stop`` shuts its socket)."""
        with self._lock:
            current = self._current
        if current is not None:
            current.stop()

    def request_relist(self) -> None:
        self._relist_requested = True
        self.interrupt()

    def _take_relist_request(self) -> bool:
        requested, self._relist_requested = self._relist_requested, False
        return requested

    def _list(self) -> None:
        items: list[_Seen] = []
        token: str | None = None
        while True:
            body = self._kube.call_bytes(
                self._list_fn, limit=self._settings.list_page_size, _continue=token
            )
            # Read page by page: only the compact records outlive the page.
            seen, token, version = self._reader.page(body)
            items.extend(seen)
            if not token:
                break
        self._inbox.put(_Listed(self.kind, items))
        self._resource_version = version
        with self._stats.lock:
            self._stats.lists[self.kind] = self._stats.lists.get(self.kind, 0) + 1

    def _watch(self) -> bool:
        """Stream events until the server ends the watch; True if it was a healthy one."""
        current = self._watch_factory()
        with self._lock:
            self._current = current
        if self._stopping.is_set() or self._relist_requested:
            return True  # an interrupt may have missed this watch; do not start it
        s = self._settings
        started, events = time.monotonic(), 0
        stream = current.stream(
            self._list_fn,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=s.watch_timeout_s,
            _request_timeout=(self._kube.timeout, s.idle_read_timeout_s),
        )
        try:
            for event in _kube_errors(stream):
                if self._stopping.is_set() or self._relist_requested:
                    break  # an interrupt that raced the request's start; bookmarks end up here
                events += 1
                raw = event.get("object")
                # Object events and bookmarks alike move the version to resume from.
                self._resource_version = (
                    dig(raw, "metadata", "resourceVersion") or self._resource_version
                )
                if event["type"] in (ADDED, MODIFIED, DELETED) and isinstance(raw, dict):
                    seen = self._reader.event(raw)
                    if seen is not None:
                        self._inbox.put(_Changed(self.kind, event["type"], seen))
                    with self._stats.lock:
                        self._stats.events_seen += 1
        finally:
            with self._lock:
                self._current = None
        return events > 0 or time.monotonic() - started >= _QUICK_END_S


def _kube_errors(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Berth's errors for a watch stream, as ``Kube.call`` gives them for a plain call."""
    try:
        yield from events
    except ApiException as e:
        # kubernetes.watch raises ERROR events as ApiException too, 410 Gone included.
        raise kube.wrap_api_exception(e) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KubeTemporaryError(f"watch connection to the Kubernetes API broke: {e}") from e


class _Consumer:
    """Owns the builder: applies messages, decides when a snapshot is due, publishes it."""

    def __init__(
        self,
        *,
        publish: Publish,
        notify: Callable[[tuple[str, str, Any]], None] | None,
        settings: WatchSettings,
        stats: _Stats,
    ) -> None:
        self._builder = InventoryBuilder()
        self._publish = publish
        self._notify = notify
        self._settings = settings
        self._stats = stats
        self._listed: set[str] = set()
        self._berth_jobs: dict[str, str] = {}  # pod key → job id, to report vanished pods
        self._dirty_since: float | None = None
        self._last_publish = float("-inf")
        self._retry_at = float("-inf")
        self._backoff = _Backoff(settings)

    def apply(self, message: _Listed | _Changed) -> None:
        if isinstance(message, _Listed):
            changed = self._apply_list(message)
        elif isinstance(message.obj, NodeRecord):
            changed = (
                self._builder.delete_node(message.obj)
                if message.type == DELETED
                else self._builder.upsert_node(message.obj)
            )
        else:
            changed = self._apply_pod_event(message.type, message.obj)
        if changed and self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def seconds_until_due(self) -> float | None:
        """0.0 when a snapshot should be published now, None when none is pending."""
        if self._dirty_since is None or self._listed != {NODES, PODS}:
            return None
        s = self._settings
        due = min(
            max(self._dirty_since, self._last_publish + s.min_publish_interval_s),
            self._dirty_since + s.max_publish_delay_s,
        )
        due = max(due, self._retry_at)
        return max(0.0, due - time.monotonic())

    def publish(self) -> None:
        inventory = self._builder.snapshot()
        now = time.monotonic()
        try:
            self._publish(inventory)
        except BerthError as e:
            self._retry_at = now + self._backoff.next()
            log.warning("publishing the inventory failed, retrying: %s", e)
            self._stats.error(f"publish: {e}")
            return
        self._backoff.reset()
        self._dirty_since = None
        self._last_publish = now
        with self._stats.lock:
            self._stats.publishes += 1
            self._stats.last_publish_at = time.time()

    def _apply_list(self, message: _Listed) -> bool:
        self._listed.add(message.kind)
        if message.kind == NODES:
            self._builder.replace_nodes(message.items)
            return True
        pods = [seen for seen in message.items if isinstance(seen, _PodSeen)]
        self._builder.replace_pods(seen.record for seen in pods if seen.job is None)
        present = {seen.record.key: seen for seen in pods if seen.job is not None}
        for key, job in self._berth_jobs.items():
            if key not in present:
                self._tell(job, DELETED, None)
        for seen in present.values():
            assert seen.job is not None
            self._tell(seen.job, ADDED, seen.pod)
        self._berth_jobs = {key: str(seen.job) for key, seen in present.items()}
        return True

    def _apply_pod_event(self, event_type: str, seen: _PodSeen) -> bool:
        key, job = seen.record.key, seen.job
        if job is None:
            if event_type == DELETED:
                return self._builder.delete_pod(seen.record)
            return self._builder.upsert_pod(seen.record)
        if event_type == DELETED:
            self._berth_jobs.pop(key, None)
        else:
            self._berth_jobs[key] = job
        self._tell(job, event_type, seen.pod)
        return False

    def _tell(self, job: str, event_type: str, pod: WatchedPod | None) -> None:
        if self._notify is not None:
            self._notify((job, event_type, pod))
