"""The two systems under test, each driven through its own front door into a :class:`Drain`.

Kueue: a ResourceFlavor per GPU model (selecting that model's nodes by the GPU
Feature Discovery label), one ClusterQueue whose nominal quota of each flavor is
the cluster's GPUs of that model, a LocalQueue, and suspended ``batch/v1`` Jobs
labelled with the queue's name. Berth: its whole stack (``tests/stack.py``), the
project ``main`` with no quota of its own (the cluster is its capacity), and
runs sent to its API.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from bench.burst import concurrently
from bench.common import cpu_seconds, ensure_namespace, peak_rss_mib, poll
from bench.kueue import manager as kueue
from bench.kueue.drain import (
    Drain,
    Watches,
    apiserver_requests,
    first_finish_s,
    node_models,
    wait_for,
)
from cli.local.cluster import ClusterState
from shared import kube
from shared.errors import KubeError
from tests.stack import Stack, start_stack

THREADS = 32  # submissions in flight, for both (bench/burst.py's CLIENT_THREADS)
KUEUE_NS = "peers-kueue"
BERTH_NS = "peers-berth"
QUEUE = "bench"
URGENT = "urgent"
GPU = "nvidia.com/gpu"
# What the cluster's own processes cost during a drain, shown beside each system:
# the Job controller (controller-manager) makes Kueue's pods, and every pod of both
# is bound by kube-scheduler and "run" by KWOK.
PLANE = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager", "kwok")


def gpus_by_model(k: kube.Kube) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for node in k.call(k.core.list_node).items:
        product = (node.metadata.labels or {}).get("nvidia.com/gpu.product")
        if product:
            counts[product] += int((node.status.allocatable or {}).get(GPU, "0"))
    return dict(counts)


# --- Kueue ---------------------------------------------------------------------------------


def kueue_drain(
    state: ClusterState, k: kube.Kube, directory: Path, *, n: int, run_for: float
) -> Drain:
    capacity = gpus_by_model(k)
    ensure_namespace(k, KUEUE_NS)
    mgr = kueue.start(state, k, directory)
    try:
        notes = [f"Kueue {mgr.version}, built from the Go module proxy (bench/kueue/build.sh)"]
        _kueue_queues(k, capacity)
        notes.append(check_kueue_webhooks(k, state))
        pids = {"kueue manager": mgr.record.pid}
        drain = _drain(
            "kueue",
            k,
            state,
            KUEUE_NS,
            n=n,
            run_for=run_for,
            capacity=sum(capacity.values()),
            pids=pids,
            key_of=lambda pod: (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name"),
            jobs=True,
            submit=lambda names, seconds, priority: _kueue_submit(k, names, seconds, priority),
            release=lambda names: _kueue_delete(k, names),
            notes=notes,
        )
        drain.notes.append(_urgent_workload(k))
        if not drain.finished:
            drain.notes.append(_keep_log(mgr))
        return drain
    finally:
        _clean_namespace(k, KUEUE_NS)  # first: Kueue's finalizers need the manager running
        kueue.stop(k, mgr)


def _keep_log(mgr: kueue.KueueManager) -> str:
    """Copy the manager's log out of the bench's scratch directory (deleted at the end),
    so a drain that did not finish can be looked into; where it went."""
    kept = Path(tempfile.gettempdir()) / time.strftime("berth-kueue-manager-%Y%m%d-%H%M%S.log")
    shutil.copyfile(mgr.record.log, kept)
    return f"kueue: the manager's log is kept in {kept}"


def check_kueue_webhooks(k: kube.Kube, state: ClusterState) -> str:
    """A Job created unsuspended with the queue label must come back suspended (the
    mutating webhook), and the apiserver log must show no failed webhook call."""
    batch = client.BatchV1Api(k.api)
    body = _job("webhook-check", None, priority=False)
    body["spec"]["suspend"] = False
    made = k.call(batch.create_namespaced_job, KUEUE_NS, body)
    k.call(batch.delete_namespaced_job, "webhook-check", KUEUE_NS, propagation_policy="Background")
    if made.spec.suspend is not True:
        raise kueue.KueueUnavailable("Kueue's Job webhook did not suspend a queued Job")
    log = Path(state.processes["kube-apiserver"].log).read_text(errors="replace")
    failed = [line for line in log.splitlines() if "failed calling webhook" in line]
    if failed:
        raise kueue.KueueUnavailable(f"webhook calls failed: {failed[-1][:400]}")
    return "Kueue's webhooks answer: a queued Job created unsuspended came back suspended"


def _urgent_workload(k: kube.Kube) -> str:
    """The high-priority Job's Workload as Kueue saw it: did it carry the priority?"""
    custom = client.CustomObjectsApi(k.api)
    listed = k.call(
        custom.list_namespaced_custom_object, kueue.GROUP, kueue.API, KUEUE_NS, "workloads"
    )
    for wl in listed.get("items", []):
        owners = wl["metadata"].get("ownerReferences") or []
        if any(o.get("name") == URGENT for o in owners):
            spec = wl.get("spec", {})
            job = k.call(client.BatchV1Api(k.api).read_namespaced_job, URGENT, KUEUE_NS)
            reserved = [
                c["lastTransitionTime"]
                for c in (wl.get("status") or {}).get("conditions") or []
                if c["type"] == "QuotaReserved" and c["status"] == "True"
            ]
            return (
                f"Kueue's Workload for the high-priority Job: priority {spec.get('priority')},"
                f" class {(spec.get('priorityClassRef') or {}).get('name')}; Job created"
                f" {job.metadata.creation_timestamp:%H:%M:%S}, its Workload created"
                f" {wl['metadata']['creationTimestamp'][11:19]}, quota reserved"
                f" {reserved[0][11:19] if reserved else '-'} (UTC, whole seconds)"
            )
    return "Kueue's Workload for the high-priority Job was not found"


def _kueue_queues(k: kube.Kube, capacity: dict[str, int]) -> None:
    custom = client.CustomObjectsApi(k.api)
    flavors = sorted(capacity, key=lambda m: -capacity[m])  # biggest first, as an admin would

    def make(plural: str, body: dict[str, Any], namespace: str | None = None) -> None:
        body = {"apiVersion": f"{kueue.GROUP}/{kueue.API}", **body}
        if namespace:
            k.call(
                custom.create_namespaced_custom_object,
                kueue.GROUP,
                kueue.API,
                namespace,
                plural,
                body,
            )
        else:
            k.call(custom.create_cluster_custom_object, kueue.GROUP, kueue.API, plural, body)

    for model in flavors:
        make(
            "resourceflavors",
            {
                "kind": "ResourceFlavor",
                "metadata": {"name": _flavor(model)},
                "spec": {"nodeLabels": {"nvidia.com/gpu.product": model}},
            },
        )
    make(
        "clusterqueues",
        {
            "kind": "ClusterQueue",
            "metadata": {"name": QUEUE},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": [GPU],
                        "flavors": [
                            {
                                "name": _flavor(m),
                                "resources": [{"name": GPU, "nominalQuota": capacity[m]}],
                            }
                            for m in flavors
                        ],
                    }
                ],
            },
        },
    )
    make(
        "localqueues",
        {"kind": "LocalQueue", "metadata": {"name": QUEUE}, "spec": {"clusterQueue": QUEUE}},
        KUEUE_NS,
    )
    make(
        "workloadpriorityclasses",
        {"kind": "WorkloadPriorityClass", "metadata": {"name": "high"}, "value": 1000},
    )

    def active() -> bool:
        cq = k.call(
            custom.get_cluster_custom_object, kueue.GROUP, kueue.API, "clusterqueues", QUEUE
        )
        conditions = (cq.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)

    if not poll(active, timeout=60, interval=0.3):
        raise kueue.KueueUnavailable("the ClusterQueue did not become Active in 60 s")


def _flavor(model: str) -> str:
    return model.lower().replace("_", "-")


def _job(name: str, run_for: float | None, *, priority: bool) -> dict[str, Any]:
    labels = {kueue.QUEUE_LABEL: QUEUE}
    if priority:
        labels[kueue.PRIORITY_LABEL] = "high"
    env = [{"name": "KWOK_RUN_FOR", "value": f"{run_for:g}s"}] if run_for else []
    one = {GPU: "1"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": True,
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    # The GPU nodes' taint (cli/local/nodes.py); Berth's pods tolerate it too.
                    "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "env": env,
                            "resources": {"requests": one, "limits": one},
                        }
                    ],
                }
            },
        },
    }


def _kueue_submit(
    k: kube.Kube, names: list[str], run_for: float | None, priority: bool
) -> list[str]:
    batch = client.BatchV1Api(k.api)

    def create(name: str) -> str:
        try:
            k.call(batch.create_namespaced_job, KUEUE_NS, _job(name, run_for, priority=priority))
        except KubeError as e:  # counted and reported; the drain goes on
            return f"{name}: {e}"[:300]
        return ""

    return [e for e in concurrently(create, names, THREADS) if e]


def _kueue_delete(k: kube.Kube, names: list[str]) -> list[str]:
    batch = client.BatchV1Api(k.api)

    def delete(name: str) -> str:
        try:
            k.call(batch.delete_namespaced_job, name, KUEUE_NS, propagation_policy="Background")
        except KubeError as e:  # counted and reported
            return f"{name}: {e}"[:300]
        return ""

    return [e for e in concurrently(delete, names, THREADS) if e]


# --- Berth ---------------------------------------------------------------------------------


def berth_drain(
    state: ClusterState, k: kube.Kube, directory: Path, *, n: int, run_for: float, workers: int
) -> Drain:
    ensure_namespace(k, BERTH_NS)
    stack = start_stack(state, directory, namespace=BERTH_NS, workers=workers)
    try:
        pids = {f"berth {p.name}": p.pid for p in stack.processes}
        pids["berth redis"] = state.processes["redis"].pid
        with stack.client() as http:
            return _drain(
                "berth",
                k,
                state,
                BERTH_NS,
                n=n,
                run_for=run_for,
                capacity=sum(gpus_by_model(k).values()),
                pids=pids,
                key_of=lambda pod: (pod.metadata.labels or {}).get(kube.LABEL_RUN),
                jobs=False,
                submit=lambda names, seconds, priority: _berth_submit(
                    http, names, seconds, priority
                ),
                release=lambda names: _berth_stop(http, names),
                notes=[
                    f"Berth: API, {workers} Celery worker processes, proxy worker, beat,"
                    " log collector"
                ],
                rss_children=stack,
            )
    finally:
        _clean_namespace(k, BERTH_NS)
        stack.stop()


def _berth_submit(
    http: httpx.Client, names: list[str], run_for: float | None, priority: bool
) -> list[str]:
    def submit(name: str) -> str:
        conf: dict[str, Any] = {
            "type": "task",
            "name": name,
            "commands": ["train"],
            "resources": {"gpu": 1},
        }
        if run_for:
            conf["env"] = {"KWOK_RUN_FOR": f"{run_for:g}s"}
        if priority:
            conf["priority"] = 100  # the highest Berth takes (shared/configuration/runs.py)
        try:
            r = http.post("/api/projects/main/runs", json={"configuration": conf})
        except httpx.HTTPError as e:
            return f"{name}: {e!r}"[:300]
        return "" if r.status_code == 202 else f"{name}: {r.status_code} {r.text[:200]}"

    return [e for e in concurrently(submit, names, THREADS) if e]


def _berth_stop(http: httpx.Client, names: list[str]) -> list[str]:
    def stop(name: str) -> str:
        try:
            r = http.post(f"/api/projects/main/runs/{name}/stop", json={"abort": False})
        except httpx.HTTPError as e:
            return f"{name}: {e!r}"[:300]
        return "" if r.status_code < 300 else f"{name}: {r.status_code} {r.text[:200]}"

    return [e for e in concurrently(stop, names, THREADS) if e]


# --- the common drain ----------------------------------------------------------------------

Submit = Callable[[list[str], float | None, bool], list[str]]


def _drain(
    system: str,
    k: kube.Kube,
    state: ClusterState,
    namespace: str,
    *,
    n: int,
    run_for: float,
    capacity: int,
    pids: dict[str, int],
    key_of: Callable[[Any], str | None],
    jobs: bool,
    submit: Submit,
    release: Callable[[list[str]], list[str]],
    notes: list[str],
    rss_children: Stack | None = None,
) -> Drain:
    watches = Watches(k, namespace, key_of, jobs=jobs)
    watches.start()
    blockers = [f"blk-{i}" for i in range(capacity)]
    names = [f"job-{i}" for i in range(n)]
    try:
        errors = submit(blockers, None, False)
        _raise_if(errors, f"{system}: blockers not accepted")
        if not wait_for(
            lambda: watches.count("node", set(blockers)) == capacity,
            timeout=300,
            stall=lambda: watches.count("node", set(blockers)),
        ):
            raise RuntimeError(f"{system}: the {capacity} blockers did not all get a node")
        metrics = (state.apiserver_url, state.admin_token, state.ca_file)
        requests_before = apiserver_requests(*metrics)
        with _cpu(pids, state) as cpu:
            started = time.monotonic()
            errors = submit(names, run_for, False)
            submit_s = time.monotonic() - started
            _raise_if(errors, f"{system}: jobs not accepted")
            released_at = time.monotonic()
            notes += [f"release: {e}" for e in release(blockers)[:3]]
            urgent_sent_at = time.monotonic()
            notes += [f"urgent: {e}" for e in submit([URGENT], run_for, True)]
            everyone = {*names, URGENT}
            finished = wait_for(
                lambda: watches.count("done", everyone) == len(everyone),
                timeout=max(600.0, n * 1.0),
                stall=lambda: watches.count("done", everyone),
                stall_s=first_finish_s(n),
            )
        after = apiserver_requests(*metrics)
        requests = {
            key: count - requests_before.get(key, 0.0)
            for key, count in after.items()
            if count > requests_before.get(key, 0.0)
        }
        rss = {name: peak_rss_mib(pid) for name, pid in pids.items()}
        if rss_children is not None:
            from bench.common import children_of

            for p in rss_children.processes:
                kids = children_of(p.pid)
                if kids:
                    rss[f"berth {p.name} children"] = sum(peak_rss_mib(c) for c in kids)
        if not finished:
            notes.append(
                f"{system}: only {watches.count('done', everyone)} of {len(everyone)} jobs"
                " finished before the deadline or a 2-minute stall"
            )
    finally:
        watches.stop()
    return Drain(
        system=system,
        n=n,
        jobs=names,
        timeline=watches.timeline,
        submit_s=submit_s,
        released_at=released_at,
        urgent=URGENT,
        urgent_sent_at=urgent_sent_at,
        finished=finished,
        cpu=cpu,
        rss_mib=rss,
        models=node_models(k),
        notes=notes,
        requests=requests,
    )


@contextmanager
def _cpu(pids: dict[str, int], state: ClusterState) -> Iterator[dict[str, float]]:
    every = pids | {f"cluster {name}": state.processes[name].pid for name in PLANE}
    before = {name: cpu_seconds(pid) for name, pid in every.items()}
    used: dict[str, float] = {}
    yield used
    used.update({name: cpu_seconds(pid) - before[name] for name, pid in every.items()})


def _raise_if(errors: list[str], what: str) -> None:
    if errors:
        raise RuntimeError(f"{what}: {len(errors)} errors, first: {errors[0]}")


def _clean_namespace(k: kube.Kube, namespace: str) -> None:
    """Delete the namespace and wait until its pods are gone, so the next system starts
    on an empty cluster."""
    try:
        k.call(k.core.delete_namespace, namespace)
    except KubeError:
        return
    poll(
        lambda: not any(n.metadata.name == namespace for n in k.call(k.core.list_namespace).items),
        timeout=300,
        interval=1.0,
    )
